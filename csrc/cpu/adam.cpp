// CPU binding of fused_optim::adam_: checks the arguments, advances the step counters, computes each tensor's
// coefficients and hands pointers to the active ISA's kernel.
#include <torch/library.h>

#include "../common/adam_args.h"
#include "kernels.h"

namespace fused_optim::cpu {
namespace {

void adam_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
           at::TensorList max_exp_avg_sqs, at::TensorList state_steps, const at::Tensor& lr, double beta1, double beta2,
           double weight_decay, double eps, bool amsgrad, bool maximize, bool decoupled_weight_decay,
           const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
           std::optional<at::TensorList> master_params) {
  AdamArgs a =
      prepare_adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2, weight_decay,
                   eps, amsgrad, maximize, decoupled_weight_decay, grad_scale, found_inf, master_params);
  // On the CPU every scalar argument is a host value; an inf/nan in the scaled grads skips the whole step.
  if (a.lists.size() == 0 || a.scalars.found_inf.value_or(false)) return;

  AdamLaunch launch;
  launch.tensors.reserve(a.lists.size());
  launch.offsets = a.lists.offsets();
  // Parameters of a group usually share their step count: compute the coefficients (two pow()s) once per value.
  const bool has_master = !a.lists.empty(kAdamMasters);
  double coeffs_step = -1.0;
  rules::AdamCoeffs<double> coeffs{};
  const std::vector<double> steps = advance_host_steps(state_steps);
  for (size_t i = 0; i < a.lists.size(); ++i) {
    if (steps[i] != coeffs_step) {
      coeffs = rules::adam_coeffs<double>(a.hyper, *a.scalars.lr, steps[i], *a.scalars.inv_grad_scale);
      coeffs_step = steps[i];
    }
    launch.tensors.push_back({a.lists.ptr(kParams, i), has_master ? a.lists.ptr(kAdamMasters, i) : nullptr,
                              a.lists.ptr(kGrads, i), a.lists.ptr(kExpAvgs, i), a.lists.ptr(kExpAvgSqs, i),
                              amsgrad ? a.lists.ptr(kMaxExpAvgSqs, i) : nullptr, a.lists.numel(i), coeffs});
  }
  active_kernels().adam[a.precision.index][amsgrad](launch);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CPU, m) {
  m.impl("adam_", &adam_);
}

}  // namespace fused_optim::cpu
