// The Adam / AdamW update rule: the one definition used by the CPU engine (scalar and SIMD) and the CUDA kernels.
// Mirrors torch.optim.Adam's single-tensor path (torch/optim/adam.py) step for step, with divisions by
// per-step constants turned into multiplications by reciprocals computed once per tensor.
#pragma once

#include <c10/macros/Macros.h>

#include "math.h"

namespace fused_optim::rules {

// Hyperparameters of one op call: the same for every tensor in it.
struct AdamHyper {
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  bool amsgrad;
  bool maximize;
  bool decoupled_weight_decay;  // AdamW
};

// Everything the per-element rule needs, in the compute scalar type S. Built once per tensor and step by
// adam_coeffs(), on the host (CPU) or per thread block (CUDA).
template <typename S>
struct AdamCoeffs {
  S grad_mult;   // 1/grad_scale, negated when maximizing
  S beta1_comp;  // 1 - beta1 (the lerp weight)
  S beta2;
  S beta2_comp;  // 1 - beta2
  S eps;
  S weight_decay;  // L2 penalty added to the gradient (Adam)
  S decay_factor;  // 1 - lr * weight_decay, applied to the parameter (AdamW)
  S step_size;     // lr / (1 - beta1^step)
  S inv_bc2_sqrt;  // 1 / sqrt(1 - beta2^step)
  bool l2;
  bool decoupled;
  bool amsgrad;
};

// `step` is the step count after this step's increment (1 on the first step); `inv_grad_scale` is 1 unless a
// GradScaler's scale is being undone inside the kernel.
template <typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE AdamCoeffs<S> adam_coeffs(const AdamHyper& h, double lr, double step,
                                                            double inv_grad_scale) {
  const double bc1 = 1.0 - ::pow(h.beta1, step);
  const double bc2 = 1.0 - ::pow(h.beta2, step);
  AdamCoeffs<S> c;
  c.grad_mult = static_cast<S>(h.maximize ? -inv_grad_scale : inv_grad_scale);
  c.beta1_comp = static_cast<S>(1.0 - h.beta1);
  c.beta2 = static_cast<S>(h.beta2);
  c.beta2_comp = static_cast<S>(1.0 - h.beta2);
  c.eps = static_cast<S>(h.eps);
  c.weight_decay = static_cast<S>(h.weight_decay);
  c.decay_factor = static_cast<S>(1.0 - lr * h.weight_decay);
  c.step_size = static_cast<S>(lr / bc1);
  c.inv_bc2_sqrt = static_cast<S>(1.0 / ::sqrt(bc2));
  c.l2 = h.weight_decay != 0.0 && !h.decoupled_weight_decay;
  c.decoupled = h.weight_decay != 0.0 && h.decoupled_weight_decay;
  c.amsgrad = h.amsgrad;
  return c;
}

// One element (or one SIMD vector of elements). `max_exp_avg_sq` is only touched when amsgrad is on.
template <typename T, typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE void adam_update(T& param, T grad, T& exp_avg, T& exp_avg_sq, T& max_exp_avg_sq,
                                                   const AdamCoeffs<S>& c) {
  T g = grad * T(c.grad_mult);
  if (c.decoupled) {
    param = param * T(c.decay_factor);
  } else if (c.l2) {
    g = g + param * T(c.weight_decay);
  }
  // torch.optim's exp_avg.lerp_(g, 1 - beta1), both sides of it: for beta1 < 0.5 the one-sided form would cancel
  // (at beta1 = 0 a gradient much smaller than the old average would be lost).
  exp_avg = math::lerp(exp_avg, g, c.beta1_comp);
  exp_avg_sq = exp_avg_sq * T(c.beta2) + T(c.beta2_comp) * (g * g);
  T second = exp_avg_sq;
  if (c.amsgrad) {
    max_exp_avg_sq = math::max(max_exp_avg_sq, exp_avg_sq);
    second = max_exp_avg_sq;
  }
  const T denom = math::sqrt(second) * T(c.inv_bc2_sqrt) + T(c.eps);
  param = param - T(c.step_size) * exp_avg / denom;
}

}  // namespace fused_optim::rules
