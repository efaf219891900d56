// SIMD glue for the CPU engine: the rules' math functions for at::vec::Vectorized, and loads/stores that turn
// storage types (fp32, fp64, fp16, bf16) into compute vectors. Included only by the per-ISA kernel files, after
// they have chosen CPU_CAPABILITY, so everything here lives in that ISA's namespace.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstring>
#include <tuple>
#include <utility>

#include "../common/precision.h"
#include "../rules/math.h"

namespace fused_optim::math {
template <>
inline at::vec::Vectorized<float> sqrt(at::vec::Vectorized<float> x) {
  return x.sqrt();
}
template <>
inline at::vec::Vectorized<double> sqrt(at::vec::Vectorized<double> x) {
  return x.sqrt();
}
template <>
inline at::vec::Vectorized<float> max(at::vec::Vectorized<float> a, at::vec::Vectorized<float> b) {
  return at::vec::maximum(a, b);  // propagates NaN, like torch.maximum
}
template <>
inline at::vec::Vectorized<double> max(at::vec::Vectorized<double> a, at::vec::Vectorized<double> b) {
  return at::vec::maximum(a, b);
}
template <typename V>
inline V vec_sign(V x) {
  // gt/lt give 1.0 or 0.0 per lane; blending x back keeps +-0 and NaN as torch.sign does.
  const V zero(0);
  const V s = x.gt(zero) - x.lt(zero);
  return V::blendv(s, x, (x == zero) | x.isnan());
}
template <>
inline at::vec::Vectorized<float> sign(at::vec::Vectorized<float> x) {
  return vec_sign(x);
}
template <>
inline at::vec::Vectorized<double> sign(at::vec::Vectorized<double> x) {
  return vec_sign(x);
}
}  // namespace fused_optim::math

namespace fused_optim::cpu {
namespace CPU_CAPABILITY {

using at::vec::Vectorized;
using fused_optim::Master;

// Moves kBlock elements of storage type T to and from two compute vectors. One Vectorized<bf16/half> holds
// exactly two float vectors' worth, so every storage type is processed in blocks of two compute vectors.
template <typename T>
struct Io {
  using acc_t = at::opmath_type<T>;
  using Vec = Vectorized<acc_t>;
  static constexpr int64_t kBlock = 2 * Vec::size();
  static_assert(Vectorized<T>::size() == kBlock || std::is_same_v<T, acc_t>);

