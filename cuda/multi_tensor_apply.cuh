// The CUDA multi-tensor engine: packs tensor lists into as few launches as the kernel-argument space allows
// (see launch_plan.h, which holds all the index arithmetic) and runs a functor once per block.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <type_traits>

#include "launch_plan.h"

namespace fused_optim::cuda {

constexpr int kThreads = 512;

// The kernel-argument space of a launch. CUDA 12.1+ accepts 32 KB on sm_70+ (fewer, fuller launches: 1000 small
// tensors of Adam take 3 launches instead of 24), but a 12.x build may run on an older 12.0 driver (minor-version
// compatibility) that refuses them; every driver that runs a CUDA 13 build takes them, so that is where we switch.
// -DFUSED_OPTIM_CLASSIC_KERNEL_ARGS keeps 4 KB (to compare the two on a GPU, or to check that a CUDA 12 build fits).
#if defined(CUDART_VERSION) && CUDART_VERSION >= 13000 && !defined(FUSED_OPTIM_CLASSIC_KERNEL_ARGS)
constexpr int kKernelArgBytes = kLargeArgBytes;
#else
constexpr int kKernelArgBytes = kClassicArgBytes;
#endif

template <int DEPTH>
using LaunchMeta = TensorListMeta<DEPTH, kKernelArgBytes>;

// A block's work: the functor over the block's range. The CPU emulation of the kernels (tests/cuda_emulation)
// calls it directly, so a block's threads share one copy of the 32 KB of metadata, as on a GPU.
template <int DEPTH, typename Functor>
__device__ __forceinline__ void apply_to_block(const LaunchMeta<DEPTH>& meta, const Functor& f) {
  f(meta, block_range(meta, blockIdx.x));
}

template <int DEPTH, typename Functor>
__global__ void __launch_bounds__(kThreads) multi_tensor_kernel(const LaunchMeta<DEPTH> meta, Functor f) {
  apply_to_block(meta, f);
}

// `address(i, d)` is the pointer of tensor i in list d (the functor knows what each list holds).
template <int DEPTH, typename Numel, typename Address, typename Functor>
void multi_tensor_apply(int64_t n, Numel&& numel, Address&& address, const Functor& functor) {
  static_assert(sizeof(LaunchMeta<DEPTH>) + sizeof(Functor) <= kKernelArgBytes, "kernel arguments too large");
  static_assert(std::is_trivially_copyable_v<Functor>, "a kernel argument is copied bytewise to the device");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  plan_launches<DEPTH, kKernelArgBytes>(n, numel, address, [&](const LaunchMeta<DEPTH>& meta, int blocks) {
#ifdef FUSED_OPTIM_CUDA_EMULATION  // tests/cuda_emulation: the same kernel, its threads run on the CPU
    emulation::launch(blocks, kThreads, [&] { apply_to_block(meta, functor); });
#else
    multi_tensor_kernel<DEPTH><<<blocks, kThreads, 0, stream>>>(meta, functor);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
#endif
  });
}

// kVec elements moved with one aligned vector load or store.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

}  // namespace fused_optim::cuda

namespace fused_optim::cuda {

// Reduces each of v[0..N) over the threads of a block with `combine` (associative, with `identity` as its neutral
// element); the results are valid in thread 0. blockDim.x is a multiple of 32, at most 1024. Every thread of the
// block must call it.
template <int N, typename T, typename Combine>
__device__ inline void block_reduce(T (&v)[N], T identity, Combine combine) {
  __shared__ T partial[N][32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    for (int offset = 16; offset > 0; offset /= 2) v[k] = combine(v[k], __shfl_down_sync(0xffffffffu, v[k], offset));
    if (lane == 0) partial[k][warp] = v[k];
  }
  __syncthreads();
  if (warp == 0) {
    const bool live = lane < static_cast<int>(blockDim.x / 32);
#pragma unroll
    for (int k = 0; k < N; ++k) {
      v[k] = live ? partial[k][lane] : identity;
      for (int offset = 16; offset > 0; offset /= 2) v[k] = combine(v[k], __shfl_down_sync(0xffffffffu, v[k], offset));
    }
  }
}

}  // namespace fused_optim::cuda
