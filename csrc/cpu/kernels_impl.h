// The CPU kernels, compiled once per instruction set: kernels_<isa>.cpp sets CPU_CAPABILITY (and the compiler's
// target) and includes this file. Each kernel narrows the per-tensor coefficients to the compute type, then lets
// the engine walk all tensors in one parallel region, applying the shared rule from csrc/rules/.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <array>
#include <initializer_list>

#include "engine.h"
#include "kernels.h"
#include "simd.h"

namespace fused_optim::cpu {
namespace CPU_CAPABILITY {

template <typename S>
rules::AdamCoeffs<S> narrow(const rules::AdamCoeffs<double>& c) {
  return {static_cast<S>(c.grad_mult),
          static_cast<S>(c.beta1_comp),
          static_cast<S>(c.beta2),
          static_cast<S>(c.beta2_comp),
          static_cast<S>(c.eps),
          static_cast<S>(c.weight_decay),
          static_cast<S>(c.decay_factor),
          static_cast<S>(c.step_size),
          static_cast<S>(c.inv_bc2_sqrt),
          c.l2,
          c.decoupled,
          c.amsgrad};
}

// The hardware prefetchers restart at every new array; asking for the first lines of the next tensor's arrays
// while this one streams hides that restart, which adds up over 1000 small tensors.
inline void prefetch_start(std::initializer_list<const void*> arrays) {
  constexpr int kLines = 8;
  for (const void* base : arrays) {
    if (base == nullptr) continue;
    for (int l = 0; l < kLines; ++l) __builtin_prefetch(static_cast<const char*>(base) + 64 * l, 0, 3);
  }
}

template <typename T, bool kAmsgrad>
void adam_typed(const AdamLaunch& launch) {
  using acc_t = at::opmath_type<T>;
  const auto& tensors = launch.tensors;
  parallel_for_spans(launch.offsets, [&](int64_t t, int64_t begin, int64_t end) {
    const AdamTensor& a = tensors[t];
    if (t + 1 < static_cast<int64_t>(tensors.size())) {
      const AdamTensor& n = tensors[t + 1];
      prefetch_start({n.param, n.grad, n.exp_avg, n.exp_avg_sq, n.max_exp_avg_sq});
    }
    const rules::AdamCoeffs<acc_t> c = narrow<acc_t>(a.coeffs);
    auto p = static_cast<T*>(a.param);
    auto g = const_cast<T*>(static_cast<const T*>(a.grad));  // never stored: bit 1 of kReadOnly
    auto m = static_cast<T*>(a.exp_avg);
    auto v = static_cast<T*>(a.exp_avg_sq);
    if constexpr (kAmsgrad) {
      std::array<T*, 5> ptrs{p, g, m, v, static_cast<T*>(a.max_exp_avg_sq)};
      for_each_block<T, 5, 0b10>(ptrs, begin, end,
                                 [&](auto& x) { rules::adam_update(x[0], x[1], x[2], x[3], x[4], c); });
    } else {
      std::array<T*, 4> ptrs{p, g, m, v};
      for_each_block<T, 4, 0b10>(ptrs, begin, end, [&](auto& x) {
        auto no_max = x[3];  // never read: amsgrad is off
        rules::adam_update(x[0], x[1], x[2], x[3], no_max, c);
      });
    }
  });
}

template <typename T, bool kMomentum>
void sgd_typed(const SgdLaunch& launch) {
  using acc_t = at::opmath_type<T>;
  const auto& tensors = launch.tensors;
  const rules::SgdCoeffs<acc_t> c =
      rules::sgd_coeffs<acc_t>(launch.hyper, launch.lr, launch.inv_grad_scale, launch.first_step);
  parallel_for_spans(launch.offsets, [&](int64_t t, int64_t begin, int64_t end) {
    const SgdTensor& a = tensors[t];
    if (t + 1 < static_cast<int64_t>(tensors.size())) {
      const SgdTensor& n = tensors[t + 1];
      prefetch_start({n.param, n.grad, n.momentum_buffer});
    }
    auto p = static_cast<T*>(a.param);
    auto g = const_cast<T*>(static_cast<const T*>(a.grad));  // never stored: bit 1 of kReadOnly
    if constexpr (kMomentum) {
      std::array<T*, 3> ptrs{p, g, static_cast<T*>(a.momentum_buffer)};
      for_each_block<T, 3, 0b10>(ptrs, begin, end, [&](auto& x) { rules::sgd_update(x[0], x[1], x[2], c); });
    } else {
      std::array<T*, 2> ptrs{p, g};
      for_each_block<T, 2, 0b10>(ptrs, begin, end, [&](auto& x) {
        auto no_buffer = x[1];  // never read: momentum is 0
        rules::sgd_update(x[0], x[1], no_buffer, c);
      });
    }
  });
}

#define FUSED_OPTIM_STR2(x) #x
#define FUSED_OPTIM_STR(x) FUSED_OPTIM_STR2(x)
const KernelTable kernels{FUSED_OPTIM_STR(CPU_CAPABILITY),
                          {{&adam_typed<float, false>, &adam_typed<float, true>},
                           {&adam_typed<double, false>, &adam_typed<double, true>},
                           {&adam_typed<c10::Half, false>, &adam_typed<c10::Half, true>},
                           {&adam_typed<c10::BFloat16, false>, &adam_typed<c10::BFloat16, true>}},
                          {{&sgd_typed<float, false>, &sgd_typed<float, true>},
                           {&sgd_typed<double, false>, &sgd_typed<double, true>},
                           {&sgd_typed<c10::Half, false>, &sgd_typed<c10::Half, true>},
                           {&sgd_typed<c10::BFloat16, false>, &sgd_typed<c10::BFloat16, true>}}};

}  // namespace CPU_CAPABILITY
}  // namespace fused_optim::cpu
