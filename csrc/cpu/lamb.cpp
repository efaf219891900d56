// CPU bindings of LAMB's two passes: lamb_norms (the squared norms, changing nothing) and lamb_ (the step, scaled
// per tensor by the trust ratio from those norms).
#include <ATen/Parallel.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "../common/lamb_args.h"
#include "launch.h"

namespace fused_optim::cpu {
namespace {

at::Tensor lamb_norms(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                      at::TensorList state_steps, double beta1, double beta2, double eps, double weight_decay,
                      bool bias_correction, bool maximize, const std::optional<at::Tensor>& grad_scale,
                      std::optional<at::TensorList> master_params) {
  LambArgs a = prepare_lamb("fused_optim.lamb_norms", /*mutates=*/false, params, grads, exp_avgs, exp_avg_sqs,
                            state_steps, std::nullopt, beta1, beta2, eps, weight_decay, bias_correction, maximize,
                            grad_scale, std::nullopt, master_params);
  const int64_t n = static_cast<int64_t>(a.lists.size());
  const at::ScalarType dtype = compute_dtype(n ? a.lists.dtype() : at::kFloat);
  at::Tensor sq_norms = at::zeros({n, 2}, at::TensorOptions().dtype(dtype));
  if (n == 0) return sq_norms;

  std::vector<double> steps(n);  // this step's counts: lamb_ advances the stored ones
  for (int64_t i = 0; i < n; ++i) {
    // the count lamb_ will store: rounded to the counter's dtype, as advance_host_steps rounds it
    const double next = host_step(state_steps[i]) + 1.0;
    steps[i] = state_steps[i].scalar_type() == at::kDouble ? next : static_cast<float>(next);
  }
  auto launch = make_launch<rules::LambHyper, LambNormsLaunch>(
      a.lists, {kLambParams, kLambGrads, kLambExpAvgs, kLambExpAvgSqs}, kLambMasters, a.hyper, a.scalars, steps);
  launch.threads = at::get_num_threads();
  std::vector<double> partials(static_cast<size_t>(launch.threads * n * 2), 0.0);
  launch.partials = partials.data();
  active_kernels().lamb_norms[a.precision.index](launch);
  a.lists.finish();

  // Thread order, so the result does not depend on which thread finished first.
  for (int64_t i = 0; i < 2 * n; ++i) {
    double total = 0.0;
    for (int64_t k = 0; k < launch.threads; ++k) total += partials[k * n * 2 + i];
    if (dtype == at::kDouble) {
      sq_norms.data_ptr<double>()[i] = total;
    } else {
      sq_norms.data_ptr<float>()[i] = static_cast<float>(total);
    }
  }
  return sq_norms;
}

void lamb_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
           at::TensorList state_steps, const at::Tensor& sq_norms, const at::Tensor& lr, double beta1, double beta2,
           double eps, double weight_decay, bool bias_correction, bool maximize,
           const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
           std::optional<at::TensorList> master_params) {
  LambArgs a =
      prepare_lamb("fused_optim.lamb_", /*mutates=*/true, params, grads, exp_avgs, exp_avg_sqs, state_steps, lr, beta1,
                   beta2, eps, weight_decay, bias_correction, maximize, grad_scale, found_inf, master_params);
  check_sq_norms("fused_optim.lamb_", a.lists, sq_norms);
  if (a.lists.size() == 0 || a.scalars.found_inf.value_or(false)) return;
  auto launch = make_launch(a.lists, {kLambParams, kLambGrads, kLambExpAvgs, kLambExpAvgSqs}, kLambMasters, a.hyper,
                            a.scalars, advance_host_steps(state_steps));
  const at::Tensor norms = sq_norms.to(at::kDouble);
  const double* sq = norms.const_data_ptr<double>();
  for (size_t i = 0; i < a.lists.size(); ++i) {
    launch.tensors[i].scale = *a.scalars.lr * rules::lamb_trust_ratio(sq[2 * i], sq[2 * i + 1]);
  }
  active_kernels().lamb[a.precision.index](launch);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CPU, m) {
  m.impl("lamb_norms", &lamb_norms);
  m.impl("lamb_", &lamb_);
}

}  // namespace fused_optim::cpu
