// The Lion update rule (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2): the one
// definition used by the CPU engine and the CUDA kernels. torch.optim has no Lion; the tests hold a reference
// written from the paper.
#pragma once

#include <c10/macros/Macros.h>

#include "math.h"

namespace fused_optim::rules {

struct LionHyper {
  double beta1;  // interpolation of the update direction
  double beta2;  // decay of the momentum kept in state
  double weight_decay;
  bool maximize;
};

template <typename S>
struct LionCoeffs {
  S grad_mult;  // 1/grad_scale, negated when maximizing
  S beta1;
  S beta1_comp;  // 1 - beta1
  S beta2;
  S beta2_comp;    // 1 - beta2
  S decay_factor;  // 1 - lr * weight_decay (decoupled, as in the paper)
  S lr;
  bool decay;
};

template <typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE LionCoeffs<S> lion_coeffs(const LionHyper& h, double lr, double inv_grad_scale) {
  return {static_cast<S>(h.maximize ? -inv_grad_scale : inv_grad_scale),
          static_cast<S>(h.beta1),
          static_cast<S>(1.0 - h.beta1),
          static_cast<S>(h.beta2),
          static_cast<S>(1.0 - h.beta2),
          static_cast<S>(1.0 - lr * h.weight_decay),
          static_cast<S>(lr),
          h.weight_decay != 0.0};
}

template <typename T, typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE void lion_update(T& param, T grad, T& exp_avg, const LionCoeffs<S>& c) {
  const T g = grad * T(c.grad_mult);
  if (c.decay) param = param * T(c.decay_factor);
  param = param - T(c.lr) * math::sign(math::lerp(exp_avg, g, c.beta1_comp, c.beta1));
  exp_avg = math::lerp(exp_avg, g, c.beta2_comp, c.beta2);
}

}  // namespace fused_optim::rules
