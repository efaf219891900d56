// The interface between the CPU bindings (which see at::Tensor) and the per-ISA kernels (which see only
// pointers and scalars). Each kernel is compiled once per instruction set (kernels_<isa>.cpp); isa.cpp picks one
// at run time.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "../common/precision.h"
#include "../rules/adagrad.h"
#include "../rules/adam.h"
#include "../rules/lamb.h"
#include "../rules/lion.h"
#include "../rules/rmsprop.h"
#include "../rules/sgd.h"

namespace fused_optim::cpu {

struct AdamTensor {
  void* param;
  void* master;  // float32 master or int16 low halves; null without a master
  const void* grad;
  void* exp_avg;
  void* exp_avg_sq;
  void* max_exp_avg_sq;  // null unless amsgrad
  int64_t numel;
  rules::AdamCoeffs<double> coeffs;  // narrowed to the compute type inside the kernel
};

struct AdamLaunch {
  std::vector<AdamTensor> tensors;
  std::vector<int64_t> offsets;  // offsets[t]: first element of tensor t when all are laid end to end
};

struct SgdTensor {
  void* param;
  void* master;  // float32 master or int16 low halves; null without a master
  const void* grad;
  void* momentum_buffer;  // null when momentum is 0
  int64_t numel;
};

struct SgdLaunch {
  std::vector<SgdTensor> tensors;
  std::vector<int64_t> offsets;
  // The same for every tensor (SGD has no per-tensor step count): the kernel builds its coefficients once.
  rules::SgdHyper hyper;
  double lr;
  double inv_grad_scale;
  bool first_step;
};

// A tensor as the kernels of RMSprop, Adagrad, Lion and LAMB see it: its arrays in the order of the op's lists
// (param first; lists an op call leaves empty are skipped, not left as holes), its master and two per-tensor
// values.
struct TensorSlots {
  static constexpr size_t kMaxArrays = 5;
  std::array<void*, kMaxArrays> ptr;
  void* master;  // float32 master or int16 low halves of ptr[0]; null without a master
  int64_t numel;
  double step;   // the step count after this step's increment (Adagrad, LAMB)
  double scale;  // LAMB's second pass: lr * trust ratio
};

// Everything one op call hands its kernel: the tensors, where each starts in the concatenation, and the scalars
// that are the same for all tensors.
template <typename Hyper>
struct ListLaunch {
  std::vector<TensorSlots> tensors;
  std::vector<int64_t> offsets;
  Hyper hyper;
  double lr;
  double inv_grad_scale;
};

// LAMB's first pass only sums squares: thread k adds tensor t's (param, direction) squared norms into
// partials[(k * n + t) * 2 + {0, 1}], zeroed by the caller, which reduces them in thread order (deterministic).
struct LambNormsLaunch : ListLaunch<rules::LambHyper> {
  double* partials;
  int64_t threads;  // rows of partials: at::get_num_threads() when the caller allocated them
};

// A norm over all elements of many tensors (one dtype): thread k leaves its part in partials[k] (sum of squares
// for the 2-norm, max |x| for the inf-norm), zeroed by the caller, which combines them in thread order.
struct NormLaunch {
  std::vector<const void*> tensors;
  std::vector<int64_t> offsets;
  double* partials;
  int64_t threads;
};
enum NormType : int { kL2, kLinf };
enum NormDtype : int { kNormF32, kNormF64, kNormF16, kNormBF16, kNumNormDtypes };

// Kernels are typed by their precision (csrc/common/precision.h: param, grad, state and master dtypes), indexed
// as in FUSED_OPTIM_FOR_EACH_PRECISION. The ISA files contain no dtype dispatch (or any other code that could
// throw): everything that is not ISA-specific stays in the baseline-compiled bindings, so no shared inline function
// gets linked in an AVX-512 flavour.

using AdamKernel = void (*)(const AdamLaunch&);
using SgdKernel = void (*)(const SgdLaunch&);
using RmspropKernel = void (*)(const ListLaunch<rules::RmspropHyper>&);
using AdagradKernel = void (*)(const ListLaunch<rules::AdagradHyper>&);
using LionKernel = void (*)(const ListLaunch<rules::LionHyper>&);
using LambNormsKernel = void (*)(const LambNormsLaunch&);
using LambKernel = void (*)(const ListLaunch<rules::LambHyper>&);
using NormKernel = void (*)(const NormLaunch&);

// One entry per instruction set the build compiled.
struct KernelTable {
  const char* isa;
  AdamKernel adam[kNumPrecisions][2];        // [precision][amsgrad]
  SgdKernel sgd[kNumPrecisions][2];          // [precision][momentum != 0]
  RmspropKernel rmsprop[kNumPrecisions][4];  // [precision][2 * centered + (momentum != 0)]
  AdagradKernel adagrad[kNumPrecisions];
  LionKernel lion[kNumPrecisions];
  LambNormsKernel lamb_norms[kNumPrecisions];
  LambKernel lamb[kNumPrecisions];
  NormKernel norm[kNumNormDtypes][2];  // [dtype][NormType]
};

#define FUSED_OPTIM_DECLARE_ISA(NS) \
  namespace NS {                    \
  extern const KernelTable kernels; \
  }
FUSED_OPTIM_DECLARE_ISA(DEFAULT)
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FUSED_OPTIM_X86_ISAS 1
FUSED_OPTIM_DECLARE_ISA(AVX2)
FUSED_OPTIM_DECLARE_ISA(AVX512)
#endif
#undef FUSED_OPTIM_DECLARE_ISA

// The kernel table in use: the widest the CPU supports, or the one named by FUSED_OPTIM_CPU_ISA / set_isa().
const KernelTable& active_kernels();
// Names of the instruction sets this CPU can run, narrowest first.
std::vector<std::string> supported_isas();
// Switches the active table (tests use it to cover every ISA); throws for an unknown or unsupported name.
void set_isa(const std::string& name);

}  // namespace fused_optim::cpu
