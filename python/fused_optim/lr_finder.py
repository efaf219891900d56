"""The learning-rate range test (``python -m fused_optim find-lr``, or :func:`find_lr` on your own model).

Leslie Smith's test ("Cyclical Learning Rates for Training Neural Networks", 2015), as fastai's ``lr_find`` and
pytorch-lr-finder run it: train for a short while with the lr rising geometrically from a tiny ``start_lr`` to a
huge ``end_lr``, one step per batch, and watch the loss. It barely moves at first, then falls, then blows up. The
suggested lr is where the smoothed loss falls fastest against log(lr); the lr of the lowest loss divided by 10 is
printed beside it as a second, more cautious opinion. Afterwards the model and optimizer are put back exactly as
they were, so the test can run just before training.

    result = fused_optim.find_lr(model, lambda m, b: F.cross_entropy(m(b[0]), b[1]), loader)
    print(result.table())
    opt = fused_optim.AdamW(model.parameters(), lr=result.suggested_lr)
"""

from __future__ import annotations

import argparse
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._cli import check_output_file, int_at_least, output_file, positive_float, positive_int
from ._snapshot import OptimizerSnapshot, step_hooks_muted
from .progress import Progress

__all__ = ["LRFinderResult", "find_lr", "add_cli"]

LossFn = Callable[[torch.nn.Module, Any], Tensor]
_END = object()


@dataclass
class LRFinderResult:
    """What :func:`find_lr` saw: one entry per step taken in ``lrs``, ``losses`` and ``smoothed``.

    ``losses[i]`` is the loss of the batch at step ``i``, computed before that step's update with ``lrs[i]``
    (fastai's convention), so it shows the effect of the lrs before it. ``lrs`` are those of the reference param
    group (the first one with a nonzero lr); the other groups ran at their own fixed multiple of it.
    """

    lrs: list[float]
    losses: list[float]  #: raw loss of every step
    smoothed: list[float]  #: bias-corrected exponential moving average of ``losses``
    suggested_lr: float | None  #: the lr of steepest descent of ``smoothed`` (None: see ``reason``)
    min_loss_lr: float | None  #: the lr of the lowest ``smoothed`` loss divided by 10 (fastai's ``lr_min``)
    diverged: bool  #: the run stopped early because the smoothed loss blew up (or became NaN/inf)
    steps: int  #: steps taken (``len(lrs)``)
    suggested_step: int | None = None  #: index of ``suggested_lr`` in ``lrs``
    min_loss_step: int | None = None  #: index of the lowest smoothed loss (``min_loss_lr * 10 == lrs[...]``)
    reason: str | None = None  #: why there is no suggestion, when ``suggested_lr`` is None

    def table(self, rows: int = 21) -> str:
        """A text summary: step, lr, loss and smoothed loss at ``rows`` evenly spaced steps (plus the suggested
        and lowest-loss steps, marked), then the suggestions."""
        n, rows = len(self.lrs), max(rows, 2)
        picked = {round(i * (n - 1) / (rows - 1)) for i in range(rows)} if n > rows else set(range(n))
        marks = {}
        if self.min_loss_step is not None:
            marks[self.min_loss_step] = "<- lowest loss"
        if self.suggested_step is not None:
            marks[self.suggested_step] = "<- suggested (steepest descent)"
        if self.diverged and n:
            marks[n - 1] = "<- diverged"
        steps = sorted(picked | set(marks))
        width = max(len("step"), len(str(n - 1)))
        lines = [f"{'step':>{width}}  {'lr':>10}  {'loss':>10}  {'smoothed':>10}"]
        for i in steps:
            line = f"{i:>{width}}  {self.lrs[i]:>10.3e}  {self.losses[i]:>10.4g}  {self.smoothed[i]:>10.4g}"
            lines.append(f"{line}  {marks[i]}" if i in marks else line)
        lines.append("")
        if self.suggested_lr is not None:
            lines.append(f"suggested lr (steepest descent of the smoothed loss): {self.suggested_lr:.3e}")
        else:
            lines.append(f"no suggested lr: {self.reason}")
        if self.min_loss_lr is not None:
            lines.append(f"lr of the lowest smoothed loss / 10 (more cautious): {self.min_loss_lr:.3e}")
        if self.diverged:
            lines.append(f"stopped at step {n - 1}: the smoothed loss diverged")
        else:
            lines.append(f"ran {n} steps without diverging (a higher end_lr would show where it does)")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str], title: str | None = None) -> str | os.PathLike[str]:
        """Draw loss against lr (log scale), raw and smoothed, with the suggestions marked, to the PNG ``path``;
        return ``path``. Needs matplotlib."""
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(self.lrs, self.losses, color="tab:blue", alpha=0.3, lw=1, label="loss")
        ax.plot(self.lrs, self.smoothed, color="tab:blue", lw=2, label="smoothed loss")
        if self.suggested_step is not None:
            i = self.suggested_step
            ax.plot([self.lrs[i]], [self.smoothed[i]], "o", color="tab:red", label=f"suggested {self.lrs[i]:.2e}")
        if self.min_loss_lr is not None:
            ax.axvline(self.min_loss_lr, color="tab:green", ls="--", lw=1, label=f"lowest / 10 {self.min_loss_lr:.2e}")
        # Scale the y axis to the part before divergence: the blow-up would squash everything else flat.
        end = _usable_end(self)
        smoothed = [s for s in self.smoothed[:end] if math.isfinite(s)]
        if smoothed:
            lo, hi = min(smoothed + [v for v in self.losses[:end] if math.isfinite(v)]), max(smoothed)
            pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.05
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.set_title(title or "learning-rate range test")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png")
        plt.close(fig)
        return path


