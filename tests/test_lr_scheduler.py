"""fused_optim.lr_scheduler against independent formulas, torch's schedulers and HF's published formulas."""

import io
import math
import pickle
import warnings

import pytest
import torch

import fused_optim
from fused_optim import lr_scheduler as sch

LR = 0.1


def _sgd(lr: float | torch.Tensor = LR, groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [torch.zeros(2, requires_grad=True)], "lr": lr * (i + 1)} for i in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def _run(sched: torch.optim.lr_scheduler.LRScheduler, steps: int, group: int = 0) -> list[float]:
    """lr of ``group`` at steps 0..steps-1 (step 0 is the value right after construction)."""
    out = []
    for _ in range(steps):
        out.append(float(sched.optimizer.param_groups[group]["lr"]))
        sched.optimizer.step()
        sched.step()
    return out


def _close(a: list[float], b: list[float], rel: float = 1e-12, abs_: float = 0.0) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b)):
        assert x == pytest.approx(y, rel=rel, abs=abs_), f"step {i}: {x} != {y}"


def _cosine(t: int, T: float, peak: float, floor: float) -> float:
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t / T))


# torch spellings give torch's values


def test_cosine_T_max_matches_torch_until_T_max():
    ours = _run(sch.CosineAnnealingLR(_sgd(), T_max=37, eta_min=1e-3), 38)
    ref = _run(torch.optim.lr_scheduler.CosineAnnealingLR(_sgd(), T_max=37, eta_min=1e-3), 38)
    # torch's recursion agrees with the closed form to rounding; measured max difference ~1e-17.
    _close(ours, ref, rel=1e-12, abs_=1e-14)


def test_cosine_clamp_false_matches_torch_periodic_continuation():
    ours = _run(sch.CosineAnnealingLR(_sgd(), T_max=10, eta_min=1e-3, clamp=False), 45)
    ref = _run(torch.optim.lr_scheduler.CosineAnnealingLR(_sgd(), T_max=10, eta_min=1e-3), 45)
    _close(ours, ref, rel=1e-10, abs_=1e-14)


def test_cosine_is_clamped_at_eta_min_after_the_end():
    lrs = _run(sch.CosineAnnealingLR(_sgd(), T_max=10, eta_min=1e-3), 40)
    _close(lrs[:11], [_cosine(t, 10, LR, 1e-3) for t in range(11)])
    assert lrs[10:] == [1e-3] * 30


def test_exponential_matches_torch():
    ours = _run(sch.ExponentialLR(_sgd(groups=2), gamma=0.97), 200, group=1)
    ref = _run(torch.optim.lr_scheduler.ExponentialLR(_sgd(groups=2), gamma=0.97), 200, group=1)
    _close(ours, ref, rel=1e-12)


def test_exponential_floor():
    lrs = _run(sch.ExponentialLR(_sgd(), gamma=0.5, eta_min=1e-3), 12)
    _close(lrs, [max(LR * 0.5**t, 1e-3) for t in range(12)])
    lrs = _run(sch.ExponentialLR(_sgd(), gamma=0.5, eta_min_ratio=0.05), 12)
    _close(lrs, [max(LR * 0.5**t, 0.05 * LR) for t in range(12)])


def test_linear_matches_torch():
    ours = _run(sch.LinearLR(_sgd(), start_factor=0.25, end_factor=0.9, total_iters=17), 30)
    ref = _run(torch.optim.lr_scheduler.LinearLR(_sgd(), start_factor=0.25, end_factor=0.9, total_iters=17), 30)
    _close(ours, ref, rel=1e-12)


def test_linear_warms_up_from_zero():
    # torch's LinearLR rejects start_factor=0.
    lrs = _run(sch.LinearLR(_sgd(), start_factor=0.0, end_factor=1.0, total_iters=8), 12)
    _close(lrs, [LR * min(t, 8) / 8 for t in range(12)])


def test_linear_decay_to_zero():
    lrs = _run(sch.LinearLR(_sgd(), start_factor=1.0, end_factor=0.0, total_iters=20), 25)
    _close(lrs, [LR * max(0.0, 1 - t / 20) for t in range(25)])


