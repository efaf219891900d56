// Argument handling for sgd_ shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "../rules/sgd.h"
#include "precision.h"
#include "tensor_lists.h"

namespace fused_optim {

// The C++ signature of fused_optim::sgd_ (the schema is in csrc/ops.cpp).
using SgdSignature = void(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                          const at::Tensor& lr, double weight_decay, double momentum, double dampening, bool nesterov,
                          bool maximize, bool is_first_step, const std::optional<at::Tensor>& grad_scale,
                          const std::optional<at::Tensor>& found_inf, std::optional<at::TensorList> master_params);

enum SgdList : size_t { kSgdParams, kSgdGrads, kSgdMomentumBuffers, kSgdMasters };

struct SgdArgs {
  ResolvedPrecision precision;
  TensorLists lists;
  rules::SgdHyper hyper;
  ScalarArgs scalars;
};

inline SgdArgs prepare_sgd(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers,
                           const at::Tensor& lr, double weight_decay, double momentum, double dampening, bool nesterov,
                           bool maximize, const std::optional<at::Tensor>& grad_scale,
                           const std::optional<at::Tensor>& found_inf,
                           const std::optional<at::TensorList>& master_params) {
  constexpr const char* op = "fused_optim.sgd_";
  check_hyperparameter(op, "weight_decay", weight_decay, 0.0, INFINITY);
  check_hyperparameter(op, "momentum", momentum, 0.0, INFINITY);
  check_hyperparameter(op, "dampening", dampening, -INFINITY, INFINITY);
  TORCH_CHECK(!nesterov || (momentum > 0 && dampening == 0), op,
              ": Nesterov momentum requires a momentum and zero dampening");
  TORCH_CHECK(momentum != 0 || momentum_buffers.empty(), op, ": momentum_buffers given but momentum is 0");
  const ResolvedPrecision pr =
      resolve_precision(op, params, grads, momentum_buffers, master_params.value_or(at::TensorList()));
  SgdArgs a{pr,
            TensorLists(op, {{"params", params, true},
                             {"grads", grads, false, false, pr.grad, /*convert=*/true},
                             {"momentum_buffers", momentum_buffers, true, /*may_be_empty=*/momentum == 0, pr.state},
                             master_list(master_params, pr.master_dtype)}),
            {weight_decay, momentum, dampening, nesterov, maximize},
            {}};
  a.scalars = prepare_scalars(op, a.lists, lr, grad_scale, found_inf);
  return a;
}

}  // namespace fused_optim