def find_lr(
    model: torch.nn.Module,
    loss_fn: LossFn | torch.nn.Module,
    data: Iterable[Any],
    optimizer: torch.optim.Optimizer | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    beta: float = 0.9,
    diverge_factor: float = 4.0,
    skip_start: int | None = None,
    png: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> LRFinderResult:
    """Run the learning-rate range test on ``model`` and return what it saw, with a suggested lr.

    Step ``i`` (of ``num_steps``) trains on one batch with lr ``start_lr * (end_lr / start_lr) ** (i / (num_steps
    - 1))``, so the lrs run geometrically from ``start_lr`` to ``end_lr`` inclusive. The run stops early when the
    smoothed loss exceeds ``diverge_factor`` times the lowest smoothed loss so far, or is NaN or infinite. The
    model runs in training mode. Its parameters, buffers, gradients and train/eval modes, the optimizer's state
    and lrs, and torch's random number generators are restored afterwards, also when the run raises, into the
    same objects (state tensors, group dicts, lr tensors: references to them and captured CUDA graphs stay valid),
    so the caller's objects are as they were. Step hooks (the optimizer's and the global ones) do not run during
    the test: an EMA of the weights or a logger would see the sweep. Meanwhile a copy of the parameters, buffers
    and optimizer state is kept on their devices.

    Args:
        model: the model to test, already on its device. Its trainable parameters are what the optimizer updates.
        loss_fn: ``loss_fn(model, batch) -> loss``, a scalar tensor that backpropagates to the parameters; the
            batch is one item of ``data`` (moved to ``device``). Or a criterion module such as
            ``torch.nn.CrossEntropyLoss()``, used as ``criterion(model(inputs), targets)`` on batches of
            ``(inputs, targets)``.
        data: batches: a DataLoader, a list, ... Re-iterated from the start if it runs out before ``num_steps``
            (a one-shot iterator cannot be, and ends the test early with a warning).
        optimizer: any torch.optim.Optimizer over (some of) the model's parameters; its other hyperparameters are
            kept, only the lr is swept. Param groups keep their ratio to the reference group (the first one with
            a nonzero lr; groups at lr 0 stay frozen), so discriminative lrs are swept together; a tensor lr is
            updated in place. Default: ``fused_optim.AdamW`` over the trainable parameters.
        start_lr, end_lr: the first and last lr, ``0 < start_lr < end_lr``.
        num_steps: steps (batches) of the sweep, at least 2. fastai's default 100 suits most models.
        beta: smoothing of the loss: ``avg = beta * avg + (1 - beta) * loss`` and ``smoothed = avg / (1 -
            beta ** (i + 1))`` (the bias correction makes early values unbiased); 0 means no smoothing. The
            average lags about ``beta / (1 - beta)`` steps behind the loss. fastai's 0.98 lags 49 steps, half of a
            100-step sweep, which moved the steepest point of least squares with SGD past the stability limit
            2/L; 0.9 kept it between 1/30 and 9/10 of 2/L with batches of 16 to 256. Raise it with ``num_steps``.
        diverge_factor: stop when the smoothed loss exceeds this times the lowest one (``best + (diverge_factor
            - 1) * |best|`` for a negative lowest loss). ``math.inf`` never stops, except on NaN/inf.
        skip_start: leading steps ignored when looking for the steepest descent (the loss is still settling
            there). Default ``num_steps // 10``.
        png: also draw loss against lr to this PNG (needs matplotlib; checked before the run starts).
        progress: show a progress bar on stderr, noting the lr and smoothed loss.
        device: where the tensors of each batch (in tuples, lists and dicts) are moved before ``loss_fn``.
            Default: the device of the model's first trainable parameter. The model itself is not moved.

    Returns:
        An :class:`LRFinderResult`. ``suggested_lr`` is the lr at which the smoothed loss falls fastest per
        decade of lr on its way down to its lowest value (from the highest point before it; steps before
        ``skip_start`` and from divergence on are left out): the middle of the useful range, a good peak lr for
        a warm-up + decay schedule. ``min_loss_lr`` (lowest smoothed loss's lr / 10) is a more conservative
        choice. Without a suggestion, ``suggested_lr`` is None and ``reason`` says why (with a RuntimeWarning);
        ``min_loss_lr`` is None too when the run was too short to tell or the loss never fell, and is kept when
        the loss fell but not steadily enough to find its steepest point.

    Raises:
        ValueError: bad ``start_lr``/``end_lr``/``num_steps``/``beta``/``diverge_factor``, a model without
            trainable parameters, an optimizer over tensors outside the model, or empty ``data``.
        TypeError: ``loss_fn`` returned something other than a scalar tensor that requires grad.
        ImportError: ``png`` was given but matplotlib is not installed.
        OSError: ``png`` names a file that could not be written at the end (a missing or read-only folder, or a
            folder itself): ``FileNotFoundError``, ``PermissionError`` or ``IsADirectoryError``.
    """
    _check_arguments(start_lr, end_lr, num_steps, beta, diverge_factor, skip_start)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("find_lr: the model has no trainable parameters (all have requires_grad=False)")
    if png:
        _pyplot()  # fail before the run, not after it
        check_output_file(png)
    if optimizer is None:
        from .optim import AdamW

        optimizer = AdamW(trainable, lr=start_lr)
    elif not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"find_lr: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    else:
        own = {id(p) for p in model.parameters()}
        if any(id(p) not in own for g in optimizer.param_groups for p in g["params"]):
            raise ValueError(
                "find_lr: the optimizer updates tensors that are not parameters of the model; "
                "they could not be restored afterwards"
            )
    if device is None:
        device = trainable[0].device
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn = _criterion_loss(loss_fn)

    saved = _Snapshot(model, optimizer)
    rng_devices = sorted({p.device.index or 0 for p in trainable if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=rng_devices), step_hooks_muted(optimizer):
            lrs, losses, smoothed, diverged = _sweep(
                model, loss_fn, data, optimizer, start_lr, end_lr, num_steps, beta, diverge_factor, progress, device
            )
    finally:
        saved.restore()

    result = _suggest(lrs, losses, smoothed, diverged, num_steps, num_steps // 10 if skip_start is None else skip_start)
    if result.suggested_lr is None:
        warnings.warn(f"find_lr: no suggested lr: {result.reason}", RuntimeWarning, stacklevel=2)
    if png:
        result.plot(png)
    return result


# The sweep.


def _sweep(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    optimizer: torch.optim.Optimizer,
    start_lr: float,
    end_lr: float,
    num_steps: int,
    beta: float,
    diverge_factor: float,
    progress: bool,
    device: torch.device | str,
) -> tuple[list[float], list[float], list[float], bool]:
    ratios = _group_ratios(optimizer)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best, diverged = 0.0, math.inf, False
    model.train()
    batches = _cycle(data, num_steps)
    with Progress(total=num_steps, desc="find_lr", enabled=progress) as bar:
        for i in range(num_steps):
            batch = next(batches, _END)
            if batch is _END:
                break
            lr = end_lr if i == num_steps - 1 else start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))
            _set_lr(optimizer, lr, ratios)
            model.zero_grad(set_to_none=True)  # every param, not only the optimizer's: nothing accumulates
            loss = loss_fn(model, _to(batch, device))
            _check_loss(loss)
            value = loss.item()
            if math.isfinite(value):  # a non-finite loss would make a non-finite update; stop before it
                loss.backward()
                optimizer.step()
            avg = beta * avg + (1 - beta) * value
            smooth = avg / (1 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            best = min(best, smooth)
            bar.update(note=f"lr {lr:.2e}  loss {smooth:.4g}")
            if not math.isfinite(smooth) or smooth > best + (diverge_factor - 1) * abs(best):
                diverged = True
                break
    return lrs, losses, smoothed, diverged


def _cycle(data: Iterable[Any], num_steps: int) -> Iterator[Any]:
    """Batches of ``data``, starting over when it runs out (re-iterating, not caching: a DataLoader reshuffles)."""
    taken = 0
    while taken < num_steps:
        before = taken
        for batch in data:
            yield batch
            taken += 1
            if taken == num_steps:
                return
        if taken == 0:
            raise ValueError("find_lr: data is empty (it gave no batch)")
        if taken == before:
            warnings.warn(
                f"find_lr: data ran out after {taken} of {num_steps} batches and gives no more when iterated again "
                "(a one-shot iterator?); the test ends early. Pass a list or a DataLoader to have it cycled.",
                RuntimeWarning,
                stacklevel=4,
            )
            return


def _group_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Each group's lr as a multiple of the reference group's (the first with a nonzero lr)."""
    base = [float(g["lr"]) for g in optimizer.param_groups]
    ref = next((lr for lr in base if lr != 0), 0.0)
    return [lr / ref if ref else 1.0 for lr in base]


def _set_lr(optimizer: torch.optim.Optimizer, lr: float, ratios: list[float]) -> None:
    for group, ratio in zip(optimizer.param_groups, ratios):
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr * ratio)  # in place: a compiled or captured step reads this tensor
        else:
            group["lr"] = lr * ratio


def _to(batch: Any, device: torch.device | str) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(_to(b, device) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    if isinstance(batch, dict):
        return type(batch)((k, _to(v, device)) for k, v in batch.items())
    return batch


def _criterion_loss(criterion: torch.nn.Module) -> LossFn:
    def loss_fn(model: torch.nn.Module, batch: Any) -> Tensor:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(
                f"find_lr: with a criterion module as loss_fn each batch must be (inputs, targets), got "
                f"{type(batch).__name__}; for other batches pass loss_fn(model, batch) -> loss"
            )
        inputs, targets = batch
        return criterion(model(inputs), targets)

    return loss_fn


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, Tensor):
        raise TypeError(f"find_lr: loss_fn must return a scalar tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise TypeError(
            f"find_lr: loss_fn must return a scalar tensor, got shape {tuple(loss.shape)} (reduce it, e.g. .mean())"
        )
    if not loss.requires_grad:
        raise TypeError(
            "find_lr: the loss does not require grad: was it computed under torch.no_grad() or detached, "
            "or from no trainable parameter?"
        )


def _check_arguments(
    start_lr: float, end_lr: float, num_steps: int, beta: float, diverge_factor: float, skip_start: int | None
) -> None:
    if not (start_lr > 0 and math.isfinite(start_lr)):
        raise ValueError(f"find_lr: start_lr must be a positive number, got {start_lr}")
    if not (end_lr > 0 and math.isfinite(end_lr)):
        raise ValueError(f"find_lr: end_lr must be a positive number, got {end_lr}")
    if not start_lr < end_lr:
        raise ValueError(f"find_lr: start_lr must be below end_lr, got start_lr={start_lr} >= end_lr={end_lr}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"find_lr: num_steps must be an integer of at least 2, got {num_steps!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"find_lr: beta must be in [0, 1), got {beta}")
    if not diverge_factor > 1:
        raise ValueError(f"find_lr: diverge_factor must be above 1, got {diverge_factor}")
    if skip_start is not None and not (isinstance(skip_start, int) and 0 <= skip_start < num_steps):
        raise ValueError(f"find_lr: skip_start must be an integer in [0, num_steps), got {skip_start!r}")


class _Snapshot:
    """The model and optimizer before the test, and how to put them back into the same objects."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        with torch.no_grad():
            self.tensors = [(t, t.detach().clone()) for t in (*model.parameters(), *model.buffers())]
        self.grads = [(p, p.grad) for p in model.parameters()]  # never written: each step sets grads to None
        self.modes = [(m, m.training) for m in model.modules()]
        self.optimizer = OptimizerSnapshot(optimizer)

    def restore(self) -> None:
        with torch.no_grad():
            for t, value in self.tensors:
                t.copy_(value)
        for p, grad in self.grads:
            p.grad = grad
        for m, training in self.modes:
            m.training = training
        self.optimizer.restore()


# The suggestion.


def _usable_end(result: LRFinderResult) -> int:
    """Steps before divergence: the diverging step itself is recorded but not used."""
    return result.steps - 1 if result.diverged else result.steps


def _suggest(
    lrs: list[float], losses: list[float], smoothed: list[float], diverged: bool, num_steps: int, skip_start: int
) -> LRFinderResult:
    result = LRFinderResult(lrs, losses, smoothed, None, None, diverged, len(lrs))
    end = _usable_end(result)
    if end < 3:
        if diverged and end == 0:
            result.reason = (
                f"the loss of the first batch was {losses[0]}, before any update: check the model, the data and loss_fn"
            )
        elif diverged:
            result.reason = f"only {end} step(s) before the loss diverged; lower start_lr or end_lr, or raise num_steps"
        else:
            result.reason = f"only {end} step(s) ran; at least 3 are needed"
        return result
    skip = min(skip_start, end - 3)
    low = min(range(skip, end), key=lambda i: smoothed[i])
    # The descent into the lowest loss starts at the highest point before it; before that the loss is flat
    # (noise) or still settling.
    top = max(range(skip, low + 1), key=lambda i: smoothed[i])
    # A fall within rounding of the values (a constant loss averages to 0.9999999999999997) is no fall.
    if smoothed[top] - smoothed[low] <= 1e-9 * max(abs(smoothed[top]), abs(smoothed[low])):
        result.reason = "the smoothed loss never fell; lower start_lr"
        return result
    result.min_loss_step, result.min_loss_lr = low, lrs[low] / 10
    # The slope per decade of lr is taken over +-h steps: neighbouring differences of a noisy loss are mostly
    # noise and can put the steepest point anywhere on the flat start.
    slope = _slopes([math.log10(lr) for lr in lrs[:end]], smoothed[:end], max(1, round(num_steps / 20)))
    steep = min(range(top, low + 1), key=lambda i: slope[i])
    if not slope[steep] < 0:
        result.reason = "the smoothed loss did not fall steadily anywhere; lower start_lr or raise num_steps"
        return result
    result.suggested_step, result.suggested_lr = steep, lrs[steep]
    return result


def _slopes(x: list[float], y: list[float], h: int) -> list[float]:
    """dy/dx at each point, as the difference between the points h before and h after (fewer at the ends)."""
    n = len(x)
    return [(y[min(i + h, n - 1)] - y[max(i - h, 0)]) / (x[min(i + h, n - 1)] - x[max(i - h, 0)]) for i in range(n)]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("fused_optim.find_lr's plot needs matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    return plt


# Command line.


def run_find_lr(args: argparse.Namespace) -> int:
    """``python -m fused_optim find-lr``: the range test on the demo's task and model."""
    from . import create_optimizer
    from .demo import make_data, make_model

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("find-lr: --device cuda was asked for but no CUDA GPU is visible")
    try:  # refuse a bad range before any work
        _check_arguments(args.start_lr, args.end_lr, args.steps, beta=0.9, diverge_factor=4.0, skip_start=None)
    except ValueError as e:
        raise SystemExit(f"find-lr: {str(e).removeprefix('find_lr: ')}") from None
    x, y = make_data(args.samples, 64, 10, seed=1)
    x, y = x.to(device), y.to(device)
    model = make_model(64, 10).to(device)
    try:
        opt = create_optimizer(args.optimizer, model, weight_decay=args.weight_decay)
    except (TypeError, ValueError) as e:
        raise SystemExit(f"find-lr: {e}") from None
    g = torch.Generator().manual_seed(2)
    batches = [(x[i], y[i]) for i in torch.randperm(len(x), generator=g).to(device).split(args.batch_size)]

    def loss_fn(m: torch.nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        return torch.nn.functional.cross_entropy(m(batch[0]), batch[1])

    print(
        f"find-lr: {args.optimizer} on {device}, lr {args.start_lr:g} -> {args.end_lr:g} over {args.steps} steps "
        f"(batches of {args.batch_size} from {args.samples} samples of the demo's task)"
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the table says why there is no suggestion
            result = find_lr(
                model,
                loss_fn,
                batches,
                opt,
                start_lr=args.start_lr,
                end_lr=args.end_lr,
                num_steps=args.steps,
                progress=not args.quiet,
            )
    except ValueError as e:
        raise SystemExit(f"find-lr: {str(e).removeprefix('find_lr: ')}") from None
    print()
    print(result.table(rows=args.rows))
    if args.png:
        try:
            print("wrote", result.plot(args.png, title=f"find-lr: {args.optimizer} on the demo task"))
        except ImportError as e:
            print(f"no picture: {e}")
    return 0


_CLI_DESCRIPTION = """\
The learning-rate range test on the demo's model and generated task (as in `python -m fused_optim demo`):
train with the lr rising geometrically from --start-lr to --end-lr, one batch per step, until the smoothed
loss blows up; then print the loss against the lr and suggest an lr: where the smoothed loss falls fastest,
with the lr of the lowest loss / 10 as a more cautious alternative. On your own model, call
fused_optim.find_lr(model, loss_fn, data) from Python.

example: python -m fused_optim find-lr --optimizer sgd --png find_lr.png
"""


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """The ``find-lr`` subcommand."""
    from .factory import list_optimizers

    p = subparsers.add_parser(
        "find-lr",
        help="learning-rate range test: sweep the lr geometrically and suggest one",
        description=_CLI_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--optimizer",
        default="adamw",
        choices=list_optimizers(),
        metavar="NAME",
        help=f"one of {', '.join(list_optimizers())} (default adamw)",
    )
    p.add_argument("--start-lr", type=positive_float, default=1e-7, help="first lr of the sweep (default 1e-7)")
    p.add_argument("--end-lr", type=positive_float, default=10.0, help="last lr of the sweep (default 10)")
    p.add_argument("--steps", type=int_at_least(2), default=100, help="steps of the sweep, a batch each (default 100)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="batch size (default 256)")
    p.add_argument("--samples", type=positive_int, default=8192, help="size of the generated data set (default 8192)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="the optimizer's weight decay (default 0)")
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where to run (default: cuda when a GPU is visible)",
    )
    p.add_argument("--rows", type=positive_int, default=21, help="rows of the printed table (default 21)")
    p.add_argument("--png", type=output_file, default="", help="also draw loss against lr to this PNG (matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_find_lr)
