"""Profile an optimizer's step: time, bytes moved, share of the machine's bandwidth, launches, and what to change.

    import fused_optim
    loss.backward()
    prof = fused_optim.profiling.profile_step(optimizer)   # any torch.optim.Optimizer, ours or torch's
    print(prof.report())                                   # the numbers, the top operators, the advice

An optimizer step does little arithmetic per byte, so the question is how close it comes to streaming its tensors
at the memory's speed, and if it does not, why: per-tensor and per-launch overheads (many small tensors, several
dtypes, torch.optim's per-op passes), staging copies of strided tensors, or work outside the step (unscaling,
clipping) that a fused step could absorb. :func:`profile_step` measures the step on the optimizer's own tensors and
gradients, then puts everything back as it was; :func:`advise` turns the measurements into concrete advice.

``python -m fused_optim profile --help`` runs the same on synthetic parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import _C
from ._cli import int_at_least, positive_float
from ._dtensor import local
from ._snapshot import OptimizerSnapshot, step_hooks_muted
from .bandwidth import measure_bandwidth
from .factory import _REGISTRY, create_optimizer, list_optimizers
from .optim import LAMB, FusedOptimizer
from .optim._base import MASTER_KEYS, _is_dense
from .progress import Progress

__all__ = [
    "OpStat",
    "StateSet",
    "StepProfile",
    "TensorSet",
    "WORKLOADS",
    "add_cli",
    "advise",
    "bytes_per_step",
    "profile_step",
]

# Thresholds of the advice (module constants so that they are documented in one place and tests can use them).
#: More tensors than this, with a median size below TINY_NUMEL elements, and per-tensor costs dominate the step
#: (unless a fused step still reaches LOW_SHARE of the machine's bandwidth).
MANY_TENSORS = 200
TINY_NUMEL = 4096
#: Below this share of the machine's bandwidth, with a median tensor below SMALL_NUMEL elements, fixed costs rule.
LOW_SHARE = 0.5
SMALL_NUMEL = 65536
#: From this many float32 parameters on a GPU, bf16 params with master weights are worth the change.
LARGE_MODEL = 10_000_000

# torch.optim classes with a drop-in fused_optim counterpart of the same name (AdamW first: it subclasses Adam).
_TORCH_EQUIVALENTS = ("AdamW", "Adam", "SGD", "RMSprop", "Adagrad")
_HALF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}  # half dtypes and their unit roundoff


@dataclass
class TensorSet:
    """Params of one device and dtype that the step updates (fused_optim launches once per set and group)."""

    device: str
    dtype: str
    tensors: int
    elements: int


@dataclass
class StateSet:
    """Optimizer state of one key and dtype, over the updated params."""

    key: str
    dtype: str
    tensors: int
    elements: int
    bytes: int


@dataclass
class OpStat:
    """One profiler entry (an operator, a profiler range or a GPU kernel), per step."""

    name: str
    calls: float
    self_cpu_ms: float
    self_device_ms: float


@dataclass
class StepProfile:
    """What :func:`profile_step` measured; ``report()`` formats it. Times are per step, in milliseconds."""

    optimizer: str  # e.g. "fused_optim.AdamW", "torch.optim.AdamW (foreach=True)"
    steps: int
    warmup: int
    profiler_steps: int
    times_ms: list[float]
    params: int  # tensors in the param groups
    tensors: int  # of them, the ones with a gradient: those the step updates
    elements: int  # elements of the updated tensors
    median_elements: float
    param_groups: int
    param_sets: list[TensorSet]
    grad_dtypes: dict[str, int]
    state: list[StateSet]
    devices: list[str]
    #: Updated params that are not dense (e.g. slices), and grads laid out unlike their param (e.g. transposed):
    #: the fused kernels copy those into a staging buffer and back on every step.
    strided_params: int
    strided_grads: int
    #: Operator calls (aten::, fused_optim::, ...) the step makes, not counting those nested in others.
    ops_per_step: float | None
    #: GPU kernels launched per step (None on CPU).
    kernels_per_step: float | None
    #: fused_optim's per-launch profiler ranges ("fused_optim.AdamW: 10 torch.float32 tensors on cpu"), per step.
    launches: dict[str, float]
    top_ops: list[OpStat]
    bytes_per_step: int  # see bytes_per_step()
    bandwidth_gbps: float | None  # the machine's, by measure_bandwidth() or as given; None: unknown
    bandwidth_device: str
    # Facts the advice rests on.
    fused: bool  # a fused_optim optimizer
    fused_equivalent: str | None  # the fused_optim class to use ("AdamW"), for ours and torch.optim's
    supports_amp_scaling: bool  # the step consumes GradScaler's grad_scale / found_inf itself
    max_grad_norm: float | None  # fused_optim's in-kernel clipping
    half_without_master: dict[str, int]  # bf16/fp16 updated params without a float32 master, by dtype
    fp32_state_of_half_bytes: int  # float32 moments/buffers (not masters) of bf16/fp16 params
    scaler: bool  # an enabled GradScaler was passed
    clipping_outside: bool  # the caller clips the gradients before the step
    advice: list[str] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.times_ms)

    @property
    def min_ms(self) -> float:
        return min(self.times_ms)

    @property
    def launches_per_step(self) -> float | None:
        """GPU kernels per step where the step ran on a GPU, else operator calls per step."""
        return self.kernels_per_step if self.kernels_per_step is not None else self.ops_per_step

    @property
    def bytes_per_param(self) -> float:
        return self.bytes_per_step / max(self.elements, 1)

    @property
    def effective_gbps(self) -> float:
        """Bytes moved per step over the median step time."""
        return self.bytes_per_step / (self.median_ms / 1e3) / 1e9

    @property
    def bandwidth_share(self) -> float | None:
        """``effective_gbps`` as a fraction of the machine's bandwidth (None where that is unknown)."""
        return self.effective_gbps / self.bandwidth_gbps if self.bandwidth_gbps else None

    def to_dict(self) -> dict[str, Any]:
        """The fields and derived numbers, JSON-ready."""
        out = dataclasses.asdict(self)
        for name in ("median_ms", "mean_ms", "min_ms", "launches_per_step", "bytes_per_param", "effective_gbps"):
            out[name] = getattr(self, name)
        out["bandwidth_share"] = self.bandwidth_share
        return out

    def report(self) -> str:
        """A readable multi-line summary: numbers, top operators, advice."""
        share = self.bandwidth_share
        if self.bandwidth_gbps is None:
            bandwidth = f"{self.effective_gbps:.2f} GB/s effective (machine bandwidth not measured)"
        else:
            bandwidth = (
                f"{self.effective_gbps:.2f} GB/s effective, {share:.0%} of the machine's "
                f"{self.bandwidth_gbps:.1f} GB/s ({self.bandwidth_device})"
            )
            if share is not None and share > 1:
                bandwidth += ": above 100%, the tensors fit in a cache"
        if self.kernels_per_step is not None:
            launches = f"{_plural(self.kernels_per_step, 'GPU kernel')}, {_plural(self.ops_per_step, 'operator call')}"
        elif self.ops_per_step is not None:
            launches = _plural(self.ops_per_step, "operator call")
        else:
            launches = "not profiled (profiler_steps=0)"
        state = "; ".join(
            f"{s.key} {s.dtype}: {s.tensors:,} "
            + ("scalars" if s.elements == s.tensors else f"tensors, {_mb(s.bytes)}")
            for s in self.state
        )
        rows = [
            ("time per step", f"{self.median_ms:.3f} ms median, {self.mean_ms:.3f} ms mean, {self.min_ms:.3f} ms best"),
            (
                "tensors",
                f"{self.tensors:,} updated (of {self.params:,} in {self.param_groups} param group"
                f"{'s' if self.param_groups > 1 else ''}), {_count(self.elements)} elements, "
                f"median {_num(self.median_elements)} per tensor",
            ),
            (
                "params",
                "; ".join(
                    f"{s.device} {s.dtype}: {s.tensors:,} tensors, {_count(s.elements)} elements"
                    for s in self.param_sets
                ),
            ),
            ("grads", ", ".join(f"{d}: {n:,}" for d, n in self.grad_dtypes.items())),
            ("state", state or "none"),
            ("per step", launches),
            *[("", f"{name} (x{_num(n)})") for name, n in self.launches.items()],
            ("bytes moved", f"{_mb(self.bytes_per_step)} per step, {self.bytes_per_param:.1f} B per parameter"),
            ("bandwidth", bandwidth),
        ]
        if self.strided_params or self.strided_grads:
            rows.append(
                ("strided", f"{self.strided_params} params not dense, {self.strided_grads} grads laid out unlike them")
            )
        lines = [
            f"{self.optimizer}.step on {', '.join(self.devices)}: {self.steps} timed steps after {self.warmup} "
            f"warm-up, then {self.profiler_steps} under torch.profiler"
        ]
        lines += [f"  {k:<14} {v}" for k, v in rows]
        if self.top_ops:
            gpu = self.kernels_per_step is not None
            lines += ["", "top operators by self time, per step (profiled: the profiler adds its own overhead)"]
            lines.append(f"  {'name':<60} {'calls':>7} {'self CPU ms':>12}" + (f" {'self GPU ms':>12}" if gpu else ""))
            for op in self.top_ops:
                name = op.name if len(op.name) <= 60 else op.name[:57] + "..."
                row = f"  {name:<60} {_num(op.calls):>7} {op.self_cpu_ms:>12.3f}"
                lines.append(row + (f" {op.self_device_ms:>12.3f}" if gpu else ""))
        lines += ["", "advice"]
        if not self.advice:
            lines.append("  none: nothing in this step calls for a change")
        for i, text in enumerate(self.advice, 1):
            lines.append(textwrap.fill(text, 116, initial_indent=f"  {i}. ", subsequent_indent="     "))
        return "\n".join(lines)


