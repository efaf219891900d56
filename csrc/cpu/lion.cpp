// CPU binding of fused_optim::lion_: checks the arguments and hands pointers to the active ISA's kernel.
#include <torch/library.h>

#include "../common/lion_args.h"
#include "launch.h"

namespace fused_optim::cpu {
namespace {

void lion_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, const at::Tensor& lr, double beta1,
           double beta2, double weight_decay, bool maximize, const std::optional<at::Tensor>& grad_scale,
           const std::optional<at::Tensor>& found_inf, std::optional<at::TensorList> master_params) {
  LionArgs a = prepare_lion(params, grads, exp_avgs, lr, beta1, beta2, weight_decay, maximize, grad_scale, found_inf,
                            master_params);
  if (a.lists.size() == 0 || a.scalars.found_inf.value_or(false)) return;
  const auto launch = make_launch(a.lists, {kLionParams, kLionGrads, kLionExpAvgs}, kLionMasters, a.hyper, a.scalars);
  active_kernels().lion[a.precision.index](launch);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CPU, m) {
  m.impl("lion_", &lion_);
}

}  // namespace fused_optim::cpu
