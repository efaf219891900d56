// CUDA binding and kernel of fused_optim::lion_: the shared rule (csrc/rules/lion.h) inside the multi-tensor
// engine, with no host synchronisation.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/lion_args.h"
#include "device_scalars.cuh"
#include "multi_tensor_apply.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

template <typename T>
struct LionFunctor {
  using acc_t = at::opmath_type<T>;

  rules::LionHyper hyper;
  DeviceScalars scalars;

  __device__ void operator()(const TensorListMeta<3>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const auto c = rules::lion_coeffs<acc_t>(hyper, scalars.lr.get(), scalars.inv_grad_scale());
    T* ptr[3];
    for (int d = 0; d < 3; ++d) ptr[d] = static_cast<T*>(meta.addresses[d][r.tensor]);
    apply_elementwise<T, acc_t, 3, 0b10, kVec>(ptr, r, [&](acc_t(&x)[3]) { rules::lion_update(x[0], x[1], x[2], c); });
  }
};

void lion_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, const at::Tensor& lr, double beta1,
           double beta2, double weight_decay, bool maximize, const std::optional<at::Tensor>& grad_scale,
           const std::optional<at::Tensor>& found_inf) {
  LionArgs a = prepare_lion(params, grads, exp_avgs, lr, beta1, beta2, weight_decay, maximize, grad_scale, found_inf);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;
  const DeviceScalars scalars = DeviceScalars::of("fused_optim.lion_", a.scalars, lr, grad_scale, found_inf);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.lists.dtype(), "fused_optim::lion_", [&] {
    multi_tensor_apply<3>(
        static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); },
        [&](int64_t i, int d) -> void* { return a.lists.ptr(d, i); }, LionFunctor<scalar_t>{a.hyper, scalars});
  });
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("lion_", &lion_);
}

}  // namespace fused_optim::cuda
