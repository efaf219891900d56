// Argument handling for lion_ shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "../rules/lion.h"
#include "precision.h"
#include "tensor_lists.h"

namespace fused_optim {

// The C++ signature of fused_optim::lion_ (the schema is in csrc/ops.cpp).
using LionSignature = void(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, const at::Tensor& lr,
                           double beta1, double beta2, double weight_decay, bool maximize,
                           const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                           std::optional<at::TensorList> master_params);

enum LionList : size_t { kLionParams, kLionGrads, kLionExpAvgs, kLionMasters };

struct LionArgs {
  ResolvedPrecision precision;
  TensorLists lists;
  rules::LionHyper hyper;
  ScalarArgs scalars;
};

inline LionArgs prepare_lion(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, const at::Tensor& lr,
                             double beta1, double beta2, double weight_decay, bool maximize,
                             const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
                             const std::optional<at::TensorList>& master_params) {
  constexpr const char* op = "fused_optim.lion_";
  check_hyperparameter(op, "beta1", beta1, 0.0, 1.0);
  check_hyperparameter(op, "beta2", beta2, 0.0, 1.0);
  check_hyperparameter(op, "weight_decay", weight_decay, 0.0, INFINITY);
  const ResolvedPrecision pr = resolve_precision(op, params, grads, exp_avgs, master_params.value_or(at::TensorList()));
  LionArgs a{pr,
             TensorLists(op, {{"params", params, true},
                              {"grads", grads, false, false, pr.grad, /*convert=*/true},
                              {"exp_avgs", exp_avgs, true, false, pr.state},
                              master_list(master_params, pr.master_dtype)}),
             {beta1, beta2, weight_decay, maximize},
             {}};
  a.scalars = prepare_scalars(op, a.lists, lr, grad_scale, found_inf);
  return a;
}

}  // namespace fused_optim
