// CPU bindings of LAMB's two passes: lamb_moments_ (moments and squared norms) and lamb_apply_ (the
// trust-ratio-scaled parameter update).
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "../common/lamb_args.h"
#include "launch.h"

namespace fused_optim::cpu {
namespace {

at::Tensor lamb_moments_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                         at::TensorList exp_avg_sqs, at::TensorList state_steps, double beta1, double beta2, double eps,
                         double weight_decay, bool bias_correction, bool maximize,
                         const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  LambArgs a = prepare_lamb_moments(params, grads, exp_avgs, exp_avg_sqs, state_steps, beta1, beta2, eps, weight_decay,
                                    bias_correction, maximize, grad_scale, found_inf);
  const int64_t n = static_cast<int64_t>(a.lists.size());
  at::Tensor sq_norms = at::zeros({n, 2}, at::TensorOptions().dtype(at::kFloat));
  if (n == 0 || a.scalars.found_inf.value_or(false)) return sq_norms;

  auto launch = make_launch<rules::LambHyper, LambMomentsLaunch>(
      a.lists, {kLambMParams, kLambMGrads, kLambMExpAvgs, kLambMExpAvgSqs}, a.hyper, a.scalars,
      advance_host_steps(state_steps));
  launch.threads = at::get_num_threads();
  std::vector<double> partials(static_cast<size_t>(launch.threads * n * 2), 0.0);
  launch.partials = partials.data();
  active_kernels().lamb_moments[dtype_index(a.lists.dtype())](launch);
  a.lists.finish();

  float* out = sq_norms.data_ptr<float>();
  for (int64_t i = 0; i < 2 * n; ++i) {
    double total = 0.0;
    for (int64_t k = 0; k < launch.threads; ++k) total += partials[k * n * 2 + i];
    out[i] = static_cast<float>(total);
  }
  return sq_norms;
}

void lamb_apply_(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs, at::TensorList state_steps,
                 const at::Tensor& sq_norms, const at::Tensor& lr, double beta1, double beta2, double eps,
                 double weight_decay, bool bias_correction, const std::optional<at::Tensor>& found_inf) {
  LambArgs a = prepare_lamb_apply(params, exp_avgs, exp_avg_sqs, state_steps, sq_norms, lr, beta1, beta2, eps,
                                  weight_decay, bias_correction, found_inf);
  if (a.lists.size() == 0 || a.scalars.found_inf.value_or(false)) return;
  std::vector<double> steps(a.lists.size());
  for (size_t i = 0; i < steps.size(); ++i) steps[i] = *state_steps[i].const_data_ptr<float>();  // advanced by pass 1
  auto launch = make_launch(a.lists, {kLambAParams, kLambAExpAvgs, kLambAExpAvgSqs}, a.hyper, a.scalars, steps);
  const float* norms = sq_norms.const_data_ptr<float>();
  for (size_t i = 0; i < steps.size(); ++i) {
    launch.tensors[i].scale = *a.scalars.lr * rules::lamb_trust_ratio(norms[2 * i], norms[2 * i + 1]);
  }
  active_kernels().lamb_apply[dtype_index(a.lists.dtype())](launch);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CPU, m) {
  m.impl("lamb_moments_", &lamb_moments_);
  m.impl("lamb_apply_", &lamb_apply_);
}

}  // namespace fused_optim::cpu
