// Kernels that check the emulation itself (tests/test_cuda_emulation.py): that it runs a correct block reduction
// to the right result, and that it refuses the barrier and shuffle mistakes a GPU would hang on or answer wrongly.
#include "emulation.h"
// after emulation.h
#include "../../cuda/multi_tensor_apply.cuh"

namespace fused_optim::cuda::emulation {
namespace {

// Every block reduces its threads' indices (sum and maximum) with block_reduce; thread 0 writes the results.
std::vector<int64_t> block_reduce_results(int64_t blocks, int64_t threads) {
  std::vector<int64_t> out(2 * blocks);
  launch(static_cast<int>(blocks), static_cast<int>(threads), [&] {
    int64_t sum[1] = {threadIdx.x + 1000 * int64_t(blockIdx.x)};
    int64_t max[1] = {threadIdx.x};
    block_reduce<1>(sum, int64_t(0), [](int64_t a, int64_t b) { return a + b; });
    block_reduce<1>(max, int64_t(-1), [](int64_t a, int64_t b) { return a > b ? a : b; });
    if (threadIdx.x == 0) {
      out[2 * blockIdx.x] = sum[0];
      out[2 * blockIdx.x + 1] = max[0];
    }
  });
  return out;
}

void misuse(const std::string& kind) {
  if (kind == "early_exit_before_barrier") {
    launch(1, 64, [] {
      if (threadIdx.x == 3) return;
      __syncthreads();
    });
  } else if (kind == "early_exit_before_shuffle") {
    launch(1, 64, [] {
      if (threadIdx.x == 40) return;
      (void)__shfl_down_sync(0xffffffffu, 1.0f, 1);
    });
  } else if (kind == "offsets_differ") {
    launch(1, 32, [] { (void)__shfl_down_sync(0xffffffffu, 1.0f, threadIdx.x % 2 ? 1 : 2); });
  } else if (kind == "mask_leaves_out_source") {
    launch(1, 32, [] {
      if (threadIdx.x < 16) (void)__shfl_down_sync(0x0000ffffu, 1.0f, 8);
    });
  } else if (kind == "kernel_launches_kernel") {
    launch(1, 32, [] { launch(1, 32, [] {}); });
  } else {
    TORCH_CHECK(false, "unknown misuse ", kind);
  }
}

}  // namespace
}  // namespace fused_optim::cuda::emulation

TORCH_LIBRARY_FRAGMENT(fused_optim_emulation, m) {
  m.def("block_reduce_results(int blocks, int threads) -> int[]", &fused_optim::cuda::emulation::block_reduce_results);
  m.def("misuse(str kind) -> ()", &fused_optim::cuda::emulation::misuse);
}