# Measurement --------------------------------------------------------------------------------------------------


def profile_step(
    optimizer: Optimizer,
    *,
    steps: int = 20,
    warmup: int = 3,
    profiler_steps: int = 3,
    bandwidth_gbps: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
    clipping_outside: bool = False,
    restore: bool = True,
    progress: bool = True,
) -> StepProfile:
    """Time and profile ``optimizer.step()`` on the current gradients, then restore params and state.

    The step runs ``warmup`` times (creating state on a fresh optimizer), ``steps`` times timed with
    ``time.perf_counter`` (synchronizing the GPU around each step), then ``profiler_steps`` times under
    ``torch.profiler`` to count operator calls and GPU kernels and rank operators by self time. The timed steps
    run without the profiler, whose per-operator bookkeeping would inflate them. The gradients are used as they
    are (call ``loss.backward()`` first); params without a gradient are skipped, as the step skips them.

    Args:
        optimizer: any ``torch.optim.Optimizer``; fused_optim's get launch ranges and master-weight facts.
        steps: timed steps (>= 1).
        warmup: untimed steps first (>= 0).
        profiler_steps: steps under torch.profiler (0: no profiler; launches are then unknown).
        bandwidth_gbps: the machine's memory bandwidth for the share; None measures it with
            :func:`fused_optim.bandwidth.measure_bandwidth` on the device holding most parameter bytes (once per
            process; it allocates 256 MB on CPU, 1 GB on a GPU, and is skipped if that runs out of memory).
        scaler: the ``torch.amp.GradScaler`` used in training, if any: only read, for the advice.
        clipping_outside: True if training calls ``clip_grad_norm_`` before ``step()``: for the advice.
        restore: put params, grads and optimizer state back (in place, bit for bit) afterwards. This holds a copy
            of all of them meanwhile; pass False for throwaway optimizers to save the memory.
        progress: show a progress bar on stderr.

    Step hooks (the optimizer's and the global ones) are not run while profiling: they may act outside the
    optimizer (an EMA of the weights, logging), which could not be undone.
    """
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"profile_step: expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    for name, value, low in (("steps", steps, 1), ("warmup", warmup, 0), ("profiler_steps", profiler_steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"profile_step: {name} must be an integer >= {low}, got {value!r}")
    if bandwidth_gbps is not None and not (math.isfinite(bandwidth_gbps) and bandwidth_gbps > 0):
        raise ValueError(f"profile_step: bandwidth_gbps must be a positive number, got {bandwidth_gbps!r}")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    updated = [p for p in params if p.grad is not None]
    if not updated:
        raise ValueError(
            f"profile_step: none of the {len(params)} params of the optimizer has a .grad; call loss.backward() "
            "(or set each param's .grad) first: the step is profiled on the gradients as they are"
        )
    label = _label(optimizer)
    devices = sorted({str(p.device) for p in updated}, key=lambda d: (d != "cpu", d))
    sync = _synchronizer(devices)
    saved = _Snapshot(optimizer, params) if restore else None
    try:
        with (
            step_hooks_muted(optimizer),
            Progress(total=warmup + steps + profiler_steps, desc=f"profiling {label}.step", enabled=progress) as bar,
        ):
            for _ in range(warmup):
                optimizer.step()
                sync()
                bar.update(note="warm-up")
            times: list[float] = []
            for _ in range(steps):
                sync()
                t0 = time.perf_counter()
                optimizer.step()
                sync()
                times.append((time.perf_counter() - t0) * 1e3)
                bar.update(note=f"{statistics.median(times):.3f} ms/step")
            profiled = _run_profiler(optimizer, profiler_steps, devices, sync, bar) if profiler_steps else None
        # Counted before restoring: state created by the warm-up steps is removed again.
        nbytes = bytes_per_step(optimizer)
        facts = _tensor_facts(optimizer, updated)
    finally:
        if saved is not None:
            saved.restore()

    by_device: Counter[str] = Counter()
    for p in updated:
        by_device[str(p.device)] += _nbytes(p)
    bandwidth_device = by_device.most_common(1)[0][0]
    if bandwidth_gbps is None:
        try:
            bandwidth_gbps = measure_bandwidth(bandwidth_device)
        except torch.OutOfMemoryError:  # a GPU full of model: report no share rather than fail
            bandwidth_gbps = None
    ops, kernels, launches, top = profiled if profiled else (None, None, {}, [])
    profile = StepProfile(
        optimizer=label,
        steps=steps,
        warmup=warmup,
        profiler_steps=profiler_steps,
        times_ms=times,
        params=len(params),
        tensors=len(updated),
        param_groups=len(optimizer.param_groups),
        devices=devices,
        ops_per_step=ops,
        kernels_per_step=kernels,
        launches=launches,
        top_ops=top,
        bytes_per_step=nbytes,
        bandwidth_gbps=bandwidth_gbps,
        bandwidth_device=bandwidth_device,
        fused=isinstance(optimizer, FusedOptimizer),
        fused_equivalent=_fused_equivalent(optimizer),
        supports_amp_scaling=bool(getattr(optimizer, "_step_supports_amp_scaling", False)),
        max_grad_norm=getattr(optimizer, "max_grad_norm", None) if isinstance(optimizer, FusedOptimizer) else None,
        scaler=scaler is not None and scaler.is_enabled(),
        clipping_outside=clipping_outside,
        **facts,
    )
    profile.advice = advise(profile)
    return profile


