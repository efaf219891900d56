// Mixed precision: the dtype combinations the kernels are compiled for, and how an op call picks one.
//
// Every tensor family (parameter, gradient, optimizer state, master) has its own dtype. The parameter is what the
// model sees; the master, when there is one, is what the optimizer updates:
//   - none:  the parameter itself is updated (in fp32 arithmetic for 16-bit parameters, rounded once per step);
//   - full:  a float32 copy is updated and rounded into the 16-bit parameter in the same pass;
//   - split: bf16 only. The parameter holds the high 16 bits of a float32 master and an int16 tensor beside it the
//            low 16 bits, so the master is exact at 2 extra bytes per parameter. The parameter is the master
//            truncated (not rounded) to bf16.
// Gradients of a dtype the list below lacks for the call are converted to float32 (float64 for float64 params)
// by TensorLists before the kernel runs: correct, at the cost of one extra pass.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <optional>
#include <string>

namespace fused_optim {

enum class Master : uint8_t { kNone, kFull, kSplit };

// X(param, grad, state, master) for each combination, in the kernel tables' order.
#define FUSED_OPTIM_FOR_EACH_PRECISION(X)                \
  X(float, float, float, kNone)                          \
  X(double, double, double, kNone)                       \
  X(c10::Half, c10::Half, c10::Half, kNone)              \
  X(c10::BFloat16, c10::BFloat16, c10::BFloat16, kNone)  \
  /* gradients of another dtype */                       \
  X(float, c10::BFloat16, float, kNone)                  \
  X(c10::Half, float, c10::Half, kNone)                  \
  X(c10::BFloat16, float, c10::BFloat16, kNone)          \
  /* bf16 optimizer state */                             \
  X(float, float, c10::BFloat16, kNone)                  \
  X(float, c10::BFloat16, c10::BFloat16, kNone)          \
  /* float32 master weights */                           \
  X(c10::BFloat16, c10::BFloat16, float, kFull)          \
  X(c10::BFloat16, float, float, kFull)                  \
  X(c10::BFloat16, c10::BFloat16, c10::BFloat16, kFull)  \
  X(c10::BFloat16, float, c10::BFloat16, kFull)          \
  X(c10::Half, c10::Half, float, kFull)                  \
  X(c10::Half, float, float, kFull)                      \
  X(c10::Half, c10::Half, c10::BFloat16, kFull)          \
  X(c10::Half, float, c10::BFloat16, kFull)              \
  /* split master (bf16 parameter + int16 low bits) */   \
  X(c10::BFloat16, c10::BFloat16, float, kSplit)         \
  X(c10::BFloat16, float, float, kSplit)                 \
  X(c10::BFloat16, c10::BFloat16, c10::BFloat16, kSplit) \
  X(c10::BFloat16, float, c10::BFloat16, kSplit)

#define FUSED_OPTIM_COUNT_PRECISION(P, G, S, M) +1
constexpr int kNumPrecisions = 0 FUSED_OPTIM_FOR_EACH_PRECISION(FUSED_OPTIM_COUNT_PRECISION);
#undef FUSED_OPTIM_COUNT_PRECISION

struct Precision {
  at::ScalarType param;
  at::ScalarType grad;
  at::ScalarType state;
  Master master;
};

#define FUSED_OPTIM_PRECISION_ENTRY(P, G, S, M)                                     \
  Precision{c10::CppTypeToScalarType<P>::value, c10::CppTypeToScalarType<G>::value, \
            c10::CppTypeToScalarType<S>::value, Master::M},
inline constexpr Precision kPrecisions[kNumPrecisions] = {FUSED_OPTIM_FOR_EACH_PRECISION(FUSED_OPTIM_PRECISION_ENTRY)};
#undef FUSED_OPTIM_PRECISION_ENTRY

inline const char* master_name(Master m) {
  return m == Master::kNone ? "no master" : m == Master::kFull ? "a float32 master" : "a split (int16) master";
}

// The kernel table index for a call, and the dtype its gradients must have (the given one, or a converted one).
struct PrecisionChoice {
  int index;
  at::ScalarType grad;
};

// The dtype kernels compute in for a param dtype: float64 for float64 params, else float32. It holds every float
// gradient exactly, so gradients of another or of mixed dtypes are converted to it.
inline at::ScalarType compute_dtype(at::ScalarType param) {
  return param == at::kDouble ? at::kDouble : at::kFloat;
}

inline int find_precision(at::ScalarType param, at::ScalarType grad, at::ScalarType state, Master master) {
  for (int i = 0; i < kNumPrecisions; ++i) {
    const Precision& p = kPrecisions[i];
    if (p.param == param && p.grad == grad && p.state == state && p.master == master) return i;
  }
  return -1;
}

inline PrecisionChoice choose_precision(const char* op, at::ScalarType param, at::ScalarType grad, at::ScalarType state,
                                        Master master) {
  int i = find_precision(param, grad, state, master);
  if (i >= 0) return {i, grad};
  const at::ScalarType wide = compute_dtype(param);
  i = find_precision(param, wide, state, master);
  if (i >= 0) return {i, wide};
  std::string supported;
  for (const Precision& p : kPrecisions) {  // one entry per (state, master): kernels also differ by grad dtype
    if (p.param != param) continue;
    const std::string entry = "state " + std::string(c10::toString(p.state)) + " with " + master_name(p.master);
    if (supported.find(entry) == std::string::npos) supported += (supported.empty() ? "" : "; ") + entry;
  }
  TORCH_CHECK(false, op, ": no kernel for ", param, " params with ", state, " optimizer state and ",
              master_name(master), "; for ", param,
              " params the supported combinations are: ", supported.empty() ? std::string("none") : supported);
}

// Everything an op call's dtypes decide: the kernel, and the dtype TensorLists must see in each list.
struct ResolvedPrecision {
  int index = 0;
  at::ScalarType grad = at::kFloat;
  at::ScalarType state = at::kFloat;
  std::optional<at::ScalarType> master_dtype;  // float32 (full) or int16 (split); unset without a master
  Master master = Master::kNone;
};

// `state` is any one of the op's state lists (all must share its dtype; empty when the op keeps none) and
// `masters` the master_params list (empty: no master). TensorLists checks every tensor afterwards; this only
// reads the first of each list.
inline ResolvedPrecision resolve_precision(const char* op, at::TensorList params, at::TensorList grads,
                                           at::TensorList state, at::TensorList masters) {
  ResolvedPrecision r;
  if (params.empty() || !params[0].defined()) return r;  // TensorLists reports what is wrong
  const at::ScalarType p = params[0].scalar_type();
  TORCH_CHECK(p == at::kFloat || p == at::kDouble || p == at::kHalf || p == at::kBFloat16, op, ": params[0] has dtype ",
              p, "; supported dtypes are float32, float64, float16 and bfloat16");
  if (!masters.empty() && masters[0].defined()) {
    const at::ScalarType m = masters[0].scalar_type();
    TORCH_CHECK(m == at::kFloat || (m == at::kShort && p == at::kBFloat16), op,
                ": master_params must be float32 (a master copy) or, for bfloat16 params, int16 (the low halves of "
                "a split master); got ",
                m, " for ", p, " params");
    r.master = m == at::kFloat ? Master::kFull : Master::kSplit;
    r.master_dtype = m;
  }
  const bool has_state = !state.empty() && state[0].defined();
  r.state = has_state ? state[0].scalar_type() : (r.master == Master::kNone ? p : at::kFloat);
  at::ScalarType g = !grads.empty() && grads[0].defined() ? grads[0].scalar_type() : p;
  if (!(g == at::kFloat || g == at::kDouble || g == at::kHalf || g == at::kBFloat16)) g = p;  // TensorLists refuses it
  for (const at::Tensor& t : grads) {
    // Gradients of several dtypes go to the compute dtype: the first one's could be narrower and round the others.
    if (t.defined() && t.scalar_type() != g) {
      g = compute_dtype(p);
      break;
    }
  }
  const PrecisionChoice choice = choose_precision(op, p, g, r.state, r.master);
  r.index = choice.index;
  r.grad = choice.grad;
  return r;
}

}  // namespace fused_optim
