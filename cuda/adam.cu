// CUDA binding and kernel of fused_optim::adam_: the shared rule (csrc/rules/adam.h) inside the multi-tensor
// engine. No host synchronisation: lr, grad_scale and found_inf may live on the device (device_scalars.cuh).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/adam_args.h"
#include "device_scalars.cuh"
#include "multi_tensor_apply.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

template <typename T, bool kAmsgrad>
struct AdamFunctor {
  static constexpr int kDepth = kAmsgrad ? 6 : 5;  // p, g, m, v, [max_v], step
  using acc_t = at::opmath_type<T>;

  rules::AdamHyper hyper;
  DeviceScalars scalars;

  __device__ void operator()(const TensorListMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const float step = *static_cast<const float*>(meta.addresses[kDepth - 1][r.tensor]);  // already advanced
    const rules::AdamCoeffs<acc_t> c =
        rules::adam_coeffs<acc_t>(hyper, scalars.lr.get(), step, scalars.inv_grad_scale());

    constexpr int kLists = kDepth - 1;  // p, g, m, v[, max_v]
    T* ptr[kLists];
    for (int d = 0; d < kLists; ++d) ptr[d] = static_cast<T*>(meta.addresses[d][r.tensor]);
    apply_elementwise<T, acc_t, kLists, 0b10, kVec>(ptr, r, [&](acc_t(&x)[kLists]) {
      acc_t no_max = acc_t(0);  // never read: amsgrad is off
      rules::adam_update(x[0], x[1], x[2], x[3], kAmsgrad ? x[kLists - 1] : no_max, c);
    });
  }
};

template <typename T, bool kAmsgrad>
void launch_adam(const AdamArgs& a, at::TensorList state_steps, const DeviceScalars& scalars) {
  using F = AdamFunctor<T, kAmsgrad>;
  const F functor{a.hyper, scalars};
  multi_tensor_apply<F::kDepth>(
      static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); },
      [&](int64_t i, int d) -> void* { return d == F::kDepth - 1 ? state_steps[i].data_ptr() : a.lists.ptr(d, i); },
      functor);
}

void adam_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
           at::TensorList max_exp_avg_sqs, at::TensorList state_steps, const at::Tensor& lr, double beta1, double beta2,
           double weight_decay, double eps, bool amsgrad, bool maximize, bool decoupled_weight_decay,
           const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  AdamArgs a = prepare_adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2,
                            weight_decay, eps, amsgrad, maximize, decoupled_weight_decay, grad_scale, found_inf);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;  // a host flag: nothing to do

  const DeviceScalars scalars = DeviceScalars::of("fused_optim.adam_", a.scalars, lr, grad_scale, found_inf);

  advance_steps(state_steps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.lists.dtype(), "fused_optim::adam_", [&] {
    if (amsgrad) {
      launch_adam<scalar_t, true>(a, state_steps, scalars);
    } else {
      launch_adam<scalar_t, false>(a, state_steps, scalars);
    }
  });
  undo_skipped_steps(state_steps, scalars, found_inf);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("adam_", &adam_);
}

}  // namespace fused_optim::cuda
