"""Learning-rate schedules: closed form, resumable, torch-compatible.

    from fused_optim import lr_scheduler as sch
    sched = sch.CosineAnnealingLR(opt, T_total=10_000, warmup_steps=500, eta_min_ratio=0.1)
    for batch in data:
        ...
        opt.step()
        sched.step()

Every schedule is a :class:`torch.optim.lr_scheduler.LRScheduler` that works with any torch optimizer. The lr is
a closed-form function of ``last_epoch`` (no recursive drift), so ``state_dict()`` alone resumes a run exactly.
The lr is set, not multiplied (as by torch's LambdaLR, unlike its chainable schedulers): schedules combine with
SequentialLR, and a step that overwrites another scheduler's change warns once (see ``ClosedFormLR.step``).
Every schedule takes a warm-up (``warmup_steps``, ``warmup_start_factor`` including 0, ``warmup``): during the
warm-up the lr rises from ``warmup_start_factor`` times the schedule's first value to that value, and the
schedule proper starts after it, so schedule lengths (``T_max``, ``total_iters``, ...) count steps after warm-up.
A tensor ``lr`` is filled in place, so a compiled or captured optimizer step sees each new value.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR as _TorchLambdaLR
from torch.optim.lr_scheduler import LRScheduler

__all__ = [
    "ClosedFormLR",
    "UnboundSchedule",
    "LambdaLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "PolynomialLR",
    "InverseSqrtLR",
    "WarmupStableDecayLR",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_linear_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_polynomial_decay_schedule_with_warmup",
    "get_inverse_sqrt_schedule",
    "get_wsd_schedule",
    "get_scheduler",
    "lr_values",
    "table",
    "plot",
]

_WARMUPS = ("linear", "exponential", "cosine", "1-sqrt")


def _check_optimizer(optimizer: Any, name: str) -> None:
    # torch's own message ("function is not an Optimizer") does not say what to do instead.
    if isinstance(optimizer, Optimizer):
        return
    if callable(optimizer):
        raise TypeError(
            f"{name} takes an optimizer as its first argument, got the callable {optimizer!r}. "
            f"For a schedule from a function use LambdaLR(optimizer, fn), or LambdaLR(fn).bind(optimizer); "
            f"to build {name} later use {name}.unbound(...).bind(optimizer)."
        )
    raise TypeError(f"{name} takes a torch.optim.Optimizer as its first argument, got {type(optimizer).__name__}")


def _warmup_factor(kind: str, start: float, progress: float) -> float:
    """Warm-up multiplier at ``progress`` in [0, 1): ``start`` at 0, reaching 1 at progress 1."""
    if kind == "linear":
        return start + (1.0 - start) * progress
    if kind == "exponential":
        return start ** (1.0 - progress)
    if kind == "cosine":
        return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * progress))
    return start + (1.0 - start) * (1.0 - math.sqrt(1.0 - progress))  # "1-sqrt"


class ClosedFormLR(LRScheduler):
    """Base of the schedules here: lr as a closed-form function of the step, with an optional warm-up.

    Subclasses implement :meth:`factor` (a multiplier of each group's initial lr) or, where the schedule has an
    absolute floor such as ``eta_min``, :meth:`lr_at`.

    Args:
        optimizer: any torch optimizer; a tensor ``lr`` is updated in place.
        last_epoch: index of the last step taken; -1 starts a new run.
        warmup_steps: steps of warm-up before the schedule proper starts.
        warmup_start_factor: warm-up starts at this fraction of the schedule's first lr (0 allowed, except for
            ``warmup="exponential"``).
        warmup: ``"linear"``, ``"exponential"`` (geometric), ``"cosine"`` or ``"1-sqrt"``.

    The subclasses take these three as keyword arguments (their ``**warmup``).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        last_epoch: int = -1,
        *,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.0,
        warmup: str = "linear",
    ) -> None:
        _check_optimizer(optimizer, type(self).__name__)
        if warmup not in _WARMUPS:
            raise ValueError(f"warmup must be one of {_WARMUPS}, got {warmup!r}")
        if not (math.isfinite(warmup_steps) and warmup_steps >= 0):
            raise ValueError(f"warmup_steps must be a finite number >= 0, got {warmup_steps}")
        if not (math.isfinite(warmup_start_factor) and warmup_start_factor >= 0):
            raise ValueError(f"warmup_start_factor must be a finite number >= 0, got {warmup_start_factor}")
        if warmup == "exponential" and warmup_steps > 0 and warmup_start_factor <= 0:
            raise ValueError("an exponential warm-up needs warmup_start_factor > 0 (0 never grows geometrically)")
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_factor = float(warmup_start_factor)
        self.warmup = warmup
        LRScheduler.__init__(self, optimizer, last_epoch)

    @classmethod
    def unbound(cls, *args: Any, **kwargs: Any) -> UnboundSchedule:
        """This schedule without an optimizer yet: ``.bind(optimizer)`` builds it."""
        return UnboundSchedule(cls, args, kwargs)

    def factor(self, step: int) -> float:
        """Multiplier of the initial lr ``step`` steps after the warm-up."""
        raise NotImplementedError

    def lr_at(self, step: int, base_lr: float, group: int) -> float:
        """The lr of param group ``group`` (initial lr ``base_lr``) ``step`` steps after the warm-up."""
        return base_lr * self.factor(step)

    def lr_for(self, epoch: int, base_lr: float, group: int = 0) -> float:
        """The lr at step ``epoch`` counted from the start of the run, warm-up included."""
        if epoch < self.warmup_steps:
            progress = epoch / self.warmup_steps
            return self.lr_at(0, base_lr, group) * _warmup_factor(self.warmup, self.warmup_start_factor, progress)
        return self.lr_at(epoch - self.warmup_steps, base_lr, group)

    def get_lr(self) -> list[float | torch.Tensor]:
        """The lrs at ``last_epoch``, one per param group, in closed form."""
        epoch = max(self.last_epoch, 0)
        lrs = [self.lr_for(epoch, float(base), i) for i, base in enumerate(self.base_lrs)]
        for lr in lrs:
            # A NaN or inf argument (T_total, gamma, eta_min...) would otherwise train on silently: a tensor lr on
            # the GPU is never looked at on the host again.
            if not math.isfinite(lr):
                raise ValueError(
                    f"{type(self).__name__} computed lr={lr} at step {epoch}; check its arguments for NaN or inf"
                )
        return lrs

    # step(epoch) uses this: the closed form is exact at any step.
    _get_closed_form_lr = get_lr

    def step(self, epoch: int | None = None) -> None:
        """Set each group's lr to the schedule's value at the next step (or at ``epoch``).

        The value is absolute, as torch's LambdaLR and HF's schedules set it, not a multiple of the current lr as
        torch's chainable schedulers do: an lr changed since this schedule's last step (by ReduceLROnPlateau,
        another schedule in a ChainedScheduler, or by hand) is overwritten, and the first time that happens a
        warning says so instead of training on silently with the other change lost."""
        if epoch is None and getattr(self, "_lrs_set", None) and not getattr(self, "_warned_overwrite", False):
            now = [_host_value(g["lr"]) for g in self.optimizer.param_groups]
            if any(a is not None and b is not None and a != b for a, b in zip(now, self._lrs_set)):
                self._warned_overwrite = True
                warnings.warn(
                    f"{type(self).__name__}.step(): the lr was changed since this schedule last set it (by another "
                    "scheduler, ReduceLROnPlateau or by hand), and this step overwrites that change: fused_optim's "
                    "schedules set the lr in closed form instead of multiplying the current one. Combine them with "
                    "SequentialLR, or use their warm-up options instead of a second scheduler.",
                    stacklevel=2,
                )
        super().step(epoch)
        self._lrs_set = [_host_value(g["lr"]) for g in self.optimizer.param_groups]

    def _initial_step(self) -> None:
        self._lrs_set = None  # SequentialLR resets the lrs and steps its first schedule again: not an overwrite
        super()._initial_step()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state from :meth:`state_dict`."""
        super().load_state_dict(state_dict)
        self._lrs_set = None  # the optimizer may not have been restored with it: its lr is no one's change


def _host_value(lr: float | torch.Tensor) -> float | None:
    """An lr's value where reading it costs no device synchronisation (None for a tensor on an accelerator)."""
    if isinstance(lr, torch.Tensor):
        return float(lr) if lr.device.type == "cpu" else None
    return float(lr)


