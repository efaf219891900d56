// CPU kernels for AVX2 + FMA (x86-64-v3). Empty on other architectures.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FUSED_OPTIM_TARGET_AVX2 1
#include "isa_target.h"
#define CPU_CAPABILITY_AVX2 1
#define CPU_CAPABILITY AVX2
#include "kernels_impl.h"
#endif
