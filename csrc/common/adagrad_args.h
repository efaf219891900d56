// Argument handling for adagrad_ shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "../rules/adagrad.h"
#include "precision.h"
#include "tensor_lists.h"

namespace fused_optim {

// The C++ signature of fused_optim::adagrad_ (the schema is in csrc/ops.cpp).
using AdagradSignature = void(at::TensorList params, at::TensorList grads, at::TensorList state_sums,
                              at::TensorList state_steps, const at::Tensor& lr, double lr_decay, double weight_decay,
                              double eps, bool maximize, const std::optional<at::Tensor>& grad_scale,
                              const std::optional<at::Tensor>& found_inf, std::optional<at::TensorList> master_params);

enum AdagradList : size_t { kAdagradParams, kAdagradGrads, kAdagradSums, kAdagradMasters };

struct AdagradArgs {
  ResolvedPrecision precision;
  TensorLists lists;
  rules::AdagradHyper hyper;
  ScalarArgs scalars;
};

inline AdagradArgs prepare_adagrad(at::TensorList params, at::TensorList grads, at::TensorList state_sums,
                                   at::TensorList state_steps, const at::Tensor& lr, double lr_decay,
                                   double weight_decay, double eps, bool maximize,
                                   const std::optional<at::Tensor>& grad_scale,
                                   const std::optional<at::Tensor>& found_inf,
                                   const std::optional<at::TensorList>& master_params) {
  constexpr const char* op = "fused_optim.adagrad_";
  check_hyperparameter(op, "lr_decay", lr_decay, 0.0, INFINITY);
  check_hyperparameter(op, "weight_decay", weight_decay, 0.0, INFINITY);
  check_hyperparameter(op, "eps", eps, 0.0, INFINITY);
  const ResolvedPrecision pr =
      resolve_precision(op, params, grads, state_sums, master_params.value_or(at::TensorList()));
  AdagradArgs a{pr,
                TensorLists(op, {{"params", params, true},
                                 {"grads", grads, false, false, pr.grad, /*convert=*/true},
                                 {"state_sums", state_sums, true, false, pr.state},
                                 master_list(master_params, pr.master_dtype)}),
                {lr_decay, weight_decay, eps, maximize},
                {}};
  check_steps(op, state_steps, a.lists.size(), a.lists.size() ? a.lists.device() : at::Device(at::kCPU));
  a.scalars = prepare_scalars(op, a.lists, lr, grad_scale, found_inf);
  return a;
}

}  // namespace fused_optim
