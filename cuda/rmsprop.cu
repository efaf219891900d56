// CUDA binding and kernel of fused_optim::rmsprop_: the shared rule (csrc/rules/rmsprop.h) inside the multi-tensor
// engine, for every precision (typed_io.cuh), with no host synchronisation.
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/rmsprop_args.h"
#include "device_scalars.cuh"
#include "typed_io.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

template <typename acc_t, bool kCentered, bool kMomentum, bool kMaster>
struct RmspropFunctor {
  static constexpr int kLists = 3 + kCentered + kMomentum;  // p, g, square_avg[, grad_avg][, momentum_buffer]
  static constexpr int kDepth = kLists + kMaster;

  rules::RmspropHyper hyper;
  DeviceScalars scalars;
  Dtypes<kLists> dtypes;
  Master master;

  __device__ void operator()(const LaunchMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const auto c = rules::rmsprop_coeffs<acc_t>(hyper, scalars.lr.get(), scalars.inv_grad_scale());
    void* ptr[kLists];
    for (int d = 0; d < kLists; ++d) ptr[d] = meta.addresses[d][r.tensor];
    const MasterRef m{kMaster ? meta.addresses[kLists][r.tensor] : nullptr, master};
    apply_typed<acc_t, kLists, 0b10, kVec>(ptr, dtypes.d, m, r, [&](acc_t(&x)[kLists]) {
      acc_t unused = acc_t(0);  // stands in for the lists this variant does not have; never read
      rules::rmsprop_update(x[0], x[1], x[2], kCentered ? x[3] : unused, kMomentum ? x[kLists - 1] : unused, c);
    });
  }
};

template <typename acc_t, bool kCentered, bool kMomentum, bool kMaster>
void launch_rmsprop(const RmspropArgs& a, const DeviceScalars& scalars) {
  using F = RmspropFunctor<acc_t, kCentered, kMomentum, kMaster>;
  std::array<size_t, F::kLists> order;
  order[0] = kRmsParams;
  order[1] = kRmsGrads;
  order[2] = kRmsSquareAvgs;
  if constexpr (kCentered) order[3] = kRmsGradAvgs;
  if constexpr (kMomentum) order[F::kLists - 1] = kRmsMomentumBuffers;
  const Addresses<kMaster, F::kLists> address{a.lists, order, kRmsMasters, {}};
  multi_tensor_apply<F::kDepth>(
      static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); }, address,
      F{a.hyper, scalars, dtypes_of<F::kLists>(a.precision, a.lists.dtype()), a.precision.master});
}

void rmsprop_(at::TensorList params, at::TensorList grads, at::TensorList square_avgs, at::TensorList grad_avgs,
              at::TensorList momentum_buffers, at::TensorList state_steps, const at::Tensor& lr, double alpha,
              double eps, double weight_decay, double momentum, bool centered, bool maximize,
              const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
              std::optional<at::TensorList> master_params) {
  RmspropArgs a = prepare_rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, state_steps, lr, alpha, eps,
                                  weight_decay, momentum, centered, maximize, grad_scale, found_inf, master_params);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;
  const DeviceScalars scalars = DeviceScalars::of(a.scalars, lr, grad_scale, found_inf);
  advance_steps(state_steps);
  dispatch_compute(a.lists.dtype(), a.precision.master, [&](auto acc, auto has_master) {
    using acc_t = decltype(acc);
    constexpr bool kMaster = decltype(has_master)::value;
    if (centered) {
      momentum != 0 ? launch_rmsprop<acc_t, true, true, kMaster>(a, scalars)
                    : launch_rmsprop<acc_t, true, false, kMaster>(a, scalars);
    } else {
      momentum != 0 ? launch_rmsprop<acc_t, false, true, kMaster>(a, scalars)
                    : launch_rmsprop<acc_t, false, false, kMaster>(a, scalars);
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
