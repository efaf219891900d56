// CUDA bindings and kernels of LAMB's two passes (csrc/rules/lamb.h): lamb_norms sums each tensor's squared norms
// (block sums, then one atomic add per block and norm), lamb_ performs the step with the trust ratio. No host
// synchronisation: the norms stay on the device. The atomic adds are in float64 whatever the compute type: the
// order in which blocks finish then moves only the last bits of a float64 sum, far below a float32 norm's rounding
// (float32 atomics made the trust ratios differ from run to run).
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../csrc/common/lamb_args.h"
#include "device_scalars.cuh"
#include "typed_io.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

// Pass 1: this step's directions, computed and dropped, leaving only the squared norms (in acc_t).
template <typename acc_t, bool kMaster>
struct LambNormsFunctor {
  static constexpr int kLists = 4;                     // p, g, exp_avg, exp_avg_sq
  static constexpr int kDepth = kLists + kMaster + 1;  // then the master, then the step

  rules::LambHyper hyper;
  DeviceScalars scalars;
  Dtypes<kLists> dtypes;
  Master master;
  double* sq_norms;  // (n, 2), zeroed

  __device__ void operator()(const LaunchMeta<kDepth>& meta, const BlockRange& r) const {
    const double step = scalars.next_step(meta.addresses[kDepth - 1][r.tensor]);  // lamb_ advances it
    const auto c = rules::lamb_coeffs<acc_t>(hyper, step, scalars.inv_grad_scale());
    void* ptr[kLists];
    for (int d = 0; d < kLists; ++d) ptr[d] = meta.addresses[d][r.tensor];
    const MasterRef m{kMaster ? meta.addresses[kLists][r.tensor] : nullptr, master};
    acc_t param_sq = 0;
    acc_t dir_sq = 0;
    apply_typed<acc_t, kLists, 0b1111, kVec>(ptr, dtypes.d, m, r, [&](acc_t(&x)[kLists]) {  // stores nothing
      const acc_t u = rules::lamb_direction(x[0], x[1], x[2], x[3], c);
      param_sq += x[0] * x[0];
      dir_sq += u * u;
    });
    double sums[2] = {param_sq, dir_sq};
    block_reduce<2>(sums, 0.0, [](double x, double y) { return x + y; });
    if (threadIdx.x == 0) {
      double* out = sq_norms + 2 * static_cast<int64_t>(meta.tensor_index[r.tensor]);
      atomicAdd(out, sums[0]);
      atomicAdd(out + 1, sums[1]);
    }
  }
};

// Pass 2: the same directions again, the moments stored and the parameters moved by lr * trust ratio.
template <typename acc_t, bool kMaster>
struct LambFunctor {
  static constexpr int kLists = 4;
  static constexpr int kDepth = kLists + kMaster + 1;

  rules::LambHyper hyper;
  DeviceScalars scalars;
  Dtypes<kLists> dtypes;
  Master master;
  const acc_t* sq_norms;

  __device__ void operator()(const LaunchMeta<kDepth>& meta, const BlockRange& r) const {
    if (scalars.skip()) return;
    const double step = scalars.step(meta.addresses[kDepth - 1][r.tensor]);  // already advanced
    const auto c = rules::lamb_coeffs<acc_t>(hyper, step, scalars.inv_grad_scale());
    const acc_t* norms = sq_norms + 2 * static_cast<int64_t>(meta.tensor_index[r.tensor]);
    const auto lr_ratio = static_cast<acc_t>(scalars.lr.get() * rules::lamb_trust_ratio(norms[0], norms[1]));
    void* ptr[kLists];
    for (int d = 0; d < kLists; ++d) ptr[d] = meta.addresses[d][r.tensor];
    const MasterRef m{kMaster ? meta.addresses[kLists][r.tensor] : nullptr, master};
    apply_typed<acc_t, kLists, 0b10, kVec>(
        ptr, dtypes.d, m, r, [&](acc_t(&x)[kLists]) { rules::lamb_update(x[0], x[1], x[2], x[3], lr_ratio, c); });
  }
};