class UnboundSchedule:
    """A schedule waiting for its optimizer (``LambdaLR(fn)`` returns one): ``.bind(optimizer)`` builds it."""

    def __init__(self, cls: type[LRScheduler], args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        self.cls = cls
        self.args = tuple(args)
        self.kwargs = dict(kwargs)

    def bind(self, optimizer: Optimizer, last_epoch: int = -1) -> LRScheduler:
        """The scheduler for ``optimizer``; ``last_epoch`` >= 0 resumes (torch's meaning)."""
        kwargs = self.kwargs if last_epoch == -1 else {**self.kwargs, "last_epoch": last_epoch}
        return self.cls(optimizer, *self.args, **kwargs)

    def __repr__(self) -> str:
        return f"UnboundSchedule({self.cls.__name__}, args={self.args!r}, kwargs={self.kwargs!r})"


class LambdaLR(ClosedFormLR, _TorchLambdaLR):
    """lr = initial lr * ``lr_lambda(step)``: torch's LambdaLR, plus warm-up and the article's unbound spelling.

    ``LambdaLR(optimizer, fn)`` is torch's LambdaLR (an instance of it). ``LambdaLR(fn)`` with no optimizer
    returns an :class:`UnboundSchedule`; ``.bind(optimizer)`` gives the scheduler.

    As in torch, ``state_dict()`` keeps a callable object's attributes and leaves functions out (None), and
    ``load_state_dict`` restores those attributes into the callables given to the constructor, which stay in
    use: rebuild the scheduler with the same functions before loading. The step count is always restored.
    """

    def __new__(cls, optimizer: Any = None, lr_lambda: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(optimizer, Optimizer) and callable(optimizer) and lr_lambda is None:
            return UnboundSchedule(cls, (optimizer,), kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        optimizer: Optimizer,
        lr_lambda: Callable[[int], float] | Sequence[Callable[[int], float]] | None = None,
        last_epoch: int = -1,
        *,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.0,
        warmup: str = "linear",
    ) -> None:
        _check_optimizer(optimizer, "LambdaLR")
        if lr_lambda is None:
            raise TypeError("LambdaLR(optimizer, lr_lambda) needs lr_lambda, a function of the step")
        n = len(optimizer.param_groups)
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != n:
                raise ValueError(f"Expected {n} lr_lambdas, but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * n
        super().__init__(
            optimizer,
            last_epoch,
            warmup_steps=warmup_steps,
            warmup_start_factor=warmup_start_factor,
            warmup=warmup,
        )

    def lr_at(self, step: int, base_lr: float, group: int) -> float:
        return base_lr * self.lr_lambdas[group](step)

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state, with each callable object's attributes (None for a function)."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [dict(fn.__dict__) if _has_saved_attributes(fn) else None for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state from :meth:`state_dict`; the callables given to the constructor stay in use."""
        state = dict(state_dict)
        saved = state.pop("lr_lambdas", [None] * len(self.lr_lambdas))
        self.__dict__.update(state)
        for fn, entry in zip(self.lr_lambdas, saved):
            # An import path saved by fused_optim 0.1's first releases names a function: the one given now wins.
            # Our HF multipliers have no __dict__ (see _CosineWave), as HF's partials have nothing to restore.
            if isinstance(entry, dict) and _OLD_FUNCTION_KEY not in entry and _has_saved_attributes(fn):
                fn.__dict__.update(entry)
        self._lrs_set = None  # as ClosedFormLR.load_state_dict


_OLD_FUNCTION_KEY = "__fused_optim_function__"


def _has_saved_attributes(fn: Callable[[int], float]) -> bool:
    """torch's rule: a callable object's attributes are its state; a function (or a slotted object) has none."""
    return hasattr(fn, "__dict__") and not isinstance(fn, types.FunctionType)


class ConstantLR(ClosedFormLR):
    """torch's ConstantLR: lr * ``factor`` for ``total_iters`` steps, then lr. ``factor=1`` is a constant lr."""

    def __init__(
        self,
        optimizer: Optimizer,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
        **warmup: Any,
    ) -> None:
        if not 0 <= factor <= 1:
            raise ValueError(f"factor must be in [0, 1], got {factor}")
        self.factor_value = float(factor)
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch, **warmup)

    def factor(self, step: int) -> float:
        return self.factor_value if step < self.total_iters else 1.0


class LinearLR(ClosedFormLR):
    """torch's LinearLR in closed form, and allowed to start from 0: the multiplier goes linearly from
    ``start_factor`` to ``end_factor`` over ``total_iters`` steps, then stays at ``end_factor``.

    Linear decay to 0 over N steps is ``LinearLR(opt, start_factor=1, end_factor=0, total_iters=N)``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
        **warmup: Any,
    ) -> None:
        _check_finite("LinearLR", start_factor=start_factor, end_factor=end_factor, total_iters=total_iters)
        if start_factor < 0 or end_factor < 0:
            raise ValueError(f"start_factor and end_factor must be >= 0, got {start_factor}, {end_factor}")
        self.start_factor = float(start_factor)
        self.end_factor = float(end_factor)
        self.total_iters = int(total_iters)
        super().__init__(optimizer, last_epoch, **warmup)

    def factor(self, step: int) -> float:
        if self.total_iters <= 0:  # torch stays at the start factor (its closed form would divide by 0)
            return self.start_factor
        t = min(step, self.total_iters)
        return self.start_factor + (self.end_factor - self.start_factor) * t / self.total_iters


def _check_finite(schedule: str, **values: float | None) -> None:
    """A NaN or inf length, factor or floor would give NaN lrs: refuse it by name."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{schedule}: {name} must be a finite number, got {value}")


def _floor(base_lr: float, eta_min: float, eta_min_ratio: float | None) -> float:
    return base_lr * eta_min_ratio if eta_min_ratio is not None else eta_min


class ExponentialLR(ClosedFormLR):
    """torch's ExponentialLR in closed form: lr * ``gamma`` ** step, optionally floored at ``eta_min``
    (absolute) or ``eta_min_ratio`` * initial lr."""

    def __init__(
        self,
        optimizer: Optimizer,
        gamma: float,
        last_epoch: int = -1,
        *,
        eta_min: float = 0.0,
        eta_min_ratio: float | None = None,
        **warmup: Any,
    ) -> None:
        _check_finite("ExponentialLR", gamma=gamma, eta_min=eta_min, eta_min_ratio=eta_min_ratio)
        self.gamma = float(gamma)
        self.eta_min = float(eta_min)
        self.eta_min_ratio = eta_min_ratio
        super().__init__(optimizer, last_epoch, **warmup)

    def lr_at(self, step: int, base_lr: float, group: int) -> float:
        return max(base_lr * self.gamma**step, _floor(base_lr, self.eta_min, self.eta_min_ratio))


class CosineAnnealingLR(ClosedFormLR):
    """Cosine annealing from the initial lr to a floor, with optional SGDR restarts; clamped after the end.

    ``CosineAnnealingLR(opt, T_max=N, eta_min=m)`` gives torch's values for steps 0..N (torch's recursion agrees
    with this closed form to rounding); after N it stays at ``eta_min`` where torch climbs back up (pass
    ``clamp=False`` for torch's periodic continuation). The article's spelling
    ``CosineAnnealingLR(opt, T_total=100, T_cycle=50)`` is a 100-step run of 50-step cycles, each restarting at
    the peak.

    Args:
        T_max: torch's name for the length of a single cosine (same as ``T_total`` without ``T_cycle``).
        eta_min: the floor, absolute.
        T_total: length of the run after warm-up; from then on the lr is the floor. ``None`` with ``T_cycle``
            restarts forever (torch's CosineAnnealingWarmRestarts).
        T_cycle: length of the first cycle (default: one cycle over ``T_total``).
        T_mult: each cycle is ``T_mult`` times longer than the one before.
        peak_decay: each cycle's peak is ``peak_decay`` times the one before.
        eta_min_ratio: the floor as a fraction of the initial lr (overrides ``eta_min``).
        clamp: hold the floor after ``T_total`` instead of continuing the cosine.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_max: int | None = None,
        eta_min: float = 0.0,
        last_epoch: int = -1,
        *,
        T_total: int | None = None,
        T_cycle: float | None = None,
        T_mult: float = 1,
        peak_decay: float = 1.0,
        eta_min_ratio: float | None = None,
        clamp: bool = True,
        **warmup: Any,
    ) -> None:
        _check_optimizer(optimizer, "CosineAnnealingLR")
        _check_finite(
            "CosineAnnealingLR", T_max=T_max, T_total=T_total, T_cycle=T_cycle, eta_min=eta_min,
            eta_min_ratio=eta_min_ratio, T_mult=T_mult, peak_decay=peak_decay,
        )  # fmt: skip
        if T_max is not None and T_total is not None:
            raise ValueError("give T_max (torch's name) or T_total, not both")
        total = T_total if T_total is not None else T_max
        if total is None and T_cycle is None:
            raise ValueError("CosineAnnealingLR needs T_max, T_total or T_cycle")
        cycle = T_cycle if T_cycle is not None else total
        if cycle <= 0 or (total is not None and total < 0):
            raise ValueError(f"cycle and total lengths must be positive, got T_cycle={cycle}, T_total={total}")
        if T_mult < 1:
            raise ValueError(f"T_mult must be >= 1, got {T_mult}")
        self.T_total = total
        self.T_cycle = cycle
        self.T_mult = T_mult
        self.peak_decay = float(peak_decay)
        self.eta_min = float(eta_min)
        self.eta_min_ratio = eta_min_ratio
        self.clamp = clamp
        self.restarts = T_cycle is not None
        super().__init__(optimizer, last_epoch, **warmup)

    def _cycle(self, step: int) -> tuple[int, float, float]:
        """(cycle index, position in it, its length) for ``step``."""
        if self.T_mult == 1:
            n = int(step // self.T_cycle)
            return n, step - n * self.T_cycle, self.T_cycle
        n, start, length = 0, 0.0, self.T_cycle
        while step >= start + length:  # cycles grow geometrically, so this loops O(log step) times
            start += length
            length *= self.T_mult
            n += 1
        return n, step - start, length

    def lr_at(self, step: int, base_lr: float, group: int) -> float:
        floor = _floor(base_lr, self.eta_min, self.eta_min_ratio)
        if self.clamp and self.T_total is not None and step >= self.T_total:
            return floor
        if not self.restarts:
            # torch's form, with no cycle arithmetic, so its values match to rounding.
            return floor + (base_lr - floor) * (1 + math.cos(math.pi * step / self.T_cycle)) / 2
        n, pos, length = self._cycle(step)
        peak = base_lr * self.peak_decay**n
        return floor + (peak - floor) * (1 + math.cos(math.pi * pos / length)) / 2


class PolynomialLR(ClosedFormLR):
    """torch's PolynomialLR in closed form, with an optional floor: the lr decays as
    ``(1 - step / total_iters) ** power`` from the initial lr to ``eta_min`` (absolute) or to
    ``end_factor`` * initial lr, and stays there after ``total_iters``."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_iters: int = 5,
        power: float = 1.0,
        last_epoch: int = -1,
        *,
        eta_min: float = 0.0,
        end_factor: float | None = None,
        **warmup: Any,
    ) -> None:
        self.total_iters = int(total_iters)
        self.power = float(power)
        self.eta_min = float(eta_min)
        self.end_factor = end_factor
        super().__init__(optimizer, last_epoch, **warmup)

    def lr_at(self, step: int, base_lr: float, group: int) -> float:
        # total_iters <= 0: no decay, torch's initial lr throughout (its closed form would divide by 0)
        remaining = 1.0 - min(step, self.total_iters) / self.total_iters if self.total_iters > 0 else 1.0
        if self.end_factor is not None:
            return base_lr * (self.end_factor + (1.0 - self.end_factor) * remaining**self.power)
        return self.eta_min + (base_lr - self.eta_min) * remaining**self.power


