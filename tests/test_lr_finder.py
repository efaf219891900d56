"""fused_optim.find_lr: the lr sweep and smoothing against formulas written here, the suggestion against the
stability limit 2/L of SGD on a quadratic of known curvature, exact restoration of the caller's model and
optimizer, the errors, the picture and the find-lr command."""

from __future__ import annotations

import argparse
import copy
import math
import re
import sys

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import fused_optim
from fused_optim.__main__ import main
from fused_optim.lr_finder import LRFinderResult, add_cli, find_lr


def _regression(curvature: float, n: int = 256, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets whose loss 0.5 * mean((x @ w - y)^2) has Hessian X^T X / n with eigenvalues spread
    log-evenly over [curvature / 100, curvature]."""
    g = torch.Generator().manual_seed(seed)
    u, _, vh = torch.linalg.svd(torch.randn(n, d, generator=g), full_matrices=False)
    eig = torch.logspace(-2, 0, d) * curvature
    x = u @ torch.diag(torch.sqrt(eig * n)) @ vh
    return x, x @ torch.randn(d, generator=g) + 0.1 * torch.randn(n, generator=g)


def _mse(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return 0.5 * ((model(x).squeeze(1) - y) ** 2).mean()


def _linear(d: int = 8) -> torch.nn.Module:
    model = torch.nn.Linear(d, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    return model


def _largest_curvature(x: torch.Tensor) -> float:
    return torch.linalg.eigvalsh(x.T @ x / x.shape[0]).max().item()


def _quiet(**kwargs):
    return find_lr(**kwargs, progress=False)


# The sweep


def test_lrs_are_geometric_from_start_to_end_and_are_what_the_optimizer_used():
    x, y = _regression(1.0)
    model = _linear()
    opt = fused_optim.SGD(model.parameters(), lr=0.5)
    seen = []

    def loss_fn(m, batch):
        seen.append(opt.param_groups[0]["lr"])
        return _mse(m, batch)

    r = _quiet(model=model, loss_fn=loss_fn, data=[(x, y)], optimizer=opt, start_lr=1e-6, end_lr=1e-3, num_steps=13)
    assert r.steps == 13 and not r.diverged
    assert r.lrs[0] == 1e-6 and r.lrs[-1] == 1e-3
    for i, lr in enumerate(r.lrs):
        assert lr == pytest.approx(math.exp(math.log(1e-6) + i / 12 * math.log(1e3)), rel=1e-12)
    assert seen == r.lrs
    assert opt.param_groups[0]["lr"] == 0.5


@pytest.mark.filterwarnings("ignore:find_lr. no suggested lr")  # too short a range to find one
def test_smoothing_is_the_bias_corrected_ema():
    x, y = _regression(1.0)
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 256, 16)]  # minibatches: a noisy loss
    for beta in (0.98, 0.7, 0.0):
        r = _quiet(model=_linear(), loss_fn=_mse, data=data, start_lr=1e-5, end_lr=1e-2, num_steps=30, beta=beta)
        avg, expected = 0.0, []
        for i, loss in enumerate(r.losses):
            avg = beta * avg + (1 - beta) * loss
            expected.append(avg / (1 - beta ** (i + 1)))
        assert r.smoothed == pytest.approx(expected, rel=1e-12)
    assert r.smoothed == r.losses  # beta 0: no smoothing


@pytest.mark.filterwarnings("ignore:find_lr. no suggested lr")
def test_data_is_cycled_and_a_one_shot_iterator_ends_the_test_with_a_warning():
    x, y = _regression(1.0)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in (0, 8, 16)]
    seen = []

    def loss_fn(m, batch):
        seen.append(batch[0].data_ptr())
        return _mse(m, batch)

    _quiet(model=_linear(), loss_fn=loss_fn, data=batches, start_lr=1e-6, end_lr=1e-5, num_steps=8)
    assert seen == [b[0].data_ptr() for b in batches] * 2 + [batches[0][0].data_ptr(), batches[1][0].data_ptr()]
    with pytest.warns(RuntimeWarning, match="ran out after 3 of 8 batches"):
        r = _quiet(model=_linear(), loss_fn=_mse, data=iter(batches), start_lr=1e-6, end_lr=1e-5, num_steps=8)
    assert r.steps == 3


def test_param_groups_keep_their_ratio_and_a_tensor_lr_is_filled_in_place():
    x, y = _regression(1.0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 1))
    lr_tensor = torch.tensor(0.01)
    opt = fused_optim.AdamW(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[1].parameters(), "lr": lr_tensor},
            {"params": [], "lr": 0.0},  # a frozen group stays frozen
        ]
    )
    seen = []

    def loss_fn(m, batch):
        g0, g1, g2 = opt.param_groups
        assert g1["lr"] is lr_tensor
        seen.append((g0["lr"], g1["lr"].item(), g2["lr"]))
        return _mse(m, batch)

    r = _quiet(model=model, loss_fn=loss_fn, data=[(x, y)], optimizer=opt, start_lr=1e-5, end_lr=1e-2, num_steps=10)
    assert [s[0] for s in seen] == r.lrs  # the reported lrs are the first group's
    for g0, g1, g2 in seen:
        assert g1 == pytest.approx(g0 / 10, rel=1e-6) and g2 == 0.0
    assert opt.param_groups[1]["lr"] is lr_tensor and lr_tensor.item() == pytest.approx(0.01)


# The suggestion


@pytest.mark.parametrize("batch_size", [256, 16])
def test_suggestion_on_a_quadratic_lies_below_the_stability_limit(batch_size):
    """Plain SGD on a quadratic diverges for lr > 2/L (L: the largest curvature). The range test must stop after
    that, and suggest an lr below it but within a factor 50 of it: steepest descent sits well inside the useful
    range. With batches of 16 the loss is noisy and the suggestion must still land there."""
    for seed in range(3 if batch_size < 256 else 1):
        x, y = _regression(1.0, seed=seed)
        limit = 2 / _largest_curvature(x)
        g = torch.Generator().manual_seed(seed)
        data = [(x[i], y[i]) for i in torch.randperm(len(x), generator=g).split(batch_size)]
        model = _linear()
        opt = fused_optim.SGD(model.parameters())
        r = _quiet(model=model, loss_fn=_mse, data=data, optimizer=opt, start_lr=1e-4, end_lr=100.0)
        assert r.diverged and r.steps < 100 and r.lrs[-1] > limit
        assert limit / 50 < r.suggested_lr < limit, (seed, r.suggested_lr, limit)
        assert r.min_loss_lr is not None and limit / 50 < r.min_loss_lr < limit
        assert r.smoothed[r.suggested_step] > r.smoothed[r.min_loss_step]  # on the way down


def test_suggestion_scales_with_one_over_the_curvature():
    """Scaling the inputs and targets by 8 scales the curvature by 64 exactly (in floating point too): the same
    sweep with lrs / 64 takes exactly the same steps, so it must suggest exactly the lr / 64."""
    x, y = _regression(1.0)
    runs = []
    for scale in (1, 8):
        model = _linear()
        opt = fused_optim.SGD(model.parameters())
        data = [(scale * x, scale * y)]
        lr_range = {"start_lr": 1e-4 / scale**2, "end_lr": 100.0 / scale**2}
        runs.append(_quiet(model=model, loss_fn=_mse, data=data, optimizer=opt, **lr_range))
    r1, r64 = runs
    assert r1.suggested_step == r64.suggested_step and r1.steps == r64.steps
    assert r64.suggested_lr == pytest.approx(r1.suggested_lr / 64, rel=1e-12)
    assert r64.smoothed == pytest.approx([64 * s for s in r1.smoothed], rel=1e-5)


def _scripted(values: list[float]):
    """A loss_fn returning these values in turn (with a gradient of zero)."""
    it = iter(values)
    return lambda m, b: m.weight.sum() * 0 + next(it)


def test_divergence_stops_at_the_first_step_past_the_factor():
    x, y = _regression(1.0)
    # falls from 1 to 0.5, then rises by 0.25 a step: 2.0 is 4 x the lowest, 1.5 is 3 x
    script = [1.0] * 10 + [0.5] * 10 + [0.5 + 0.25 * k for k in range(1, 30)]
    run = {"model": _linear(), "data": [(x, y)], "num_steps": 40, "beta": 0.0}
    r = _quiet(loss_fn=_scripted(script), **run)
    assert r.diverged and r.steps == 27 and r.losses[-1] == 2.25 and r.losses[-2] == 2.0
    r = _quiet(loss_fn=_scripted(script), diverge_factor=3.0, **run)
    assert r.diverged and r.steps == 25 and r.losses[-1] == 1.75
    r = _quiet(loss_fn=_scripted(script), diverge_factor=math.inf, **run)
    assert not r.diverged and r.steps == 40
    # with smoothing, the smoothed loss is what counts
    r = _quiet(loss_fn=_scripted(script), **{**run, "beta": 0.5})
    assert r.diverged and r.smoothed[-1] > 4 * min(r.smoothed) and r.smoothed[-2] <= 4 * min(r.smoothed[:-1])
    # on a real quadratic it stops soon after the lr passes 2/L
    r = _quiet(model=_linear(), loss_fn=_mse, data=[(x, y)], optimizer=None, start_lr=1e-3, end_lr=1e3, num_steps=60)
    assert r.diverged and r.steps < 60


def test_a_nan_loss_stops_the_test_without_stepping_on_it():
    x, y = _regression(1.0)
    model = _linear()
    opt = fused_optim.SGD(model.parameters())
    steps = []
    step = opt.step
    opt.step = lambda *a: (steps.append(1), step(*a))[1]  # step hooks are muted during the sweep
    calls = []

    def loss_fn(m, batch):
        calls.append(1)
        loss = _mse(m, batch)
        return loss * float("nan") if len(calls) == 6 else loss

    r = _quiet(model=model, loss_fn=loss_fn, data=[(x, y)], optimizer=opt, num_steps=50)
    assert r.diverged and r.steps == 6 and math.isnan(r.losses[-1]) and math.isnan(r.smoothed[-1])
    assert len(steps) == 5
    assert torch.equal(model.weight, torch.zeros_like(model.weight))


def test_negative_losses_do_not_count_as_divergence():
    """4 x a negative best loss is far below it: the rule is best + 3 |best|, so an offset changes nothing."""
    x, y = _regression(1.0)
    r = _quiet(model=_linear(), loss_fn=_mse, data=[(x, y)], start_lr=1e-4, end_lr=100.0)

    def shifted(m, batch):
        return _mse(m, batch) - 1000.0

    r_neg = _quiet(model=_linear(), loss_fn=shifted, data=[(x, y)], start_lr=1e-4, end_lr=100.0)
    assert r_neg.steps > 50 and r_neg.suggested_step == r.suggested_step


def test_too_short_or_rising_runs_give_no_suggestion_and_say_why():
    x, y = _regression(1.0)
    with pytest.warns(RuntimeWarning, match="only 2 step"):
        r = find_lr(_linear(), _mse, [(x, y)], num_steps=2, progress=False)
    assert r.suggested_lr is None and r.min_loss_lr is None and "only 2 step" in r.reason
    assert "no suggested lr: only 2 step" in r.table()
    # a loss that only rises: nothing to suggest
    calls: list[int] = []

    def rising(m, batch):
        calls.append(1)
        return m.weight.sum() * 0 + float(len(calls))

    with pytest.warns(RuntimeWarning, match="never fell"):
        r = find_lr(_linear(), rising, [(x, y)], num_steps=20, progress=False)
    assert r.suggested_lr is None and "never fell" in r.reason


def test_a_constant_loss_never_fell():
    """Its smoothed values differ from it by rounding only (0.9999999999999997): no fall to suggest from."""
    x, y = _regression(1.0)

    def constant(m, batch):
        return (m(batch[0]) * 0).sum() + 1.0

    with pytest.warns(RuntimeWarning, match="never fell"):
        r = find_lr(_linear(), constant, [(x, y)], num_steps=20, progress=False)
    assert r.suggested_lr is None and r.min_loss_lr is None


def test_a_loss_not_finite_from_the_first_batch_is_named():
    x, y = _regression(1.0)
    with pytest.warns(RuntimeWarning, match="first batch was nan, before any update"):
        r = find_lr(_linear(), lambda m, b: _mse(m, b) * math.nan, [(x, y)], num_steps=20, progress=False)
    assert r.diverged and r.steps == 1 and "lower start_lr" not in r.reason


def test_step_hooks_do_not_run_during_the_sweep():
    """An EMA of the weights kept by a step hook would take in the sweep's weights, which cannot be undone."""
    x, y = _regression(1.0)
    model = _linear()
    opt = fused_optim.AdamW(model.parameters())
    calls = []
    handles = [
        opt.register_step_pre_hook(lambda *a: calls.append("pre")),
        opt.register_step_post_hook(lambda *a: calls.append("post")),
        register_optimizer_step_pre_hook(lambda *a: calls.append("global pre")),
        register_optimizer_step_post_hook(lambda *a: calls.append("global post")),
    ]
    try:
        _quiet(model=model, loss_fn=_mse, data=[(x, y)], optimizer=opt, num_steps=10)
        assert calls == []
        _mse(model, (x, y)).backward()
        opt.step()  # and they are back afterwards
        assert calls == ["global pre", "pre", "post", "global post"]  # torch.optim's order
    finally:
        for h in handles:
            h.remove()


# Restoring the caller's objects


def _same(a, b) -> bool:
    """Deep equality of state_dicts: tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return a == b


class _RunningMean(torch.nn.Module):
    """Buffers as BatchNorm keeps them (a running mean and a step count), and a non-persistent one, which is
    not in the state_dict and must come back all the same. (BatchNorm itself is slow on a busy 2-core CPU.)"""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("last", torch.zeros(n), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                self.mean.lerp_(x.mean(0), 0.1)
                self.count += 1
                self.last.copy_(x[0])
        return x - self.mean


@pytest.mark.parametrize("kind", ["fused_optim", "torch.optim"])
@pytest.mark.parametrize("warm", [True, False], ids=["with-state", "fresh"])
def test_model_optimizer_lrs_and_rng_are_restored_exactly(kind, warm):
    torch.manual_seed(0)
    x, y = _regression(1.0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), _RunningMean(16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)
    )
    lr_tensor = torch.tensor(1e-4)
    groups = [
        {"params": model[0].parameters(), "lr": 1e-3},
        {"params": model[4].parameters(), "lr": lr_tensor},
    ]
    if kind == "fused_optim":
        opt = fused_optim.AdamW(groups, weight_decay=0.01, betas=(torch.tensor(0.9), 0.999))
    else:
        opt = torch.optim.AdamW(groups, weight_decay=0.01, foreach=False)
    batch = (x[:32], y[:32])
    if warm:
        for _ in range(2):
            opt.zero_grad()
            _mse(model, batch).backward()
            opt.step()
    model[3].eval()  # mixed modes must come back as they were
    grad = torch.full_like(model[0].bias, 0.5)
    model[0].bias.grad = grad
    grads = [p.grad for p in model.parameters()]  # tensors (warm) or None (fresh), and ours
    twin_model, twin_opt = copy.deepcopy((model, opt))

    before_tensors = [t.clone() for t in (*model.parameters(), *model.buffers())]
    before_state = copy.deepcopy(opt.state_dict())
    held = {(id(p), k): v for p, s in opt.state.items() for k, v in s.items()}  # references a caller may hold
    group_ids, groups_list = [id(g) for g in opt.param_groups], opt.param_groups
    betas = opt.param_groups[0]["betas"]
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()

    r = _quiet(
        model=model, loss_fn=_mse, data=[(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)], optimizer=opt
    )
    assert r.steps > 20  # it did train, and went far

    assert all(torch.equal(t, b) for t, b in zip((*model.parameters(), *model.buffers()), before_tensors))
    assert _same(opt.state_dict(), before_state)
    assert len(opt.state) == (4 if warm else 0)
    assert {(id(p), k): v for p, s in opt.state.items() for k, v in s.items()} == held  # the same objects
    assert all(v is held[id(p), k] for p, s in opt.state.items() for k, v in s.items())
    assert opt.param_groups is groups_list and [id(g) for g in opt.param_groups] == group_ids
    assert opt.param_groups[0]["lr"] == 1e-3 and opt.param_groups[0]["betas"] is betas
    assert opt.param_groups[1]["lr"] is lr_tensor and torch.equal(lr_tensor, torch.tensor(1e-4))
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert torch.equal(grad, torch.full_like(grad, 0.5))
    assert torch.equal(torch.get_rng_state(), rng)

    # and training goes on exactly as if the test had not run
    for m, o in ((model, opt), (twin_model, twin_opt)):
        torch.manual_seed(1)
        o.zero_grad()
        _mse(m, batch).backward()
        o.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin_model.parameters()))


def test_parameters_outside_the_optimizer_keep_their_gradients():
    """Their gradients would accumulate into the caller's .grad tensors if only the optimizer's were reset."""
    x, y = _regression(1.0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 1))
    grad = torch.ones_like(model[0].weight)
    model[0].weight.grad = grad
    before = model[0].weight.clone()
    opt = fused_optim.SGD(model[1].parameters())
    _quiet(model=model, loss_fn=_mse, data=[(x, y)], optimizer=opt, start_lr=1e-4, end_lr=1.0, num_steps=10)
    assert model[0].weight.grad is grad and torch.equal(grad, torch.ones_like(grad))
    assert torch.equal(model[0].weight, before)


def test_restored_even_when_loss_fn_raises():
    x, y = _regression(1.0)
    model = _linear()
    torch.nn.init.ones_(model.weight)
    opt = fused_optim.Adam(model.parameters(), lr=0.25)
    calls = []

    def loss_fn(m, batch):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return _mse(m, batch)

    with pytest.raises(RuntimeError, match="boom"):
        _quiet(model=model, loss_fn=loss_fn, data=[(x, y)], optimizer=opt, start_lr=0.1)
    assert torch.equal(model.weight, torch.ones_like(model.weight))
    assert len(opt.state) == 0 and opt.param_groups[0]["lr"] == 0.25


def test_default_optimizer_criterion_module_and_dict_batches():
    x, y = _regression(1.0)
    # a criterion module is applied as criterion(model(inputs), targets)
    model = _linear()
    r = _quiet(
        model=model, loss_fn=torch.nn.MSELoss(), data=[(x, y.unsqueeze(1))], start_lr=1e-5, end_lr=1.0, num_steps=30
    )
    assert r.steps == 30 and r.suggested_lr is not None
    assert torch.equal(model.weight, torch.zeros_like(model.weight))
    # any batch structure reaches loss_fn as it is
    r = _quiet(
        model=_linear(),
        loss_fn=lambda m, b: _mse(m, (b["x"], b["y"])),
        data=[{"x": x, "y": y}],
        start_lr=1e-5,
        end_lr=1.0,
        num_steps=10,
    )
    assert r.steps == 10


@pytest.mark.cuda
def test_cuda_model_with_cpu_batches():
    x, y = _regression(1.0)
    model = _linear().cuda()
    lr = torch.tensor(0.5, device="cuda")
    opt = fused_optim.SGD(model.parameters(), lr=lr)
    r = _quiet(model=model, loss_fn=_mse, data=[(x, y)], optimizer=opt, start_lr=1e-4, end_lr=100.0)
    assert r.diverged and r.suggested_lr < 2 / _largest_curvature(x)
    assert opt.param_groups[0]["lr"] is lr and lr.item() == 0.5
    assert torch.equal(model.weight, torch.zeros_like(model.weight))


# Errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"start_lr": 0.0}, "start_lr must be a positive number"),
        ({"start_lr": -1e-3}, "start_lr must be a positive number"),
        ({"end_lr": math.nan}, "end_lr must be a positive number"),
        ({"end_lr": math.inf}, "end_lr must be a positive number"),
        ({"start_lr": 1.0, "end_lr": 0.1}, "start_lr must be below end_lr"),
        ({"start_lr": 0.1, "end_lr": 0.1}, "start_lr must be below end_lr"),
        ({"num_steps": 1}, "num_steps must be an integer of at least 2"),
        ({"num_steps": 10.0}, "num_steps must be an integer of at least 2"),
        ({"beta": 1.0}, r"beta must be in \[0, 1\)"),
        ({"diverge_factor": 1.0}, "diverge_factor must be above 1"),
        ({"skip_start": 100}, "skip_start must be an integer"),
        ({"data": []}, "data is empty"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    x, y = _regression(1.0)
    args = {"model": _linear(), "loss_fn": _mse, "data": [(x, y)], **kwargs}
    with pytest.raises(ValueError, match=match):
        _quiet(**args)


def test_bad_models_optimizers_and_losses_are_refused():
    x, y = _regression(1.0)
    frozen = _linear().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        find_lr(frozen, _mse, [(x, y)])
    with pytest.raises(ValueError, match="not parameters of the model"):
        find_lr(_linear(), _mse, [(x, y)], fused_optim.SGD(_linear().parameters()))
    with pytest.raises(TypeError, match="must be a torch.optim.Optimizer"):
        find_lr(_linear(), _mse, [(x, y)], "adamw")
    cases = [
        (lambda m, b: 1.0, "must return a scalar tensor, got float"),
        (lambda m, b: (m(b[0]).squeeze(1) - b[1]) ** 2, r"got shape \(256,\)"),
        (lambda m, b: _mse(m, b).detach(), "does not require grad"),
    ]
    for loss_fn, match in cases:
        model = _linear()
        with pytest.raises(TypeError, match=match):
            find_lr(model, loss_fn, [(x, y)], progress=False)
    with pytest.raises(TypeError, match=r"must be \(inputs, targets\)"):
        find_lr(_linear(), torch.nn.MSELoss(), [x], progress=False)


# Output: table, picture, progress


def test_table_marks_the_suggestion_and_lists_evenly_spaced_steps():
    x, y = _regression(1.0)
    r = _quiet(model=_linear(), loss_fn=_mse, data=[(x, y)], start_lr=1e-4, end_lr=100.0)
    text = r.table(rows=6)
    rows = re.findall(r"^\s*(\d+)\s+([\d.e+-]+)\s+(\S+)\s+(\S+)(.*)$", text, re.M)
    steps = [int(s) for s, *_ in rows]
    last = r.steps - 1
    assert set(steps) == {round(i * last / 5) for i in range(6)} | {r.suggested_step, r.min_loss_step}
    marked = {int(s): mark.strip() for s, _, _, _, mark in rows if mark.strip()}
    assert marked[r.suggested_step].startswith("<- suggested") and marked[last] == "<- diverged"
    for s, lr, _loss, smooth, _ in rows:
        assert float(lr) == pytest.approx(r.lrs[int(s)], rel=1e-3)
        assert float(smooth) == pytest.approx(r.smoothed[int(s)], rel=1e-3)
    assert f"suggested lr (steepest descent of the smoothed loss): {r.suggested_lr:.3e}" in text
    assert f"lowest smoothed loss / 10 (more cautious): {r.min_loss_lr:.3e}" in text


def test_png_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    x, y = _regression(1.0)
    path = tmp_path / "lr.png"
    r = _quiet(model=_linear(), loss_fn=_mse, data=[(x, y)], start_lr=1e-4, end_lr=100.0, num_steps=40, png=str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    assert r.plot(str(tmp_path / "again.png")) == str(tmp_path / "again.png")


def test_missing_matplotlib_is_said_before_the_run(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    x, y = _regression(1.0)
    calls = []

    def loss_fn(m, b):
        calls.append(1)
        return _mse(m, b)

    with pytest.raises(ImportError, match="pip install matplotlib"):
        find_lr(_linear(), loss_fn, [(x, y)], png=str(tmp_path / "x.png"))
    r = LRFinderResult([1e-3, 1e-2], [1.0, 0.5], [1.0, 0.5], None, None, False, 2)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        r.plot(str(tmp_path / "x.png"))
    assert calls == []


def test_a_png_path_the_end_could_not_write_is_refused_before_the_run(tmp_path):
    pytest.importorskip("matplotlib")
    x, y = _regression(1.0)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_lr(_linear(), _mse_never_called, [(x, y)], png=tmp_path / "missing" / "x.png")
    with pytest.raises(IsADirectoryError):
        find_lr(_linear(), _mse_never_called, [(x, y)], png=tmp_path)


def _mse_never_called(m, batch):
    raise AssertionError("the run started")


def test_progress_bar_shows_lr_and_loss(capsys):
    x, y = _regression(1.0)
    find_lr(_linear(), _mse, [(x, y)], start_lr=1e-5, end_lr=1e-3, num_steps=10)
    err = capsys.readouterr().err
    assert "find_lr [" in err and "10/10" in err and re.search(r"lr 1\.00e-03\s+loss \d", err)
    find_lr(_linear(), _mse, [(x, y)], start_lr=1e-5, end_lr=1e-3, num_steps=10, progress=False)
    assert capsys.readouterr().err == ""


# The command


def _cli(argv: list[str]) -> int:
    return main(argv)


TINY = ["find-lr", "--steps", "30", "--samples", "512", "--batch-size", "64", "--device", "cpu", "--quiet"]


def test_cli_prints_the_table_and_suggestion_and_draws(capsys, tmp_path):
    png = tmp_path / "find_lr.png"
    assert _cli([*TINY, "--optimizer", "sgd", "--png", str(png), "--rows", "5"]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert out.startswith("find-lr: sgd on cpu, lr 1e-07 -> 10 over 30 steps")
    assert re.search(r"^suggested lr \(steepest descent of the smoothed loss\): \d\.\d{3}e[+-]\d\d$", out, re.M)
    assert len(re.findall(r"^\s*\d+\s+\d\.\d{3}e[+-]\d\d\s", out, re.M)) >= 5
    assert png.read_bytes().startswith(b"\x89PNG") and f"wrote {png}" in out
    assert captured.err == ""  # --quiet: no progress bar


def test_cli_defaults_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        _cli(["find-lr", "--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--optimizer", "--start-lr", "--end-lr", "--steps", "--png", "--device", "--quiet"):
        assert option in help_text
    ap = argparse.ArgumentParser()
    add_cli(ap.add_subparsers(dest="command"))
    args = ap.parse_args(["find-lr"])
    assert (args.optimizer, args.start_lr, args.end_lr, args.steps, args.png) == ("adamw", 1e-7, 10.0, 100, "")


@pytest.mark.parametrize(
    "argv, code_or_message",
    [
        (["--optimizer", "nonsense"], 2),
        (["--start-lr", "-1"], 2),
        (["--start-lr", "abc"], 2),
        (["--steps", "0"], 2),
        (["--start-lr", "1", "--end-lr", "0.1"], "find-lr: start_lr must be below end_lr"),
        (["--steps", "1"], 2),
        (["--png", "/nonexistent-folder/x.png"], 2),
    ],
)
def test_cli_errors(argv, code_or_message, capsys):
    with pytest.raises(SystemExit) as e:
        _cli([*TINY, *argv])
    if isinstance(code_or_message, int):
        assert e.value.code == code_or_message and "error:" in capsys.readouterr().err
    else:
        assert str(e.value.code).startswith(code_or_message)
        assert capsys.readouterr().out == ""  # refused before any work