def test_polynomial_matches_torch():
    ours = _run(sch.PolynomialLR(_sgd(), total_iters=15, power=2.0), 20)
    ref = _run(torch.optim.lr_scheduler.PolynomialLR(_sgd(), total_iters=15, power=2.0), 20)
    _close(ours, ref, rel=1e-10, abs_=1e-15)


def test_polynomial_with_floor():
    lrs = _run(sch.PolynomialLR(_sgd(), total_iters=10, power=0.5, eta_min=1e-3), 14)
    _close(lrs, [1e-3 + (LR - 1e-3) * (1 - min(t, 10) / 10) ** 0.5 for t in range(14)])


def test_constant_matches_torch():
    ours = _run(sch.ConstantLR(_sgd(), factor=0.5, total_iters=4), 8)
    ref = _run(torch.optim.lr_scheduler.ConstantLR(_sgd(), factor=0.5, total_iters=4), 8)
    _close(ours, ref)


def test_lambda_with_optimizer_is_torchs_lambda():
    def fn(t: int) -> float:
        return 1 / (1 + t)

    ours = sch.LambdaLR(_sgd(groups=2), fn)
    assert isinstance(ours, torch.optim.lr_scheduler.LambdaLR)
    ref = torch.optim.lr_scheduler.LambdaLR(_sgd(groups=2), fn)
    _close(_run(ours, 10, group=1), _run(ref, 10, group=1))


# The article's spellings


def test_article_cosine_cycles_restart_at_the_peak():
    lrs = _run(sch.CosineAnnealingLR(_sgd(), T_total=100, T_cycle=50), 110)
    expected = [_cosine(t % 50, 50, LR, 0.0) for t in range(100)] + [0.0] * 10
    _close(lrs, expected, abs_=1e-15)
    assert lrs[50] == LR


def test_cycles_match_torch_warm_restarts():
    ours = _run(sch.CosineAnnealingLR(_sgd(), T_cycle=5, T_mult=2, eta_min=1e-3), 80)
    ref = _run(torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(_sgd(), T_0=5, T_mult=2, eta_min=1e-3), 80)
    _close(ours, ref, rel=1e-12)


