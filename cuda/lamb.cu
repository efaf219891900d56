// CUDA bindings and kernels of LAMB's two passes (csrc/rules/lamb.h): lamb_norms sums each tensor's squared norms
// (block sums, then one atomic add per block and norm), lamb_ performs the step with the trust ratio. No host
// synchronisation: the norms stay on the device.
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

// Pass 1: this step's directions, computed and dropped, leaving only the squared norms (norm_t: the compute type).
template <typename T>
struct LambNormsFunctor {
  static constexpr int kDepth = 5;  // p, g, exp_avg, exp_avg_sq, step
  using acc_t = at::opmath_type<T>;

  rules::LambHyper hyper;
  DeviceScalars scalars;
  acc_t* sq_norms;  // (n, 2), zeroed

  __device__ void operator()(const TensorListMeta<kDepth>& meta, const BlockRange& r) const {
    const float step = *static_cast<const float*>(meta.addresses[kDepth - 1][r.tensor]) + 1.0f;  // lamb_ advances
    const auto c = rules::lamb_coeffs<acc_t>(hyper, step, scalars.inv_grad_scale());
    T* ptr[4];
    for (int d = 0; d < 4; ++d) ptr[d] = static_cast<T*>(meta.addresses[d][r.tensor]);
    acc_t param_sq = 0;
    acc_t dir_sq = 0;
    apply_elementwise<T, acc_t, 4, 0b1111, kVec>(ptr, r, [&](acc_t(&x)[4]) {  // stores nothing
      const acc_t u = rules::lamb_direction(x[0], x[1], x[2], x[3], c);
      param_sq += x[0] * x[0];
      dir_sq += u * u;
    });
    block_sum2(param_sq, dir_sq);
    if (threadIdx.x == 0) {
      acc_t* out = sq_norms + 2 * static_cast<int64_t>(meta.tensor_index[r.tensor]);
      atomicAdd(out, param_sq);
      atomicAdd(out + 1, dir_sq);
    }
  }
};

// Pass 2: the same directions again, the moments stored and the parameters moved by lr * trust ratio.
template <typename T>
struct LambFunctor {
  static constexpr int kDepth = 5;  // p, g, exp_avg, exp_avg_sq, step
  using acc_t = at::opmath_type<T>;

  rules::LambHyper hyper;
  DeviceScalars scalars;
  const acc_t* sq_norms;

  __device__ void operator()(const TensorListMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const float step = *static_cast<const float*>(meta.addresses[kDepth - 1][r.tensor]);  // already advanced
    const auto c = rules::lamb_coeffs<acc_t>(hyper, step, scalars.inv_grad_scale());
    const acc_t* norms = sq_norms + 2 * static_cast<int64_t>(meta.tensor_index[r.tensor]);
    const auto lr_ratio = static_cast<acc_t>(scalars.lr.get() * rules::lamb_trust_ratio(norms[0], norms[1]));
    T* ptr[4];
    for (int d = 0; d < 4; ++d) ptr[d] = static_cast<T*>(meta.addresses[d][r.tensor]);
    apply_elementwise<T, acc_t, 4, 0b10, kVec>(
        ptr, r, [&](acc_t(&x)[4]) { rules::lamb_update(x[0], x[1], x[2], x[3], lr_ratio, c); });
  }
};

template <typename F>
void launch_lamb(const LambArgs& a, at::TensorList state_steps, const F& functor) {
  multi_tensor_apply<F::kDepth>(
      static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); },
      [&](int64_t i, int d) -> void* { return d == F::kDepth - 1 ? state_steps[i].data_ptr() : a.lists.ptr(d, i); },
      functor);
}

at::Tensor lamb_norms(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                      at::TensorList state_steps, double beta1, double beta2, double eps, double weight_decay,
                      bool bias_correction, bool maximize, const std::optional<at::Tensor>& grad_scale) {
  constexpr const char* op = "fused_optim.lamb_norms";
  LambArgs a = prepare_lamb(op, /*mutates=*/false, params, grads, exp_avgs, exp_avg_sqs, state_steps, std::nullopt,
                            beta1, beta2, eps, weight_decay, bias_correction, maximize, grad_scale, std::nullopt);
  const int64_t n = static_cast<int64_t>(a.lists.size());
  if (n == 0) return at::zeros({0, 2}, at::TensorOptions().dtype(at::kFloat));
  const c10::cuda::CUDAGuard guard(a.lists.device());
  at::Tensor sq_norms =
      at::zeros({n, 2}, at::TensorOptions().dtype(lamb_norm_dtype(a.lists.dtype())).device(a.lists.device()));
  const DeviceScalars scalars = DeviceScalars::of(op, a.scalars, std::nullopt, grad_scale, std::nullopt);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.lists.dtype(), "fused_optim::lamb_norms", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_lamb(a, state_steps, LambNormsFunctor<scalar_t>{a.hyper, scalars, sq_norms.data_ptr<acc_t>()});
  });
  a.lists.finish();
  return sq_norms;
}

void lamb_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
           at::TensorList state_steps, const at::Tensor& sq_norms, const at::Tensor& lr, double beta1, double beta2,
           double eps, double weight_decay, bool bias_correction, bool maximize,
           const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  constexpr const char* op = "fused_optim.lamb_";
  LambArgs a = prepare_lamb(op, /*mutates=*/true, params, grads, exp_avgs, exp_avg_sqs, state_steps, lr, beta1, beta2,
                            eps, weight_decay, bias_correction, maximize, grad_scale, found_inf);
  check_sq_norms(op, a.lists, sq_norms);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;
  const DeviceScalars scalars = DeviceScalars::of(op, a.scalars, lr, grad_scale, found_inf);
  advance_steps(state_steps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.lists.dtype(), "fused_optim::lamb_", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_lamb(a, state_steps, LambFunctor<scalar_t>{a.hyper, scalars, sq_norms.const_data_ptr<acc_t>()});
  });
  undo_skipped_steps(state_steps, scalars, found_inf);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("lamb_norms", &lamb_norms);
  m.impl("lamb_", &lamb_);
}

}  // namespace fused_optim::cuda
