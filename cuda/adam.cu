// CUDA binding and kernel of fused_optim::adam_: the shared rule (csrc/rules/adam.h) inside the multi-tensor
// engine, for every precision (typed_io.cuh). No host synchronisation: lr, grad_scale and found_inf may live on
// the device (device_scalars.cuh).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/adam_args.h"
#include "device_scalars.cuh"
#include "typed_io.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

template <typename acc_t, bool kAmsgrad, bool kMaster>
struct AdamFunctor {
  static constexpr int kLists = kAmsgrad ? 5 : 4;      // p, g, m, v[, max_v]
  static constexpr int kDepth = kLists + kMaster + 1;  // then the master, then the step

  rules::AdamHyper hyper;
  DeviceScalars scalars;
  Dtypes<kLists> dtypes;
  Master master;

  __device__ void operator()(const LaunchMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const double step = scalars.step(meta.addresses[kDepth - 1][r.tensor]);  // already advanced
    const rules::AdamCoeffs<acc_t> c =
        rules::adam_coeffs<acc_t>(hyper, scalars.lr.get(), step, scalars.inv_grad_scale());
    void* ptr[kLists];
    for (int d = 0; d < kLists; ++d) ptr[d] = meta.addresses[d][r.tensor];
    const MasterRef m{kMaster ? meta.addresses[kLists][r.tensor] : nullptr, master};
    apply_typed<acc_t, kLists, 0b10, kVec>(ptr, dtypes.d, m, r, [&](acc_t(&x)[kLists]) {
      acc_t no_max = acc_t(0);  // never read: amsgrad is off
      rules::adam_update(x[0], x[1], x[2], x[3], kAmsgrad ? x[kLists - 1] : no_max, c);
    });
  }
};

template <typename acc_t, bool kAmsgrad, bool kMaster>
void launch_adam(const AdamArgs& a, at::TensorList state_steps, const DeviceScalars& scalars) {
  using F = AdamFunctor<acc_t, kAmsgrad, kMaster>;
  std::array<size_t, F::kLists> order;
  order[0] = kParams;
  order[1] = kGrads;
  order[2] = kExpAvgs;
  order[3] = kExpAvgSqs;
  if constexpr (kAmsgrad) order[4] = kMaxExpAvgSqs;
  const Addresses<kMaster, F::kLists> address{a.lists, order, kAdamMasters, state_steps};
  multi_tensor_apply<F::kDepth>(
      static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); }, address,
      F{a.hyper, scalars, dtypes_of<F::kLists>(a.precision, a.lists.dtype()), a.precision.master});
}

void adam_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
           at::TensorList max_exp_avg_sqs, at::TensorList state_steps, const at::Tensor& lr, double beta1, double beta2,
           double weight_decay, double eps, bool amsgrad, bool maximize, bool decoupled_weight_decay,
           const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
           std::optional<at::TensorList> master_params) {
  AdamArgs a =
      prepare_adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2, weight_decay,
                   eps, amsgrad, maximize, decoupled_weight_decay, grad_scale, found_inf, master_params);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;  // a host flag: nothing to do
  const DeviceScalars scalars = DeviceScalars::of(a.scalars, lr, grad_scale, found_inf).with_steps(state_steps);
  advance_steps(state_steps);
  dispatch_compute(a.lists.dtype(), a.precision.master, [&](auto acc, auto has_master) {
    using acc_t = decltype(acc);
    constexpr bool kMaster = decltype(has_master)::value;
    amsgrad ? launch_adam<acc_t, true, kMaster>(a, state_steps, scalars)
            : launch_adam<acc_t, false, kMaster>(a, state_steps, scalars);
  });
  undo_skipped_steps(state_steps, scalars, found_inf);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("adam_", &adam_);
}

}  // namespace fused_optim::cuda
