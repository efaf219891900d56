"""The CUDA engine's bookkeeping, replayed on the CPU (cuda/launch_plan.h through fused_optim._C).

Every launch of the planner is replayed block by block, and each block thread by thread: every element of every
tensor must be visited exactly once, across chunk tails, empty tensors, launch boundaries and 64-bit offsets.
"""

from __future__ import annotations

import collections

import pytest

from fused_optim import _C
from tiling import assert_tiles

CHUNK = _C.chunk_size
CLASSIC, LARGE = 4096, 32764  # kernel-argument bytes: before CUDA 12.1, and since (used by CUDA 13 builds)
MAX_BLOCKS = {CLASSIC: 320, LARGE: 2048}
# Tensors per launch by depth: the budget less 256 bytes for the functor, 8 for padding and the blocks' table
# (1 + 4 bytes a block for 4 KB, 2 + 4 for 32 KB), shared among tensors of depth pointers, a numel and an index.
MAX_TENSORS = {
    CLASSIC: {1: 111, 2: 79, 3: 62, 4: 50, 5: 42, 6: 37, 7: 32},
    LARGE: {1: 1010, 2: 721, 3: 561, 4: 459, 5: 388, 6: 336, 7: 297},
}
BUDGETS = pytest.mark.parametrize("arg_bytes", [CLASSIC, LARGE])


def check_tiling(numels, depth, aligned=True, check_threads=True, arg_bytes=CLASSIC):
    blocks = _C._replay_cuda_plan(numels, depth, aligned, check_threads, arg_bytes)
    assert all(ok for *_, ok in blocks), "a block visited an element twice or not at all, or had a wrong pointer"
    per_tensor = assert_tiles(((t, b, e) for _, t, b, e, _ in blocks), numels)
    assert all(e - b <= CHUNK for ranges in per_tensor.values() for b, e in ranges)
    per_launch = collections.Counter()
    tensors_per_launch = collections.defaultdict(set)
    for launch, tensor, *_ in blocks:
        per_launch[launch] += 1
        tensors_per_launch[launch].add(tensor)
    assert all(c <= MAX_BLOCKS[arg_bytes] for c in per_launch.values())
    assert all(len(t) <= MAX_TENSORS[arg_bytes][depth] for t in tensors_per_launch.values())
    return blocks


@BUDGETS
@pytest.mark.parametrize("depth", [1, 4, 5, 6, 7])
@pytest.mark.parametrize("aligned", [True, False])
def test_small_and_odd_sizes(depth, aligned, arg_bytes):
    numels = [0, 1, 3, 4, 5, CHUNK - 1, CHUNK, CHUNK + 1, 0, 7, 2 * CHUNK + 3, 0]
    check_tiling(numels, depth, aligned, arg_bytes=arg_bytes)


@BUDGETS
@pytest.mark.parametrize("depth", [1, 5, 6, 7])
def test_tensor_count_limit_splits_launches(depth, arg_bytes):
    n = 2500  # more than one 32 KB launch holds at every depth
    numels = [i % 9 + 1 for i in range(n)]
    blocks = check_tiling(numels, depth, arg_bytes=arg_bytes)
    launches = {b[0] for b in blocks}
    assert len(launches) == -(-n // MAX_TENSORS[arg_bytes][depth])


@BUDGETS
def test_block_limit_splits_a_tensor_across_launches(arg_bytes):
    numels = [5, MAX_BLOCKS[arg_bytes] * CHUNK + 17, 9]
    blocks = check_tiling(numels, 5, check_threads=False, arg_bytes=arg_bytes)
    launches_of_big = {b[0] for b in blocks if b[1] == 1}
    assert len(launches_of_big) == 2


@BUDGETS
def test_a_thousand_small_tensors_fill_few_launches(arg_bytes):
    """Adam's 1000 one-chunk tensors (depth 5): 24 launches of at most 42 blocks in 4 KB, 3 in 32 KB."""
    blocks = check_tiling([9500] * 1000, 5, check_threads=False, arg_bytes=arg_bytes)
    assert len({b[0] for b in blocks}) == {CLASSIC: 24, LARGE: 3}[arg_bytes]


def test_all_empty_means_no_launch():
    assert _C._replay_cuda_plan([0, 0, 0], 5, True, True) == []


def test_an_unknown_budget_is_refused():
    with pytest.raises(RuntimeError, match="arg_bytes must be 4096 or 32764"):
        _C._replay_cuda_plan([1], 5, True, True, 8192)


@BUDGETS
def test_offsets_beyond_2_to_the_31(arg_bytes):
    """A tensor of more than 2^31 elements: chunk offsets and tails are 64-bit (threads checked on tails only)."""
    n = (1 << 31) + 4099
    blocks = _C._replay_cuda_plan([3, n], 6, True, False, arg_bytes)
    big = sorted((b, e) for _, t, b, e, _ in blocks if t == 1)
    assert big[-1] == ((n - 1) // CHUNK * CHUNK, n)
    assert all(a[1] == b[0] for a, b in zip(big, big[1:]))
    # the tail block, thread by thread
    tail = _C._replay_cuda_plan([n - big[-1][0]], 6, False, True, arg_bytes)
    assert all(ok for *_, ok in tail)
