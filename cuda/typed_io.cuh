// Loads and stores of arrays whose dtype the kernel learns at run time. The CPU kernels are compiled once per
// precision (csrc/common/precision.h); compiling every CUDA kernel for every combination would multiply nvcc's
// time by twenty, so a CUDA kernel is compiled per compute type only, and each array carries its dtype as a kernel
// argument. The branch on it is uniform across the grid, and the loops are bound by memory, not instructions.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <array>
#include <cstdint>
#include <type_traits>

#include "../csrc/common/precision.h"
#include "../csrc/common/tensor_lists.h"
#include "launch_plan.h"
#include "multi_tensor_apply.cuh"

namespace fused_optim::cuda {

enum class Dtype : uint8_t { kF32, kF64, kF16, kBF16 };

inline Dtype dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return Dtype::kF32;
    case at::kDouble: return Dtype::kF64;
    case at::kHalf: return Dtype::kF16;
    case at::kBFloat16: return Dtype::kBF16;
    default: TORCH_CHECK(false, "fused_optim: no CUDA kernel for dtype ", t);
  }
}

__host__ __device__ inline int dtype_size(Dtype d) {
  return d == Dtype::kF64 ? 8 : d == Dtype::kF32 ? 4 : 2;
}

template <typename acc_t>
__device__ inline acc_t load1(const void* p, Dtype d, int64_t i) {
  switch (d) {
    case Dtype::kF32: return static_cast<acc_t>(static_cast<const float*>(p)[i]);
    case Dtype::kF64: return static_cast<acc_t>(static_cast<const double*>(p)[i]);
    case Dtype::kF16: return static_cast<acc_t>(static_cast<float>(static_cast<const c10::Half*>(p)[i]));
    default: return static_cast<acc_t>(static_cast<float>(static_cast<const c10::BFloat16*>(p)[i]));
  }
}

template <typename acc_t>
__device__ inline void store1(void* p, Dtype d, int64_t i, acc_t v) {
  switch (d) {
    case Dtype::kF32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case Dtype::kF64: static_cast<double*>(p)[i] = static_cast<double>(v); break;
    case Dtype::kF16: static_cast<c10::Half*>(p)[i] = static_cast<c10::Half>(static_cast<float>(v)); break;
    default: static_cast<c10::BFloat16*>(p)[i] = static_cast<c10::BFloat16>(static_cast<float>(v));
  }
}

template <int kVec, typename T, typename acc_t>
__device__ inline void load_pack(const void* p, int64_t i, acc_t (&out)[kVec]) {
  const Pack<T, kVec> pack = *reinterpret_cast<const Pack<T, kVec>*>(static_cast<const T*>(p) + i);
#pragma unroll
  for (int k = 0; k < kVec; ++k) out[k] = static_cast<acc_t>(static_cast<float>(pack.v[k]));
}
template <int kVec, typename acc_t>
__device__ inline void load_pack(const void* p, int64_t i, acc_t (&out)[kVec], Dtype d) {
  switch (d) {
    case Dtype::kF32: load_pack<kVec, float>(p, i, out); break;
    case Dtype::kF64: {
      const Pack<double, kVec> pack = *reinterpret_cast<const Pack<double, kVec>*>(static_cast<const double*>(p) + i);
#pragma unroll
      for (int k = 0; k < kVec; ++k) out[k] = static_cast<acc_t>(pack.v[k]);
      break;
    }
    case Dtype::kF16: load_pack<kVec, c10::Half>(p, i, out); break;
    default: load_pack<kVec, c10::BFloat16>(p, i, out);
  }
}

