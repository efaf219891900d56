// Stand-in for c10/cuda/CUDAStream.h in the CPU emulation of the CUDA kernels (tests/cuda_emulation): an emulated
// launch runs to completion before it returns, so there is one stream and it is always idle.
#pragma once

using cudaStream_t = struct EmulatedStream*;

namespace c10::cuda {

struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};

inline CUDAStream getCurrentCUDAStream() {
  return {};
}

}  // namespace c10::cuda
