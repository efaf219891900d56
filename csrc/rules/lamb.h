// The LAMB update rule (You et al., 2019, "Large Batch Optimization for Deep Learning", Algorithm 2): the one
// definition used by the CPU engine and the CUDA kernels.
//
// LAMB scales each tensor's Adam-style update u by the trust ratio ||param|| / ||u||, which needs the norms of
// whole tensors (all-reduced across ranks when parameters are sharded) before any parameter may change. So a
// step is two passes over the same inputs: the first computes the new moments and u in registers, keeps only the
// sums of squares and stores nothing; the second recomputes exactly the same values, stores the moments and moves
// the parameter by lr * ratio * u. Recomputing (rather than storing u, or taking u from the stored moments) keeps
// both passes bit-identical in the compute type: moments rounded to fp16 can underflow to 0, and a direction
// recomputed from them would not be the one the norm was taken of.
#pragma once

#include <c10/macros/Macros.h>

#include "math.h"

namespace fused_optim::rules {

struct LambHyper {
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  bool bias_correction;
  bool maximize;
};

template <typename S>
struct LambCoeffs {
  S grad_mult;  // 1/grad_scale, negated when maximizing
  S beta1;
  S beta1_comp;  // 1 - beta1
  S beta2;
  S beta2_comp;  // 1 - beta2
  S eps;
  S weight_decay;
  S inv_bc1;       // 1 / (1 - beta1^step), or 1 without bias correction
  S inv_bc2_sqrt;  // 1 / sqrt(1 - beta2^step), or 1
};

// `step` is the step count after this step's increment (1 on the first step).
template <typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE LambCoeffs<S> lamb_coeffs(const LambHyper& h, double step, double inv_grad_scale) {
  const double bc1 = h.bias_correction ? 1.0 - ::pow(h.beta1, step) : 1.0;
  const double bc2 = h.bias_correction ? 1.0 - ::pow(h.beta2, step) : 1.0;
  return {static_cast<S>(h.maximize ? -inv_grad_scale : inv_grad_scale),
          static_cast<S>(h.beta1),
          static_cast<S>(1.0 - h.beta1),
          static_cast<S>(h.beta2),
          static_cast<S>(1.0 - h.beta2),
          static_cast<S>(h.eps),
          static_cast<S>(h.weight_decay),
          static_cast<S>(1.0 / bc1),
          static_cast<S>(1.0 / ::sqrt(bc2))};
}

// Per element: updates the moments (in the compute type) and returns the direction, the bias-corrected Adam ratio
// plus the weight decay term (the paper's r + lambda * x).
template <typename T, typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE T lamb_direction(T param, T grad, T& exp_avg, T& exp_avg_sq, const LambCoeffs<S>& c) {
  const T g = grad * T(c.grad_mult);
  exp_avg = math::lerp(exp_avg, g, c.beta1_comp, c.beta1);
  exp_avg_sq = exp_avg_sq * T(c.beta2) + T(c.beta2_comp) * (g * g);
  T u = exp_avg * T(c.inv_bc1) / (math::sqrt(exp_avg_sq) * T(c.inv_bc2_sqrt) + T(c.eps));
  if (c.weight_decay != S(0)) u = u + T(c.weight_decay) * param;
  return u;
}

// The per-tensor trust ratio from the squared norms of the parameter and of the direction: 1 when either is 0
// (a fresh zero-initialised layer, or a zero update), as in the reference implementations.
C10_HOST_DEVICE C10_ALWAYS_INLINE double lamb_trust_ratio(double param_sq_norm, double direction_sq_norm) {
  return param_sq_norm > 0.0 && direction_sq_norm > 0.0 ? ::sqrt(param_sq_norm / direction_sq_norm) : 1.0;
}

// Pass 2, per element: the parameter moves by lr * trust_ratio * direction (lr_ratio is their product).
template <typename T, typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE void lamb_update(T& param, T grad, T& exp_avg, T& exp_avg_sq, S lr_ratio,
                                                   const LambCoeffs<S>& c) {
  param = param - T(lr_ratio) * lamb_direction(param, grad, exp_avg, exp_avg_sq, c);
}

}  // namespace fused_optim::rules
