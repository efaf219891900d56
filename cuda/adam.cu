// CUDA binding and kernel of fused_optim::adam_: the shared rule (csrc/rules/adam.h) inside the multi-tensor
// engine. No host synchronisation: lr, grad_scale and found_inf may live on the device and are read in-kernel.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/_foreach_add.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/adam_args.h"
#include "multi_tensor_apply.cuh"

namespace fused_optim::cuda {
namespace {

// A scalar that is either a host value or one element of device memory (float32 or float64).
struct DeviceScalar {
  double host = 0.0;
  const float* f32 = nullptr;
  const double* f64 = nullptr;

  static DeviceScalar of(const at::Tensor& t, std::optional<double> host_value) {
    DeviceScalar s;
    if (host_value) {
      s.host = *host_value;
    } else if (t.scalar_type() == at::kDouble) {
      s.f64 = t.const_data_ptr<double>();
    } else {
      TORCH_CHECK(t.scalar_type() == at::kFloat, "fused_optim.adam_: a device scalar must be float32 or float64");
      s.f32 = t.const_data_ptr<float>();
    }
    return s;
  }
  __device__ double get() const { return f32 ? double(*f32) : f64 ? *f64 : host; }
};

constexpr int kVec = 4;

template <typename T, bool kAmsgrad>
struct AdamFunctor {
  static constexpr int kDepth = kAmsgrad ? 6 : 5;  // p, g, m, v, [max_v], step
  using acc_t = at::opmath_type<T>;

  rules::AdamHyper hyper;
  DeviceScalar lr;
  DeviceScalar grad_scale;  // host value is already the inverse; device value is the scale itself
  const float* found_inf;

  __device__ void operator()(const TensorListMeta<kDepth>& meta, const BlockRange& r) const {
    if (found_inf != nullptr && *found_inf != 0.0f) return;
    const float step = *static_cast<const float*>(meta.addresses[kDepth - 1][r.tensor]);  // already advanced
    const double inv_scale = (grad_scale.f32 || grad_scale.f64) ? 1.0 / grad_scale.get() : grad_scale.host;
    const rules::AdamCoeffs<acc_t> c = rules::adam_coeffs<acc_t>(hyper, lr.get(), step, inv_scale);

    T* ptr[kDepth - 1];
    bool aligned = true;
    for (int d = 0; d < kDepth - 1; ++d) {
      ptr[d] = static_cast<T*>(meta.addresses[d][r.tensor]);
      aligned = aligned && is_aligned<kVec>(ptr[d]);
    }
    for_each_in_block<kVec>(r, aligned, threadIdx.x, blockDim.x, [&](int64_t i, int count) {
      if (count == kVec) {
        Pack<T, kVec> in[kDepth - 1];
        for (int d = 0; d < kDepth - 1; ++d) in[d] = *reinterpret_cast<const Pack<T, kVec>*>(ptr[d] + i);
#pragma unroll
        for (int k = 0; k < kVec; ++k) update(in, k, c);
        for (int d = 0; d < kDepth - 1; ++d) {
          if (d != 1) *reinterpret_cast<Pack<T, kVec>*>(ptr[d] + i) = in[d];  // list 1 is the gradient
        }
      } else {
        Pack<T, 1> one[kDepth - 1];
        for (int d = 0; d < kDepth - 1; ++d) one[d].v[0] = ptr[d][i];
        update(one, 0, c);
        for (int d = 0; d < kDepth - 1; ++d) {
          if (d != 1) ptr[d][i] = one[d].v[0];
        }
      }
    });
  }

  template <int N>
  __device__ static void update(Pack<T, N> (&x)[kDepth - 1], int k, const rules::AdamCoeffs<acc_t>& c) {
    acc_t p = x[0].v[k], g = x[1].v[k], m = x[2].v[k], v = x[3].v[k];
    acc_t vmax = kAmsgrad ? acc_t(x[kDepth - 2].v[k]) : acc_t(0);
    rules::adam_update(p, g, m, v, vmax, c);
    x[0].v[k] = p;
    x[2].v[k] = m;
    x[3].v[k] = v;
    if (kAmsgrad) x[kDepth - 2].v[k] = vmax;
  }
};

template <typename T, bool kAmsgrad>
void launch_adam(const AdamArgs& a, at::TensorList state_steps, const DeviceScalar& lr, const DeviceScalar& grad_scale,
                 const float* found_inf) {
  using F = AdamFunctor<T, kAmsgrad>;
  const F functor{a.hyper, lr, grad_scale, found_inf};
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
  if (a.found_inf.value_or(false)) return;  // a host flag: nothing to do

  const DeviceScalar lr_s = DeviceScalar::of(lr, a.lr);
  DeviceScalar scale_s;
  scale_s.host = a.inv_grad_scale.value_or(1.0);
  if (grad_scale && !a.inv_grad_scale) scale_s = DeviceScalar::of(*grad_scale, std::nullopt);
  const float* found_inf_ptr = nullptr;
  if (found_inf && !a.found_inf) {
    TORCH_CHECK(found_inf->scalar_type() == at::kFloat, "fused_optim.adam_: found_inf on the device must be float32");
    found_inf_ptr = found_inf->const_data_ptr<float>();
  }

  // Like torch's fused path: advance every step counter in one launch, let the kernel read the new values, and
  // take the increment back where found_inf says the step was skipped.
  at::_foreach_add_(state_steps, 1.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.lists.dtype(), "fused_optim::adam_", [&] {
    if (amsgrad) {
      launch_adam<scalar_t, true>(a, state_steps, lr_s, scale_s, found_inf_ptr);
    } else {
      launch_adam<scalar_t, false>(a, state_steps, lr_s, scale_s, found_inf_ptr);
    }
  });
  if (found_inf_ptr != nullptr) at::_foreach_add_(state_steps, *found_inf, -1.0);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("adam_", &adam_);
}

}  // namespace fused_optim::cuda
