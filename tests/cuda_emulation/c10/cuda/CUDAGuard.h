// Stand-in for c10/cuda/CUDAGuard.h in the CPU emulation of the CUDA kernels (tests/cuda_emulation): there is one
// device, the CPU, so a device guard has nothing to switch.
#pragma once

#include <c10/core/Device.h>

#include "c10/cuda/CUDAStream.h"

namespace c10::cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};

}  // namespace c10::cuda
