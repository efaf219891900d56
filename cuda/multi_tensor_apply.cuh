// The CUDA multi-tensor engine: packs tensor lists into as few launches as the kernel-argument space allows
// (see launch_plan.h, which holds all the index arithmetic) and runs a functor once per block.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include "launch_plan.h"

namespace fused_optim::cuda {

constexpr int kThreads = 512;

template <int DEPTH, typename Functor>
__global__ void __launch_bounds__(kThreads) multi_tensor_kernel(const TensorListMeta<DEPTH> meta, Functor f) {
  f(meta, block_range(meta, blockIdx.x));
}

// `address(i, d)` is the pointer of tensor i in list d (the functor knows what each list holds).
template <int DEPTH, typename Numel, typename Address, typename Functor>
void multi_tensor_apply(int64_t n, Numel&& numel, Address&& address, const Functor& functor) {
  static_assert(sizeof(TensorListMeta<DEPTH>) + sizeof(Functor) <= 4096, "kernel arguments exceed 4 KB");
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  plan_launches<DEPTH>(n, numel, address, [&](const TensorListMeta<DEPTH>& meta, int blocks) {
    multi_tensor_kernel<DEPTH><<<blocks, kThreads, 0, stream>>>(meta, functor);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// kVec elements moved with one aligned vector load or store.
template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <int kVec, typename T>
__device__ inline bool is_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * kVec) == 0;
}

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
