// Argument handling for grad_norm (the multi-tensor norm behind clipping) shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>

#include "tensor_lists.h"

namespace fused_optim {

// The C++ signature of fused_optim::grad_norm (the schema is in csrc/ops.cpp).
using GradNormSignature = at::Tensor(at::TensorList tensors, double norm_type);

struct NormArgs {
  TensorLists lists;
  bool inf;  // the max-norm; else the 2-norm
};

inline NormArgs prepare_norm(at::TensorList tensors, double norm_type) {
  constexpr const char* op = "fused_optim.grad_norm";
  TORCH_CHECK(norm_type == 2.0 || std::isinf(norm_type), op, ": norm_type must be 2 or inf, got ", norm_type,
              " (fused_optim.clip_grad_norm_ hands other norms to torch)");
  return {TensorLists(op, {{"tensors", tensors, false}}), std::isinf(norm_type)};
}

// The norm's dtype: float64 for float64 tensors, else float32 (as torch computes 16-bit norms).
inline at::ScalarType norm_dtype(const TensorLists& lists) {
  return lists.size() && lists.dtype() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace fused_optim
