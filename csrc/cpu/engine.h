// The CPU multi-tensor engine: one parallel region for all the tensors of an op call. The elements of all the
// tensors are laid end to end and cut into one contiguous range per thread (balanced by element count, so 1000
// small tensors cost what one tensor of the same total size costs); each thread walks the tensors its range
// covers. ISA-neutral: the per-span work is a callback.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace fused_optim::cpu {

// Below this many elements a second thread costs more than it saves.
constexpr int64_t kMinElementsPerThread = 32768;
// Thread ranges start on multiples of this, so threads do not share cache lines or split SIMD blocks.
constexpr int64_t kThreadAlign = 64;

// offsets[t] is the first element of tensor t in the concatenation; offsets[n] is the total.
// span(t, begin, end) is called for pieces of tensor t, in tensor-local element indices.
template <typename SpanFn>
void parallel_for_spans(const std::vector<int64_t>& offsets, const SpanFn& span) {
  const int64_t total = offsets.back();
  if (total == 0) return;
  const int64_t max_tasks = std::max<int64_t>(1, total / kMinElementsPerThread);
  const int64_t tasks = std::min<int64_t>(at::get_num_threads(), max_tasks);
  int64_t per_task = (total + tasks - 1) / tasks;
  per_task = (per_task + kThreadAlign - 1) / kThreadAlign * kThreadAlign;

  auto run_range = [&](int64_t begin, int64_t end) {
    // The last tensor starting at or before `begin`; empty tensors share offsets and are skipped naturally.
    int64_t t = std::upper_bound(offsets.begin(), offsets.end(), begin) - offsets.begin() - 1;
    while (begin < end) {
      const int64_t stop = std::min(end, offsets[t + 1]);
      if (stop > begin) span(t, begin - offsets[t], stop - offsets[t]);
      begin = stop;
      ++t;
    }
  };
  if (tasks == 1) {
    run_range(0, total);
    return;
  }
  at::parallel_for(0, tasks, 1, [&](int64_t first, int64_t last) {
    for (int64_t task = first; task < last; ++task) {
      run_range(std::min(total, task * per_task), std::min(total, (task + 1) * per_task));
    }
  });
}

}  // namespace fused_optim::cpu
