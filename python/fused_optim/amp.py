"""Mixed-precision training helpers on torch.amp: autocast, a real ``torch.amp.GradScaler``, backward, clipping,
gradient accumulation and the step, in one object.

The source article writes ``with amp.grad() as scaler:``; this module makes that work::

    from fused_optim import amp

    with amp.grad() as scaler:                 # autocast (bf16 on CPU, fp16 on CUDA) + a GradScaler
        loss = loss_fn(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

and adds a friendlier loop for real training::

    mp = amp.MixedPrecision(optimizer, dtype=torch.float16, max_grad_norm=1.0, accumulation_steps=4)
    for x, y in data:
        with mp.autocast():
            loss = loss_fn(model(x), y)
        result = mp.backward(loss)             # steps on every 4th call
        if result.stepped:
            log(result.grad_norm, result.skipped)

With fused_optim's optimizers, unscaling and clipping happen inside the update kernel (``max_grad_norm``). With
float16 the GradScaler skips a step with an inf/nan gradient, which then changes nothing, decided on the device.
bfloat16 needs no loss scaling and takes every step, as torch.autocast alone does (and as the HF Trainer and
Lightning do in bf16): a non-finite loss makes the parameters NaN.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .clip import clip_grad_norm_
from .optim._base import FusedOptimizer

__all__ = ["MixedPrecision", "StepResult", "grad", "default_dtype"]


def default_dtype(device_type: str) -> torch.dtype:
    """The usual autocast dtype: bfloat16 on the CPU (fp16 is slow there), float16 on GPUs."""
    return torch.bfloat16 if device_type == "cpu" else torch.float16


def _device_type(device_type: str | None) -> str:
    if device_type is not None:
        return device_type
    return "cuda" if torch.cuda.is_available() else "cpu"


def _check(dtype: Any, init_scale: Any) -> None:
    # torch.autocast only warns for another dtype and then runs everything in float32 (no mixed precision at all);
    # a GradScaler starting at a scale of 0 or NaN skips every step. Both without an error, so refuse them here.
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float16 or torch.bfloat16, autocast's dtypes; got {dtype!r}")
    if not (isinstance(init_scale, numbers.Real) and 0 < init_scale < math.inf):
        raise ValueError(f"init_scale must be a positive finite number, got {init_scale!r}")


@contextlib.contextmanager
def grad(
    device_type: str | None = None,
    dtype: torch.dtype | None = None,
    enabled: bool = True,
    init_scale: float = 2.0**16,
) -> Iterator[torch.amp.GradScaler]:
    """Autocast for the block, and a ``torch.amp.GradScaler`` to use in it (the article's ``amp.grad()``).

    ``device_type`` defaults to CUDA when available, else the CPU; ``dtype`` to :func:`default_dtype`. Loss
    scaling is only needed for float16, so with bfloat16 the scaler is created disabled and its ``scale``/``step``
    /``update`` pass through.
    """
    _check(dtype, init_scale)
    device_type = _device_type(device_type)
    dtype = dtype or default_dtype(device_type)
    scaler = torch.amp.GradScaler(device_type, init_scale=init_scale, enabled=enabled and dtype == torch.float16)
    with torch.autocast(device_type, dtype=dtype, enabled=enabled):
        yield scaler


@dataclass
class StepResult:
    """What one call of :meth:`MixedPrecision.backward` did. Tensors stay on the device (no sync) until read."""

    stepped: bool  # an optimizer step was taken (False while accumulating micro-batches)
    found_inf: Tensor | None = None  # nonzero when the step was skipped for inf/nan gradients (float16 only)
    grad_norm: Tensor | None = None  # the unscaled global gradient norm, when clipping
    scale: Tensor | None = None  # the loss scale used for this step

    @property
    def skipped(self) -> bool:
        """True when the GradScaler (float16) found inf/nan gradients and the step changed nothing (reads the
        device flag). Always False with bfloat16, which has no scaler and never skips."""
        return self.found_inf is not None and bool(self.found_inf.item())


class MixedPrecision:
    """Autocast, loss scaling, backward, gradient accumulation, clipping and the optimizer step.

    Args:
        optimizer: any torch optimizer; fused_optim's clip and unscale inside their update kernel.
        device_type: "cuda" or "cpu" (default: CUDA when available).
        dtype: the autocast dtype (default: bf16 on CPU, fp16 on CUDA). A GradScaler is used for float16 only.
        max_grad_norm: clip gradients to this global 2-norm before each step (None: no clipping).
        accumulation_steps: micro-batches per optimizer step; each loss is divided by it.
        scaler: a ``torch.amp.GradScaler`` to use instead of a new one (its state_dict is the usual one).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        device_type: str | None = None,
        dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
        accumulation_steps: int = 1,
        scaler: torch.amp.GradScaler | None = None,
        init_scale: float = 2.0**16,
    ) -> None:
        if not (hasattr(optimizer, "step") and hasattr(optimizer, "param_groups")):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        _check(dtype, init_scale)
        # A float (or NaN) count would divide each loss by it and step after a fractional number of micro-batches.
        if isinstance(accumulation_steps, bool) or not isinstance(accumulation_steps, numbers.Integral):
            raise ValueError(f"accumulation_steps must be an integer of at least 1, got {accumulation_steps!r}")
        if accumulation_steps < 1:
            raise ValueError(f"accumulation_steps must be at least 1, got {accumulation_steps}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {max_grad_norm}")
        self.optimizer = optimizer
        self.device_type = _device_type(device_type)
        self.dtype = dtype or default_dtype(self.device_type)
        self.max_grad_norm = max_grad_norm
        self.accumulation_steps = accumulation_steps
        self.scaler = scaler or torch.amp.GradScaler(
            self.device_type, init_scale=init_scale, enabled=self.dtype == torch.float16
        )
        self._micro = 0

    def autocast(self) -> torch.autocast:
        """The forward pass's context manager."""
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: Tensor) -> StepResult:
        """Backward of ``loss`` (scaled, and divided by ``accumulation_steps``); on the last micro-batch of a step,
        clip, step, update the scale and zero the gradients."""
        self.scaler.scale(loss / self.accumulation_steps).backward()
        self._micro += 1
        if self._micro < self.accumulation_steps:
            return StepResult(stepped=False)
        return self.step()

    def step(self) -> StepResult:
        """Clip, step, update the scale and zero the gradients now (``backward`` calls it on the last micro-batch;
        call it to flush a partial accumulation, e.g. at the end of an epoch: the step then sees the mean of the
        micro-batches accumulated so far). With no ``backward`` since the last step there is nothing to apply: it
        returns ``stepped=False``."""
        if self._micro == 0:
            return StepResult(stepped=False)
        seen, self._micro = self._micro, 0  # the next accumulation starts afresh, flushed early or not
        opt = self.optimizer
        if seen < self.accumulation_steps:
            # Each loss was divided by accumulation_steps: make the gradient the mean over the micro-batches seen.
            with torch.no_grad():
                for group in opt.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.grad.mul_(self.accumulation_steps / seen)
        # A copy: update() below changes the scaler's tensor in place (no host sync either way).
        scale = self.scaler._get_scale_async().clone() if self.scaler.is_enabled() else None
        grad_norm = None
        if isinstance(opt, FusedOptimizer):
            # Unscaling and clipping both happen inside the update kernel: no pass that rewrites the gradients.
            saved, opt.max_grad_norm = opt.max_grad_norm, self.max_grad_norm or opt.max_grad_norm
            try:
                self.scaler.step(opt)
            finally:
                opt.max_grad_norm = saved
            grad_norm = opt.grad_norm if self.max_grad_norm or saved else None
        else:
            if self.max_grad_norm is not None:
                self.scaler.unscale_(opt)
                grad_norm = clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], self.max_grad_norm)
            self.scaler.step(opt)
        found_inf = self._found_inf()
        self.scaler.update()
        opt.zero_grad(set_to_none=True)
        return StepResult(stepped=True, found_inf=found_inf, grad_norm=grad_norm, scale=scale)

    def _found_inf(self) -> Tensor | None:
        if not self.scaler.is_enabled():
            return None
        # GradScaler keeps, per optimizer, the inf flags it handed to the step (one per device).
        state = self.scaler._per_optimizer_states.get(id(self.optimizer), {})
        flags = list(state.get("found_inf_per_device", {}).values())
        if not flags:
            return None
        return sum(f.to(flags[0].device) for f in flags)

    def state_dict(self) -> dict[str, object]:
        """The scaler's state (torch.amp.GradScaler's format) and the accumulation position."""
        return {"scaler": self.scaler.state_dict(), "micro_step": self._micro}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.scaler.load_state_dict(state["scaler"])  # type: ignore[arg-type]
        self._micro = int(state["micro_step"])  # type: ignore[arg-type]
