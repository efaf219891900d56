"""The machine's memory bandwidth, measured the way STREAM does: the denominator of "share of the machine".

An optimizer step streams every parameter, gradient and state tensor once or twice and does little arithmetic,
so its speed limit is memory bandwidth. A datasheet peak overstates what any kernel reaches (a CPU core alone
cannot saturate its memory controllers; DRAM refresh, page walks and write-allocate traffic take their share),
so effective bandwidths are compared with what simple streaming kernels reach here, with the same torch threads,
on arrays far larger than the caches: a copy (``b = a``, 2 accesses per element) and a triad
(``a = b + s * c``, 3 accesses). Bytes are counted as STREAM and :func:`fused_optim.profiling.bytes_per_step`
count them: each element read or written once, so an optimizer reaching the same rate is as fast as streaming gets.

    from fused_optim.bandwidth import measure_bandwidth
    measure_bandwidth("cuda")    # GB/s, measured once per process and device, then cached
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["DEFAULT_NBYTES", "measure_bandwidth"]

#: Bytes of the three arrays together by device type: many times any CPU's last-level cache (tens of MB) and
#: an H100's L2 (50 MB), so the kernels stream from memory; small enough to allocate anywhere.
DEFAULT_NBYTES = {"cpu": 256 << 20, "cuda": 1 << 30}

_cache: dict[tuple[str, int, int], float] = {}


def measure_bandwidth(
    device: str | torch.device = "cpu", nbytes: int | None = None, repeats: int = 5, *, refresh: bool = False
) -> float:
    """The memory bandwidth of ``device`` in GB/s (1e9 bytes per second): the better of the median copy and
    median triad rates over ``repeats`` timed runs each, after one untimed run.

    Args:
        device: where to measure ("cpu", "cuda", "cuda:1", ...).
        nbytes: bytes of the three float32 arrays together (default :data:`DEFAULT_NBYTES` for the device type,
            256 MB on CPU). Sizes that fit in a cache measure the cache, not memory: keep small ones for tests.
        repeats: timed runs of each kernel.
        refresh: measure again instead of returning the value cached for these arguments in this process.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if nbytes is None:
        nbytes = DEFAULT_NBYTES.get(device.type, DEFAULT_NBYTES["cuda"])
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 3 * 4 or repeats < 1:
        raise ValueError(
            f"measure_bandwidth: nbytes must be at least 12 and repeats at least 1, got {nbytes}, {repeats}"
        )
    key = (str(device), int(nbytes), int(repeats))
    if not refresh and key in _cache:
        return _cache[key]
    numel = nbytes // (3 * 4)
    a = torch.ones(numel, device=device)
    b = torch.full((numel,), 2.0, device=device)
    c = torch.full((numel,), 0.5, device=device)
    kernels = {
        "copy": (lambda: b.copy_(a), 2),
        "triad": (lambda: torch.add(b, c, alpha=3.0, out=a), 3),
    }
    rates = []
    for run, accesses in kernels.values():
        run()  # untimed: first-touch page faults, lazy CUDA module loading
        seconds = [_time(run, device) for _ in range(repeats)]
        rates.append(accesses * numel * 4 / statistics.median(seconds) / 1e9)
    _cache[key] = max(rates)
    return _cache[key]


def _time(run: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":  # events time the kernel on the device, without the launch's host latency
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        stream = torch.cuda.current_stream(device)
        torch.cuda.synchronize(device)
        start.record(stream)
        run()
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    if device.type != "cpu":
        torch.get_device_module(device.type).synchronize()
    t0 = time.perf_counter()
    run()
    if device.type != "cpu":
        torch.get_device_module(device.type).synchronize()
    return time.perf_counter() - t0