def bytes_per_step(optimizer: Optimizer) -> int:
    """The bytes one step must move, counted from the tensors as they are now (after a first step has created
    the state): each updated param read and written, its gradient read, and each of its state tensors (moments,
    buffers, masters; not 0-dim counters) read and written, at their own dtypes. For fp32 AdamW that is 28 bytes
    per parameter, for SGD with momentum 20. fused_optim's LAMB reads everything twice (its two passes, 44 bytes),
    and fused_optim's ``max_grad_norm`` reads the gradients once more for the norm.

    This is the traffic of an ideal single pass, not what an implementation moves: torch.optim's per-operation
    passes move several times more, which shows as a lower effective bandwidth for the same bytes.
    """
    read_passes = 2 if isinstance(optimizer, LAMB) else 1
    clip = isinstance(optimizer, FusedOptimizer) and optimizer.max_grad_norm is not None
    total = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is None:
                continue
            param, grad = _nbytes(p), _nbytes(p.grad)
            state = sum(_nbytes(t) for t in optimizer.state.get(p, {}).values() if isinstance(t, Tensor) and t.dim())
            total += read_passes * (param + grad + state) + param + state + (grad if clip else 0)
    return total


def _nbytes(t: Tensor) -> int:
    t = local(t)
    return t.numel() * t.element_size()