class InverseSqrtLR(ClosedFormLR):
    """Inverse-square-root decay after warm-up: lr * 1 / sqrt(1 + step / ``timescale``).

    With a linear warm-up from 0 this is HF's inverse-sqrt schedule; ``timescale`` defaults to ``warmup_steps``
    (or 10,000 without warm-up), as there.
    """

    def __init__(
        self, optimizer: Optimizer, timescale: float | None = None, last_epoch: int = -1, **warmup: Any
    ) -> None:
        self.timescale = float(timescale if timescale is not None else (warmup.get("warmup_steps") or 10_000))
        if not (math.isfinite(self.timescale) and self.timescale > 0):
            raise ValueError(f"InverseSqrtLR: timescale must be a positive finite number, got {timescale}")
        super().__init__(optimizer, last_epoch, **warmup)

    def factor(self, step: int) -> float:
        return 1.0 / math.sqrt(1.0 + step / self.timescale)


class WarmupStableDecayLR(ClosedFormLR):
    """Warm-up-stable-decay (WSD): after the warm-up, the initial lr for ``num_stable_steps``, then a decay over
    ``num_decay_steps`` (``"linear"``, ``"cosine"`` or ``"1-sqrt"``) to ``min_lr_ratio`` * initial lr, held after.

    The warm-up starts at ``min_lr_ratio`` unless ``warmup_start_factor`` says otherwise, as in HF's
    ``get_wsd_schedule``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        num_stable_steps: int,
        num_decay_steps: int,
        last_epoch: int = -1,
        *,
        decay_type: str = "cosine",
        min_lr_ratio: float = 0.0,
        num_cycles: float = 0.5,
        **warmup: Any,
    ) -> None:
        if decay_type not in ("linear", "cosine", "1-sqrt"):
            raise ValueError(f"decay_type must be 'linear', 'cosine' or '1-sqrt', got {decay_type!r}")
        self.num_stable_steps = int(num_stable_steps)
        self.num_decay_steps = int(num_decay_steps)
        self.decay_type = decay_type
        if not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(f"WarmupStableDecayLR: min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
        _check_finite("WarmupStableDecayLR", num_cycles=num_cycles)
        self.min_lr_ratio = float(min_lr_ratio)
        self.num_cycles = float(num_cycles)
        warmup.setdefault("warmup_start_factor", self.min_lr_ratio)
        super().__init__(optimizer, last_epoch, **warmup)

    def factor(self, step: int) -> float:
        if step < self.num_stable_steps:
            return 1.0
        if step >= self.num_stable_steps + self.num_decay_steps:
            return self.min_lr_ratio
        progress = (step - self.num_stable_steps) / max(1, self.num_decay_steps)
        if self.decay_type == "linear":
            f = 1.0 - progress
        elif self.decay_type == "cosine":
            f = 0.5 * (1.0 + math.cos(math.pi * self.num_cycles * 2.0 * progress))
        else:
            f = 1.0 - math.sqrt(progress)
        return max(0.0, f * (1.0 - self.min_lr_ratio) + self.min_lr_ratio)


# HF-compatible helpers. Lengths there count the warm-up, here they start after it, hence `total - warmup`.
# The multipliers below are callable objects without a __dict__ (slots): like HF's functools.partial, they are
# saved as nothing, so a schedule rebuilt with other lengths and resumed from a checkpoint keeps its new lengths.


def _cosine_to_floor(progress: float, num_cycles: float, floor: float) -> float:
    """HF's cosine multiplier at ``progress`` in [0, 1], from 1 down to ``floor``."""
    wave = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return max(0.0, wave * (1.0 - floor) + floor)


