// The bookkeeping of the CUDA multi-tensor engine, kept free of CUDA-only calls so that a CPU test can replay a
// launch block by block and thread by thread (fused_optim._C._replay_cuda_plan) and check that every element of
// every tensor is visited exactly once: tails, empty tensors, launch boundaries and 64-bit offsets included.
//
// A launch carries, in its kernel arguments, up to kMaxTensors tensors (DEPTH pointers each) and up to kMaxBlocks
// blocks; block b works on chunk block_to_chunk[b] of tensor block_to_tensor[b]. A tensor too big for one launch
// continues in the next. Both limits follow from the kernel-argument space, kArgBytes: the classic 4 KB, or the
// 32 KB that newer CUDA allows (multi_tensor_apply.cuh picks; the CPU replay test runs both).
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

namespace fused_optim::cuda {

constexpr int kClassicArgBytes = 4096;
constexpr int kLargeArgBytes = 32764;  // CUDA 12.1+ on sm_70+
constexpr int kFunctorArgBytes = 256;  // left for the functor's own arguments (checked at each launch site)
constexpr int64_t kChunkSize = 65536;  // elements per block; a multiple of every vector width we use
constexpr int kMaxDepth = 7;           // Adam with amsgrad, a master and the step counter

template <int kArgBytes>
constexpr int kMaxBlocks = kArgBytes > kClassicArgBytes ? 2048 : 320;

// Position of a block's tensor within its launch.
template <int kArgBytes>
using LaunchTensorIndex = std::conditional_t<(kArgBytes > kClassicArgBytes), uint16_t, uint8_t>;

// What the blocks' table leaves of the budget, shared out among tensors of DEPTH pointers, a numel and an index
// each (8 bytes kept for padding).
template <int DEPTH, int kArgBytes>
constexpr int kMaxTensors =
    static_cast<int>((kArgBytes - kFunctorArgBytes - 8 -
                      kMaxBlocks<kArgBytes> * (sizeof(LaunchTensorIndex<kArgBytes>) + sizeof(int32_t))) /
                     (DEPTH * sizeof(void*) + sizeof(int64_t) + sizeof(int32_t)));

template <int DEPTH, int kArgBytes>
struct TensorListMeta {
  static constexpr int kTensors = kMaxTensors<DEPTH, kArgBytes>;
  static constexpr int kBlocks = kMaxBlocks<kArgBytes>;
  void* addresses[DEPTH][kTensors];
  int64_t numel[kTensors];
  int32_t tensor_index[kTensors];  // position in the op's lists, for per-tensor scalars (step counts)
  LaunchTensorIndex<kArgBytes> block_to_tensor[kBlocks];
  int32_t block_to_chunk[kBlocks];
};

template <int kArgBytes, int... kDepthsBelow>
constexpr bool metadata_leaves_room(std::integer_sequence<int, kDepthsBelow...>) {
  return ((sizeof(TensorListMeta<kDepthsBelow + 1, kArgBytes>) <= kArgBytes - kFunctorArgBytes) && ...) &&
         ((kMaxTensors<kDepthsBelow + 1, kArgBytes> - 1 <= std::numeric_limits<LaunchTensorIndex<kArgBytes>>::max()) &&
          ...);
}
static_assert(metadata_leaves_room<kClassicArgBytes>(std::make_integer_sequence<int, kMaxDepth>{}),
              "metadata must leave room for the functor's arguments at every depth");
static_assert(metadata_leaves_room<kLargeArgBytes>(std::make_integer_sequence<int, kMaxDepth>{}),
              "metadata must leave room for the functor's arguments at every depth");

// The elements block `block` of a launch owns: [begin, end) of the launch-local tensor `tensor`.
struct BlockRange {
  int tensor;
  int64_t begin;
  int64_t end;
};

template <int DEPTH, int kArgBytes>
C10_HOST_DEVICE inline BlockRange block_range(const TensorListMeta<DEPTH, kArgBytes>& meta, int block) {
  const int t = meta.block_to_tensor[block];
  const int64_t begin = static_cast<int64_t>(meta.block_to_chunk[block]) * kChunkSize;
  const int64_t end = begin + kChunkSize < meta.numel[t] ? begin + kChunkSize : meta.numel[t];
  return {t, begin, end};
}

// Walks a block's range: groups of kVec elements with vector loads when every pointer is aligned for them, then
// the scalar tail. `visit(index, count)` gets either a whole aligned group (count == kVec) or one element.
template <int kVec, typename Visit>
C10_HOST_DEVICE inline void for_each_in_block(const BlockRange& r, bool aligned, int thread, int threads,
                                              Visit&& visit) {
  int64_t i = r.begin;
  if (aligned) {
    const int64_t groups = (r.end - r.begin) / kVec;
    for (int64_t g = thread; g < groups; g += threads) visit(r.begin + g * kVec, kVec);
    i = r.begin + groups * kVec;
  }
  for (int64_t j = i + thread; j < r.end; j += threads) visit(j, 1);
}

// Packs tensors into launches. `numel(i)` and `address(i, d)` describe tensor i of n; `launch(meta, blocks)` is
// called for each full (or final) launch.
template <int DEPTH, int kArgBytes, typename Numel, typename Address, typename Launch>
void plan_launches(int64_t n, Numel&& numel, Address&& address, Launch&& launch) {
  using Meta = TensorListMeta<DEPTH, kArgBytes>;
  Meta meta;
  int tensors = 0;
  int blocks = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t size = numel(i);
    if (size == 0) continue;
    for (int d = 0; d < DEPTH; ++d) meta.addresses[d][tensors] = address(i, d);
    meta.numel[tensors] = size;
    meta.tensor_index[tensors] = static_cast<int32_t>(i);
    ++tensors;
    const int64_t chunks = (size + kChunkSize - 1) / kChunkSize;
    for (int64_t c = 0; c < chunks; ++c) {
      meta.block_to_tensor[blocks] = static_cast<LaunchTensorIndex<kArgBytes>>(tensors - 1);
      meta.block_to_chunk[blocks] = static_cast<int32_t>(c);
      ++blocks;
      const bool last_chunk = c == chunks - 1;
      const bool blocks_full = blocks == Meta::kBlocks;
      const bool tensors_full = tensors == Meta::kTensors && last_chunk;
      if (blocks_full || tensors_full) {
        launch(meta, blocks);
        blocks = 0;
        if (last_chunk) {
          tensors = 0;
        } else {  // the current tensor continues in the next launch, as its first entry
          for (int d = 0; d < DEPTH; ++d) meta.addresses[d][0] = meta.addresses[d][tensors - 1];
          meta.numel[0] = meta.numel[tensors - 1];
          meta.tensor_index[0] = meta.tensor_index[tensors - 1];
          tensors = 1;
        }
      }
    }
  }
  if (blocks > 0) launch(meta, blocks);
}

}  // namespace fused_optim::cuda
