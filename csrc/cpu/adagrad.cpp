// CPU binding of fused_optim::adagrad_: checks the arguments, advances the step counters and hands pointers to
// the active ISA's kernel.
#include <torch/library.h>

#include "../common/adagrad_args.h"
#include "launch.h"

namespace fused_optim::cpu {
namespace {

void adagrad_(at::TensorList params, at::TensorList grads, at::TensorList state_sums, at::TensorList state_steps,
              const at::Tensor& lr, double lr_decay, double weight_decay, double eps, bool maximize,
              const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
              std::optional<at::TensorList> master_params) {
  AdagradArgs a = prepare_adagrad(params, grads, state_sums, state_steps, lr, lr_decay, weight_decay, eps, maximize,
                                  grad_scale, found_inf, master_params);
  if (a.lists.size() == 0 || a.scalars.found_inf.value_or(false)) return;
  const auto launch = make_launch(a.lists, {kAdagradParams, kAdagradGrads, kAdagradSums}, kAdagradMasters, a.hyper,
                                  a.scalars, advance_host_steps(state_steps));
  active_kernels().adagrad[a.precision.index](launch);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CPU, m) {
  m.impl("adagrad_", &adagrad_);
}

}  // namespace fused_optim::cpu