def _label(optimizer: Optimizer) -> str:
    cls = type(optimizer)
    if isinstance(optimizer, FusedOptimizer) and cls.__module__.startswith("fused_optim"):
        return f"fused_optim.{cls.__name__}"
    if cls.__module__.startswith("torch.optim"):
        impl = [f"{k}=True" for k in ("fused", "foreach") if optimizer.defaults.get(k)]
        return f"torch.optim.{cls.__name__}" + (f" ({', '.join(impl)})" if impl else "")
    return f"{cls.__module__}.{cls.__qualname__}"


def _fused_equivalent(optimizer: Optimizer) -> str | None:
    if isinstance(optimizer, FusedOptimizer):
        return type(optimizer).__name__ if type(optimizer).__module__.startswith("fused_optim") else None
    for name in _TORCH_EQUIVALENTS:  # exact types only: a subclass may change the update
        if type(optimizer) is getattr(torch.optim, name):
            return name
    return None


def _synchronizer(devices: list[str]) -> Callable[[], None]:
    """A function that waits for the work queued on the GPUs holding params (nothing for CPU only)."""
    accelerators = [torch.device(d) for d in devices if torch.device(d).type != "cpu"]

    def sync() -> None:
        for d in accelerators:
            if d.type == "cuda":
                torch.cuda.synchronize(d)
            else:
                torch.get_device_module(d.type).synchronize()

    return sync


