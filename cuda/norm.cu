// CUDA binding and kernel of fused_optim::grad_norm: block sums (or maxima) of all tensors' elements, one atomic
// per block, then a square root in place. No host synchronisation. Sums are added across blocks in float64: the
// order in which blocks finish then moves only the last bits of a float64 sum, far below a float32 norm's rounding
// (float32 atomics made the norm itself differ from run to run). Maxima are exact in any order.
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <type_traits>

#include "../csrc/common/norm_args.h"
#include "typed_io.cuh"

namespace fused_optim::cuda {
namespace {

constexpr int kVec = 4;

// max over non-negative floats (and NaN, whose bits compare above +inf) through their integer bits.
__device__ inline void atomic_max_nonneg(float* address, float v) {
  atomicMax(reinterpret_cast<int*>(address), __float_as_int(v));
}
__device__ inline void atomic_max_nonneg(double* address, double v) {
  atomicMax(reinterpret_cast<unsigned long long*>(address), static_cast<unsigned long long>(__double_as_longlong(v)));
}

template <typename acc_t, bool kInf>
struct NormFunctor {
  using out_t = std::conditional_t<kInf, acc_t, double>;
  Dtypes<1> dtypes;
  out_t* out;

  __device__ void operator()(const LaunchMeta<1>& meta, const BlockRange& r) const {
    void* ptr[1] = {meta.addresses[0][r.tensor]};
    acc_t value = 0;
    apply_typed<acc_t, 1, 0b1, kVec>(ptr, dtypes.d, MasterRef{}, r, [&](acc_t(&x)[1]) {
      if constexpr (kInf) {
        const acc_t a = ::fabs(x[0]);  // clears the sign of a NaN too: a negative NaN would lose the atomicMax
        value = (a != a || a > value) ? a : value;  // NaN-propagating, like torch's norm
      } else {
        value += x[0] * x[0];
      }
    });
    if constexpr (kInf) {
      acc_t v[1] = {value};  // one atomic per block: per thread, a billion elements would queue millions on one word
      block_reduce<1>(v, acc_t(0), [](acc_t x, acc_t y) { return (y != y || y > x) ? y : x; });
      if (threadIdx.x == 0 && v[0] != acc_t(0)) atomic_max_nonneg(out, v[0]);
    } else {
      double sum[1] = {value};
      block_reduce<1>(sum, 0.0, [](double x, double y) { return x + y; });
      if (threadIdx.x == 0) atomicAdd(out, sum[0]);
    }
  }
};

at::Tensor grad_norm(at::TensorList tensors, double norm_type) {
  NormArgs a = prepare_norm(tensors, norm_type);
  if (a.lists.size() == 0) return at::zeros({}, at::TensorOptions().dtype(at::kFloat));
  const c10::cuda::CUDAGuard guard(a.lists.device());
  const at::ScalarType result_dtype = norm_dtype(a.lists);
  at::Tensor out =
      at::zeros({}, at::TensorOptions().dtype(a.inf ? result_dtype : at::kDouble).device(a.lists.device()));
  Dtypes<1> dtypes;
  dtypes.d[0] = dtype_code(a.lists.dtype());
  const auto launch = [&](auto functor) {
    multi_tensor_apply<1>(
        static_cast<int64_t>(a.lists.size()), [&](int64_t i) { return a.lists.numel(i); },
        [&](int64_t i, int) -> void* { return a.lists.ptr(0, i); }, functor);
  };
  if (result_dtype == at::kDouble) {
    a.inf ? launch(NormFunctor<double, true>{dtypes, out.data_ptr<double>()})
          : launch(NormFunctor<double, false>{dtypes, out.data_ptr<double>()});
  } else {
    a.inf ? launch(NormFunctor<float, true>{dtypes, out.data_ptr<float>()})
          : launch(NormFunctor<float, false>{dtypes, out.data_ptr<double>()});
  }
  if (a.inf) return out;
  return out.sqrt_().to(result_dtype);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_optim, CUDA, m) {
  m.impl("grad_norm", &grad_norm);
}

}  // namespace fused_optim::cuda
