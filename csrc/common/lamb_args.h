// Argument handling for LAMB's two ops, lamb_moments_ and lamb_apply_, shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "../rules/lamb.h"
#include "tensor_lists.h"

namespace fused_optim {

// The C++ signatures (the schemas are in csrc/ops.cpp). lamb_moments_ returns the squared norms of each
// parameter and of its update direction as a float32 tensor of shape (n, 2); lamb_apply_ takes them back,
// possibly all-reduced across ranks in between.
using LambMomentsSignature = at::Tensor(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                                        at::TensorList exp_avg_sqs, at::TensorList state_steps, double beta1,
                                        double beta2, double eps, double weight_decay, bool bias_correction,
                                        bool maximize, const std::optional<at::Tensor>& grad_scale,
                                        const std::optional<at::Tensor>& found_inf);
using LambApplySignature = void(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                                at::TensorList state_steps, const at::Tensor& sq_norms, const at::Tensor& lr,
                                double beta1, double beta2, double eps, double weight_decay, bool bias_correction,
                                const std::optional<at::Tensor>& found_inf);

struct LambArgs {
  TensorLists lists;
  rules::LambHyper hyper;
  ScalarArgs scalars;
};

inline void check_lamb_hyper(const char* op, double beta1, double beta2, double eps, double weight_decay) {
  check_hyperparameter(op, "beta1", beta1, 0.0, 1.0, /*hi_open=*/true);
  check_hyperparameter(op, "beta2", beta2, 0.0, 1.0, /*hi_open=*/true);
  check_hyperparameter(op, "eps", eps, 0.0, INFINITY);
  check_hyperparameter(op, "weight_decay", weight_decay, 0.0, INFINITY);
}

enum LambMomentsList : size_t { kLambMParams, kLambMGrads, kLambMExpAvgs, kLambMExpAvgSqs };

inline LambArgs prepare_lamb_moments(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                                     at::TensorList exp_avg_sqs, at::TensorList state_steps, double beta1, double beta2,
                                     double eps, double weight_decay, bool bias_correction, bool maximize,
                                     const std::optional<at::Tensor>& grad_scale,
                                     const std::optional<at::Tensor>& found_inf) {
  constexpr const char* op = "fused_optim.lamb_moments_";
  check_lamb_hyper(op, beta1, beta2, eps, weight_decay);
  // params are read here (for the norms), not written.
  LambArgs a{TensorLists(op, {{"params", params, false},
                              {"grads", grads, false},
                              {"exp_avgs", exp_avgs, true},
                              {"exp_avg_sqs", exp_avg_sqs, true}}),
             {beta1, beta2, eps, weight_decay, bias_correction, maximize},
             {}};
  const at::Device device = a.lists.size() ? a.lists.device() : at::Device(at::kCPU);
  check_steps(op, state_steps, a.lists.size(), device);
  a.scalars = prepare_scalars(op, a.lists, /*lr=*/std::nullopt, grad_scale, found_inf);  // lr enters pass 2 only
  return a;
}

enum LambApplyList : size_t { kLambAParams, kLambAExpAvgs, kLambAExpAvgSqs };

inline LambArgs prepare_lamb_apply(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                                   at::TensorList state_steps, const at::Tensor& sq_norms, const at::Tensor& lr,
                                   double beta1, double beta2, double eps, double weight_decay, bool bias_correction,
                                   const std::optional<at::Tensor>& found_inf) {
  constexpr const char* op = "fused_optim.lamb_apply_";
  check_lamb_hyper(op, beta1, beta2, eps, weight_decay);
  LambArgs a{
      TensorLists(op, {{"params", params, true}, {"exp_avgs", exp_avgs, false}, {"exp_avg_sqs", exp_avg_sqs, false}}),
      {beta1, beta2, eps, weight_decay, bias_correction, false},
      {}};
  const at::Device device = a.lists.size() ? a.lists.device() : at::Device(at::kCPU);
  check_steps(op, state_steps, a.lists.size(), device);
  const int64_t n = static_cast<int64_t>(a.lists.size());
  TORCH_CHECK(sq_norms.defined() && sq_norms.scalar_type() == at::kFloat && sq_norms.dim() == 2 &&
                  sq_norms.size(0) == n && sq_norms.size(1) == 2 && sq_norms.is_contiguous(),
              op, ": sq_norms must be a contiguous float32 tensor of shape (", n, ", 2) as lamb_moments_ returns, got ",
              sq_norms.scalar_type(), " ", sq_norms.sizes());
  TORCH_CHECK(n == 0 || sq_norms.device() == device, op, ": sq_norms is on ", sq_norms.device(),
              " but the params are on ", device);
  a.scalars = prepare_scalars(op, a.lists, lr, std::nullopt, found_inf);
  return a;
}

}  // namespace fused_optim
