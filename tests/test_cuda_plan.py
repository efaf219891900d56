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
MAX_BLOCKS = _C.max_blocks_per_launch
MAX_TENSORS = {1: 110, 2: 64, 3: 48, 4: 36, 5: 30, 6: 24, 7: 24}


def check_tiling(numels, depth, aligned=True, check_threads=True):
    blocks = _C._replay_cuda_plan(numels, depth, aligned, check_threads)
    assert all(ok for *_, ok in blocks), "a block visited an element twice or not at all, or had a wrong pointer"
    per_tensor = assert_tiles(((t, b, e) for _, t, b, e, _ in blocks), numels)
    assert all(e - b <= CHUNK for ranges in per_tensor.values() for b, e in ranges)
    per_launch = collections.Counter()
    tensors_per_launch = collections.defaultdict(set)
    for launch, tensor, *_ in blocks:
        per_launch[launch] += 1
        tensors_per_launch[launch].add(tensor)
    assert all(c <= MAX_BLOCKS for c in per_launch.values())
    assert all(len(t) <= MAX_TENSORS[depth] for t in tensors_per_launch.values())
    return blocks


@pytest.mark.parametrize("depth", [1, 4, 5, 6, 7])
@pytest.mark.parametrize("aligned", [True, False])
def test_small_and_odd_sizes(depth, aligned):
    numels = [0, 1, 3, 4, 5, CHUNK - 1, CHUNK, CHUNK + 1, 0, 7, 2 * CHUNK + 3, 0]
    check_tiling(numels, depth, aligned)


@pytest.mark.parametrize("depth", [1, 5, 6, 7])
def test_tensor_count_limit_splits_launches(depth):
    numels = [i % 9 + 1 for i in range(300)]
    blocks = check_tiling(numels, depth)
    launches = {b[0] for b in blocks}
    assert len(launches) == -(-300 // MAX_TENSORS[depth])


def test_block_limit_splits_a_tensor_across_launches():
    numels = [5, MAX_BLOCKS * CHUNK + 17, 9]
    blocks = check_tiling(numels, 5)
    launches_of_big = {b[0] for b in blocks if b[1] == 1}
    assert len(launches_of_big) == 2


def test_all_empty_means_no_launch():
    assert _C._replay_cuda_plan([0, 0, 0], 5, True, True) == []


def test_offsets_beyond_2_to_the_31():
    """A tensor of more than 2^31 elements: chunk offsets and tails are 64-bit (threads checked on tails only)."""
    n = (1 << 31) + 4099
    blocks = _C._replay_cuda_plan([3, n], 6, True, False)
    big = sorted((b, e) for _, t, b, e, _ in blocks if t == 1)
    assert big[-1] == ((n - 1) // CHUNK * CHUNK, n)
    assert all(a[1] == b[0] for a, b in zip(big, big[1:]))
    # the tail block, thread by thread
    tail = _C._replay_cuda_plan([n - big[-1][0]], 6, False, True)
    assert all(ok for *_, ok in tail)