class _CosineWave:
    """HF's cosine multiplier after warm-up, held at its end value after ``decay_steps``."""

    __slots__ = ("decay_steps", "num_cycles", "min_lr_rate")

    def __init__(self, decay_steps: int, num_cycles: float, min_lr_rate: float = 0.0) -> None:
        self.decay_steps = decay_steps
        self.num_cycles = num_cycles
        self.min_lr_rate = min_lr_rate

    def __call__(self, step: int) -> float:
        length = max(1, self.decay_steps)  # no decay steps left after the warm-up: HF's length is 1 then
        return _cosine_to_floor(min(step, length) / length, self.num_cycles, self.min_lr_rate)


class _WarmupThen:
    """HF's linear warm-up from 0 over ``warmup_steps``, then ``value`` throughout: what HF's linear and
    polynomial schedules give when the warm-up leaves no decay steps (``num_warmup_steps >= num_training_steps``),
    where the schedule after it is not the peak the warm-up climbs to."""

    __slots__ = ("warmup_steps", "value")

    def __init__(self, warmup_steps: int, value: float) -> None:
        self.warmup_steps = warmup_steps
        self.value = value

    def __call__(self, step: int) -> float:
        return step / max(1, self.warmup_steps) if step < self.warmup_steps else self.value


class _CosineWarmupLrRate:
    """HF's ``cosine_warmup_with_min_lr``: a warm-up one step ahead of the others (from ``warmup_lr_rate``, or
    from 1 / warmup_steps, reaching 1 at its last step), then a cosine to ``min_lr_rate`` that also starts one step
    in; held at its end value after ``num_training_steps``."""

    __slots__ = ("warmup_steps", "training_steps", "num_cycles", "min_lr_rate", "warmup_lr_rate")

    def __init__(
        self,
        warmup_steps: int,
        training_steps: int,
        num_cycles: float,
        min_lr_rate: float,
        warmup_lr_rate: float | None,
    ) -> None:
        self.warmup_steps = warmup_steps
        self.training_steps = training_steps
        self.num_cycles = num_cycles
        self.min_lr_rate = min_lr_rate
        self.warmup_lr_rate = warmup_lr_rate

    def __call__(self, step: int) -> float:
        w = self.warmup_steps
        if step < w:
            if self.warmup_lr_rate is None:
                return (step + 1) / max(1, w)
            return self.warmup_lr_rate + (1.0 - self.warmup_lr_rate) * step / max(1, w - 1)
        length = max(1, self.training_steps - w)
        return _cosine_to_floor(min(step - w + 1, length) / length, self.num_cycles, self.min_lr_rate)