def _run_profiler(
    optimizer: Optimizer, n: int, devices: list[str], sync: Callable[[], None], bar: Progress
) -> tuple[float, float | None, dict[str, float], list[OpStat]]:
    """Operator calls, GPU kernels and fused_optim launch ranges per step, and the top operators by self time."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    on_gpu = any(d.startswith("cuda") for d in devices)
    if on_gpu:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(n):
            optimizer.step()
            sync()
            bar.update(note="profiler")
        bar.update(0, note="reading the profiler's events")  # can take seconds for torch.optim's many ops
    events = prof.events()
    ops = 0
    kernels = 0
    launches: Counter[str] = Counter()
    prefix = f"fused_optim.{type(optimizer).__name__}: "
    for e in events:
        if e.device_type == torch.autograd.DeviceType.CPU:
            if "::" in e.name and not _inside_op(e):
                ops += 1
            elif e.name.startswith(prefix):
                launches[e.name] += 1
        elif not e.name.startswith(("Memcpy", "Memset")):
            kernels += 1
    top = []
    for avg in prof.key_averages():
        cpu = avg.self_cpu_time_total
        gpu = getattr(avg, "self_device_time_total", 0.0) or 0.0
        if cpu > 0 or gpu > 0:
            top.append(OpStat(avg.key, avg.count / n, cpu / 1e3 / n, gpu / 1e3 / n))
    top.sort(key=lambda op: op.self_cpu_ms + op.self_device_ms, reverse=True)
    return ops / n, kernels / n if on_gpu else None, {k: v / n for k, v in launches.items()}, top[:8]


def _inside_op(event: Any) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if "::" in parent.name:
            return True
        parent = parent.cpu_parent
    return False


def _tensor_facts(optimizer: Optimizer, updated: list[Tensor]) -> dict[str, Any]:
    """What the advice and the report need to know about the updated tensors and their state."""
    sets: dict[tuple[str, str], list[int]] = {}
    grads: Counter[str] = Counter()
    state: dict[tuple[str, str], list[int]] = {}
    half_without_master: Counter[str] = Counter()
    fp32_state_of_half = 0
    strided_params = strided_grads = 0
    masters = set(MASTER_KEYS.values())
    for p in updated:
        lp, lg = local(p), local(p.grad)  # type: ignore[arg-type]
        entry = sets.setdefault((str(p.device), _dtype(p.dtype)), [0, 0])
        entry[0] += 1
        entry[1] += lp.numel()
        grads[_dtype(lg.dtype)] += 1
        st = optimizer.state.get(p, {})
        for key, t in st.items():
            if isinstance(t, Tensor):
                s = state.setdefault((key, _dtype(t.dtype)), [0, 0, 0])
                s[0] += 1
                s[1] += local(t).numel()
                s[2] += _nbytes(t)
                if p.dtype in _HALF and key not in masters and t.dim() and t.dtype == torch.float32:
                    fp32_state_of_half += _nbytes(t)
        if p.dtype in _HALF and not masters & st.keys():
            half_without_master[_dtype(p.dtype)] += 1
        # The kernels' flat order is the param's own when it is dense, else row-major (csrc/common/tensor_lists).
        dense = _is_dense(lp)
        order = lp.stride() if dense else _row_major(lp.shape)
        strided_params += not dense
        strided_grads += not (_is_dense(lg) and all(s == o for s, o, n in zip(lg.stride(), order, lg.shape) if n != 1))
    numels = [local(p).numel() for p in updated]
    return dict(
        elements=sum(numels),
        median_elements=float(statistics.median(numels)),
        param_sets=[TensorSet(d, t, n, e) for (d, t), (n, e) in sets.items()],
        grad_dtypes=dict(grads),
        state=[StateSet(k, t, n, e, b) for (k, t), (n, e, b) in state.items()],
        strided_params=strided_params,
        strided_grads=strided_grads,
        half_without_master=dict(half_without_master),
        fp32_state_of_half_bytes=fp32_state_of_half,
    )


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _row_major(shape: torch.Size) -> tuple[int, ...]:
    strides, s = [], 1
    for n in reversed(shape):
        strides.append(s)
        s *= max(n, 1)
    return tuple(reversed(strides))


# Leaving no trace ---------------------------------------------------------------------------------------------


class _Snapshot:
    """The profiled params and their grads (the same grad objects come back), and the optimizer."""

    def __init__(self, optimizer: Optimizer, params: list[Tensor]) -> None:
        self.params = params
        with torch.no_grad():
            self.values = [p.detach().clone() for p in params]
            self.grads = [(p.grad, None if p.grad is None else p.grad.detach().clone()) for p in params]
        self.optimizer = OptimizerSnapshot(optimizer)

    def restore(self) -> None:
        with torch.no_grad():
            for p, value in zip(self.params, self.values):
                p.copy_(value)
            for p, (grad, value) in zip(self.params, self.grads):
                if p.grad is not grad:
                    p.grad = grad
                if grad is not None:
                    grad.copy_(value)
        self.optimizer.restore()


# Advice -------------------------------------------------------------------------------------------------------


def advise(profile: StepProfile) -> list[str]:
    """Concrete advice for the profiled step, most important first; empty when nothing applies. A pure function
    of the profile's fields, so each rule can be checked on a profile with the facts changed."""
    p = profile
    out: list[str] = []
    target = f"fused_optim.{p.fused_equivalent}" if p.fused_equivalent else None
    use = target or "a fused_optim optimizer"

    def use_with(args: str) -> str:  # fused_optim.AdamW(..., args), or in words where there is no drop-in
        return f"{target}(..., {args})" if target else f"a fused_optim optimizer with {args}"

    grad_bytes = p.elements * 4  # rough: the extra passes below are over the gradients, mostly float32

    if target and not p.fused:
        calls = f" (this step made {_num(p.ops_per_step)} operator calls)" if p.ops_per_step else ""
        out.append(
            f"{p.optimizer} has a drop-in replacement: {target}, with the same arguments, defaults, state keys and "
            f"state_dict, updates each param group's tensors of one device and dtype in a single fused pass{calls}. "
            f"Replace the constructor, e.g. `opt = {target}(model.parameters(), lr=...)`."
        )
    for dtype, n in p.half_without_master.items():
        roundoff = _HALF[getattr(torch, dtype)]
        split = " (bf16 also takes master_weights='split': an exact master in 2 more bytes per param)"
        out.append(
            f"{n:,} {dtype} params have no float32 master: an update smaller than about {roundoff:.1e} of a "
            f"weight's magnitude rounds away, so small learning rates and late training stall. Use "
            f"{use_with('master_weights=True')}{split if dtype == 'bfloat16' else ''}."
        )
    if p.scaler and not p.supports_amp_scaling:
        out.append(
            f"GradScaler with {p.optimizer}, which cannot unscale inside its step: scaler.step() first unscales "
            f"every gradient in a separate pass (about {_mb(2 * grad_bytes)} read and written per step) and checks "
            f"for inf/NaN on the host. {use} consumes the scaler's grad_scale and found_inf in its kernels; the "
            f"scaler code stays as it is."
        )
    if p.clipping_outside:
        if p.fused and p.max_grad_norm is not None:
            out.append(
                f"The step already clips (max_grad_norm={p.max_grad_norm:g}): the clip_grad_norm_ before it clips "
                f"a second time; drop it."
            )
        else:
            out.append(
                f"clip_grad_norm_ before the step reads every gradient for the norm, then reads and rewrites it "
                f"(about {_mb(3 * grad_bytes)} per step). Pass max_grad_norm=<max_norm> to {use} instead: one read "
                f"for the norm, and the clipping is folded into the update kernel (same result; the norm is in "
                f"optimizer.grad_norm)."
            )
    if p.strided_params or p.strided_grads:
        out.append(
            f"{p.strided_params} params and {p.strided_grads} grads are not dense or not laid out like their param "
            f"(slices, transposed or expanded views): each step copies them into a staging buffer and back. Make "
            f"the params contiguous before creating the optimizer (`p.data = p.data.contiguous()`) and look for "
            f"layers whose gradients come out transposed."
        )
    share = p.bandwidth_share
    low_share = share is not None and share < LOW_SHARE
    # Many tiny tensors are fine where a fused step still streams near the machine's bandwidth.
    many_tiny = (
        p.tensors > MANY_TENSORS and p.median_elements < TINY_NUMEL and (not p.fused or share is None or low_share)
    )
    if many_tiny:
        if p.fused:
            launches = (
                f"in {_plural(p.launches_per_step, 'launch')} per step" if p.launches_per_step else "in few launches"
            )
            how = (
                f"{p.optimizer} already updates them {launches}; to go further, merge small parameters into fewer, "
                f"larger ones (e.g. one flat buffer for biases and norm weights, as FSDP's flat parameters do)"
            )
        elif target:
            how = f"{p.optimizer} works per tensor or per chunk of tensors; {target} takes them all in one launch"
        else:
            how = "merge small parameters into fewer, larger ones, or use a fused_optim optimizer (one launch)"
        out.append(
            f"{p.tensors:,} tensors with a median of {_num(p.median_elements)} elements: per-tensor costs "
            f"(argument handling, scheduling, tails) outweigh moving the bytes. {how}."
        )
    if low_share and p.median_elements < SMALL_NUMEL and not many_tiny:  # many_tiny said it already
        if target and not p.fused:
            fix = f"switch to {target} (above), which removes most of them"
        elif any(d.startswith("cuda") for d in p.devices):
            fix = (
                "capture the step in a CUDA graph (fused_optim's steps are capturable; use a tensor lr) or "
                "torch.compile it, which removes the launch overhead"
            )
        else:
            fix = "compare torch.set_num_threads(1): on CPU, waking threads can cost more than the work itself"
        out.append(
            f"The step reaches {share:.0%} of the machine's {p.bandwidth_gbps:.0f} GB/s with a median tensor of "
            f"{_num(p.median_elements)} elements: fixed per-step and per-tensor costs, not bytes, set its time "
            f"({p.median_ms:.3f} ms). Compare it with the whole training iteration before optimizing; to cut it, "
            f"{fix}."
        )
    if len(p.param_sets) > 1:
        main = max(p.param_sets, key=lambda s: s.elements)
        others = ", ".join(f"{s.tensors:,} {s.dtype} on {s.device}" for s in p.param_sets if s is not main)
        here = f" ({_num(p.launches_per_step)} per step here)" if p.launches_per_step else ""
        out.append(
            f"The params span {len(p.param_sets)} device/dtype sets (mostly {main.dtype} on {main.device}; also "
            f"{others}): a fused step launches once per set and param group{here}. Unless they are "
            f"kept apart on purpose (e.g. fp32 norms), cast them to {main.dtype} on "
            f"{main.device} to save the launches."
        )
    fp32_gpu = sum(s.elements for s in p.param_sets if s.device.startswith("cuda") and s.dtype == "float32")
    if fp32_gpu >= LARGE_MODEL:
        split = use_with("master_weights='split'")
        out.append(
            f"{fp32_gpu / 1e6:.0f} M float32 params on the GPU: train with bfloat16 params "
            f"(model.to(torch.bfloat16)) and {split}: the same 4 bytes per parameter "
            f"keep an exact float32 master while forward, backward and the gradients use half the bytes. "
            f"master_weights=True keeps a separate float32 copy instead (6 bytes per parameter; the bf16 weights "
            f"are rounded rather than truncated)."
        )
    if p.fp32_state_of_half_bytes:
        out.append(
            f"{_mb(p.fp32_state_of_half_bytes)} of float32 optimizer state (moments, buffers) belongs to half-"
            f"precision params: state_dtype=torch.bfloat16 halves it (saves {_mb(p.fp32_state_of_half_bytes // 2)})."
            f" The update is still computed in float32, but each moment is rounded to bf16 once per step, which "
            f"can slightly change convergence: worth it where memory is the limit."
        )
    return out


