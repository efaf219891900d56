// SIMD glue for the CPU engine: the rules' math functions for at::vec::Vectorized, and loads/stores that turn
// storage types (fp32, fp64, fp16, bf16) into compute vectors. Included only by the per-ISA kernel files, after
// they have chosen CPU_CAPABILITY, so everything here lives in that ISA's namespace.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include "../rules/math.h"

namespace fused_optim::math {
template <>
inline at::vec::Vectorized<float> sqrt(at::vec::Vectorized<float> x) {
  return x.sqrt();
}
template <>
inline at::vec::Vectorized<double> sqrt(at::vec::Vectorized<double> x) {
  return x.sqrt();
}
template <>
inline at::vec::Vectorized<float> max(at::vec::Vectorized<float> a, at::vec::Vectorized<float> b) {
  return at::vec::maximum(a, b);  // propagates NaN, like torch.maximum
}
template <>
inline at::vec::Vectorized<double> max(at::vec::Vectorized<double> a, at::vec::Vectorized<double> b) {
  return at::vec::maximum(a, b);
}
template <typename V>
inline V vec_sign(V x) {
  // gt/lt give 1.0 or 0.0 per lane; blending x back keeps +-0 and NaN as torch.sign does.
  const V zero(0);
  const V s = x.gt(zero) - x.lt(zero);
  return V::blendv(s, x, (x == zero) | x.isnan());
}
template <>
inline at::vec::Vectorized<float> sign(at::vec::Vectorized<float> x) {
  return vec_sign(x);
}
template <>
inline at::vec::Vectorized<double> sign(at::vec::Vectorized<double> x) {
  return vec_sign(x);
}
}  // namespace fused_optim::math

namespace fused_optim::cpu {
namespace CPU_CAPABILITY {

using at::vec::Vectorized;

// Moves kBlock elements of storage type T to and from two compute vectors. One Vectorized<bf16/half> holds
// exactly two float vectors' worth, so every storage type is processed in blocks of two compute vectors.
template <typename T>
struct Io {
  using acc_t = at::opmath_type<T>;
  using Vec = Vectorized<acc_t>;
  static constexpr int64_t kBlock = 2 * Vec::size();
  static_assert(Vectorized<T>::size() == kBlock || std::is_same_v<T, acc_t>);

  static C10_ALWAYS_INLINE void load(const T* p, Vec& lo, Vec& hi) {
    if constexpr (std::is_same_v<T, acc_t>) {
      lo = Vec::loadu(p);
      hi = Vec::loadu(p + Vec::size());
    } else {
      std::tie(lo, hi) = at::vec::convert_to_float<T>(Vectorized<T>::loadu(p));
    }
  }
  static C10_ALWAYS_INLINE void store(T* p, const Vec& lo, const Vec& hi) {
    if constexpr (std::is_same_v<T, acc_t>) {
      lo.store(p);
      hi.store(p + Vec::size());
    } else {
      at::vec::convert_from_float<T>(lo, hi).store(p);  // round to nearest even
    }
  }
};

// Runs body(x) over elements [begin, end) of N arrays of type T, where x is a std::array of N compute values:
// SIMD vectors for whole blocks, then scalars for the tail (the same scalar path the CUDA kernels compile).
// Arrays whose bit is set in kReadOnly are never stored (the gradient).
template <typename T, size_t N, uint32_t kReadOnly, typename Body>
C10_ALWAYS_INLINE void for_each_block(const std::array<T*, N>& ptrs, int64_t begin, int64_t end, Body&& body) {
  using IoT = Io<T>;
  using acc_t = typename IoT::acc_t;
  int64_t i = begin;
  for (; i + IoT::kBlock <= end; i += IoT::kBlock) {
    std::array<typename IoT::Vec, N> lo, hi;
    for (size_t k = 0; k < N; ++k) IoT::load(ptrs[k] + i, lo[k], hi[k]);
    body(lo);
    body(hi);
    for (size_t k = 0; k < N; ++k) {
      if (!(kReadOnly & (1u << k))) IoT::store(ptrs[k] + i, lo[k], hi[k]);
    }
  }
  for (; i < end; ++i) {
    std::array<acc_t, N> x;
    for (size_t k = 0; k < N; ++k) x[k] = static_cast<acc_t>(ptrs[k][i]);
    body(x);
    for (size_t k = 0; k < N; ++k) {
      if (!(kReadOnly & (1u << k))) ptrs[k][i] = static_cast<T>(x[k]);
    }
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace fused_optim::cpu