  static C10_ALWAYS_INLINE void load(const T* p, Vec& lo, Vec& hi) {
    if constexpr (std::is_same_v<T, acc_t>) {
      lo = Vec::loadu(p);
      hi = Vec::loadu(p + Vec::size());
    } else {
      std::tie(lo, hi) = at::vec::convert_to_float<T>(Vectorized<T>::loadu(p));
    }
  }
  static C10_ALWAYS_INLINE void store(T* p, const Vec& lo, const Vec& hi) {
    if constexpr (std::is_same_v<T, acc_t>) {
      lo.store(p);
      hi.store(p + Vec::size());
    } else {
      at::vec::convert_from_float<T>(lo, hi).store(p);  // round to nearest even
    }
  }
};

// How a block of kBlock elements is spread over its two compute vectors. The rules are elementwise, so every
// layout gives the same updates as long as all streams of a loop use the same one (a norm's sum is added in
// another order, which moves only its rounding).
struct Natural {};  // lo: the block's first half, hi: its second half
struct EvenOdd {};  // lo: the block's even elements, hi: its odd ones

#if defined(CPU_CAPABILITY_AVX2)
// A bf16 is the high half of an fp32, so in the even/odd layout a block converts with one shift or mask per vector
// on load and one blend on store, where the natural layout needs at::vec's widening and packing shuffles across
// 128-bit lanes. All-bf16 AdamW is compute-bound on AVX2; on 25 M params (Zen 2, 2 threads) this layout took it
// from 0.60 to 0.43 ns per element. Only loops whose arrays are all bf16 can use it: an fp32 array would need the
// shuffles back.
struct Bf16EvenOdd {
  static C10_ALWAYS_INLINE __m256i bits(const Vectorized<float>& v) { return _mm256_castps_si256(v); }
  static C10_ALWAYS_INLINE Vectorized<float> floats(__m256i x) { return _mm256_castsi256_ps(x); }
  static C10_ALWAYS_INLINE __m256i load16(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
  static C10_ALWAYS_INLINE void store16(void* p, __m256i x) { _mm256_storeu_si256(static_cast<__m256i*>(p), x); }
  static C10_ALWAYS_INLINE __m256i high_halves() { return _mm256_set1_epi32(static_cast<int>(0xffff0000u)); }
  // Rounds to nearest even, into the high half of each lane (the low half is garbage). NaN becomes 0xffff, as
  // in at::vec's conversion, so both layouts store the same bits.
  static C10_ALWAYS_INLINE __m256i round(const Vectorized<float>& v) {
    const __m256i x = bits(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    const __m256i ordered = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_ORD_Q));
    return _mm256_blendv_epi8(_mm256_set1_epi32(-1), rounded, ordered);
  }
  // Joins the even lanes' high halves (moved down) and the odd lanes' high halves into 16 packed values.
  static C10_ALWAYS_INLINE __m256i pack_high(__m256i even, __m256i odd) {
    return _mm256_blend_epi16(_mm256_srli_epi32(even, 16), odd, 0xAA);
  }
  static C10_ALWAYS_INLINE void load(const c10::BFloat16* p, Vectorized<float>& even, Vectorized<float>& odd) {
    const __m256i x = load16(p);
    even = floats(_mm256_slli_epi32(x, 16));
    odd = floats(_mm256_and_si256(x, high_halves()));
  }
  static C10_ALWAYS_INLINE void store(c10::BFloat16* p, const Vectorized<float>& even, const Vectorized<float>& odd) {
    store16(p, pack_high(round(even), round(odd)));
  }
  // A split master: bf16 high halves and int16 low halves joined into fp32 bits, exactly (no rounding).
  static C10_ALWAYS_INLINE void load_split(const c10::BFloat16* high, const int16_t* low, Vectorized<float>& even,
                                           Vectorized<float>& odd) {
    const __m256i h = load16(high);
    const __m256i l = load16(low);
    even = floats(_mm256_blend_epi16(_mm256_slli_epi32(h, 16), l, 0x55));
    odd = floats(_mm256_blend_epi16(h, _mm256_srli_epi32(l, 16), 0x55));
  }
  static C10_ALWAYS_INLINE void store_split(c10::BFloat16* high, int16_t* low, const Vectorized<float>& even,
                                            const Vectorized<float>& odd) {
    store16(high, pack_high(bits(even), bits(odd)));
    store16(low, _mm256_blend_epi16(bits(even), _mm256_slli_epi32(bits(odd), 16), 0xAA));
  }
};
#endif

// The arrays a kernel streams through, one "stream" each. A stream moves a block of kBlock elements between
// memory and two compute vectors (load/store, in a Layout) and a single element for the tails (get/set). Streams
// of different storage types mix freely in one loop as long as they share the compute type (float, or double for
// float64); a stream that has EvenOdd overloads can use that layout.

// An array of T.
template <typename T>
struct Plain {
  using acc_t = at::opmath_type<T>;
  T* p;
  C10_ALWAYS_INLINE void load(int64_t i, Vectorized<acc_t>& lo, Vectorized<acc_t>& hi, Natural) const {
    Io<T>::load(p + i, lo, hi);
  }
  C10_ALWAYS_INLINE void store(int64_t i, const Vectorized<acc_t>& lo, const Vectorized<acc_t>& hi, Natural) const {
    Io<T>::store(p + i, lo, hi);
  }
#if defined(CPU_CAPABILITY_AVX2)
  C10_ALWAYS_INLINE void load(int64_t i, Vectorized<acc_t>& lo, Vectorized<acc_t>& hi, EvenOdd) const
    requires std::is_same_v<T, c10::BFloat16>
  {
    Bf16EvenOdd::load(p + i, lo, hi);
  }
  C10_ALWAYS_INLINE void store(int64_t i, const Vectorized<acc_t>& lo, const Vectorized<acc_t>& hi, EvenOdd) const
    requires std::is_same_v<T, c10::BFloat16>
  {
    Bf16EvenOdd::store(p + i, lo, hi);
  }
#endif
  C10_ALWAYS_INLINE acc_t get(int64_t i) const { return static_cast<acc_t>(p[i]); }
  C10_ALWAYS_INLINE void set(int64_t i, acc_t v) const { p[i] = static_cast<T>(v); }
};

// A 16-bit parameter with a float32 master: the master is read and updated, and the parameter is written as the
// master rounded to nearest even (never read, so the step moves no more bytes than an fp32 one).
template <typename P>
struct WithMaster {
  using acc_t = float;
  P* param;
  float* master;
  C10_ALWAYS_INLINE void load(int64_t i, Vectorized<float>& lo, Vectorized<float>& hi, Natural) const {
    Io<float>::load(master + i, lo, hi);
  }
  C10_ALWAYS_INLINE void store(int64_t i, const Vectorized<float>& lo, const Vectorized<float>& hi, Natural) const {
    Io<float>::store(master + i, lo, hi);
    Io<P>::store(param + i, lo, hi);
  }
  C10_ALWAYS_INLINE float get(int64_t i) const { return master[i]; }
  C10_ALWAYS_INLINE void set(int64_t i, float v) const {
    master[i] = v;
    param[i] = static_cast<P>(v);
  }
};

// A bf16 parameter that is the high half of a float32 master whose low half lives in an int16 array: the two are
// joined on load and split on store, so the master is exact and the parameter is the master truncated to bf16.
struct SplitMaster {
  using acc_t = float;
  c10::BFloat16* param;
  int16_t* low;
  static C10_ALWAYS_INLINE float join(uint16_t high, uint16_t low_bits) {
    const uint32_t bits = (static_cast<uint32_t>(high) << 16) | low_bits;
    float f;
    std::memcpy(&f, &bits, sizeof(f));
    return f;
  }
  C10_ALWAYS_INLINE void load(int64_t i, Vectorized<float>& lo, Vectorized<float>& hi, Natural) const {
    constexpr int64_t kBlock = 2 * Vectorized<float>::size();
    alignas(64) float f[kBlock];
    const auto* h = reinterpret_cast<const uint16_t*>(param + i);
    const auto* l = reinterpret_cast<const uint16_t*>(low + i);
    for (int64_t k = 0; k < kBlock; ++k) f[k] = join(h[k], l[k]);  // the compiler vectorizes this
    lo = Vectorized<float>::loadu(f);
    hi = Vectorized<float>::loadu(f + Vectorized<float>::size());
  }
#if defined(CPU_CAPABILITY_AVX2)
  C10_ALWAYS_INLINE void load(int64_t i, Vectorized<float>& lo, Vectorized<float>& hi, EvenOdd) const {
    Bf16EvenOdd::load_split(param + i, low + i, lo, hi);
  }
  C10_ALWAYS_INLINE void store(int64_t i, const Vectorized<float>& lo, const Vectorized<float>& hi, EvenOdd) const {
    Bf16EvenOdd::store_split(param + i, low + i, lo, hi);
  }
#endif
  C10_ALWAYS_INLINE void store(int64_t i, const Vectorized<float>& lo, const Vectorized<float>& hi, Natural) const {
#if defined(CPU_CAPABILITY_AVX2)
    // GCC turns the loop below into one lane extract per element for AVX2 (the split master then ran 1.65x
    // slower than a full fp32 master); two packs do it in registers. packus cannot saturate: inputs are <= 0xffff.
    const __m256i a = _mm256_castps_si256(lo);
    const __m256i b = _mm256_castps_si256(hi);
    const __m256i mask = _mm256_set1_epi32(0xffff);
    // packus interleaves the 128-bit lanes of its two inputs; the permute puts the 64-bit quarters back in order.
    const __m256i high = _mm256_packus_epi32(_mm256_srli_epi32(a, 16), _mm256_srli_epi32(b, 16));
    const __m256i low_bits = _mm256_packus_epi32(_mm256_and_si256(a, mask), _mm256_and_si256(b, mask));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(param + i), _mm256_permute4x64_epi64(high, 0xD8));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(low + i), _mm256_permute4x64_epi64(low_bits, 0xD8));
#else
    constexpr int64_t kBlock = 2 * Vectorized<float>::size();
    alignas(64) uint32_t bits[kBlock];
    lo.store(bits);
    hi.store(bits + Vectorized<float>::size());
    auto* h = reinterpret_cast<uint16_t*>(param + i);
    auto* l = reinterpret_cast<uint16_t*>(low + i);
    for (int64_t k = 0; k < kBlock; ++k) {
      h[k] = static_cast<uint16_t>(bits[k] >> 16);
      l[k] = static_cast<uint16_t>(bits[k] & 0xffffu);
    }
#endif
  }
  C10_ALWAYS_INLINE float get(int64_t i) const {
    return join(reinterpret_cast<const uint16_t*>(param)[i], reinterpret_cast<const uint16_t*>(low)[i]);
  }
  C10_ALWAYS_INLINE void set(int64_t i, float v) const {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof(bits));
    reinterpret_cast<uint16_t*>(param)[i] = static_cast<uint16_t>(bits >> 16);
    reinterpret_cast<uint16_t*>(low)[i] = static_cast<uint16_t>(bits & 0xffffu);
  }
};