def test_cycle_peak_decay_and_ratio_floor():
    lrs = _run(sch.CosineAnnealingLR(_sgd(), T_total=30, T_cycle=10, peak_decay=0.5, eta_min_ratio=0.1), 35)
    floor = 0.1 * LR
    expected = [_cosine(t % 10, 10, LR * 0.5 ** (t // 10), floor) for t in range(30)] + [floor] * 5
    _close(lrs, expected)


def test_unbound_lambda_binds_later():
    unbound = sch.LambdaLR(lambda t: 0.9**t)
    assert isinstance(unbound, sch.UnboundSchedule)
    lrs = _run(unbound.bind(_sgd()), 10)
    _close(lrs, [LR * 0.9**t for t in range(10)])


def test_callable_in_place_of_optimizer_says_how():
    with pytest.raises(TypeError, match=r"LambdaLR\(fn\)\.bind\(optimizer\)"):
        sch.CosineAnnealingLR(lambda t: 1.0, T_max=10)
    with pytest.raises(TypeError, match="Optimizer"):
        sch.ExponentialLR("not an optimizer", gamma=0.9)


# Warm-up, an option of every schedule


def test_linear_warmup_from_zero_then_cosine():
    lrs = _run(sch.CosineAnnealingLR(_sgd(), T_max=20, warmup_steps=5), 30)
    expected = [LR * t / 5 for t in range(5)] + [_cosine(t, 20, LR, 0.0) for t in range(21)] + [0.0] * 4
    _close(lrs, expected, abs_=1e-15)


def test_exponential_warmup():
    lrs = _run(sch.ExponentialLR(_sgd(), gamma=0.9, warmup_steps=4, warmup_start_factor=0.01, warmup="exponential"), 8)
    expected = [LR * 0.01 ** (1 - t / 4) for t in range(4)] + [LR * 0.9**t for t in range(4)]
    _close(lrs, expected)


def test_exponential_warmup_rejects_zero_start():
    with pytest.raises(ValueError, match="warmup_start_factor > 0"):
        sch.LinearLR(_sgd(), warmup_steps=3, warmup="exponential")


def test_warmup_on_a_lambda_schedule():
    lrs = _run(sch.LambdaLR(_sgd(), _half_life_10, warmup_steps=3, warmup_start_factor=0.4), 7)
    expected = [LR * (0.4 + 0.6 * t / 3) for t in range(3)] + [LR * 0.5 ** (t / 10) for t in range(4)]
    _close(lrs, expected)


def _half_life_10(t: int) -> float:
    return 0.5 ** (t / 10)


def test_inverse_sqrt_after_warmup():
    lrs = _run(sch.InverseSqrtLR(_sgd(), timescale=4, warmup_steps=4), 12)
    expected = [LR * t / 4 for t in range(4)] + [LR / math.sqrt(1 + t / 4) for t in range(8)]
    _close(lrs, expected)


# Resume from state_dict at arbitrary steps


def _resume_check(make, k: int, steps: int) -> None:
    """Run ``steps`` uninterrupted, and again stopping at ``k``, restoring into fresh objects: same lrs after."""
    full = _run(make(_sgd(groups=2)), steps, group=1)
    first = make(_sgd(groups=2))
    _run(first, k)
    saved = pickle.loads(pickle.dumps(first.state_dict()))  # what torch.save would do to it
    second = make(_sgd(groups=2))
    second.load_state_dict(saved)
    second.optimizer.step()
    second.step()
    _close(_run(second, steps - k - 1, group=1), full[k + 1 :])


@pytest.mark.parametrize("k", [0, 7, 23, 51])
def test_resume_cosine_with_restarts_and_warmup(k):
    def make(opt):
        return sch.CosineAnnealingLR(opt, T_total=60, T_cycle=10, T_mult=1.5, peak_decay=0.8, warmup_steps=5)

    _resume_check(make, k, 70)


@pytest.mark.parametrize("k", [3, 29])
def test_resume_wsd(k):
    _resume_check(lambda opt: sch.get_wsd_schedule(opt, 5, 10, num_training_steps=30, min_lr_ratio=0.1), k, 35)


def test_load_keeps_the_functions_given_to_the_constructor():
    """As torch: a function is saved as None and the one passed to the new scheduler is used (a checkpoint from
    another script, whose module-level functions do not exist here, must load)."""
    sched = sch.LambdaLR(_sgd(), _half_life_10)
    _run(sched, 5)
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["lr_lambdas"] == [None]
    ref = torch.optim.lr_scheduler.LambdaLR(_sgd(), _half_life_10)
    assert ref.state_dict()["lr_lambdas"] == [None]

    def quarter(t: int) -> float:
        return 0.25

    fresh = sch.LambdaLR(_sgd(), quarter)
    fresh.load_state_dict(state)
    assert fresh.lr_lambdas == [quarter] and fresh.last_epoch == 5
    fresh.optimizer.step()
    fresh.step()
    assert fresh.get_last_lr()[0] == pytest.approx(LR * 0.25, rel=1e-12)


def test_a_function_path_saved_by_an_earlier_release_is_ignored():
    state = sch.LambdaLR(_sgd(), _half_life_10).state_dict()
    state["lr_lambdas"] = [{"__fused_optim_function__": "__main__:not_here"}]
    fresh = sch.LambdaLR(_sgd(), _half_life_10)
    fresh.load_state_dict(state)
    assert fresh.lr_lambdas == [_half_life_10] and not hasattr(_half_life_10, "__fused_optim_function__")


def test_resume_hf_cosine_through_torch_save():
    def make(opt, total=40):
        return sch.get_cosine_schedule_with_warmup(opt, 3, total, num_cycles=1.5)

    full = _run(make(_sgd()), 45)
    first = make(_sgd())
    _run(first, 17)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert state["lr_lambdas"] == [None]  # as HF's functools.partial: the lengths are the new schedule's
    second = make(_sgd())
    second.load_state_dict(state)
    second.optimizer.step()
    second.step()
    _close(_run(second, 27), full[18:])
    longer = make(_sgd(), total=80)  # training extended: the resumed schedule follows the new length, as HF's
    longer.load_state_dict(state)
    longer.optimizer.step()
    longer.step()
    assert longer.get_last_lr()[0] == pytest.approx(LR * _hf_cosine(18, 3, 80, 1.5), rel=1e-12)
    old = dict(state, lr_lambdas=[{"decay_steps": 37, "num_cycles": 1.5, "min_lr_rate": 0.0}])  # an older release's
    make(_sgd()).load_state_dict(old)


def test_state_dict_of_a_lambda_leaves_it_out():
    sched = sch.LambdaLR(_sgd(), lambda t: 0.5**t)
    state = pickle.loads(pickle.dumps(sched.state_dict()))
    assert state["lr_lambdas"] == [None]


# Optimizers: ours and torch's, float and tensor lr


def test_fused_adamw_and_tensor_lr_filled_in_place():
    lr = torch.tensor(LR)
    opt = fused_optim.AdamW([torch.zeros(3, requires_grad=True)], lr=lr)
    sched = sch.CosineAnnealingLR(opt, T_max=10, warmup_steps=2)
    tensor = opt.param_groups[0]["lr"]
    expected = [0.0, LR / 2] + [_cosine(t, 10, LR, 0.0) for t in range(6)]
    for want in expected:
        assert opt.param_groups[0]["lr"] is tensor
        assert tensor.item() == pytest.approx(want, rel=1e-6, abs=1e-9)  # float32 tensor
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.ones_like(p)
        opt.step()
        sched.step()


def test_fused_sgd_float_lr():
    opt = fused_optim.SGD([torch.zeros(3, requires_grad=True)], lr=LR)
    lrs = _run(sch.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=9), 12)
    _close(lrs, [LR * (1 - 0.9 * min(t, 9) / 9) for t in range(12)])


# HF helpers against HF's published formulas


def _hf_warm(step: int, w: int) -> float:
    return step / max(1, w)


def _hf_linear(step: int, w: int, n: int) -> float:
    if step < w:
        return _hf_warm(step, w)
    return max(0.0, (n - step) / max(1, n - w))


def _hf_cosine(step: int, w: int, n: int, cycles: float) -> float:
    if step < w:
        return _hf_warm(step, w)
    progress = (step - w) / max(1, n - w)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)))


