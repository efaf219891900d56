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

// Every kernel is a template over its precision: P (param), G (grad), S (state) and M (master), see
// csrc/common/precision.h. It builds one stream per array (the param's stream reads and writes the master when
// there is one) and lets the engine run the shared rule over all tensors in one parallel region.

template <typename P, typename G, typename S, Master M, bool kAmsgrad>
void adam_typed(const AdamLaunch& launch) {
  using acc_t = at::opmath_type<P>;
  const auto& tensors = launch.tensors;
  parallel_for_spans(launch.offsets, [&](int64_t t, int64_t begin, int64_t end) {
    const AdamTensor& a = tensors[t];
    if (t + 1 < static_cast<int64_t>(tensors.size())) {
      const AdamTensor& n = tensors[t + 1];
      prefetch_start({M == Master::kNone ? n.param : n.master, n.grad, n.exp_avg, n.exp_avg_sq, n.max_exp_avg_sq});
    }
    const rules::AdamCoeffs<acc_t> c = narrow<acc_t>(a.coeffs);
    const auto param = param_stream<P, M>(a.param, a.master);
    const Plain<G> grad{const_cast<G*>(static_cast<const G*>(a.grad))};  // never stored: bit 1 of kReadOnly
    const Plain<S> m{static_cast<S*>(a.exp_avg)};
    const Plain<S> v{static_cast<S*>(a.exp_avg_sq)};
    if constexpr (kAmsgrad) {
      const Plain<S> max_v{static_cast<S*>(a.max_exp_avg_sq)};
      for_each_block<0b10>(std::make_tuple(param, grad, m, v, max_v), begin, end,
                           [&](auto& x) { rules::adam_update(x[0], x[1], x[2], x[3], x[4], c); });
    } else {
      for_each_block<0b10>(std::make_tuple(param, grad, m, v), begin, end, [&](auto& x) {
        auto no_max = x[3];  // never read: amsgrad is off
        rules::adam_update(x[0], x[1], x[2], x[3], no_max, c);
      });
    }
  });
}

template <typename P, typename G, typename S, Master M, bool kMomentum>
void sgd_typed(const SgdLaunch& launch) {
  using acc_t = at::opmath_type<P>;
  const auto& tensors = launch.tensors;
  const rules::SgdCoeffs<acc_t> c =
      rules::sgd_coeffs<acc_t>(launch.hyper, launch.lr, launch.inv_grad_scale, launch.first_step);
  parallel_for_spans(launch.offsets, [&](int64_t t, int64_t begin, int64_t end) {
    const SgdTensor& a = tensors[t];
    if (t + 1 < static_cast<int64_t>(tensors.size())) {
      const SgdTensor& n = tensors[t + 1];
      prefetch_start({M == Master::kNone ? n.param : n.master, n.grad, n.momentum_buffer});
    }
    const auto param = param_stream<P, M>(a.param, a.master);
    const Plain<G> grad{const_cast<G*>(static_cast<const G*>(a.grad))};
    if constexpr (kMomentum) {
      const Plain<S> buf{static_cast<S*>(a.momentum_buffer)};
      for_each_block<0b10>(std::make_tuple(param, grad, buf), begin, end,
                           [&](auto& x) { rules::sgd_update(x[0], x[1], x[2], c); });
    } else {
      for_each_block<0b10>(std::make_tuple(param, grad), begin, end, [&](auto& x) {
        auto no_buffer = x[1];  // never read: momentum is 0
        rules::sgd_update(x[0], x[1], no_buffer, c);
      });
    }
  });
}

// Runs per_span(t, slots, streams, begin, end) over every thread's pieces of the launch's tensors, where streams
// is the tuple (param, grad, state...) of the first 2 + kStates arrays.
template <typename P, typename G, typename S, Master M, size_t kStates, typename Launch, typename PerSpan>
void walk(const Launch& launch, const PerSpan& per_span) {
  const auto& tensors = launch.tensors;
  parallel_for_spans(launch.offsets, [&](int64_t t, int64_t begin, int64_t end) {
    if (t + 1 < static_cast<int64_t>(tensors.size())) {
      const TensorSlots& next = tensors[t + 1];
      prefetch_start({M == Master::kNone ? next.ptr[0] : next.master, next.ptr[1]});
      for (size_t k = 0; k < kStates; ++k) prefetch_start({next.ptr[2 + k]});
    }
    const TensorSlots& s = tensors[t];
    const auto states = [&]<size_t... K>(std::index_sequence<K...>) {
      return std::make_tuple(Plain<S>{static_cast<S*>(s.ptr[2 + K])}...);
    }(std::make_index_sequence<kStates>{});
    const auto streams = std::tuple_cat(
        std::make_tuple(param_stream<P, M>(s.ptr[0], s.master), Plain<G>{static_cast<G*>(s.ptr[1])}), states);
    per_span(t, s, streams, begin, end);
  });
}