// The parameter's stream for a master mode.
template <typename P, Master M>
C10_ALWAYS_INLINE auto param_stream(void* param, void* master) {
  if constexpr (M == Master::kNone) {
    return Plain<P>{static_cast<P*>(param)};
  } else if constexpr (M == Master::kFull) {
    return WithMaster<P>{static_cast<P*>(param), static_cast<float*>(master)};
  } else {
    static_assert(std::is_same_v<P, c10::BFloat16>, "split masters are for bfloat16 params");
    return SplitMaster{static_cast<c10::BFloat16*>(param), static_cast<int16_t*>(master)};
  }
}

template <typename F, size_t... I>
C10_ALWAYS_INLINE void static_for(F&& f, std::index_sequence<I...>) {
  (f(std::integral_constant<size_t, I>{}), ...);
}

// Runs body(x) over elements [begin, end) of the streams, where x is a std::array with one compute value per
// stream: SIMD vectors for whole blocks, then scalars for the tail (the same scalar instantiation of the rule the
// CUDA kernels compile, which keeps it tested here). Streams whose bit is set in kReadOnly are never stored. Blocks
// use the EvenOdd layout when every stream can. The streams come by value: through a reference the compiler could
// not rule out that the loop's stores move the arrays, and reloaded every pointer after every store (Lion with a
// split master, 25 M params: 12.3 -> 10.8 ms).
// A stream can join an EvenOdd loop when it has overloads for that layout.
template <typename S>
concept HasEvenOdd = requires(const S& s, Vectorized<typename S::acc_t>& v) { s.load(0, v, v, EvenOdd{}); };
#if defined(CPU_CAPABILITY_AVX2)
static_assert(HasEvenOdd<Plain<c10::BFloat16>> && HasEvenOdd<SplitMaster> && !HasEvenOdd<Plain<float>> &&
              !HasEvenOdd<WithMaster<c10::BFloat16>>);
