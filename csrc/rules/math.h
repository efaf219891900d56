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
// -1, 0 or +1 (NaN stays NaN), like torch.sign.
template <typename T>
C10_HOST_DEVICE T sign(T x);

// torch.lerp's two-sided formula (start + w * (end - start) for w < 0.5, else end - (end - start) * (1 - w)).
// w is a per-call scalar, so the branch is uniform. `w_comp` is 1 - w: the rules with no torch.optim counterpart
// (Lion, LAMB) pass it rounded from double, since torch's 1 - w of the rounded w has lost most of a small 1 - w
// (beta1 = 1e-7 came out 19 % too large in float32).
template <typename T, typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE T lerp(T start, T end, S w, S w_comp) {
  return w < S(0.5) ? start + T(w) * (end - start) : end - (end - start) * T(w_comp);
}
// With 1 - w computed from the rounded w, as torch.lerp does, so moving averages round as torch.optim's do.
template <typename T, typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE T lerp(T start, T end, S w) {
  return lerp(start, end, w, S(S(1) - w));
}

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

template <>
C10_HOST_DEVICE C10_ALWAYS_INLINE float sign<float>(float x) {
  return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x;  // x is +-0 or NaN here
}
template <>
C10_HOST_DEVICE C10_ALWAYS_INLINE double sign<double>(double x) {
  return x > 0.0 ? 1.0 : x < 0.0 ? -1.0 : x;
}

}  // namespace fused_optim::math
