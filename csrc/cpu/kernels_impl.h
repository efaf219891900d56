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

// Runs per_span(slots, ptrs, begin, end) over every thread's pieces of the launch's tensors, where ptrs holds
// the first N arrays of the tensor as T*.
template <typename T, size_t N, typename Launch, typename PerSpan>
void walk(const Launch& launch, const PerSpan& per_span) {
  const auto& tensors = launch.tensors;
  parallel_for_spans(launch.offsets, [&](int64_t t, int64_t begin, int64_t end) {
    if (t + 1 < static_cast<int64_t>(tensors.size())) {
      const TensorSlots& next = tensors[t + 1];
      for (size_t k = 0; k < N; ++k) prefetch_start({next.ptr[k]});
    }
    const TensorSlots& s = tensors[t];
    std::array<T*, N> ptrs;
    for (size_t k = 0; k < N; ++k) ptrs[k] = static_cast<T*>(s.ptr[k]);
    per_span(t, s, ptrs, begin, end);
  });
}

template <typename T, bool kCentered, bool kMomentum>
void rmsprop_typed(const ListLaunch<rules::RmspropHyper>& launch) {
  using acc_t = at::opmath_type<T>;
  constexpr size_t N = 3 + kCentered + kMomentum;  // p, g, square_avg[, grad_avg][, momentum_buffer]
  const auto c = rules::rmsprop_coeffs<acc_t>(launch.hyper, launch.lr, launch.inv_grad_scale);
  walk<T, N>(launch, [&](int64_t, const TensorSlots&, const std::array<T*, N>& ptrs, int64_t begin, int64_t end) {
    for_each_block<T, N, 0b10>(ptrs, begin, end, [&](auto& x) {
      auto unused = x[2];  // stands in for the lists this variant does not have; never read
      rules::rmsprop_update(x[0], x[1], x[2], kCentered ? x[3] : unused, kMomentum ? x[N - 1] : unused, c);
    });
  });
}

template <typename T>
void adagrad_typed(const ListLaunch<rules::AdagradHyper>& launch) {
  using acc_t = at::opmath_type<T>;
  walk<T, 3>(launch, [&](int64_t, const TensorSlots& s, const std::array<T*, 3>& ptrs, int64_t begin, int64_t end) {
    const auto c = rules::adagrad_coeffs<acc_t>(launch.hyper, launch.lr, s.step, launch.inv_grad_scale);
    for_each_block<T, 3, 0b10>(ptrs, begin, end, [&](auto& x) { rules::adagrad_update(x[0], x[1], x[2], c); });
  });
}

template <typename T>
void lion_typed(const ListLaunch<rules::LionHyper>& launch) {
  using acc_t = at::opmath_type<T>;
  const auto c = rules::lion_coeffs<acc_t>(launch.hyper, launch.lr, launch.inv_grad_scale);
  walk<T, 3>(launch, [&](int64_t, const TensorSlots&, const std::array<T*, 3>& ptrs, int64_t begin, int64_t end) {
    for_each_block<T, 3, 0b10>(ptrs, begin, end, [&](auto& x) { rules::lion_update(x[0], x[1], x[2], c); });
  });
}

// A sum of squares kept in V (a SIMD vector or a scalar) for speed and flushed into a double every few hundred
// elements, so a norm over millions of fp32 elements does not lose precision.
template <typename V>
struct SquareSum {
  V partial = V(0);
  int pending = 0;
  double total = 0.0;

  C10_ALWAYS_INLINE void add(const V& x) {
    partial = partial + x * x;
    if (++pending == 32) flush();
  }
  C10_ALWAYS_INLINE void flush() {
    if constexpr (std::is_arithmetic_v<V>) {
      total += partial;
    } else {
      alignas(64) typename V::value_type lanes[V::size()];
      partial.store(lanes);
      for (int k = 0; k < V::size(); ++k) total += lanes[k];
    }
    partial = V(0);
    pending = 0;
  }
};

