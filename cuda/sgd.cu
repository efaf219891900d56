// CUDA binding and kernel of fused_optim::sgd_: the shared rule (csrc/rules/sgd.h) inside the multi-tensor engine,
// for every precision (typed_io.cuh).
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/sgd_args.h"
#include "device_scalars.cuh"
#include "typed_io.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

template <typename acc_t, bool kMomentum, bool kMaster>
struct SgdFunctor {
  static constexpr int kLists = kMomentum ? 3 : 2;  // p, g[, momentum_buffer]
  static constexpr int kDepth = kLists + kMaster;

  rules::SgdHyper hyper;
  DeviceScalars scalars;
  bool first_step;
  Dtypes<kLists> dtypes;
  Master master;

  __device__ void operator()(const LaunchMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const rules::SgdCoeffs<acc_t> c =
        rules::sgd_coeffs<acc_t>(hyper, scalars.lr.get(), scalars.inv_grad_scale(), first_step);
    void* ptr[kLists];
    for (int d = 0; d < kLists; ++d) ptr[d] = meta.addresses[d][r.tensor];
    const MasterRef m{kMaster ? meta.addresses[kLists][r.tensor] : nullptr, master};
    apply_typed<acc_t, kLists, 0b10, kVec>(ptr, dtypes.d, m, r, [&](acc_t(&x)[kLists]) {
      acc_t no_buffer = acc_t(0);  // never read: momentum is 0
      rules::sgd_update(x[0], x[1], kMomentum ? x[kLists - 1] : no_buffer, c);
    });
  }
};

template <typename acc_t, bool kMomentum, bool kMaster>
void launch_sgd(const SgdArgs& a, const DeviceScalars& scalars, bool first_step) {
  using F = SgdFunctor<acc_t, kMomentum, kMaster>;
  std::array<size_t, F::kLists> order;
  order[0] = kSgdParams;
  order[1] = kSgdGrads;
  if constexpr (kMomentum) order[2] = kSgdMomentumBuffers;
  const Addresses<kMaster, F::kLists> address{a.lists, order, kSgdMasters, {}};
  multi_tensor_apply<F::kDepth>(
      static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); }, address,
      F{a.hyper, scalars, first_step, dtypes_of<F::kLists>(a.precision, a.lists.dtype()), a.precision.master});
}

void sgd_(at::TensorList params, at::TensorList grads, at::TensorList momentum_buffers, const at::Tensor& lr,
          double weight_decay, double momentum, double dampening, bool nesterov, bool maximize, bool is_first_step,
          const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
          std::optional<at::TensorList> master_params) {
  SgdArgs a = prepare_sgd(params, grads, momentum_buffers, lr, weight_decay, momentum, dampening, nesterov, maximize,
                          grad_scale, found_inf, master_params);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;
  const DeviceScalars scalars = DeviceScalars::of(a.scalars, lr, grad_scale, found_inf);
  dispatch_compute(a.lists.dtype(), a.precision.master, [&](auto acc, auto has_master) {
    using acc_t = decltype(acc);
    constexpr bool kMaster = decltype(has_master)::value;
    momentum != 0 ? launch_sgd<acc_t, true, kMaster>(a, scalars, is_first_step)
                  : launch_sgd<acc_t, false, kMaster>(a, scalars, is_first_step);
  });
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("sgd_", &sgd_);
}

}  // namespace fused_optim::cuda