def _hf_hard(step: int, w: int, n: int, cycles: int) -> float:
    if step < w:
        return _hf_warm(step, w)
    progress = (step - w) / max(1, n - w)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))


def _hf_poly(step: int, w: int, n: int, lr_init: float, lr_end: float, power: float) -> float:
    if step < w:
        return _hf_warm(step, w)
    if step > n:
        return lr_end / lr_init
    pct = 1 - (step - w) / (n - w)
    return ((lr_init - lr_end) * pct**power + lr_end) / lr_init


def _hf_wsd(step, w, stable, decay, warmup_type, decay_type, min_ratio, cycles=0.5):
    if step < w:
        p = step / max(1, w)
        f = {"linear": p, "cosine": 0.5 * (1.0 - math.cos(math.pi * p)), "1-sqrt": 1.0 - math.sqrt(1.0 - p)}
        return max(0.0, f[warmup_type] * (1.0 - min_ratio) + min_ratio)
    if step < w + stable:
        return 1.0
    if step < w + stable + decay:
        p = (step - w - stable) / max(1, decay)
        f = {
            "linear": 1.0 - p,
            "cosine": 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * p)),
            "1-sqrt": 1.0 - math.sqrt(p),
        }
        return max(0.0, f[decay_type] * (1.0 - min_ratio) + min_ratio)
    return min_ratio


def test_hf_linear():
    lrs = _run(sch.get_linear_schedule_with_warmup(_sgd(groups=2), 7, 50), 60, group=1)
    _close(lrs, [2 * LR * _hf_linear(t, 7, 50) for t in range(60)], abs_=1e-15)


@pytest.mark.parametrize("cycles", [0.5, 1.0, 2.25])
def test_hf_cosine(cycles):
    lrs = _run(sch.get_cosine_schedule_with_warmup(_sgd(), 5, 45, num_cycles=cycles), 46)
    _close(lrs, [LR * _hf_cosine(t, 5, 45, cycles) for t in range(46)], abs_=1e-15)


def test_hf_cosine_is_held_after_the_end():
    lrs = _run(sch.get_cosine_schedule_with_warmup(_sgd(), 5, 45), 60)
    assert lrs[45:] == [lrs[45]] * 15
    assert lrs[45] == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("cycles", [1, 3])
