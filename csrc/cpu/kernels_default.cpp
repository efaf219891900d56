// CPU kernels for the baseline instruction set of the compiler's target (SSE2 on x86-64, NEON on arm64).
#ifndef CPU_CAPABILITY
#define CPU_CAPABILITY DEFAULT
#endif
#include "kernels_impl.h"