template <int kVec, typename T, typename acc_t>
__device__ inline void store_pack(void* p, int64_t i, const acc_t (&v)[kVec]) {
  Pack<T, kVec> pack;
#pragma unroll
  for (int k = 0; k < kVec; ++k) pack.v[k] = static_cast<T>(v[k]);
  *reinterpret_cast<Pack<T, kVec>*>(static_cast<T*>(p) + i) = pack;
}
template <int kVec, typename acc_t>
__device__ inline void store_pack(void* p, int64_t i, const acc_t (&v)[kVec], Dtype d) {
  switch (d) {
    case Dtype::kF32: store_pack<kVec, float>(p, i, v); break;
    case Dtype::kF64: store_pack<kVec, double>(p, i, v); break;
    case Dtype::kF16: store_pack<kVec, c10::Half>(p, i, v); break;
    default: store_pack<kVec, c10::BFloat16>(p, i, v);
  }
}

// The master of a param, when it has one (csrc/common/precision.h): a float32 array, or the int16 low halves of
// a float32 whose high halves are the bf16 param.
struct MasterRef {
  void* ptr = nullptr;
  Master mode = Master::kNone;
};

__device__ inline float join_split(uint16_t high, uint16_t low) {
  return __uint_as_float((static_cast<uint32_t>(high) << 16) | low);
}

// Runs f(x) over a block's elements, where x[d] is element i of array d in the compute type acc_t: kVec at a
// time with vector loads when every array is aligned for them, then one at a time. Array 0 is the param: with a
// master, x[0] is read from the master and both are written. Arrays whose bit is set in kReadOnly are never
// stored.
template <typename acc_t, int N, uint32_t kReadOnly, int kVec, typename F>
__device__ inline void apply_typed(void* const (&ptr)[N], const Dtype (&dtype)[N], const MasterRef& master,
                                   const BlockRange& r, F&& f) {
  bool aligned = true;
#pragma unroll
  for (int d = 0; d < N; ++d) {
    aligned = aligned && reinterpret_cast<uintptr_t>(ptr[d]) % (dtype_size(dtype[d]) * kVec) == 0;
  }
  if (master.mode != Master::kNone) {
    const int size = master.mode == Master::kFull ? 4 : 2;
    aligned = aligned && reinterpret_cast<uintptr_t>(master.ptr) % (size * kVec) == 0;
  }
  const auto load_param1 = [&](int64_t i) -> acc_t {
    if (master.mode == Master::kFull) return static_cast<acc_t>(static_cast<const float*>(master.ptr)[i]);
    if (master.mode == Master::kSplit) {
      return static_cast<acc_t>(
          join_split(static_cast<const uint16_t*>(ptr[0])[i], static_cast<const uint16_t*>(master.ptr)[i]));
    }
    return load1<acc_t>(ptr[0], dtype[0], i);
  };
  const auto store_param1 = [&](int64_t i, acc_t v) {
    if (master.mode == Master::kSplit) {
      const uint32_t bits = __float_as_uint(static_cast<float>(v));
      static_cast<uint16_t*>(ptr[0])[i] = static_cast<uint16_t>(bits >> 16);
      static_cast<uint16_t*>(master.ptr)[i] = static_cast<uint16_t>(bits & 0xffffu);
      return;
    }
    if (master.mode == Master::kFull) static_cast<float*>(master.ptr)[i] = static_cast<float>(v);
    store1<acc_t>(ptr[0], dtype[0], i, v);  // rounded to nearest even
  };
  // The same, kVec elements with one vector access per array (the master's halves included).
  const auto load_param_pack = [&](int64_t i, acc_t(&out)[kVec]) {
    if (master.mode == Master::kFull) {
      load_pack<kVec, float>(master.ptr, i, out);
    } else if (master.mode == Master::kSplit) {
      const auto high = *reinterpret_cast<const Pack<uint16_t, kVec>*>(static_cast<const uint16_t*>(ptr[0]) + i);
      const auto low = *reinterpret_cast<const Pack<uint16_t, kVec>*>(static_cast<const uint16_t*>(master.ptr) + i);
#pragma unroll
      for (int k = 0; k < kVec; ++k) out[k] = static_cast<acc_t>(join_split(high.v[k], low.v[k]));
    } else {
      load_pack<kVec>(ptr[0], i, out, dtype[0]);
    }
  };
  const auto store_param_pack = [&](int64_t i, const acc_t(&v)[kVec]) {
    if (master.mode == Master::kSplit) {
      Pack<uint16_t, kVec> high, low;
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        const uint32_t bits = __float_as_uint(static_cast<float>(v[k]));
        high.v[k] = static_cast<uint16_t>(bits >> 16);
        low.v[k] = static_cast<uint16_t>(bits & 0xffffu);
      }
      *reinterpret_cast<Pack<uint16_t, kVec>*>(static_cast<uint16_t*>(ptr[0]) + i) = high;
      *reinterpret_cast<Pack<uint16_t, kVec>*>(static_cast<uint16_t*>(master.ptr) + i) = low;
      return;
    }
    if (master.mode == Master::kFull) store_pack<kVec, float>(master.ptr, i, v);
    store_pack<kVec>(ptr[0], i, v, dtype[0]);  // rounded to nearest even
  };
  for_each_in_block<kVec>(r, aligned, threadIdx.x, blockDim.x, [&](int64_t i, int count) {
    if (count == kVec) {
      acc_t in[N][kVec];
      load_param_pack(i, in[0]);
#pragma unroll
      for (int d = 1; d < N; ++d) load_pack<kVec>(ptr[d], i, in[d], dtype[d]);
#pragma unroll
      for (int k = 0; k < kVec; ++k) {
        acc_t x[N];
#pragma unroll
        for (int d = 0; d < N; ++d) x[d] = in[d][k];
        f(x);
#pragma unroll
        for (int d = 0; d < N; ++d) in[d][k] = x[d];
      }
      if (!(kReadOnly & 1u)) store_param_pack(i, in[0]);
#pragma unroll
      for (int d = 1; d < N; ++d) {
        if (!(kReadOnly & (1u << d))) store_pack<kVec>(ptr[d], i, in[d], dtype[d]);
      }
    } else {
      acc_t x[N];
      x[0] = load_param1(i);
#pragma unroll
      for (int d = 1; d < N; ++d) x[d] = load1<acc_t>(ptr[d], dtype[d], i);
      f(x);
      if (!(kReadOnly & 1u)) store_param1(i, x[0]);
#pragma unroll
      for (int d = 1; d < N; ++d) {
        if (!(kReadOnly & (1u << d))) store1<acc_t>(ptr[d], dtype[d], i, x[d]);
      }
    }
  });
}