def test_hf_hard_restarts(cycles):
    lrs = _run(sch.get_cosine_with_hard_restarts_schedule_with_warmup(_sgd(), 4, 64, num_cycles=cycles), 70)
    _close(lrs, [LR * _hf_hard(t, 4, 64, cycles) for t in range(70)], abs_=1e-15)


def test_hf_polynomial():
    opt = _sgd(groups=2)
    lrs = _run(sch.get_polynomial_decay_schedule_with_warmup(opt, 3, 30, lr_end=1e-3, power=2.0), 35, group=1)
    _close(lrs, [2 * LR * _hf_poly(t, 3, 30, LR, 1e-3, 2.0) for t in range(35)])


def test_hf_polynomial_rejects_lr_end_above_lr():
    with pytest.raises(ValueError, match="lr_end"):
        sch.get_polynomial_decay_schedule_with_warmup(_sgd(), 3, 30, lr_end=1.0)


def test_hf_constant_with_warmup():
    lrs = _run(sch.get_constant_schedule_with_warmup(_sgd(), 6), 10)
    _close(lrs, [LR * (t / 6 if t < 6 else 1.0) for t in range(10)])


def test_hf_inverse_sqrt():
    # HF: after warm-up, 1 / sqrt((step + shift) / timescale) with shift = timescale - warmup.
    w, ts = 5, 12
    lrs = _run(sch.get_inverse_sqrt_schedule(_sgd(), w, timescale=ts), 30)
    _close(lrs, [LR * (t / w if t < w else 1 / math.sqrt((t + ts - w) / ts)) for t in range(30)])


@pytest.mark.parametrize(
    "warmup_type,decay_type", [("linear", "cosine"), ("cosine", "linear"), ("1-sqrt", "1-sqrt"), ("linear", "linear")]
)
def test_hf_wsd(warmup_type, decay_type):
    sched = sch.get_wsd_schedule(
        _sgd(), 6, 10, num_training_steps=30, warmup_type=warmup_type, decay_type=decay_type, min_lr_ratio=0.05
    )
    lrs = _run(sched, 36)
    _close(lrs, [LR * _hf_wsd(t, 6, 14, 10, warmup_type, decay_type, 0.05) for t in range(36)], abs_=1e-15)


def _hf_cosine_min(step: int, w: int, n: int, cycles: float, min_rate: float) -> float:
    if step < w:
        return _hf_warm(step, w)
    progress = (step - w) / max(1, n - w)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)) * (1 - min_rate) + min_rate)


def _hf_cosine_lr_rate(step: int, w: int, n: int, cycles: float, min_rate: float, warm_rate: float | None) -> float:
    if step < w:
        if warm_rate is None:
            return (step + 1) / max(1, w)
        return warm_rate + (1 - warm_rate) * step / max(1, w - 1)
    progress = (step - w + 1) / max(1, n - w)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * cycles * 2.0 * progress)) * (1 - min_rate) + min_rate)


@pytest.mark.parametrize("warm_rate", [None, 0.1])
def test_hf_cosine_warmup_with_min_lr(warm_rate):
    w, n = 6, 40
    kwargs = {"min_lr_rate": 0.05} | ({} if warm_rate is None else {"warmup_lr_rate": warm_rate})
    lrs = _run(sch.get_scheduler("cosine_warmup_with_min_lr", _sgd(), w, n, kwargs), n + 10)
    # HF's progress reaches 1 at step n - 1 (one step ahead) and goes on oscillating; ours holds its end value
    _close(lrs[:n], [LR * _hf_cosine_lr_rate(t, w, n, 0.5, 0.05, warm_rate) for t in range(n)], abs_=1e-15)
    assert lrs[n - 1 :] == [lrs[n - 1]] * 11 and lrs[n - 1] == pytest.approx(LR * 0.05, rel=1e-12)


