"""Shared check for the engines' work splits: pieces of each tensor must cover it exactly once."""

from __future__ import annotations

import collections
from collections.abc import Iterable


def assert_tiles(pieces: Iterable[tuple[int, int, int]], numels: list[int]) -> dict[int, list[tuple[int, int]]]:
    """pieces: (tensor index, begin, end). Returns the sorted ranges per tensor."""
    per_tensor: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for t, b, e in pieces:
        assert 0 <= b < e <= numels[t], (t, b, e)
        per_tensor[t].append((b, e))
    for i, n in enumerate(numels):
        ranges = per_tensor[i] = sorted(per_tensor.get(i, []))
        if n == 0:
            assert not ranges
            continue
        assert ranges[0][0] == 0 and ranges[-1][1] == n, f"tensor {i}: not covered end to end"
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), f"tensor {i}: gap or overlap"
    return per_tensor