class _CosineHardRestarts:
    """HF's hard-restarts multiplier after warm-up (0 from ``decay_steps`` on)."""

    __slots__ = ("decay_steps", "num_cycles")

    def __init__(self, decay_steps: int, num_cycles: int) -> None:
        self.decay_steps = decay_steps
        self.num_cycles = num_cycles

    def __call__(self, step: int) -> float:
        progress = step / max(1, self.decay_steps)
        if progress >= 1.0:
            return 0.0
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((self.num_cycles * progress) % 1.0))))


def get_constant_schedule(optimizer: Optimizer, last_epoch: int = -1) -> ConstantLR:
    """HF's constant schedule: the initial lr throughout."""
    return ConstantLR(optimizer, factor=1.0, total_iters=0, last_epoch=last_epoch)


def get_constant_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, last_epoch: int = -1) -> ConstantLR:
    """HF's constant schedule after a linear warm-up from 0."""
    return ConstantLR(optimizer, factor=1.0, total_iters=0, last_epoch=last_epoch, warmup_steps=num_warmup_steps)


def get_linear_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1
) -> LinearLR | LambdaLR:
    """HF's linear schedule: warm-up from 0, then linear decay to 0 at ``num_training_steps``."""
    if num_training_steps <= num_warmup_steps:  # nothing left to decay over: 0 after the warm-up, as in HF
        return LambdaLR(optimizer, _WarmupThen(num_warmup_steps, 0.0), last_epoch)
    return LinearLR(
        optimizer,
        start_factor=1.0,
        end_factor=0.0,
        total_iters=num_training_steps - num_warmup_steps,
        last_epoch=last_epoch,
        warmup_steps=num_warmup_steps,
    )


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5, last_epoch: int = -1
) -> LambdaLR:
    """HF's cosine schedule (``num_cycles`` cosine periods after the warm-up); held after the end, where HF's
    formula would go on oscillating."""
    fn = _CosineWave(num_training_steps - num_warmup_steps, num_cycles)
    return LambdaLR(optimizer, fn, last_epoch, warmup_steps=num_warmup_steps)


