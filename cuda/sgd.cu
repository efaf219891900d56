// CUDA binding and kernel of fused_optim::sgd_: the shared rule (csrc/rules/sgd.h) inside the multi-tensor engine.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/sgd_args.h"
#include "device_scalars.cuh"
#include "multi_tensor_apply.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

template <typename T, bool kMomentum>
struct SgdFunctor {
  static constexpr int kDepth = kMomentum ? 3 : 2;  // p, g[, momentum_buffer]
  using acc_t = at::opmath_type<T>;

  rules::SgdHyper hyper;
  DeviceScalars scalars;
  bool first_step;

  __device__ void operator()(const TensorListMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const rules::SgdCoeffs<acc_t> c =
        rules::sgd_coeffs<acc_t>(hyper, scalars.lr.get(), scalars.inv_grad_scale(), first_step);
    T* ptr[kDepth];
    for (int d = 0; d < kDepth; ++d) ptr[d] = static_cast<T*>(meta.addresses[d][r.tensor]);
    apply_elementwise<T, acc_t, kDepth, 0b10, kVec>(ptr, r, [&](acc_t(&x)[kDepth]) {
      acc_t no_buffer = acc_t(0);  // never read: momentum is 0
      rules::sgd_update(x[0], x[1], kMomentum ? x[kDepth - 1] : no_buffer, c);
    });
  }
};

template <typename T, bool kMomentum>
void launch_sgd(const SgdArgs& a, const DeviceScalars& scalars, bool first_step) {
  using F = SgdFunctor<T, kMomentum>;
  multi_tensor_apply<F::kDepth>(
      static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); },
      [&](int64_t i, int d) -> void* { return a.lists.ptr(d, i); }, F{a.hyper, scalars, first_step});
}

void sgd_(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers, const at::Tensor& lr,
          double weight_decay, double momentum, double dampening, bool nesterov, bool maximize, bool is_first_step,
          const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  SgdArgs a = prepare_sgd(params, grads, momentum_buffers, lr, weight_decay, momentum, dampening, nesterov, maximize,
                          grad_scale, found_inf);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;
  const DeviceScalars scalars = DeviceScalars::of("fused_optim.sgd_", a.scalars, lr, grad_scale, found_inf);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.lists.dtype(), "fused_optim::sgd_", [&] {
    if (momentum != 0) {
      launch_sgd<scalar_t, true>(a, scalars, is_first_step);
    } else {
      launch_sgd<scalar_t, false>(a, scalars, is_first_step);
    }
  });
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("sgd_", &sgd_);
}

}  // namespace fused_optim::cuda
