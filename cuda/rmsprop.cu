// CUDA binding and kernel of fused_optim::rmsprop_: the shared rule (csrc/rules/rmsprop.h) inside the multi-tensor
// engine, with no host synchronisation.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/rmsprop_args.h"
#include "device_scalars.cuh"
#include "multi_tensor_apply.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

template <typename T, bool kCentered, bool kMomentum>
struct RmspropFunctor {
  static constexpr int kDepth = 3 + kCentered + kMomentum;  // p, g, square_avg[, grad_avg][, momentum_buffer]
  using acc_t = at::opmath_type<T>;

  rules::RmspropHyper hyper;
  DeviceScalars scalars;

  __device__ void operator()(const TensorListMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const auto c = rules::rmsprop_coeffs<acc_t>(hyper, scalars.lr.get(), scalars.inv_grad_scale());
    T* ptr[kDepth];
    for (int d = 0; d < kDepth; ++d) ptr[d] = static_cast<T*>(meta.addresses[d][r.tensor]);
    apply_elementwise<T, acc_t, kDepth, 0b10, kVec>(ptr, r, [&](acc_t(&x)[kDepth]) {
      acc_t unused = acc_t(0);  // stands in for the lists this variant does not have; never read
      rules::rmsprop_update(x[0], x[1], x[2], kCentered ? x[3] : unused, kMomentum ? x[kDepth - 1] : unused, c);
    });
  }
};

template <typename T, bool kCentered, bool kMomentum>
void launch_rmsprop(const RmspropArgs& a, const DeviceScalars& scalars) {
  using F = RmspropFunctor<T, kCentered, kMomentum>;
  // The lists present, in the kernel's order: skip grad_avgs when not centered.
  multi_tensor_apply<F::kDepth>(
      static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); },
      [&](int64_t i, int d) -> void* {
        const size_t list = (d >= 3 && !kCentered) ? d + 1 : d;
        return a.lists.ptr(list, i);
      },
      F{a.hyper, scalars});
}

void rmsprop_(at::TensorList params, at::TensorList grads, at::TensorList square_avgs, at::TensorList grad_avgs,
              at::TensorList momentum_buffers, at::TensorList state_steps, const at::Tensor& lr, double alpha,
              double eps, double weight_decay, double momentum, bool centered, bool maximize,
              const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  RmspropArgs a = prepare_rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps, lr, alpha, eps,
                                  weight_decay, momentum, centered, maximize, grad_scale, found_inf);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;
  const DeviceScalars scalars = DeviceScalars::of("fused_optim.rmsprop_", a.scalars, lr, grad_scale, found_inf);
  advance_steps(state_steps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.lists.dtype(), "fused_optim::rmsprop_", [&] {
    if (centered) {
      momentum != 0 ? launch_rmsprop<scalar_t, true, true>(a, scalars)
                    : launch_rmsprop<scalar_t, true, false>(a, scalars);
    } else {
      momentum != 0 ? launch_rmsprop<scalar_t, false, true>(a, scalars)
                    : launch_rmsprop<scalar_t, false, false>(a, scalars);
    }
  });
  undo_skipped_steps(state_steps, scalars, found_inf);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("rmsprop_", &rmsprop_);
}

}  // namespace fused_optim::cuda
