// Builds a kernel launch from checked tensor lists. Included by the CPU bindings only (baseline-compiled code),
// never by the per-ISA kernel files.
#pragma once

#include <vector>

#include "../common/tensor_lists.h"
#include "kernels.h"

namespace fused_optim::cpu {

// `arrays` names the lists whose tensors the kernel streams, in the kernel's order (params first); `masters` the
// master_params list (empty without masters); `steps` (may be empty) the per-tensor step counts after their
// increment.
template <typename Hyper, typename Launch = ListLaunch<Hyper>>
Launch make_launch(const TensorLists& lists, const std::vector<size_t>& arrays, size_t masters, const Hyper& hyper,
                   const ScalarArgs& scalars, const std::vector<double>& steps = {}) {
  Launch launch;
  launch.offsets = lists.offsets();
  launch.hyper = hyper;
  launch.lr = scalars.lr.value_or(0.0);
  launch.inv_grad_scale = *scalars.inv_grad_scale;
  launch.tensors.resize(lists.size());
  for (size_t i = 0; i < lists.size(); ++i) {
    TensorSlots& s = launch.tensors[i];
    s.ptr.fill(nullptr);
    size_t k = 0;
    for (size_t list : arrays) s.ptr[k++] = lists.ptr(list, i);
    s.master = lists.empty(masters) ? nullptr : lists.ptr(masters, i);
    s.numel = lists.numel(i);
    s.step = steps.empty() ? 0.0 : steps[i];
    s.scale = 0.0;
  }
  return launch;
}

}  // namespace fused_optim::cpu