def _min_lr_rate(optimizer: Optimizer, min_lr: float | None, min_lr_rate: float | None) -> float:
    """HF's floor of its min-lr cosines as a ratio: ``min_lr`` over the optimizer's default lr, or ``min_lr_rate``."""
    if min_lr is not None and min_lr_rate is not None:
        raise ValueError("Only one of min_lr or min_lr_rate should be set")
    if min_lr is not None:
        return min_lr / float(optimizer.defaults["lr"])
    if min_lr_rate is None:
        raise ValueError("One of min_lr or min_lr_rate should be set through the `lr_scheduler_kwargs`")
    return min_lr_rate


def get_cosine_with_min_lr_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
) -> LambdaLR:
    """HF's cosine down to ``min_lr`` (absolute, as a ratio of the optimizer's default lr) or ``min_lr_rate``."""
    min_lr_rate = _min_lr_rate(optimizer, min_lr, min_lr_rate)
    fn = _CosineWave(num_training_steps - num_warmup_steps, num_cycles, min_lr_rate)
    return LambdaLR(optimizer, fn, last_epoch, warmup_steps=num_warmup_steps)


def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
) -> LambdaLR:
    """HF's ``cosine_warmup_with_min_lr``: as :func:`get_cosine_with_min_lr_schedule_with_warmup`, but the
    warm-up starts at ``warmup_lr_rate`` (default 1 / ``num_warmup_steps``) and both phases run one step ahead."""
    min_lr_rate = _min_lr_rate(optimizer, min_lr, min_lr_rate)
    fn = _CosineWarmupLrRate(num_warmup_steps, num_training_steps, num_cycles, min_lr_rate, warmup_lr_rate)
    return LambdaLR(optimizer, fn, last_epoch)