// The dtype codes of a call's arrays, in the kernel's order: param, grad, then state.
template <int N>
struct Dtypes {
  Dtype d[N];
};
template <int N>
inline Dtypes<N> dtypes_of(const ResolvedPrecision& p, at::ScalarType param) {
  Dtypes<N> out;
  out.d[0] = dtype_code(param);
  out.d[1] = dtype_code(p.grad);
  for (int k = 2; k < N; ++k) out.d[k] = dtype_code(p.state);
  return out;
}

}  // namespace fused_optim::cuda

namespace fused_optim::cuda {

// Calls body(acc_t-tag, has-master-tag) with the compute type of the call (double for float64 params, else
// float) and whether it has masters, both as compile-time values.
template <typename Body>
void dispatch_compute(at::ScalarType param, Master master, Body&& body) {
  const bool has_master = master != Master::kNone;
  if (param == at::kDouble) {
    body(double{}, std::false_type{});
  } else if (has_master) {
    body(float{}, std::true_type{});
  } else {
    body(float{}, std::false_type{});
  }
}

// The addresses a launch needs for tensor i at depth d: the `lists` (kernel order) first, then the master when
// kMaster, then the step counter when `steps` is given.
template <bool kMaster, size_t kLists>
struct Addresses {
  const TensorLists& lists;
  std::array<size_t, kLists> order;  // TensorLists index of each kernel array
  size_t masters;
  at::TensorList steps;
  void* operator()(int64_t i, int d) const {
    if (d < static_cast<int>(kLists)) return lists.ptr(order[d], i);
    if (kMaster && d == static_cast<int>(kLists)) return lists.ptr(masters, i);
    return steps[i].data_ptr();
  }
};

}  // namespace fused_optim::cuda