@pytest.mark.parametrize("w,n", [(4, 4), (6, 3), (0, 0)])
def test_hf_helpers_when_the_warmup_leaves_no_decay(w, n):
    """num_warmup_steps >= num_training_steps: the warm-up still climbs to the peak, then HF's value follows."""
    end = max(w, n)
    lrs = _run(sch.get_linear_schedule_with_warmup(_sgd(), w, n), end + 4)
    _close(lrs, [LR * _hf_linear(t, w, n) for t in range(end + 4)], abs_=1e-15)
    lrs = _run(sch.get_cosine_schedule_with_warmup(_sgd(), w, n), end + 4)
    _close(lrs[: end + 1], [LR * _hf_cosine(t, w, n, 0.5) for t in range(end + 1)], abs_=1e-15)
    assert lrs[end + 1 :] == [0.0] * 3  # HF's cosine climbs back; ours holds its end
    sched = sch.get_cosine_with_min_lr_schedule_with_warmup(_sgd(), w, n, min_lr_rate=0.1)
    lrs = _run(sched, end + 1)
    _close(lrs, [LR * _hf_cosine_min(t, w, n, 0.5, 0.1) for t in range(end + 1)], abs_=1e-15)
    lrs = _run(sch.get_cosine_with_hard_restarts_schedule_with_warmup(_sgd(), w, n), end + 4)
    _close(lrs, [LR * _hf_hard(t, w, n, 1) for t in range(end + 4)], abs_=1e-15)
    if w > n:  # at w == n HF's polynomial divides by zero at step w
        lrs = _run(sch.get_polynomial_decay_schedule_with_warmup(_sgd(), w, n, lr_end=1e-3), end + 4)
        _close(lrs, [LR * _hf_poly(t, w, n, LR, 1e-3, 1.0) for t in range(end + 4)])


def test_total_iters_zero_gives_torchs_values():
    torch_sch = torch.optim.lr_scheduler
    _close(_run(sch.LinearLR(_sgd(), 0.5, 1.0, total_iters=0), 5), _run(torch_sch.LinearLR(_sgd(), 0.5, 1.0, 0), 5))
    _close(_run(sch.PolynomialLR(_sgd(), total_iters=0), 5), _run(torch_sch.PolynomialLR(_sgd(), total_iters=0), 5))


def test_get_scheduler_factory():
    lrs = _run(sch.get_scheduler("cosine_with_restarts", _sgd(), 4, 40, {"num_cycles": 2}), 44)
    _close(lrs, [LR * _hf_hard(t, 4, 40, 2) for t in range(44)], abs_=1e-15)
    lrs = _run(sch.get_scheduler("constant", _sgd()), 3)
    assert lrs == [LR] * 3
    with pytest.raises(ValueError, match="num_warmup_steps"):
        sch.get_scheduler("linear", _sgd())
    with pytest.raises(ValueError, match="unknown"):
        sch.get_scheduler("nope", _sgd())


# Seeing a schedule


def test_table_lists_sampled_steps():
    text = sch.table(sch.LambdaLR(_half_life_10), 101, rows=11)
    lines = text.splitlines()
    assert lines[0].split() == ["step", "lr"]
    steps = [int(line.split()[0]) for line in lines[1:]]
    assert steps == list(range(0, 101, 10))
    values = [float(line.split()[1]) for line in lines[1:]]
    _close(values, [0.5 ** (s / 10) for s in steps], rel=1e-5)


def test_table_from_a_factory_of_a_non_closed_form_scheduler():
    text = sch.table(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5), 6, lr=2.0)
    values = [float(line.split()[1]) for line in text.splitlines()[1:]]
    assert values == [2.0, 2.0, 1.0, 1.0, 0.5, 0.5]