def get_cosine_with_hard_restarts_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1, last_epoch: int = -1
) -> LambdaLR:
    """HF's cosine with ``num_cycles`` hard restarts after the warm-up, 0 after ``num_training_steps``."""
    fn = _CosineHardRestarts(num_training_steps - num_warmup_steps, num_cycles)
    return LambdaLR(optimizer, fn, last_epoch, warmup_steps=num_warmup_steps)


def get_polynomial_decay_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: float = 1e-7,
    power: float = 1.0,
    last_epoch: int = -1,
) -> PolynomialLR | LambdaLR:
    """HF's polynomial decay from the optimizer's default lr to ``lr_end`` (as a ratio, applied to each group)."""
    lr_init = float(optimizer.defaults["lr"])
    if not lr_init > lr_end:
        raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
    if num_training_steps <= num_warmup_steps:  # nothing left to decay over: lr_end after the warm-up
        return LambdaLR(optimizer, _WarmupThen(num_warmup_steps, lr_end / lr_init), last_epoch)
    return PolynomialLR(
        optimizer,
        total_iters=num_training_steps - num_warmup_steps,
        power=power,
        last_epoch=last_epoch,
        end_factor=lr_end / lr_init,
        warmup_steps=num_warmup_steps,
    )


def get_inverse_sqrt_schedule(
    optimizer: Optimizer, num_warmup_steps: int, timescale: int | None = None, last_epoch: int = -1
) -> InverseSqrtLR:
    """HF's inverse-square-root schedule (``timescale`` defaults to ``num_warmup_steps`` or 10,000)."""
    return InverseSqrtLR(
        optimizer,
        timescale=timescale or num_warmup_steps or 10_000,
        last_epoch=last_epoch,
        warmup_steps=num_warmup_steps,
    )


def get_wsd_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_decay_steps: int,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0.0,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> WarmupStableDecayLR:
    """HF's warm-up-stable-decay schedule; give ``num_training_steps`` or ``num_stable_steps``."""
    if num_training_steps is None and num_stable_steps is None:
        raise ValueError("either num_training_steps or num_stable_steps must be specified")
    if num_stable_steps is None:
        num_stable_steps = num_training_steps - num_warmup_steps - num_decay_steps
    if warmup_type not in ("linear", "cosine", "1-sqrt"):
        raise ValueError(f"warmup_type must be 'linear', 'cosine' or '1-sqrt', got {warmup_type!r}")
    return WarmupStableDecayLR(
        optimizer,
        num_stable_steps,
        num_decay_steps,
        last_epoch,
        decay_type=decay_type,
        min_lr_ratio=min_lr_ratio,
        num_cycles=num_cycles,
        warmup_steps=num_warmup_steps,
        warmup=warmup_type,
    )


