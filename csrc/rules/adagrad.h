// The Adagrad update rule (Duchi et al., 2011): the one definition used by the CPU engine and the CUDA kernels.
// Mirrors torch.optim.Adagrad's single-tensor path (torch/optim/adagrad.py) for dense gradients.
#pragma once

#include <c10/macros/Macros.h>

#include "math.h"

namespace fused_optim::rules {

struct AdagradHyper {
  double lr_decay;
  double weight_decay;
  double eps;
  bool maximize;
};

template <typename S>
struct AdagradCoeffs {
  S grad_mult;  // 1/grad_scale, negated when maximizing
  S weight_decay;
  S eps;
  S clr;  // lr / (1 + (step - 1) * lr_decay)
};

// `step` is the step count after this step's increment (1 on the first step).
template <typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE AdagradCoeffs<S> adagrad_coeffs(const AdagradHyper& h, double lr, double step,
                                                                  double inv_grad_scale) {
  return {static_cast<S>(h.maximize ? -inv_grad_scale : inv_grad_scale), static_cast<S>(h.weight_decay),
          static_cast<S>(h.eps), static_cast<S>(lr / (1.0 + (step - 1.0) * h.lr_decay))};
}

template <typename T, typename S>
C10_HOST_DEVICE C10_ALWAYS_INLINE void adagrad_update(T& param, T grad, T& sum, const AdagradCoeffs<S>& c) {
  T g = grad * T(c.grad_mult);
  if (c.weight_decay != S(0)) g = g + param * T(c.weight_decay);
  sum = sum + g * g;
  param = param - T(c.clr) * (g / (math::sqrt(sum) + T(c.eps)));
}

}  // namespace fused_optim::rules