def _num(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:,.0f}" if x == int(x) or x >= 100 else f"{x:.2f}"


def _plural(x: float | None, what: str) -> str:
    return f"{_num(x)} {what}{'' if x == 1 else 'es' if what.endswith('h') else 's'}"


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n:,}"


def _mb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


# Command line -------------------------------------------------------------------------------------------------


def _log_uniform(n: int, low: int, high: int) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(1234)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    sizes = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return [(int(s),) for s in sizes.round().long().tolist()]


#: Synthetic parameter sets of the profile command: name -> (description, shapes).
WORKLOADS: dict[str, tuple[str, Callable[[], list[tuple[int, ...]]]]] = {
    "tiny": ("8 tensors, 8,320 elements: a smoke test", lambda: [(64, 32)] * 4 + [(32,)] * 4),
    "small": (
        "1000 tensors, log-uniform 64..65536 elements (about 9.5 M)",
        lambda: _log_uniform(1000, 64, 65536),
    ),
    "many-tiny": ("1000 tensors of 256 elements: per-tensor overhead", lambda: [(256,)] * 1000),
    "large": (
        "3 x 4096x2048 matrices + 96 vectors (about 25 M)",
        lambda: [(4096, 2048)] * 3 + [(2048,)] * 48 + [(512,)] * 48,
    ),
}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_TORCH_IMPLS = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}, "forloop": {"foreach": False}}


