// The RMSprop update rule (Hinton's lecture 6e; centered variant from Graves 2013): the one definition used by the
// CPU engine and the CUDA kernels. Mirrors torch.optim.RMSprop's single-tensor path (torch/optim/rmsprop.py).
#pragma once

#include <c10/macros/Macros.h>

#include "math.h"

namespace fused_optim::rules {

struct RmspropHyper {
  double alpha;
  double eps;
  double weight_decay;
  double momentum;
  bool centered;
  bool maximize;
};

template <typename S>
struct RmspropCoeffs {
  S grad_mult;   // 1/grad_scale, negated when maximizing
  S alpha;       // decay of the running average of squared gradients
  S alpha_comp;  // 1 - alpha
  S eps;
  S weight_decay;
  S momentum;
  S lr;
  bool centered;
  bool has_momentum;
};

template <typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE RmspropCoeffs<S> rmsprop_coeffs(const RmspropHyper& h, double lr,
                                                                  double inv_grad_scale) {
  return {static_cast<S>(h.maximize ? -inv_grad_scale : inv_grad_scale),
          static_cast<S>(h.alpha),
          static_cast<S>(1.0 - h.alpha),
          static_cast<S>(h.eps),
          static_cast<S>(h.weight_decay),
          static_cast<S>(h.momentum),
          static_cast<S>(lr),
          h.centered,
          h.momentum != 0.0};
}

// One element (or SIMD vector). grad_avg is only touched when centered, momentum_buffer only with momentum.
template <typename T, typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE void rmsprop_update(T& param, T grad, T& square_avg, T& grad_avg, T& momentum_buffer,
                                                      const RmspropCoeffs<S>& c) {
  T g = grad * T(c.grad_mult);
  if (c.weight_decay != S(0)) g = g + param * T(c.weight_decay);
  square_avg = square_avg * T(c.alpha) + T(c.alpha_comp) * (g * g);
  T avg;
  if (c.centered) {
    grad_avg = math::lerp(grad_avg, g, c.alpha_comp);
    avg = math::sqrt(square_avg - grad_avg * grad_avg);
  } else {
    avg = math::sqrt(square_avg);
  }
  avg = avg + T(c.eps);
  if (c.has_momentum) {
    momentum_buffer = momentum_buffer * T(c.momentum) + g / avg;
    param = param - T(c.lr) * momentum_buffer;
  } else {
    param = param - T(c.lr) * (g / avg);
  }
}

}  // namespace fused_optim::rules
