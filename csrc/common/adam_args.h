// Argument handling for adam_ shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "../rules/adam.h"
#include "precision.h"
#include "tensor_lists.h"

namespace fused_optim {

// The C++ signature of fused_optim::adam_ (the schema is in csrc/ops.cpp).
using AdamSignature = void(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                           at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, at::TensorList state_steps,
                           const at::Tensor& lr, double beta1, double beta2, double weight_decay, double eps,
                           bool amsgrad, bool maximize, bool decoupled_weight_decay,
                           const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                           std::optional<at::TensorList> master_params);

enum AdamList : size_t { kParams, kGrads, kExpAvgs, kExpAvgSqs, kMaxExpAvgSqs, kAdamMasters };

struct AdamArgs {
  ResolvedPrecision precision;
  TensorLists lists;
  rules::AdamHyper hyper;
  ScalarArgs scalars;
};

inline AdamArgs prepare_adam(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                             at::TensorList exp_avg_sqs, at::TensorList max_exp_avg_sqs, at::TensorList state_steps,
                             const at::Tensor& lr, double beta1, double beta2, double weight_decay, double eps,
                             bool amsgrad, bool maximize, bool decoupled_weight_decay,
                             const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                             const std::optional<at::TensorList>& master_params) {
  constexpr const char* op = "fused_optim.adam_";
  check_hyperparameter(op, "beta1", beta1, 0.0, 1.0, /*hi_open=*/true);
  check_hyperparameter(op, "beta2", beta2, 0.0, 1.0, /*hi_open=*/true);
  check_hyperparameter(op, "eps", eps, 0.0, INFINITY);
  check_hyperparameter(op, "weight_decay", weight_decay, 0.0, INFINITY);
  TORCH_CHECK(amsgrad || max_exp_avg_sqs.empty(), op, ": max_exp_avg_sqs given but amsgrad is false");

  const ResolvedPrecision pr = resolve_precision(op, params, grads, exp_avgs, master_params.value_or(at::TensorList()));
  AdamArgs a{pr,
             TensorLists(op, {{"params", params, true},
                              {"grads", grads, false, false, pr.grad, /*convert=*/true},
                              {"exp_avgs", exp_avgs, true, false, pr.state},
                              {"exp_avg_sqs", exp_avg_sqs, true, false, pr.state},
                              {"max_exp_avg_sqs", max_exp_avg_sqs, true, /*may_be_empty=*/!amsgrad, pr.state},
                              master_list(master_params, pr.master_dtype)}),
             {beta1, beta2, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay},
             {}};
  const at::Device device = a.lists.size() ? a.lists.device() : at::Device(at::kCPU);
  check_steps(op, state_steps, a.lists.size(), device);
  a.scalars = prepare_scalars(op, a.lists, lr, grad_scale, found_inf);
  return a;
}

}  // namespace fused_optim