template <typename P, typename G, typename S, Master M, bool kCentered, bool kMomentum>
void rmsprop_typed(const ListLaunch<rules::RmspropHyper>& launch) {
  using acc_t = at::opmath_type<P>;
  constexpr size_t kStates = 1 + kCentered + kMomentum;  // square_avg[, grad_avg][, momentum_buffer]
  const auto c = rules::rmsprop_coeffs<acc_t>(launch.hyper, launch.lr, launch.inv_grad_scale);
  walk<P, G, S, M, kStates>(launch, [&](int64_t, const TensorSlots&, const auto& streams, int64_t begin, int64_t end) {
    for_each_block<0b10>(streams, begin, end, [&](auto& x) {
      auto unused = x[2];  // stands in for the lists this variant does not have; never read
      rules::rmsprop_update(x[0], x[1], x[2], kCentered ? x[3] : unused, kMomentum ? x[1 + kStates] : unused, c);
    });
  });
}

template <typename P, typename G, typename S, Master M>
void adagrad_typed(const ListLaunch<rules::AdagradHyper>& launch) {
  using acc_t = at::opmath_type<P>;
  walk<P, G, S, M, 1>(launch, [&](int64_t, const TensorSlots& s, const auto& streams, int64_t begin, int64_t end) {
    const auto c = rules::adagrad_coeffs<acc_t>(launch.hyper, launch.lr, s.step, launch.inv_grad_scale);
    for_each_block<0b10>(streams, begin, end, [&](auto& x) { rules::adagrad_update(x[0], x[1], x[2], c); });
  });
}