template <typename T>
void lamb_norms_typed(const LambNormsLaunch& launch) {
  using acc_t = at::opmath_type<T>;
  using Vec = Vectorized<acc_t>;
  const int64_t n = static_cast<int64_t>(launch.tensors.size());
  walk<T, 4>(launch, [&](int64_t t, const TensorSlots& s, const std::array<T*, 4>& ptrs, int64_t begin, int64_t end) {
    const auto c = rules::lamb_coeffs<acc_t>(launch.hyper, s.step, launch.inv_grad_scale);
    SquareSum<Vec> param_vec, dir_vec;
    SquareSum<acc_t> param_tail, dir_tail;
    for_each_block<T, 4, 0b1111>(ptrs, begin, end, [&](auto& x) {  // stores nothing
      const auto u = rules::lamb_direction(x[0], x[1], x[2], x[3], c);
      if constexpr (std::is_same_v<std::decay_t<decltype(u)>, Vec>) {
        param_vec.add(x[0]);
        dir_vec.add(u);
      } else {
        param_tail.add(x[0]);
        dir_tail.add(u);
      }
    });
    for (auto* sum : {&param_vec, &dir_vec}) sum->flush();
    param_tail.flush();
    dir_tail.flush();
    // Thread numbers stay below get_num_threads() except when nested in an outer parallel region, where this
    // one runs serially: the clamp keeps that case in bounds.
    const int64_t thread = std::min<int64_t>(at::get_thread_num(), launch.threads - 1);
    double* out = launch.partials + (thread * n + t) * 2;
    out[0] += param_vec.total + param_tail.total;
    out[1] += dir_vec.total + dir_tail.total;
  });
}

template <typename T>
void lamb_typed(const ListLaunch<rules::LambHyper>& launch) {
  using acc_t = at::opmath_type<T>;
  walk<T, 4>(launch, [&](int64_t, const TensorSlots& s, const std::array<T*, 4>& ptrs, int64_t begin, int64_t end) {
    const auto c = rules::lamb_coeffs<acc_t>(launch.hyper, s.step, launch.inv_grad_scale);
    const auto lr_ratio = static_cast<acc_t>(s.scale);
    for_each_block<T, 4, 0b10>(ptrs, begin, end,
                               [&](auto& x) { rules::lamb_update(x[0], x[1], x[2], x[3], lr_ratio, c); });
  });
}

#define FUSED_OPTIM_STR2(x) #x
#define FUSED_OPTIM_STR(x) FUSED_OPTIM_STR2(x)
const KernelTable kernels{
    FUSED_OPTIM_STR(CPU_CAPABILITY),
    {{&adam_typed<float, false>, &adam_typed<float, true>},
     {&adam_typed<double, false>, &adam_typed<double, true>},
     {&adam_typed<c10::Half, false>, &adam_typed<c10::Half, true>},
     {&adam_typed<c10::BFloat16, false>, &adam_typed<c10::BFloat16, true>}},
    {{&sgd_typed<float, false>, &sgd_typed<float, true>},
     {&sgd_typed<double, false>, &sgd_typed<double, true>},
     {&sgd_typed<c10::Half, false>, &sgd_typed<c10::Half, true>},
     {&sgd_typed<c10::BFloat16, false>, &sgd_typed<c10::BFloat16, true>}},
#define FUSED_OPTIM_RMSPROP(T)                                                                       \
  {                                                                                                  \
    &rmsprop_typed<T, false, false>, &rmsprop_typed<T, false, true>, &rmsprop_typed<T, true, false>, \
        &rmsprop_typed<T, true, true>                                                                \
  }
    {FUSED_OPTIM_RMSPROP(float), FUSED_OPTIM_RMSPROP(double), FUSED_OPTIM_RMSPROP(c10::Half),
     FUSED_OPTIM_RMSPROP(c10::BFloat16)},
#undef FUSED_OPTIM_RMSPROP
    {&adagrad_typed<float>, &adagrad_typed<double>, &adagrad_typed<c10::Half>, &adagrad_typed<c10::BFloat16>},
    {&lion_typed<float>, &lion_typed<double>, &lion_typed<c10::Half>, &lion_typed<c10::BFloat16>},
    {&lamb_norms_typed<float>, &lamb_norms_typed<double>, &lamb_norms_typed<c10::Half>,
     &lamb_norms_typed<c10::BFloat16>},
    {&lamb_typed<float>, &lamb_typed<double>, &lamb_typed<c10::Half>, &lamb_typed<c10::BFloat16>}};

}  // namespace CPU_CAPABILITY
}  // namespace fused_optim::cpu
