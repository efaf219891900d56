// CPU binding of fused_optim::sgd_: checks the arguments and hands pointers to the active ISA's kernel.
#include <torch/library.h>

#include "../common/sgd_args.h"
#include "kernels.h"

namespace fused_optim::cpu {
namespace {

void sgd_(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers, const at::Tensor& lr,
          double weight_decay, double momentum, double dampening, bool nesterov, bool maximize, bool is_first_step,
          const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
          std::optional<at::TensorList> master_params) {
  SgdArgs a = prepare_sgd(params, grads, momentum_buffers, lr, weight_decay, momentum, dampening, nesterov, maximize,
                          grad_scale, found_inf, master_params);
  if (a.lists.size() == 0 || a.scalars.found_inf.value_or(false)) return;
  const bool has_momentum = momentum != 0;
  SgdLaunch launch{{}, a.lists.offsets(), a.hyper, *a.scalars.lr, *a.scalars.inv_grad_scale, is_first_step};
  launch.tensors.reserve(a.lists.size());
  for (size_t i = 0; i < a.lists.size(); ++i) {
    launch.tensors.push_back(
        {a.lists.ptr(kSgdParams, i), a.lists.empty(kSgdMasters) ? nullptr : a.lists.ptr(kSgdMasters, i),
         a.lists.ptr(kSgdGrads, i), has_momentum ? a.lists.ptr(kSgdMomentumBuffers, i) : nullptr, a.lists.numel(i)});
  }
  active_kernels().sgd[a.precision.index][has_momentum](launch);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CPU, m) {
  m.impl("sgd_", &sgd_);
}

}  // namespace fused_optim::cpu
