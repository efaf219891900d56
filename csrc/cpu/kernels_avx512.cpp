// CPU kernels for AVX-512 (F, BW, VL, DQ). Empty on other architectures.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FUSED_OPTIM_TARGET_AVX512 1
#include "isa_target.h"
#define CPU_CAPABILITY_AVX512 1
#define CPU_CAPABILITY AVX512
#include "kernels_impl.h"
#endif
