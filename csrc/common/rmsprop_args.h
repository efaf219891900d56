// Argument handling for rmsprop_ shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "../rules/rmsprop.h"
#include "precision.h"
#include "tensor_lists.h"

namespace fused_optim {

// The C++ signature of fused_optim::rmsprop_ (the schema is in csrc/ops.cpp).
using RmspropSignature = void(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                              at::TensorList grad_avgs, at::TensorList momentum_buffers, at::TensorList state_steps,
                              const at::Tensor& lr, double alpha, double eps, double weight_decay, double momentum,
                              bool centered, bool maximize, const std::optional<at::Tensor>& grad_scale,
                              const std::optional<at::Tensor>& found_inf, std::optional<at::TensorList> master_params);

enum RmspropList : size_t { kRmsParams, kRmsGrads, kRmsSquareAvgs, kRmsGradAvgs, kRmsMomentumBuffers, kRmsMasters };

struct RmspropArgs {
  ResolvedPrecision precision;
  TensorLists lists;
  rules::RmspropHyper hyper;
  ScalarArgs scalars;
};

inline RmspropArgs prepare_rmsprop(at::TensorList params, at::TensorList grads, at::TensorList square_avgs,
                                   at::TensorList grad_avgs, at::TensorList momentum_buffers,
                                   at::TensorList state_steps, const at::Tensor& lr, double alpha, double eps,
                                   double weight_decay, double momentum, bool centered, bool maximize,
                                   const std::optional<at::Tensor>& grad_scale,
                                   const std::optional<at::Tensor>& found_inf,
                                   const std::optional<at::TensorList>& master_params) {
  constexpr const char* op = "fused_optim.rmsprop_";
  check_hyperparameter(op, "alpha", alpha, 0.0, INFINITY);
  check_hyperparameter(op, "eps", eps, 0.0, INFINITY);
  check_hyperparameter(op, "weight_decay", weight_decay, 0.0, INFINITY);
  check_hyperparameter(op, "momentum", momentum, 0.0, INFINITY);
  TORCH_CHECK(centered || grad_avgs.empty(), op, ": grad_avgs given but centered is false");
  TORCH_CHECK(momentum != 0 || momentum_buffers.empty(), op, ": momentum_buffers given but momentum is 0");
  const ResolvedPrecision pr =
      resolve_precision(op, params, grads, square_avgs, master_params.value_or(at::TensorList()));
  RmspropArgs a{pr,
                TensorLists(op, {{"params", params, true},
                                 {"grads", grads, false, false, pr.grad, /*convert=*/true},
                                 {"square_avgs", square_avgs, true, false, pr.state},
                                 {"grad_avgs", grad_avgs, true, /*may_be_empty=*/!centered, pr.state},
                                 {"momentum_buffers", momentum_buffers, true, /*may_be_empty=*/momentum == 0, pr.state},
                                 master_list(master_params, pr.master_dtype)}),
                {alpha, eps, weight_decay, momentum, centered, maximize},
                {}};
  check_steps(op, state_steps, a.lists.size(), a.lists.size() ? a.lists.device() : at::Device(at::kCPU));
  a.scalars = prepare_scalars(op, a.lists, lr, grad_scale, found_inf);
  return a;
}

}  // namespace fused_optim