def get_scheduler(
    name: str,
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
) -> LRScheduler:
    """HF's factory: ``name`` is one of ``linear``, ``cosine``, ``cosine_with_restarts``, ``cosine_with_min_lr``,
    ``cosine_warmup_with_min_lr``, ``polynomial``, ``constant``, ``constant_with_warmup``, ``inverse_sqrt``,
    ``warmup_stable_decay`` (HF's ``reduce_lr_on_plateau`` and ``greedy`` follow the loss, not the step, and are
    not offered)."""
    name = getattr(name, "value", name)  # HF's SchedulerType enum
    kwargs = dict(scheduler_specific_kwargs or {})
    if name == "constant":
        return get_constant_schedule(optimizer, **kwargs)
    if name not in _NEEDS_TRAINING_STEPS | {"constant_with_warmup", "inverse_sqrt"}:
        raise ValueError(f"unknown scheduler {name!r}; expected one of {sorted(_NEEDS_TRAINING_STEPS | _OTHERS)}")
    if num_warmup_steps is None:
        raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
    if name == "constant_with_warmup":
        return get_constant_schedule_with_warmup(optimizer, num_warmup_steps, **kwargs)
    if name == "inverse_sqrt":
        return get_inverse_sqrt_schedule(optimizer, num_warmup_steps, **kwargs)
    if name == "warmup_stable_decay":
        return get_wsd_schedule(optimizer, num_warmup_steps, num_training_steps=num_training_steps, **kwargs)
    if num_training_steps is None:
        raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
    return _TRAINING_STEP_FACTORIES[name](optimizer, num_warmup_steps, num_training_steps, **kwargs)


_TRAINING_STEP_FACTORIES: dict[str, Callable[..., LRScheduler]] = {
    "linear": get_linear_schedule_with_warmup,
    "cosine": get_cosine_schedule_with_warmup,
    "cosine_with_restarts": get_cosine_with_hard_restarts_schedule_with_warmup,
    "cosine_with_min_lr": get_cosine_with_min_lr_schedule_with_warmup,
    "cosine_warmup_with_min_lr": get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    "polynomial": get_polynomial_decay_schedule_with_warmup,
}
_NEEDS_TRAINING_STEPS = set(_TRAINING_STEP_FACTORIES) | {"warmup_stable_decay"}
_OTHERS = {"constant", "constant_with_warmup", "inverse_sqrt"}


# Seeing a schedule.

Schedule = UnboundSchedule | Callable[[Optimizer], LRScheduler]


def lr_values(schedule: Schedule, steps: int | Iterable[int], lr: float = 1.0) -> list[tuple[int, float]]:
    """``(step, lr)`` pairs of ``schedule`` (an :class:`UnboundSchedule` or ``optimizer -> scheduler``), run on a
    throwaway one-parameter SGD with initial ``lr``, at steps ``range(steps)`` or the given steps."""
    wanted = sorted(set(range(steps) if isinstance(steps, int) else steps))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = schedule.bind(opt) if isinstance(schedule, UnboundSchedule) else schedule(opt)
    if isinstance(sched, ClosedFormLR):  # closed form: no need to step through the gaps
        return [(s, sched.lr_for(s, lr)) for s in wanted]
    out, step = [], 0
    for s in wanted:
        while step < s:
            opt.step()
            sched.step()
            step += 1
        out.append((s, float(opt.param_groups[0]["lr"])))
    return out


def table(schedule: Schedule, steps: int | Iterable[int], lr: float = 1.0, rows: int = 21) -> str:
    """A compact two-column table of lr against step: at most ``rows`` evenly spaced steps of ``range(steps)``
    (first and last included), or exactly the steps given."""
    if rows < 2:
        raise ValueError(f"rows must be at least 2 (the first and the last step), got {rows}")
    if isinstance(steps, int) and steps > rows:
        steps = sorted({round(i * (steps - 1) / (rows - 1)) for i in range(rows)})
    pairs = lr_values(schedule, steps, lr)
    width = max(len("step"), *(len(str(s)) for s, _ in pairs))
    lines = [f"{'step':>{width}}  lr"] + [f"{s:>{width}}  {v:.6g}" for s, v in pairs]
    return "\n".join(lines)


def plot(
    schedule: Schedule, steps: int, path: str, lr: float = 1.0, title: str | None = None, log_y: bool = False
) -> str:
    """Draw lr against step for ``range(steps)`` to the PNG ``path`` and return ``path``. Needs matplotlib."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("fused_optim.lr_scheduler.plot needs matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    pairs = lr_values(schedule, steps, lr)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([s for s, _ in pairs], [v for _, v in pairs])
    ax.set_xlabel("step")
    ax.set_ylabel("lr")
    if log_y:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
