// CUDA binding and kernel of fused_optim::adagrad_: the shared rule (csrc/rules/adagrad.h) inside the multi-tensor
// engine, with no host synchronisation.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/adagrad_args.h"
#include "device_scalars.cuh"
#include "multi_tensor_apply.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

template <typename T>
struct AdagradFunctor {
  static constexpr int kDepth = 4;  // p, g, sum, step
  using acc_t = at::opmath_type<T>;

  rules::AdagradHyper hyper;
  DeviceScalars scalars;

  __device__ void operator()(const TensorListMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const float step = *static_cast<const float*>(meta.addresses[kDepth - 1][r.tensor]);  // already advanced
    const auto c = rules::adagrad_coeffs<acc_t>(hyper, scalars.lr.get(), step, scalars.inv_grad_scale());
    T* ptr[3];
    for (int d = 0; d < 3; ++d) ptr[d] = static_cast<T*>(meta.addresses[d][r.tensor]);
    apply_elementwise<T, acc_t, 3, 0b10, kVec>(ptr, r,
                                               [&](acc_t(&x)[3]) { rules::adagrad_update(x[0], x[1], x[2], c); });
  }
};

void adagrad_(at::TensorList params, at::TensorList grads, at::TensorList state_sums, at::TensorList state_steps,
              const at::Tensor& lr, double lr_decay, double weight_decay, double eps, bool maximize,
              const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf) {
  AdagradArgs a = prepare_adagrad(params, grads, state_sums, state_steps, lr, lr_decay, weight_decay, eps, maximize,
                                  grad_scale, found_inf);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;
  const DeviceScalars scalars = DeviceScalars::of("fused_optim.adagrad_", a.scalars, lr, grad_scale, found_inf);
  advance_steps(state_steps);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.lists.dtype(), "fused_optim::adagrad_", [&] {
    multi_tensor_apply<4>(
        static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); },
        [&](int64_t i, int d) -> void* { return d == 3 ? state_steps[i].data_ptr() : a.lists.ptr(d, i); },
        AdagradFunctor<scalar_t>{a.hyper, scalars});
  });
  undo_skipped_steps(state_steps, scalars, found_inf);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("adagrad_", &adagrad_);
}

}  // namespace fused_optim::cuda
