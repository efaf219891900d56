// Compiles the rest of a translation unit for a wider x86 instruction set than the build's baseline, so one
// binary carries AVX2 and AVX-512 kernels and isa.cpp picks one at run time. The build system compiles every
// file with the same flags (setup.py and the JIT loader alike), so the target is set here: the pragma lets the
// compiler emit the instructions, and the feature macros (which the pragma does not define) make at::vec and its
// headers select their AVX2/AVX-512 code. Include this first, before any other header.
//
// The hazard of compiling one file for a wider ISA: an inline function it shares with other files (a std::
// template, a c10 helper) is emitted in both, and the linker may keep the wide copy for everyone, which then
// crashes on an older CPU. So the per-ISA files hold only code that lives in their own namespace (the kernels,
// at::vec::<ISA>): no dtype dispatch, no error paths, no containers they build; check with
// `nm -C --defined-only kernels_avx512.o | grep ' W '`.
#pragma once

#if defined(FUSED_OPTIM_TARGET_AVX512)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,avx,sse4.2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#define FUSED_OPTIM_FEATURE_MACROS_AVX512 1
#elif defined(FUSED_OPTIM_TARGET_AVX2)
#pragma GCC target("avx2,avx,sse4.2,fma,f16c,bmi,bmi2,lzcnt,popcnt")
#else
#error "define FUSED_OPTIM_TARGET_AVX2 or FUSED_OPTIM_TARGET_AVX512 before including isa_target.h"
#endif

#ifdef FUSED_OPTIM_FEATURE_MACROS_AVX512
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __SSE4_1__
#define __SSE4_1__ 1
#endif
#ifndef __SSE4_2__
#define __SSE4_2__ 1
#endif
#ifndef __SSSE3__
#define __SSSE3__ 1
#endif
#ifndef __SSE3__
#define __SSE3__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
