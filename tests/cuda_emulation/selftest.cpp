// Kernels that check the emulation itself (tests/test_cuda_emulation.py): block reductions and shuffles give CUDA's
// results, shared memory starts poisoned in every block, and barrier and shuffle mistakes (on a GPU a hang or an
// undefined result) are errors.
#include "emulation.h"
// after emulation.h
#include "../../cuda/multi_tensor_apply.cuh"

namespace fused_optim::cuda::emulation {
namespace {

constexpr int kWarp = 32;

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

// Every lane shuffles down its lane * 10 by its own offset (1 + lane % 3) within segments of `width` lanes.
std::vector<int64_t> shuffle_down_results(int64_t width) {
  std::vector<int64_t> out(kWarp);
  launch(1, kWarp, [&] {
    const int lane = static_cast<int>(threadIdx.x);
    out[lane] = __shfl_down_sync(0xffffffffu, lane * 10, 1 + lane % 3, static_cast<int>(width));
  });
  return out;
}

// Thread 0 of each block reads a shared int before writing it: the emulation must hand it the poison (-1), not
// the previous block's 7.
std::vector<int64_t> shared_before_write(int64_t blocks) {
  std::vector<int64_t> out(blocks);
  launch(static_cast<int>(blocks), kWarp, [&] {
    __shared__ int32_t cell;
    if (threadIdx.x == 0) {
      out[blockIdx.x] = cell;
      cell = 7;
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
  } else if (kind == "masks_differ") {
    launch(1, 32, [] { (void)__shfl_down_sync(threadIdx.x == 0 ? 0xffffffffu : 0xfffffffeu, 1.0f, 1); });
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
  m.def("shuffle_down_results(int width) -> int[]", &fused_optim::cuda::emulation::shuffle_down_results);
  m.def("shared_before_write(int blocks) -> int[]", &fused_optim::cuda::emulation::shared_before_write);
  m.def("misuse(str kind) -> ()", &fused_optim::cuda::emulation::misuse);
}