template <bool kMaster, typename F>
void launch_lamb(const LambArgs& a, at::TensorList state_steps, const F& functor) {
  const Addresses<kMaster, F::kLists> address{
      a.lists, {kLambParams, kLambGrads, kLambExpAvgs, kLambExpAvgSqs}, kLambMasters, state_steps};
  multi_tensor_apply<F::kDepth>(
      static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); }, address, functor);
}

at::Tensor lamb_norms(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
                      at::TensorList state_steps, double beta1, double beta2, double eps, double weight_decay,
                      bool bias_correction, bool maximize, const std::optional<at::Tensor>& grad_scale,
                      std::optional<at::TensorList> master_params) {
  constexpr const char* op = "fused_optim.lamb_norms";
  LambArgs a =
      prepare_lamb(op, /*mutates=*/false, params, grads, exp_avgs, exp_avg_sqs, state_steps, std::nullopt, beta1, beta2,
                   eps, weight_decay, bias_correction, maximize, grad_scale, std::nullopt, master_params);
  const int64_t n = static_cast<int64_t>(a.lists.size());
  if (n == 0) return at::zeros({0, 2}, at::TensorOptions().dtype(at::kFloat));
  const c10::cuda::CUDAGuard guard(a.lists.device());
  at::Tensor sums = at::zeros({n, 2}, at::TensorOptions().dtype(at::kDouble).device(a.lists.device()));
  const DeviceScalars scalars =
      DeviceScalars::of(a.scalars, std::nullopt, grad_scale, std::nullopt).with_steps(state_steps);
  dispatch_compute(a.lists.dtype(), a.precision.master, [&](auto acc, auto has_master) {
    using acc_t = decltype(acc);
    constexpr bool kMaster = decltype(has_master)::value;
    using F = LambNormsFunctor<acc_t, kMaster>;
    launch_lamb<kMaster>(a, state_steps,
                         F{a.hyper, scalars, dtypes_of<F::kLists>(a.precision, a.lists.dtype()), a.precision.master,
                           sums.data_ptr<double>()});
  });
  a.lists.finish();
  return sums.to(compute_dtype(a.lists.dtype()));
}

void lamb_(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs, at::TensorList exp_avg_sqs,
           at::TensorList state_steps, const at::Tensor& sq_norms, const at::Tensor& lr, double beta1, double beta2,
           double eps, double weight_decay, bool bias_correction, bool maximize,
           const std::optional<at::Tensor>& grad_scale, const std::optional<at::Tensor>& found_inf,
           std::optional<at::TensorList> master_params) {
  constexpr const char* op = "fused_optim.lamb_";
  LambArgs a = prepare_lamb(op, /*mutates=*/true, params, grads, exp_avgs, exp_avg_sqs, state_steps, lr, beta1, beta2,
                            eps, weight_decay, bias_correction, maximize, grad_scale, found_inf, master_params);
  check_sq_norms(op, a.lists, sq_norms);
  if (a.lists.size() == 0) return;
  const c10::cuda::CUDAGuard guard(a.lists.device());
  if (a.scalars.found_inf.value_or(false)) return;
  const DeviceScalars scalars = DeviceScalars::of(a.scalars, lr, grad_scale, found_inf).with_steps(state_steps);
  advance_steps(state_steps);
  dispatch_compute(a.lists.dtype(), a.precision.master, [&](auto acc, auto has_master) {
    using acc_t = decltype(acc);
    constexpr bool kMaster = decltype(has_master)::value;
    using F = LambFunctor<acc_t, kMaster>;
    launch_lamb<kMaster>(a, state_steps,
                         F{a.hyper, scalars, dtypes_of<F::kLists>(a.precision, a.lists.dtype()), a.precision.master,
                           sq_norms.const_data_ptr<acc_t>()});
  });
  undo_skipped_steps(state_steps, scalars, found_inf);
  a.lists.finish();
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("lamb_norms", &lamb_norms);
  m.impl("lamb_", &lamb_);
}

}  // namespace fused_optim::cuda