#endif

template <uint32_t kReadOnly, typename... Streams, typename Body>
C10_ALWAYS_INLINE void for_each_block(std::tuple<Streams...> streams, int64_t begin, int64_t end, Body&& body) {
  constexpr size_t N = sizeof...(Streams);
  using acc_t = typename std::tuple_element_t<0, std::tuple<Streams...>>::acc_t;
  static_assert((std::is_same_v<typename Streams::acc_t, acc_t> && ...), "streams must share the compute type");
  using Vec = Vectorized<acc_t>;
  constexpr int64_t kBlock = 2 * Vec::size();
  using Layout = std::conditional_t<(HasEvenOdd<Streams> && ...), EvenOdd, Natural>;
  const auto each = [](auto&& f) { static_for(f, std::make_index_sequence<N>{}); };
  int64_t i = begin;
  for (; i + kBlock <= end; i += kBlock) {
    std::array<Vec, N> lo, hi;
    each([&](auto k) { std::get<k>(streams).load(i, lo[k], hi[k], Layout{}); });
    body(lo);
    body(hi);
    each([&](auto k) {
      if constexpr (!(kReadOnly & (1u << k))) std::get<k>(streams).store(i, lo[k], hi[k], Layout{});
    });
  }
  for (; i < end; ++i) {
    std::array<acc_t, N> x;
    each([&](auto k) { x[k] = std::get<k>(streams).get(i); });
    body(x);
    each([&](auto k) {
      if constexpr (!(kReadOnly & (1u << k))) std::get<k>(streams).set(i, x[k]);
    });
  }
}

}  // namespace CPU_CAPABILITY
}  // namespace fused_optim::cpu
