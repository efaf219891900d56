// CUDA binding and kernel of fused_optim::adagrad_: the shared rule (csrc/rules/adagrad.h) inside the multi-tensor
// engine, for every precision (typed_io.cuh), with no host synchronisation.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/adagrad_args.h"
#include "device_scalars.cuh"
#include "typed_io.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

template <typename acc_t, bool kMaster>
struct AdagradFunctor {
  static constexpr int kLists = 3;                     // p, g, sum
  static constexpr int kDepth = kLists + kMaster + 1;  // then the master, then the step

  rules::AdagradHyper hyper;
  DeviceScalars scalars;
  Dtypes<kLists> dtypes;
  Master master;

  __device__ void operator()(const LaunchMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const double step = scalars.step(meta.addresses[kDepth - 1][r.tensor]);  // already advanced
    const auto c = rules::adagrad_coeffs<acc_t>(hyper, scalars.lr.get(), step, scalars.inv_grad_scale());
    void* ptr[kLists];
    for (int d = 0; d < kLists; ++d) ptr[d] = meta.addresses[d][r.tensor];
    const MasterRef m{kMaster ? meta.addresses[kLists][r.tensor] : nullptr, master};
    apply_typed<acc_t, kLists, 0b10, kVec>(ptr, dtypes.d, m, r,
                                           [&](acc_t(&x)[kLists]) { rules::adagrad_update(x[0], x[1], x[2], c); });
  }
};

void adagrad_(at::TensorList params, at::TensorList grads, at::TensorList state_sums, at::TensorList state_steps,
              const at::Tensor& lr, double lr_decay, double weight_decay, double eps, bool maximize,
              const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
              std::optional<at::TensorList> master_params) {
  AdagradArgs a = prepare_adagrad(params, grads, state_sums, state_steps, lr, lr_decay, weight_decay, eps, maximize,
                                  grad_scale, found_inf, master_params);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;
  const DeviceScalars scalars = DeviceScalars::of(a.scalars, lr, grad_scale, found_inf).with_steps(state_steps);
  advance_steps(state_steps);
  dispatch_compute(a.lists.dtype(), a.precision.master, [&](auto acc, auto has_master) {
    using F = AdagradFunctor<decltype(acc), decltype(has_master)::value>;
    const Addresses<decltype(has_master)::value, F::kLists> address{
        a.lists, {kAdagradParams, kAdagradGrads, kAdagradSums}, kAdagradMasters, state_steps};
    multi_tensor_apply<F::kDepth>(
        static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); }, address,
        F{a.hyper, scalars, dtypes_of<F::kLists>(a.precision, a.lists.dtype()), a.precision.master});
  });
  undo_skipped_steps(state_steps, scalars, found_inf);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("adagrad_", &adagrad_);
}

}  // namespace fused_optim::cuda