class _CliError(Exception):
    pass


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() and _C.cuda_compiled else "cpu"


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``profile`` command to a command line's subparsers (``python -m fused_optim profile``)."""
    names = ", ".join(list_optimizers())
    workloads = "\n".join(f"  {k:<10} {desc}" for k, (desc, _) in WORKLOADS.items())
    p = subparsers.add_parser(
        "profile",
        help="profile one optimizer step on synthetic parameters: time, bandwidth, launches, advice",
        description="Profile an optimizer's step on synthetic parameters with random gradients: time per step, "
        "bytes moved, effective bandwidth against the machine's (measured), launches and top operators, and "
        "advice. In code: fused_optim.profiling.profile_step(optimizer) profiles your own model's optimizer.",
        epilog=f"workloads:\n{workloads}\n\nexamples:\n  python -m fused_optim profile --optimizer adamw\n"
        "  python -m fused_optim profile --optimizer torch.adamw --workload many-tiny\n"
        "  python -m fused_optim profile --dtype bfloat16 --master-weights split",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--optimizer",
        default="adamw",
        metavar="NAME",
        help=f"a fused_optim optimizer ({names}), or torch.NAME for torch.optim's (torch.adamw, torch.sgd, "
        "torch.nadam, ...) to compare (default: adamw)",
    )
    p.add_argument("--workload", choices=list(WORKLOADS), default="small", help="parameter set (default: small)")
    p.add_argument("--dtype", choices=list(_DTYPES), default="float32", help="param and grad dtype (default: float32)")
    p.add_argument(
        "--master-weights",
        nargs="?",
        const="true",
        choices=["true", "split"],
        help="float32 masters for half params (bare flag: true; split: bf16 only); fused_optim only",
    )
    p.add_argument("--state-dtype", choices=list(_DTYPES), help="dtype of the moments/buffers; fused_optim only")
    p.add_argument("--max-grad-norm", type=positive_float, help="clip in the kernel to this norm; fused_optim only")
    p.add_argument(
        "--impl", choices=list(_TORCH_IMPLS), default="default", help="torch.optim's implementation (torch.* only)"
    )
    p.add_argument("--steps", type=int_at_least(1), default=20, help="timed steps (default: 20)")
    p.add_argument("--warmup", type=int_at_least(0), default=3, help="untimed steps first (default: 3)")
    p.add_argument("--profiler-steps", type=int_at_least(0), default=3, help="steps under torch.profiler (default: 3)")
    p.add_argument("--device", default=_default_device(), help=f"cpu, cuda, cuda:1, ... (default: {_default_device()})")
    p.add_argument(
        "--bandwidth", type=positive_float, metavar="GBPS", help="the machine's bandwidth in GB/s (default: measure)"
    )
    p.add_argument("--json", action="store_true", help="print the profile as JSON instead of the report")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_profile_command)


