// Element math used by the update rules. The rules are templates over the compute type T, which is a scalar
// (float/double, on CPU tails and on CUDA) or a SIMD vector (at::vec::Vectorized, on the CPU engine). Operators
// (+ - * /) work on both; the few functions that differ are declared here and specialized per type, the
// Vectorized ones in csrc/cpu/simd.h.
#pragma once

#include <c10/macros/Macros.h>

#include <math.h>

namespace fused_optim::math {

template <typename T>
C10_HOST_DEVICE T sqrt(T x);
template <typename T>
C10_HOST_DEVICE T max(T a, T b);

template <>
C10_HOST_DEVICE C10_ALWAYS_INLINE float sqrt<float>(float x) {
  return ::sqrtf(x);
}
template <>
C10_HOST_DEVICE C10_ALWAYS_INLINE double sqrt<double>(double x) {
  return ::sqrt(x);
}
// NaN-propagating like torch.maximum, so amsgrad does not silently drop a NaN.
template <>
C10_HOST_DEVICE C10_ALWAYS_INLINE float max<float>(float a, float b) {
  return (a != a || a > b) ? a : b;
}
template <>
C10_HOST_DEVICE C10_ALWAYS_INLINE double max<double>(double a, double b) {
  return (a != a || a > b) ? a : b;
}

}  // namespace fused_optim::math