def test_plot_writes_a_png_or_says_what_is_missing(tmp_path):
    path = tmp_path / "lr.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="matplotlib"):
            sch.plot(sch.CosineAnnealingLR.unbound(T_max=10), 20, str(path))
        return
    sch.plot(sch.CosineAnnealingLR.unbound(T_max=10), 20, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_hf_cosine_with_min_lr():
    # HF: cosine factor * (1 - min_lr_rate) + min_lr_rate, min_lr_rate = min_lr / the optimizer's default lr.
    lrs = _run(sch.get_cosine_with_min_lr_schedule_with_warmup(_sgd(), 4, 30, min_lr=0.01), 31)
    rate = 0.01 / LR
    expected = [LR * (_hf_cosine(t, 4, 30, 0.5) * (1 - rate) + rate if t >= 4 else t / 4) for t in range(31)]
    _close(lrs, expected)


def test_unbound_class_schedule_binds_later():
    lrs = _run(sch.CosineAnnealingLR.unbound(T_max=8, eta_min=0.01).bind(_sgd()), 10)
    _close(lrs, [_cosine(min(t, 8), 8, LR, 0.01) for t in range(10)])


def test_cosine_argument_errors():
    with pytest.raises(ValueError, match="not both"):
        sch.CosineAnnealingLR(_sgd(), T_max=10, T_total=10)
    with pytest.raises(ValueError, match="needs"):
        sch.CosineAnnealingLR(_sgd())


def test_step_with_epoch_uses_the_closed_form():
    sched = sch.CosineAnnealingLR(_sgd(), T_max=20, warmup_steps=4)
    with pytest.warns(UserWarning):  # torch deprecates step(epoch); the closed form still answers exactly
        sched.step(13)
    assert sched.get_last_lr()[0] == pytest.approx(_cosine(9, 20, LR, 0.0), rel=1e-12)


def test_compiled_step_sees_new_lr_without_recompiling():
    param = torch.zeros(4, requires_grad=True)
    param.grad = torch.ones(4)
    opt = torch.optim.SGD([param], lr=torch.tensor(1.0))
    sched = sch.LinearLR(opt, start_factor=1.0, end_factor=0.0, total_iters=4)
    compiles = []

    def backend(gm, example_inputs):
        compiles.append(gm)
        return gm

    step = torch.compile(opt.step, backend=backend)
    moved = []
    for _ in range(4):
        before = param.detach().clone()
        step()
        moved.append((before - param.detach())[0].item())
        sched.step()
    assert moved == [1.0, 0.75, 0.5, 0.25]  # lr * grad, lr from the linear decay
    assert len(compiles) == 1


# Closed form, not chainable: an overwritten lr change is reported ------------------------------------------------


def test_an_lr_changed_by_another_scheduler_is_reported_once_when_overwritten():
    """torch's chainable schedulers multiply the current lr; ours set it from their closed form, so the factor of
    a ReduceLROnPlateau (or another schedule in a ChainedScheduler) would be lost: the first step that overwrites
    such a change warns."""
    opt = _sgd(1.0)
    warm = sch.LinearLR(opt, start_factor=0.25, total_iters=3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.1, patience=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(6):
            opt.step()
            warm.step()
            plateau.step(1.0)
    overwrites = [w for w in caught if "overwrites that change" in str(w.message)]
    assert len(overwrites) == 1
    assert "LinearLR.step()" in str(overwrites[0].message)


def test_chained_schedules_of_ours_are_reported():
    opt = _sgd(1.0)
    chained = torch.optim.lr_scheduler.ChainedScheduler(
        [sch.ConstantLR(opt, factor=0.5, total_iters=3), sch.ExponentialLR(opt, gamma=0.9)]
    )
    with pytest.warns(UserWarning, match="overwrites that change"):
        for _ in range(3):
            opt.step()
            chained.step()


def test_schedules_alone_in_sequence_and_resumed_do_not_warn():
    opt = _sgd(torch.tensor(1.0))  # a CPU tensor lr, filled in place (rounded to float32)
    seq = torch.optim.lr_scheduler.SequentialLR(
        opt,
        [sch.LinearLR(opt, start_factor=0.1, total_iters=5), sch.CosineAnnealingLR(opt, T_max=20, eta_min=0.3)],
        milestones=[3],  # the cosine starts above where the warm-up stopped
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(10):
            opt.step()
            seq.step()
        opt2 = _sgd(1.0)
        first = sch.CosineAnnealingLR(opt2, T_max=50, warmup_steps=5)
        for _ in range(7):
            opt2.step()
            first.step()
        saved_opt, saved_sched = opt2.state_dict(), first.state_dict()
        opt3 = _sgd(1.0)
        resumed = sch.CosineAnnealingLR(opt3, T_max=50, warmup_steps=5)
        opt3.load_state_dict(saved_opt)
        resumed.load_state_dict(saved_sched)
        for _ in range(5):
            opt3.step()
            resumed.step()
            opt2.step()
            first.step()
        assert resumed.get_last_lr() == first.get_last_lr()