def _profile_command(args: argparse.Namespace) -> int:
    try:
        device = _cli_device(args.device)
        dtype = _DTYPES[args.dtype]
        shapes = WORKLOADS[args.workload][1]()
        g = torch.Generator(device="cpu").manual_seed(0)
        params = []
        for shape in shapes:
            param = torch.nn.Parameter(torch.randn(shape, generator=g).to(device=device, dtype=dtype))
            param.grad = (torch.randn(shape, generator=g) * 1e-2).to(device=device, dtype=dtype)
            params.append(param)
        optimizer = _cli_optimizer(args, params, device)
    except _CliError as e:
        print(f"profile: error: {e}", file=sys.stderr)
        return 2
    numel = sum(p.numel() for p in params)
    print(
        f"workload {args.workload}: {len(params):,} tensors, {_count(numel)} elements, {args.dtype} on {device}",
        file=sys.stderr if args.json else sys.stdout,
    )
    try:
        profile = profile_step(
            optimizer,
            steps=args.steps,
            warmup=args.warmup,
            profiler_steps=args.profiler_steps,
            bandwidth_gbps=args.bandwidth,
            restore=False,  # throwaway params: no need for a copy
            progress=not args.no_progress,
        )
    except (RuntimeError, ValueError, TypeError) as e:  # e.g. split masters of fp16 params, refused at the step
        print(f"profile: error: {args.optimizer}'s step failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(profile.to_dict(), indent=1) if args.json else profile.report())
    return 0


def _cli_device(text: str) -> torch.device:
    try:
        device = torch.device(text)
    except RuntimeError:
        raise _CliError(f"--device {text!r} is not a device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise _CliError(f"--device {text}: no CUDA GPU is visible; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise _CliError(f"--device {text}: only cpu and cuda are supported")
    return device


def _cli_optimizer(args: argparse.Namespace, params: list[Tensor], device: torch.device) -> Optimizer:
    name = args.optimizer
    if name.lower().startswith("torch."):
        for flag, value in (("--master-weights", args.master_weights), ("--state-dtype", args.state_dtype)):
            if value is not None:
                raise _CliError(f"{flag} is a fused_optim option; torch.optim's optimizers have none")
        if args.max_grad_norm is not None:
            raise _CliError("--max-grad-norm is a fused_optim option; torch.optim's optimizers have none")
        cls, kwargs = _torch_optimizer(name[len("torch.") :])
        kwargs = {**kwargs, **_TORCH_IMPLS[args.impl]}
        try:
            return cls(params, **kwargs)
        except (RuntimeError, ValueError, TypeError) as e:
            raise _CliError(f"{name} --impl {args.impl}: {e}") from None
    if args.impl != "default":
        raise _CliError("--impl chooses torch.optim's implementation; use it with a torch.NAME optimizer")
    if device.type == "cuda" and not _C.cuda_compiled:
        raise _CliError("this build of fused_optim has no CUDA kernels: use --device cpu, or a torch.NAME optimizer")
    kwargs: dict[str, Any] = {}
    if args.master_weights is not None:
        kwargs["master_weights"] = "split" if args.master_weights == "split" else True
    if args.state_dtype is not None:
        kwargs["state_dtype"] = _DTYPES[args.state_dtype]
    if args.max_grad_norm is not None:
        kwargs["max_grad_norm"] = args.max_grad_norm
    try:
        return create_optimizer(name, params, **kwargs)
    except ValueError as e:
        raise _CliError(f"{e} (or torch.NAME for torch.optim's)") from None


def _torch_optimizer(name: str) -> tuple[type[Optimizer], dict[str, Any]]:
    """torch.optim's class for a registry name ("adamw", "momentum") or a torch.optim class name ("nadam")."""
    key = name.lower().replace("_", "").replace("-", "")
    if key in _REGISTRY:
        fused_cls, implied = _REGISTRY[key]
        cls = getattr(torch.optim, fused_cls.__name__, None)
        if cls is None:
            raise _CliError(f"torch.optim has no {fused_cls.__name__}; profile fused_optim's with --optimizer {key}")
        return cls, dict(implied)
    classes = {
        n.lower(): c
        for n, c in vars(torch.optim).items()
        if isinstance(c, type) and issubclass(c, Optimizer) and c is not Optimizer
    }
    if key in ("lbfgs", "sparseadam"):
        raise _CliError(f"torch.{name} cannot be profiled on dense gradients without a closure")
    if key not in classes:
        known = sorted(set(classes) - {"lbfgs", "sparseadam"})
        raise _CliError(f"unknown optimizer torch.{name}; torch.optim has: {', '.join(known)}")
    return classes[key], {}