template <typename P, typename G, typename S, Master M>
void lion_typed(const ListLaunch<rules::LionHyper>& launch) {
  using acc_t = at::opmath_type<P>;
  const auto c = rules::lion_coeffs<acc_t>(launch.hyper, launch.lr, launch.inv_grad_scale);
  walk<P, G, S, M, 1>(launch, [&](int64_t, const TensorSlots&, const auto& streams, int64_t begin, int64_t end) {
    for_each_block<0b10>(streams, begin, end, [&](auto& x) { rules::lion_update(x[0], x[1], x[2], c); });
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

template <typename P, typename G, typename S, Master M>
void lamb_norms_typed(const LambNormsLaunch& launch) {
  using acc_t = at::opmath_type<P>;
  using Vec = Vectorized<acc_t>;
  const int64_t n = static_cast<int64_t>(launch.tensors.size());
  walk<P, G, S, M, 2>(launch, [&](int64_t t, const TensorSlots& s, const auto& streams, int64_t begin, int64_t end) {
    const auto c = rules::lamb_coeffs<acc_t>(launch.hyper, s.step, launch.inv_grad_scale);
    SquareSum<Vec> param_vec, dir_vec;
    SquareSum<acc_t> param_tail, dir_tail;
    for_each_block<0b1111>(streams, begin, end, [&](auto& x) {  // stores nothing
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

template <typename P, typename G, typename S, Master M>
void lamb_typed(const ListLaunch<rules::LambHyper>& launch) {
  using acc_t = at::opmath_type<P>;
  walk<P, G, S, M, 2>(launch, [&](int64_t, const TensorSlots& s, const auto& streams, int64_t begin, int64_t end) {
    const auto c = rules::lamb_coeffs<acc_t>(launch.hyper, s.step, launch.inv_grad_scale);
    const auto lr_ratio = static_cast<acc_t>(s.scale);
    for_each_block<0b10>(streams, begin, end,
                         [&](auto& x) { rules::lamb_update(x[0], x[1], x[2], x[3], lr_ratio, c); });
  });
}

template <typename T, NormType kType>
void norm_typed(const NormLaunch& launch) {
  using acc_t = at::opmath_type<T>;
  using Vec = Vectorized<acc_t>;
  parallel_for_spans(launch.offsets, [&](int64_t t, int64_t begin, int64_t end) {
    const auto data = std::make_tuple(Plain<T>{const_cast<T*>(static_cast<const T*>(launch.tensors[t]))});
    double* out = launch.partials + std::min<int64_t>(at::get_thread_num(), launch.threads - 1);
    if constexpr (kType == kL2) {
      SquareSum<Vec> vec;
      SquareSum<acc_t> tail;
      for_each_block<0b1>(data, begin, end, [&](auto& x) {
        if constexpr (std::is_same_v<std::decay_t<decltype(x[0])>, Vec>) {
          vec.add(x[0]);
        } else {
          tail.add(x[0]);
        }
      });
      vec.flush();
      tail.flush();
      *out += vec.total + tail.total;
    } else {
      // NaN-propagating maximum of |x|, so a NaN gradient gives a NaN norm as torch's does.
      Vec vmax(0);
      acc_t smax = 0;
      for_each_block<0b1>(data, begin, end, [&](auto& x) {
        if constexpr (std::is_same_v<std::decay_t<decltype(x[0])>, Vec>) {
          vmax = math::max(vmax, x[0].abs());
        } else {
          smax = math::max(smax, static_cast<acc_t>(std::abs(x[0])));
        }
      });
      alignas(64) acc_t lanes[Vec::size()];
      vmax.store(lanes);
      double m = static_cast<double>(smax);
      for (int k = 0; k < Vec::size(); ++k) m = math::max(m, static_cast<double>(lanes[k]));
      *out = math::max(*out, m);
    }
  });
}

#define FUSED_OPTIM_STR2(x) #x
#define FUSED_OPTIM_STR(x) FUSED_OPTIM_STR2(x)
// One row per precision, in FUSED_OPTIM_FOR_EACH_PRECISION's order.
#define FUSED_OPTIM_ROW2(K, P, G, S, M) {&K<P, G, S, Master::M, false>, &K<P, G, S, Master::M, true>},
#define FUSED_OPTIM_ADAM_ROW(P, G, S, M) FUSED_OPTIM_ROW2(adam_typed, P, G, S, M)
#define FUSED_OPTIM_SGD_ROW(P, G, S, M) FUSED_OPTIM_ROW2(sgd_typed, P, G, S, M)
#define FUSED_OPTIM_RMSPROP_ROW(P, G, S, M)                                                           \
  {&rmsprop_typed<P, G, S, Master::M, false, false>, &rmsprop_typed<P, G, S, Master::M, false, true>, \
   &rmsprop_typed<P, G, S, Master::M, true, false>, &rmsprop_typed<P, G, S, Master::M, true, true>},
#define FUSED_OPTIM_ROW1(K, P, G, S, M) &K<P, G, S, Master::M>,
#define FUSED_OPTIM_ADAGRAD_ROW(P, G, S, M) FUSED_OPTIM_ROW1(adagrad_typed, P, G, S, M)
#define FUSED_OPTIM_LION_ROW(P, G, S, M) FUSED_OPTIM_ROW1(lion_typed, P, G, S, M)
#define FUSED_OPTIM_LAMB_NORMS_ROW(P, G, S, M) FUSED_OPTIM_ROW1(lamb_norms_typed, P, G, S, M)
#define FUSED_OPTIM_LAMB_ROW(P, G, S, M) FUSED_OPTIM_ROW1(lamb_typed, P, G, S, M)

const KernelTable kernels{FUSED_OPTIM_STR(CPU_CAPABILITY),
                          {FUSED_OPTIM_FOR_EACH_PRECISION(FUSED_OPTIM_ADAM_ROW)},
                          {FUSED_OPTIM_FOR_EACH_PRECISION(FUSED_OPTIM_SGD_ROW)},
                          {FUSED_OPTIM_FOR_EACH_PRECISION(FUSED_OPTIM_RMSPROP_ROW)},
                          {FUSED_OPTIM_FOR_EACH_PRECISION(FUSED_OPTIM_ADAGRAD_ROW)},
                          {FUSED_OPTIM_FOR_EACH_PRECISION(FUSED_OPTIM_LION_ROW)},
                          {FUSED_OPTIM_FOR_EACH_PRECISION(FUSED_OPTIM_LAMB_NORMS_ROW)},
                          {FUSED_OPTIM_FOR_EACH_PRECISION(FUSED_OPTIM_LAMB_ROW)},
                          {{&norm_typed<float, kL2>, &norm_typed<float, kLinf>},
                           {&norm_typed<double, kL2>, &norm_typed<double, kLinf>},
                           {&norm_typed<c10::Half, kL2>, &norm_typed<c10::Half, kLinf>},
                           {&norm_typed<c10::BFloat16, kL2>, &norm_typed<c10::BFloat16, kLinf>}}};

}  // namespace CPU_CAPABILITY
}  // namespace fused_optim::cpu
