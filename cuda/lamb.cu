// CUDA bindings and kernels of LAMB's two passes (csrc/rules/lamb.h): lamb_moments_ updates the moments and sums
// each tensor's squared norms (block sums, then one atomic add per block and norm), lamb_apply_ moves the
// parameters by lr * trust ratio * direction. No host synchronisation: the norms stay on the device.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/lamb_args.h"
#include "device_scalars.cuh"
#include "multi_tensor_apply.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

template <typename T>
struct LambMomentsFunctor {
  static constexpr int kDepth = 5;  // p, g, exp_avg, exp_avg_sq, step
  using acc_t = at::opmath_type<T>;

  rules::LambHyper hyper;
  DeviceScalars scalars;
  float* sq_norms;  // (n, 2), zeroed

  __device__ void operator()(const TensorListMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;  // uniform over the block, so block_sum2's barrier is still reached by all or none
    const float step = *static_cast<const float*>(meta.addresses[kDepth - 1][r.tensor]);  // already advanced
    const auto c = rules::lamb_coeffs<acc_t>(hyper, step, scalars.inv_grad_scale());
    T* ptr[4];
    for (int d = 0; d < 4; ++d) ptr[d] = static_cast<T*>(meta.addresses[d][r.tensor]);
    acc_t param_sq = 0;
    acc_t dir_sq = 0;
    apply_elementwise<T, acc_t, 4, 0b11, kVec>(ptr, r, [&](acc_t(&x)[4]) {
      const acc_t u = rules::lamb_moments(x[0], x[1], x[2], x[3], c);
      param_sq += x[0] * x[0];
      dir_sq += u * u;
    });
    block_sum2(param_sq, dir_sq);
    if (threadIdx.x == 0) {
      float* out = sq_norms + 2 * static_cast<int64_t>(meta.tensor_index[r.tensor]);
      atomicAdd(out, static_cast<float>(param_sq));
      atomicAdd(out + 1, static_cast<float>(dir_sq));
    }
  }
};

template <typename T>
struct LambApplyFunctor {
  static constexpr int kDepth = 4;  // p, exp_avg, exp_avg_sq, step
  using acc_t = at::opmath_type<T>;

  rules::LambHyper hyper;
  DeviceScalars scalars;
  const float* sq_norms;

  __device__ void operator()(const TensorListMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const float step = *static_cast<const float*>(meta.addresses[kDepth - 1][r.tensor]);
    const auto c = rules::lamb_coeffs<acc_t>(hyper, step, 1.0);
    const float* norms = sq_norms + 2 * static_cast<int64_t>(meta.tensor_index[r.tensor]);
    const auto lr_ratio = static_cast<acc_t>(scalars.lr.get() * rules::lamb_trust_ratio(norms[0], norms[1]));
    T* ptr[3];
    for (int d = 0; d < 3; ++d) ptr[d] = static_cast<T*>(meta.addresses[d][r.tensor]);
    apply_elementwise<T, acc_t, 3, 0b110, kVec>(
        ptr, r, [&](acc_t(&x)[3]) { rules::lamb_apply(x[0], x[1], x[2], lr_ratio, c); });
  }
};

at::Tensor lamb_moments_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
                         at::TensorList exp_avg_sqs, at::TensorList state_steps, double beta1, double beta2, double eps,
                         double weight_decay, bool bias_correction, bool maximize,
                         const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  LambArgs a = prepare_lamb_moments(params, grads, exp_avgs, exp_avg_sqs, state_steps, beta1, beta2, eps, weight_decay,
                                    bias_correction, maximize, grad_scale, found_inf);
  const int64_t n = static_cast<int64_t>(a.lists.size());
  if (n == 0) return at::zeros({0, 2}, at::TensorOptions().dtype(at::kFloat));
  const c10::cuda::CUDAGuard guard(a.lists.device());
  at::Tensor sq_norms = at::zeros({n, 2}, at::TensorOptions().dtype(at::kFloat).device(a.lists.device()));
  if (a.scalars.found_inf.value_or(false)) return sq_norms;
  const DeviceScalars scalars =
      DeviceScalars::of("fused_optim.lamb_moments_", a.scalars, std::nullopt, grad_scale, found_inf);
  advance_steps(state_steps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.lists.dtype(), "fused_optim::lamb_moments_", [&] {
    using F = LambMomentsFunctor<scalar_t>;
    multi_tensor_apply<F::kDepth>(
        n, [&](int64_t i) { return a.lists.numel(i); },
        [&](int64_t i, int d) -> void* { return d == F::kDepth - 1 ? state_steps[i].data_ptr() : a.lists.ptr(d, i); },
        F{a.hyper, scalars, sq_norms.data_ptr<float>()});
  });
  undo_skipped_steps(state_steps, scalars, found_inf);
  a.lists.finish();
  return sq_norms;
}

void lamb_apply_(at::TensorList params, at::TensorList exp_avgs, at::TensorList exp_avg_sqs, at::TensorList state_steps,
                 const at::Tensor& sq_norms, const at::Tensor& lr, double beta1, double beta2, double eps,
                 double weight_decay, bool bias_correction, const std::optional<at::Tensor>& found_inf) {
  LambArgs a = prepare_lamb_apply(params, exp_avgs, exp_avg_sqs, state_steps, sq_norms, lr, beta1, beta2, eps,
                                  weight_decay, bias_correction, found_inf);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;
  const DeviceScalars scalars = DeviceScalars::of("fused_optim.lamb_apply_", a.scalars, lr, std::nullopt, found_inf);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.lists.dtype(), "fused_optim::lamb_apply_", [&] {
    using F = LambApplyFunctor<scalar_t>;
    multi_tensor_apply<F::kDepth>(
        static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); },
        [&](int64_t i, int d) -> void* { return d == F::kDepth - 1 ? state_steps[i].data_ptr() : a.lists.ptr(d, i); },
        F{a.hyper, scalars, sq_norms.const_data_ptr<float>()});
  });
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("lamb_moments_", &lamb_moments_);
  m.impl("lamb_apply_", &lamb_apply_);
}

}  // namespace fused_optim::cuda
