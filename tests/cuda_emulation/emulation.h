// Runs the CUDA kernels of cuda/ on the CPU, so that machines without a GPU (CI) execute every line of them:
// indexing, tails, vector loads and stores, masters, device scalars, block reductions and atomics. Each kernel
// file is compiled as C++ after this header (tests/cuda_emulation/__init__.py), which supplies the CUDA built-ins
// the kernels use and registers their ops for CPU tensors in place of the CPU kernels.
//
// An emulated launch runs its blocks one after another and the threads of a block as fibers (runtime.cpp), which
// switch only at __syncthreads and warp shuffles. The runtime is stricter than a GPU where that finds bugs: a
// barrier or shuffle that not every thread it names reaches is an error, not a hang or an undefined result.
// Under AddressSanitizer (FUSED_OPTIM_SANITIZE) every out-of-bounds load or store of a kernel is reported, as
// compute-sanitizer's memcheck would on a GPU.
#pragma once

// Everything the kernel files include from torch, before the CUDA keywords below become macros.
#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

// The emulated kernels take the place of the CPU kernels: `TORCH_LIBRARY_IMPL(fused_optim, CUDA, m)` in a kernel
// file registers for CPU tensors.
#undef TORCH_LIBRARY_IMPL
#define TORCH_LIBRARY_IMPL(ns, k, m) _TORCH_LIBRARY_IMPL(ns, CPU, m, C10_UID)

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// Blocks run one at a time, so one copy of a block's shared memory serves them all. It lives in its own section,
// which the runtime fills with 0xff bytes (NaN, -1) before every block: a read before a write shows in the
// results instead of finding a zero, or the last block's value, that happens to be right.
#define __shared__ static __attribute__((section("fused_optim_emulated_shared")))

namespace fused_optim::cuda::emulation {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

const Dim3& thread_index();
const Dim3& block_index();
const Dim3& block_dim();

// Runs `thread` once per thread of `blocks` blocks of `threads` threads (a multiple of 32, at most 1024); returns
// when all have finished. Errors of the kernel (a barrier not every thread reaches) are thrown here. Launches from
// several host threads run one after another.
void launch(int blocks, int threads, const std::function<void()>& thread);

void sync_threads();
uint64_t shuffle_down(unsigned mask, uint64_t bits, unsigned delta, int width);

// Whether lr, grad_scale and found_inf given as CPU tensors are read in the kernels (as device memory is on a GPU,
// where GradScaler keeps them) instead of on the host. Starts from FUSED_OPTIM_EMULATE_DEVICE_SCALARS.
bool scalars_on_device();

}  // namespace fused_optim::cuda::emulation

#define threadIdx (::fused_optim::cuda::emulation::thread_index())
#define blockIdx (::fused_optim::cuda::emulation::block_index())
#define blockDim (::fused_optim::cuda::emulation::block_dim())

inline void __syncthreads() {
  ::fused_optim::cuda::emulation::sync_threads();
}

template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= sizeof(uint64_t));
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = ::fused_optim::cuda::emulation::shuffle_down(mask, bits, delta, width);
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// Fibers switch only at barriers and shuffles, so a read-modify-write is atomic here as it is on the GPU.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
template <typename T>
T atomicMax(T* address, T value) {
  const T old = *address;
  *address = old > value ? old : value;
  return old;
}

inline float __uint_as_float(unsigned int bits) {
  return std::bit_cast<float>(bits);
}
inline unsigned int __float_as_uint(float value) {
  return std::bit_cast<unsigned int>(value);
}
inline int __float_as_int(float value) {
  return std::bit_cast<int>(value);
}
inline long long __double_as_longlong(double value) {
  return std::bit_cast<long long>(value);
}
