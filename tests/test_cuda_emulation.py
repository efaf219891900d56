"""What only the CUDA emulation (tests/cuda_emulation) can check on a machine without a GPU: how the CUDA engine
splits work into launches, its block reductions, and the emulation's own strictness. The rest of the CUDA kernels'
checks are the optimizer tests themselves, run through the emulated kernels by ``bash .ci/cuda_emulation``.
Skipped unless ``FUSED_OPTIM_CUDA_EMULATION`` is set."""

from __future__ import annotations

import math
import os

import pytest
import torch

import fused_optim
from test_ops import adam_args

ENABLED = os.environ.get("FUSED_OPTIM_CUDA_EMULATION", "0") not in ("", "0")
pytestmark = pytest.mark.skipif(not ENABLED, reason="runs under the CUDA emulation only (bash .ci/cuda_emulation)")
EMULATION = torch.ops.fused_optim_emulation if ENABLED else None

# The engine's limits, written out from cuda/launch_plan.h for a CUDA 13 build (32 KB of kernel arguments): the
# blocks' table takes 2048 * (2 + 4) bytes, the functor 256 and padding 8; each tensor needs its pointers, a numel
# and an index.
ARG_BYTES, BLOCKS, CHUNK = 32764, 2048, 65536


def tensors_per_launch(depth: int) -> int:
    return (ARG_BYTES - 256 - 8 - BLOCKS * 6) // (depth * 8 + 8 + 4)


def launches_during(fn) -> int:
    before = EMULATION.launches()
    fn()
    return EMULATION.launches() - before


def adamw_step(params, amsgrad=False, master=False):
    opt = fused_optim.AdamW(params, lr=1e-3, amsgrad=amsgrad, master_weights=master)
    for p in params:
        p.grad = torch.ones_like(p)
    return opt


@pytest.mark.parametrize(
    "amsgrad, master, depth",
    [(False, False, 5), (True, True, 7)],  # p, g, m, v[, max_v][, master], step
)
def test_small_tensors_share_launches(amsgrad, master, depth):
    """1000 one-chunk tensors take ceil(1000 / tensors per launch) launches: 3 for AdamW, 4 with amsgrad and masters
    (4 KB of kernel arguments took 24 and 34)."""
    dtype = torch.bfloat16 if master else torch.float32
    params = [torch.randn(7, dtype=dtype, requires_grad=True) for _ in range(1000)]
    opt = adamw_step(params, amsgrad, master)
    assert launches_during(opt.step) == math.ceil(1000 / tensors_per_launch(depth))
    assert tensors_per_launch(5) == 388 and tensors_per_launch(7) == 297


def test_grad_norm_across_launches_and_blocks():
    """A norm whose tensors fill several launches, one of them several blocks, and tails of every length: block
    sums and float64 atomics add up to torch's norm."""
    sizes = [1, 2, 3, 4, 5, 31, 33] * 150 + [3 * CHUNK + 17]
    grads = [torch.randn(n, dtype=torch.float64) for n in sizes]
    count = launches_during(lambda: fused_optim._ops.grad_norm(grads, 2.0))
    assert count == math.ceil(len(sizes) / tensors_per_launch(1))
    flat = torch.cat(grads)
    for norm_type in (2.0, math.inf):
        torch.testing.assert_close(
            fused_optim._ops.grad_norm(grads, norm_type), torch.linalg.vector_norm(flat, norm_type), rtol=1e-12, atol=0
        )


def test_tensor_longer_than_a_launch():
    """A tensor of more chunks than a launch has blocks continues in the next launch as its first tensor (bf16
    keeps it to 268 MB). The first tensor takes one block, so the long one has 2047 chunks in the first launch and
    its last two in the second."""
    g = torch.empty(BLOCKS * CHUNK + 100, dtype=torch.bfloat16).uniform_(-1, 1)
    g[-1] = 8.0  # in the second launch's last block
    grads = [torch.ones(3, dtype=torch.bfloat16), g]
    count = launches_during(lambda: fused_optim._ops.grad_norm(grads, math.inf))
    assert count == 2
    assert fused_optim._ops.grad_norm(grads, math.inf).item() == 8.0
    expected = math.sqrt(3 + sum(c.double().square().sum().item() for c in g.split(CHUNK * 64)))
    assert fused_optim._ops.grad_norm(grads, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_scalars_are_read_where_the_mode_says():
    """With found_inf set, a step read on the host launches nothing; read in the kernels (as GradScaler's tensors
    are on a GPU), the kernels launch and skip the step themselves. Either way nothing changes."""
    lists, kwargs = adam_args(n=1, numel=(100,))
    kwargs.update(grad_scale=torch.tensor(2.0), found_inf=torch.tensor(1.0))
    before = [t.clone() for lst in lists for t in lst]
    initial = EMULATION.scalars_on_device()
    try:
        for on_device, expected_launches in ((False, 0), (True, 1)):
            EMULATION.set_scalars_on_device(on_device)
            assert launches_during(lambda: fused_optim._ops.adam_(*lists, **kwargs)) == expected_launches
            for a, b in zip([t for lst in lists for t in lst], before):
                assert torch.equal(a, b)
    finally:
        EMULATION.set_scalars_on_device(initial)
    assert initial == (os.environ.get("FUSED_OPTIM_EMULATE_DEVICE_SCALARS", "0") not in ("", "0"))


@pytest.mark.parametrize("width", [32, 8])
def test_shuffle_down_per_lane_offsets(width):
    """__shfl_down_sync as CUDA defines it: each lane's own offset, within its segment of `width` lanes; a source
    beyond the segment leaves the lane its own value."""
    out = EMULATION.shuffle_down_results(width)
    for lane in range(32):
        source = lane + 1 + lane % 3
        assert out[lane] == (source if source < (lane // width + 1) * width else lane) * 10


def test_shared_memory_starts_poisoned_in_every_block():
    assert EMULATION.shared_before_write(3) == [-1, -1, -1]


@pytest.mark.parametrize("blocks, threads", [(1, 32), (3, 512), (2, 1024), (1, 96)])
def test_block_reduce(blocks, threads):
    """cuda/multi_tensor_apply.cuh's block_reduce (warp shuffles, then one warp over the warps' partials) gives
    thread 0 the sum and maximum of the block's values."""
    out = EMULATION.block_reduce_results(blocks, threads)
    for b in range(blocks):
        assert out[2 * b] == threads * (threads - 1) // 2 + 1000 * b * threads
        assert out[2 * b + 1] == threads - 1


@pytest.mark.parametrize(
    "kind, message",
    [
        ("early_exit_before_barrier", "63 at __syncthreads, 0 at a shuffle, 1 exited"),
        ("early_exit_before_shuffle", "lane 8 of warp 1 exited"),
        ("masks_differ", "different masks or widths"),
        ("mask_leaves_out_source", "reads lane 16, which is not in the shuffle's mask"),
        ("kernel_launches_kernel", "a kernel launched a kernel"),
    ],
)
def test_emulation_refuses_what_a_gpu_would_hang_on(kind, message):
    with pytest.raises(RuntimeError, match=message):
        EMULATION.misuse(kind)
    # and the next launch runs normally
    assert EMULATION.block_reduce_results(1, 64)[1] == 63
