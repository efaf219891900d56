"""The CPU engine's work split (csrc/cpu/engine.h), run over fake tensor sizes through fused_optim._C._cpu_spans:
every element of every tensor goes to exactly one thread, in one parallel region, 64-bit offsets included."""

from __future__ import annotations

import pytest
import torch

from fused_optim import _C
from tiling import assert_tiles


def check(numels):
    spans = _C._cpu_spans(numels)
    assert_tiles(spans, numels)
    return spans


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_tiling(threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check([0, 1, 7, 0, 100_000, 3, 65, 0])
        check([0, 0])
        check([10] * 1000)
        check([1 << 20, 5])
    finally:
        torch.set_num_threads(before)


def test_small_work_stays_on_one_thread():
    spans = check([100, 200, 300])
    assert len(spans) == 3  # one span per tensor: no split below the per-thread minimum


def test_beyond_2_to_the_31_elements():
    n = (1 << 31) + 7
    spans = check([5, n, 3, n])
    # thread boundaries fall on multiples of 64 elements of the concatenation
    offsets = [0, 5, 5 + n, 8 + n]
    starts = sorted(offsets[t] + b for t, b, _ in spans)
    assert all(s in offsets or s % 64 == 0 for s in starts)
