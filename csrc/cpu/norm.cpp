// CPU binding of fused_optim::grad_norm: the 2-norm or max-norm of all elements of a list of tensors, in one
// parallel region.
#include <ATen/Parallel.h>
#include <ATen/ops/scalar_tensor.h>
#include <torch/library.h>

#include <cmath>

#include "../common/norm_args.h"
#include "kernels.h"

namespace fused_optim::cpu {
namespace {

NormDtype norm_dtype_index(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return kNormF32;
    case at::kDouble: return kNormF64;
    case at::kHalf: return kNormF16;
    default: return kNormBF16;
  }
}

at::Tensor grad_norm(at::TensorList tensors, double norm_type) {
  NormArgs a = prepare_norm(tensors, norm_type);
  const auto options = at::TensorOptions().dtype(norm_dtype(a.lists));
  if (a.lists.size() == 0) return at::scalar_tensor(0.0, options);
  NormLaunch launch;
  launch.offsets = a.lists.offsets();
  launch.tensors.resize(a.lists.size());
  for (size_t i = 0; i < a.lists.size(); ++i) launch.tensors[i] = a.lists.ptr(0, i);
  launch.threads = at::get_num_threads();
  std::vector<double> partials(launch.threads, 0.0);
  launch.partials = partials.data();
  active_kernels().norm[norm_dtype_index(a.lists.dtype())][a.inf ? kLinf : kL2](launch);
  double result = 0.0;
  for (double p : partials) {
    result = a.inf ? ((std::isnan(p) || p > result) ? p : result) : result + p;  // thread order: deterministic
  }
  return at::scalar_tensor(a.inf ? result : std::sqrt(result), options);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CPU, m) {
  m.impl("grad_norm", &grad_norm);
}

}  // namespace fused_optim::cpu
