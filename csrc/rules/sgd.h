// The SGD update rule (momentum, dampening, Nesterov, weight decay, maximize): the one definition used by the CPU
// engine and the CUDA kernels. Mirrors torch.optim.SGD's single-tensor path (torch/optim/sgd.py).
#pragma once

#include <c10/macros/Macros.h>

#include "math.h"

namespace fused_optim::rules {

struct SgdHyper {
  double weight_decay;
  double momentum;
  double dampening;
  bool nesterov;
  bool maximize;
};

template <typename S>
struct SgdCoeffs {
  S grad_mult;  // 1/grad_scale, negated when maximizing
  S weight_decay;
  S momentum;
  S grad_weight;  // 1 - dampening
  S lr;
  bool first_step;  // the momentum buffer starts as the gradient itself (torch's `buf = grad.clone()`)
  bool nesterov;
  // Decided in double precision, as Python decides it: a momentum below float's range (1e-50) still keeps a buffer.
  bool use_momentum;
};

template <typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE SgdCoeffs<S> sgd_coeffs(const SgdHyper& h, double lr, double inv_grad_scale,
                                                          bool first_step) {
  return {static_cast<S>(h.maximize ? -inv_grad_scale : inv_grad_scale),
          static_cast<S>(h.weight_decay),
          static_cast<S>(h.momentum),
          static_cast<S>(1.0 - h.dampening),
          static_cast<S>(lr),
          first_step,
          h.nesterov,
          h.momentum != 0.0};
}

// One element (or SIMD vector). With momentum == 0 the buffer is a dummy and is neither read nor meaningful.
template <typename T, typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE void sgd_update(T& param, T grad, T& momentum_buffer, const SgdCoeffs<S>& c) {
  T g = grad * T(c.grad_mult);
  if (c.weight_decay != S(0)) g = g + param * T(c.weight_decay);
  if (c.use_momentum) {
    momentum_buffer = c.first_step ? g : momentum_buffer * T(c.momentum) + T(c.grad_weight) * g;
    g = c.nesterov ? g + T(c.momentum) * momentum_buffer : momentum_buffer;
  }
  param = param - T(c.lr) * g;
}

}  // namespace fused_optim::rules
