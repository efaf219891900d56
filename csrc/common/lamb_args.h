// Argument handling for LAMB's two ops, lamb_norms and lamb_, shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "../rules/lamb.h"
#include "precision.h"
#include "tensor_lists.h"

namespace fused_optim {

// The C++ signatures (the schemas are in csrc/ops.cpp). lamb_norms changes nothing and returns, for each tensor,
// the squared norms of the parameter and of this step's update direction, shape (n, 2), in the compute dtype
// (float64 for float64 params, else float32); lamb_ takes them back, possibly all-reduced across ranks in between,
// and performs the step.
using LambNormsSignature = at::Tensor(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                                      at::TensorList exp_avg_sqs, at::TensorList state_steps, double beta1,
                                      double beta2, double eps, double weight_decay, bool bias_correction,
                                      bool maximize, const std::optional<at::Tensor>& grad_scale,
                                      std::optional<at::TensorList> master_params);
using LambSignature = void(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                           at::TensorList exp_avg_sqs, at::TensorList state_steps, const at::Tensor& sq_norms,
                           const at::Tensor& lr, double beta1, double beta2, double eps, double weight_decay,
                           bool bias_correction, bool maximize, const std::optional<at::Tensor>& grad_scale,
                           const std::optional<at::Tensor>& found_inf, std::optional<at::TensorList> master_params);

enum LambList : size_t { kLambParams, kLambGrads, kLambExpAvgs, kLambExpAvgSqs, kLambMasters };

struct LambArgs {
  ResolvedPrecision precision;
  TensorLists lists;
  rules::LambHyper hyper;
  ScalarArgs scalars;
};

inline LambArgs prepare_lamb(const char* op, bool mutates, at::TensorList params, at::TensorList grads,
                             at::TensorList exp_avgs, at::TensorList exp_avg_sqs, at::TensorList state_steps,
                             const std::optional<at::Tensor>& lr, double beta1, double beta2, double eps,
                             double weight_decay, bool bias_correction, bool maximize,
                             const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                             const std::optional<at::TensorList>& master_params) {
  check_hyperparameter(op, "beta1", beta1, 0.0, 1.0, /*hi_open=*/true);
  check_hyperparameter(op, "beta2", beta2, 0.0, 1.0, /*hi_open=*/true);
  check_hyperparameter(op, "eps", eps, 0.0, INFINITY);
  check_hyperparameter(op, "weight_decay", weight_decay, 0.0, INFINITY);
  const ResolvedPrecision pr = resolve_precision(op, params, grads, exp_avgs, master_params.value_or(at::TensorList()));
  LambArgs a{pr,
             TensorLists(op, {{"params", params, mutates},
                              {"grads", grads, false, false, pr.grad, /*convert=*/true},
                              {"exp_avgs", exp_avgs, mutates, false, pr.state},
                              {"exp_avg_sqs", exp_avg_sqs, mutates, false, pr.state},
                              master_list(master_params, pr.master_dtype)}),
             {beta1, beta2, eps, weight_decay, bias_correction, maximize},
             {}};
  check_steps(op, state_steps, a.lists.size(), a.lists.size() ? a.lists.device() : at::Device(at::kCPU));
  a.scalars = prepare_scalars(op, a.lists, lr, grad_scale, found_inf);
  return a;
}

inline void check_sq_norms(const char* op, const TensorLists& lists, const at::Tensor& sq_norms) {
  const int64_t n = static_cast<int64_t>(lists.size());
  const at::ScalarType dtype = compute_dtype(n ? lists.dtype() : at::kFloat);
  TORCH_CHECK(sq_norms.defined() && sq_norms.dim() == 2 && sq_norms.size(0) == n && sq_norms.size(1) == 2 &&
                  sq_norms.is_contiguous() && sq_norms.scalar_type() == dtype,
              op, ": sq_norms must be a contiguous ", dtype, " tensor of shape (", n,
              ", 2) as lamb_norms returns, got ", sq_norms.scalar_type(), " of shape ", sq_norms.sizes());
  TORCH_CHECK(n == 0 || sq_norms.device() == lists.device(), op, ": sq_norms is on ", sq_norms.device(),
              " but the params are on ", lists.device());
}

}  // namespace fused_optim
