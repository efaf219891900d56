"""Numeric edge cases, each with a defined behaviour: torch.optim's (foreach=False) wherever torch defines one, so
a model moved to fused_optim meets the same numbers in the same corners. Where torch has no answer (an option
switched on mid-run), the behaviour is documented in the optimizer and pinned here.

  - non-finite gradients without a GradScaler propagate into the parameters exactly as in torch.optim
  - eps = 0, huge and tiny lr: the same values as torch.optim
  - subnormal gradients and parameters: no flush to zero, the correctly rounded result
  - weight decay with maximize: torch's order (decay added to the negated gradient)
  - fp16 params and moments without masters: the moments overflow to inf and the parameter stops, as in torch
    (use master_weights or a float32 state_dtype to avoid it)
  - step counts beyond 2^24 keep bias corrections exact: torch.optim's float32 counter stops at 2^24 = 16,777,216
    (2^24 + 1 rounds back); ours is widened to float64 (exact to 2^53) before it gets there
  - amsgrad, momentum or centering switched on after the state exists start their buffer in a defined way
"""

from __future__ import annotations

import pytest
import torch

import fused_optim

TORCH_TWINS = {
    "Adam": dict(weight_decay=0.1),
    "AdamW": dict(amsgrad=True),
    "SGD": dict(momentum=0.9, nesterov=True, weight_decay=0.1),
    "RMSprop": dict(momentum=0.5, centered=True, weight_decay=0.1),
    "Adagrad": dict(lr_decay=0.01, weight_decay=0.1),
}


def run_both(name, params, grads, dtype=torch.float32, **kwargs):
    """Run fused_optim.<name> and torch.optim.<name>(foreach=False) on copies of ``params`` through ``grads``."""
    ours = [p.clone().to(dtype).requires_grad_() for p in params]
    ref = [p.clone().to(dtype).requires_grad_() for p in params]
    opt = getattr(fused_optim, name)(ours, **kwargs)
    ref_opt = getattr(torch.optim, name)(ref, foreach=False, **kwargs)
    for step_grads in grads:
        for p, q, g in zip(ours, ref, step_grads):
            p.grad, q.grad = g.to(dtype).clone(), g.to(dtype).clone()
        opt.step()
        ref_opt.step()
    return ours, ref, opt, ref_opt


def assert_same(ours, ref, **tol):
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, equal_nan=True, **tol)


@pytest.mark.parametrize("name", TORCH_TWINS)
def test_non_finite_gradients_propagate_as_in_torch(name):
    torch.manual_seed(0)
    params = [torch.randn(40)]
    g = torch.randn(40)
    g[3], g[17], g[29] = float("inf"), float("-inf"), float("nan")
    ours, ref, *_ = run_both(name, params, [[g], [torch.randn(40)]], lr=0.01, **TORCH_TWINS[name])
    assert_same(ours, ref)
    assert not torch.isfinite(ours[0][[3, 17, 29]]).any()  # the bad elements are poisoned, as in torch.optim
    assert torch.isfinite(ours[0][:3]).all()  # and only those


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_with_eps_zero_matches_torch(amsgrad):
    torch.manual_seed(0)
    g = torch.randn(33)
    g[5] = 0.0  # 0 / (sqrt(0) + 0) = nan in both
    ours, ref, *_ = run_both("Adam", [torch.randn(33)], [[g], [g]], lr=0.01, eps=0.0, amsgrad=amsgrad)
    assert_same(ours, ref)
    assert torch.isnan(ours[0][5])


@pytest.mark.parametrize("name", TORCH_TWINS)
@pytest.mark.parametrize("lr", [1e-30, 1e6])
def test_extreme_learning_rates_match_torch(name, lr):
    torch.manual_seed(0)
    ours, ref, *_ = run_both(name, [torch.randn(50)], [[torch.randn(50)] for _ in range(3)], lr=lr, **TORCH_TWINS[name])
    assert_same(ours, ref, rtol=1e-4, atol=0)  # weight decay at lr=1e6 grows params 1e5-fold a step: rounding too


@pytest.mark.parametrize("name", TORCH_TWINS)
def test_subnormal_gradients_and_params_are_not_flushed(name):
    """No flush-to-zero, in the SIMD paths as in the scalar tails: subnormal inputs give torch.optim's values.
    Adagrad is compared with its formula evaluated op by op in float32 instead: torch's addcdiv multiplies lr into
    the subnormal gradient before dividing and loses digits there (up to 2 %); the kernels divide first."""
    tiny = torch.finfo(torch.float32).tiny  # 1.2e-38; below it float32 is subnormal
    torch.manual_seed(0)
    params = [torch.randn(70) * tiny / 64]
    grads = [[torch.randn(70) * tiny / 16] for _ in range(3)]
    assert (params[0].abs() < tiny).any() and (grads[0][0].abs() < tiny).all()
    kwargs = TORCH_TWINS[name]
    ours, ref, *_ = run_both(name, params, grads, lr=0.01, **kwargs)
    if name == "Adagrad":
        p, total = params[0].clone(), torch.zeros(70)
        for t, (g,) in enumerate(grads, start=1):
            g = g + kwargs["weight_decay"] * p
            total = total + g * g
            p = p - (0.01 / (1 + (t - 1) * kwargs["lr_decay"])) * (g / (total.sqrt() + 1e-10))
        ref = [p]
    assert_same(ours, ref, rtol=1e-5, atol=1e-45)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "RMSprop", "Adagrad"])
def test_weight_decay_with_maximize_matches_torch(name):
    torch.manual_seed(0)
    kwargs = {**TORCH_TWINS[name], "weight_decay": 0.3, "maximize": True}
    ours, ref, *_ = run_both(name, [torch.randn(20)], [[torch.randn(20)] for _ in range(3)], lr=0.05, **kwargs)
    assert_same(ours, ref)


@pytest.mark.parametrize("name", ["Adam", "RMSprop"])
def test_fp16_moments_overflow_to_inf_and_freeze_the_param_as_in_torch(name):
    """Squared gradients overflow fp16 moments (max 65504) to inf, as in torch.optim with fp16 state; from then on
    the update is m / inf = 0 and the parameter stops, in both. One difference, by design: the step on which the
    moment overflows computes its update from the moment in fp32, before it is rounded into fp16 storage, so that
    step still moves the parameter (torch computes in fp16 and does not). master_weights=True (float32 moments)
    avoids the overflow altogether."""
    key = "exp_avg_sq" if name == "Adam" else "square_avg"
    big = torch.full((16,), 60000.0)  # (1 - beta2) * g^2 = 3.6e6 (Adam), (1 - alpha) * g^2 = 3.6e7 (RMSprop)
    ours, ref, opt, ref_opt = run_both(name, [torch.ones(16)], [[big]], dtype=torch.float16, lr=0.01)
    assert torch.isinf(opt.state[ours[0]][key]).all() and torch.isinf(ref_opt.state[ref[0]][key]).all()
    after_overflow = ours[0].detach().clone()
    for _ in range(2):
        for p, q in ((ours[0], ref[0]),):
            p.grad, q.grad = torch.full_like(p, 0.5), torch.full_like(q, 0.5)
        opt.step()
        ref_opt.step()
    assert torch.equal(ours[0], after_overflow)  # frozen, as torch's
    assert torch.equal(ref[0], torch.ones(16, dtype=torch.float16))

    p = torch.ones(16, dtype=torch.float16, requires_grad=True)
    p.grad = big.half()
    safe = getattr(fused_optim, name)([p], lr=0.01, master_weights=True)
    safe.step()
    assert torch.isfinite(safe.state[p][key]).all() and (p < 1.0).all()


@pytest.mark.parametrize("t", [1_000_000, 10_000_000, 2**24 - 2])
def test_bias_correction_is_exact_at_large_step_counts(t):
    """The step counter is a float32 tensor (torch.optim's format); every count up to 2^24 is exact in it, and the
    kernels form 1 - beta^t in double precision, so late steps still get the exact correction."""
    beta1, beta2, lr, eps = 0.9, 0.999999, 0.01, 1e-8  # beta2 near 1: its correction still matters at 10^6 steps
    torch.manual_seed(0)
    p = torch.randn(64, dtype=torch.float64, requires_grad=True)
    m, v = torch.randn(64, dtype=torch.float64) * 0.1, torch.rand(64, dtype=torch.float64) * 0.01
    g = torch.randn(64, dtype=torch.float64)
    opt = fused_optim.Adam([p], lr=lr, betas=(beta1, beta2), eps=eps)
    opt.state[p].update(step=torch.tensor(float(t)), exp_avg=m.clone(), exp_avg_sq=v.clone())
    expected = p.detach().clone()
    p.grad = g
    opt.step()
    assert opt.state[p]["step"].item() == t + 1
    n = t + 1  # the formula, written here in float64
    m1, v1 = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
    expected -= lr / (1 - beta1**n) * m1 / ((v1 / (1 - beta2**n)).sqrt() + eps)
    torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14)


STEP_OPTIMIZERS = {
    "Adam": dict(lr=0.01, betas=(0.9, 1 - 1e-8)),  # beta2's correction still changes past 2^24 steps
    "AdamW": dict(lr=0.01, betas=(0.5, 1 - 1e-8), amsgrad=True),
    "Adagrad": dict(lr=0.1, lr_decay=1e-7),  # lr / (1 + (t - 1) * lr_decay): t must be exact
    "RMSprop": dict(lr=0.01),
}


def state_at_step(opt, count):
    """A state_dict of ``opt`` whose float32 step counters read ``count`` (as after loading an old checkpoint)."""
    sd = opt.state_dict()
    for st in sd["state"].values():
        st["step"] = torch.tensor(float(count))
    return sd


@pytest.mark.parametrize("name", STEP_OPTIMIZERS)
def test_step_counts_past_two_to_the_24_stay_exact(name):
    """torch.optim (foreach=False) reads a float64 counter exactly; ours must count past 2^24 the same way, from a
    float32 counter (torch.optim's format) loaded 3 steps before it."""
    torch.manual_seed(0)
    kwargs = STEP_OPTIMIZERS[name]
    p = torch.randn(37, dtype=torch.float64, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    opt = getattr(fused_optim, name)([p], **kwargs)
    ref = getattr(torch.optim, name)([q], foreach=False, **kwargs)
    p.grad, q.grad = torch.randn(37, dtype=torch.float64), None
    q.grad = p.grad.clone()
    opt.step()
    ref.step()
    start = 2**24 - 3
    opt.load_state_dict(state_at_step(opt, start))
    ref_sd = state_at_step(ref, start)
    for st in ref_sd["state"].values():
        st["step"] = st["step"].double()  # torch's own counter would stall at 2^24: the reference counts in float64
    ref.load_state_dict(ref_sd)
    for _ in range(6):
        g = torch.randn(37, dtype=torch.float64)
        p.grad, q.grad = g, g.clone()
        opt.step()
        ref.step()
    step = opt.state[p]["step"]
    assert step.dtype == torch.float64 and step.item() == start + 6 == 2**24 + 3
    torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)
    for key, value in ref.state[q].items():
        torch.testing.assert_close(opt.state[p][key], value, rtol=1e-13, atol=1e-15, check_dtype=False)


def test_lamb_counts_past_two_to_the_24():
    p = torch.randn(16, requires_grad=True)
    opt = fused_optim.LAMB([p], lr=0.01)
    p.grad = torch.randn(16)
    opt.step()
    opt.load_state_dict(state_at_step(opt, 2**24 - 1))
    for _ in range(3):
        p.grad = torch.randn(16)
        opt.step()
    assert opt.state[p]["step"].item() == 2**24 + 2


def test_step_counters_below_the_margin_stay_float32_as_in_torch():
    p = torch.zeros(3, requires_grad=True)
    opt = fused_optim.Adam([p], lr=0.0)
    p.grad = torch.zeros(3)
    opt.step()
    opt.load_state_dict(state_at_step(opt, 2**23))
    opt.step()
    assert opt.state[p]["step"].dtype == torch.float32 and opt.state[p]["step"].item() == 2**23 + 1


def test_counters_advanced_in_place_are_checked_every_few_steps(monkeypatch):
    """Without a plan rebuild (no load_state_dict), the range is checked every _STEP_CHECK_EVERY steps."""
    from fused_optim.optim import _base

    monkeypatch.setattr(_base, "_STEP_CHECK_EVERY", 4)
    monkeypatch.setattr(_base, "_WIDEN_STEPS_AT", 2**24 - 8)
    params = [torch.zeros(3, requires_grad=True), torch.zeros(5, requires_grad=True)]
    opt = fused_optim.Adam(params, lr=0.0)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    for p in params:
        opt.state[p]["step"].fill_(2**24 - 8)  # in place: the cached plan keeps the same tensors
    for _ in range(12):
        opt.step()
    for p in params:
        assert opt.state[p]["step"].dtype == torch.float64
        assert opt.state[p]["step"].item() == 2**24 + 4


def test_counters_of_params_without_a_gradient_are_checked_too():
    """The check covers the whole group: a counter near 2^24 whose param has no gradient at the check still gets
    widened before it steps again (the countdown carries over when the set of gradients changes)."""
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(5, requires_grad=True)
    opt = fused_optim.Adam([a, b], lr=0.0)
    a.grad, b.grad = torch.zeros(3), torch.zeros(5)
    opt.step()
    sd = opt.state_dict()
    sd["state"][1]["step"] = torch.tensor(float(2**24 - 1))
    opt.load_state_dict(sd)
    b.grad = None
    opt.step()  # the check runs now, with only a's gradient
    b.grad = torch.zeros(5)
    for _ in range(3):
        opt.step()
    assert opt.state[b]["step"].dtype == torch.float64 and opt.state[b]["step"].item() == 2**24 + 2
    assert opt.state[a]["step"].item() == 5


def test_a_changing_set_of_gradients_does_not_reread_the_counters(monkeypatch):
    """Reading the counters is a GPU sync; a model whose params get gradients on alternate steps (MoE experts)
    must not pay it on every plan rebuild, only every _STEP_CHECK_EVERY steps."""
    from fused_optim.optim import _base

    reads = []
    original = _base.FusedOptimizer._largest_float32_step
    monkeypatch.setattr(
        _base.FusedOptimizer, "_largest_float32_step", lambda self, *a: reads.append(1) or original(self, *a)
    )
    monkeypatch.setattr(_base, "_STEP_CHECK_EVERY", 8)
    params = [torch.zeros(3, requires_grad=True), torch.zeros(5, requires_grad=True)]
    opt = fused_optim.AdamW(params, lr=0.1)
    for i in range(20):
        for j, p in enumerate(params):
            p.grad = torch.ones_like(p) if (i + j) % 2 == 0 or i % 3 == 0 else None
        opt.step()
    assert len(reads) == 3  # at steps 0, 9 and 18


def test_a_group_with_some_float64_counters_counts_all_in_float64():
    params = [torch.zeros(3, requires_grad=True), torch.zeros(5, requires_grad=True)]
    opt = fused_optim.Adagrad(params, lr=0.1)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sd = opt.state_dict()
    sd["state"][0]["step"] = torch.tensor(7.0, dtype=torch.float64)
    opt.load_state_dict(sd)
    opt.step()
    assert [opt.state[p]["step"].dtype for p in params] == [torch.float64, torch.float64]
    assert [opt.state[p]["step"].item() for p in params] == [8.0, 2.0]


def test_float64_counters_in_a_state_dict_load_into_torch_optim():
    p = torch.randn(4, requires_grad=True)
    opt = fused_optim.Adam([p], lr=0.01)
    p.grad = torch.randn(4)
    opt.step()
    opt.load_state_dict(state_at_step(opt, 2**24 - 1))
    p.grad = torch.randn(4)
    opt.step()
    q = p.detach().clone().requires_grad_()
    ref = torch.optim.Adam([q], lr=0.01, foreach=False)
    ref.load_state_dict(opt.state_dict())
    assert ref.state[q]["step"].item() == 2**24


def test_ops_refuse_step_counters_of_two_dtypes():
    from fused_optim import _ops

    params = [torch.zeros(3), torch.zeros(3)]
    with pytest.raises(RuntimeError, match=r"state_steps\[1\] is Float but state_steps\[0\] is Double"):
        _ops.adagrad_(
            params,
            [torch.ones(3), torch.ones(3)],
            [torch.zeros(3), torch.zeros(3)],
            [torch.tensor(1.0, dtype=torch.float64), torch.tensor(1.0)],
            lr=torch.tensor(0.1, dtype=torch.float64),
            lr_decay=0.0,
            weight_decay=0.0,
            eps=1e-10,
            maximize=False,
        )
    assert torch.equal(params[0], torch.zeros(3))


# Options switched on after the state exists -------------------------------------------------------------------


def test_amsgrad_switched_on_mid_run_starts_its_maximum_at_the_second_moment():
    torch.manual_seed(0)
    p = torch.randn(10, requires_grad=True)
    opt = fused_optim.Adam([p], lr=0.01)
    for _ in range(3):
        p.grad = torch.randn(10)
        opt.step()
    v = opt.state[p]["exp_avg_sq"].clone()
    ref_p, ref_state = p.detach().clone(), {k: t.clone() for k, t in opt.state[p].items()}
    opt.param_groups[0]["amsgrad"] = True
    g = torch.randn(10)
    p.grad = g
    opt.step()
    # reference: torch.optim with max_exp_avg_sq = the second moment before this step
    q = ref_p.clone().requires_grad_()
    ref = torch.optim.Adam([q], lr=0.01, amsgrad=True, foreach=False)
    ref.state[q] = {**ref_state, "max_exp_avg_sq": v}
    q.grad = g.clone()
    ref.step()
    torch.testing.assert_close(p, q)
    torch.testing.assert_close(opt.state[p]["max_exp_avg_sq"], ref.state[q]["max_exp_avg_sq"])


def test_sgd_momentum_switched_on_mid_run_starts_from_the_gradient_as_torch():
    torch.manual_seed(0)
    ours, ref = torch.randn(8, requires_grad=True), None
    ref = ours.detach().clone().requires_grad_()
    opt = fused_optim.SGD([ours], lr=0.1, momentum=0.0, weight_decay=0.01)
    ref_opt = torch.optim.SGD([ref], lr=0.1, momentum=0.0, weight_decay=0.01, foreach=False)
    for step in range(4):
        if step == 2:  # torch.optim's SGD keeps momentum_buffer=None until momentum is used, then clones the grad
            opt.param_groups[0]["momentum"] = ref_opt.param_groups[0]["momentum"] = 0.9
        g = torch.randn(8)
        ours.grad, ref.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(opt.state[ours]["momentum_buffer"], ref_opt.state[ref]["momentum_buffer"])


def test_rmsprop_momentum_and_centering_switched_on_mid_run_start_at_zero():
    torch.manual_seed(0)
    p = torch.randn(6, requires_grad=True)
    opt = fused_optim.RMSprop([p], lr=0.01)
    p.grad = torch.randn(6)
    opt.step()
    opt.param_groups[0].update(momentum=0.5, centered=True)
    state_before = {k: t.clone() for k, t in opt.state[p].items()}
    q = p.detach().clone().requires_grad_()
    ref = torch.optim.RMSprop([q], lr=0.01, momentum=0.5, centered=True, foreach=False)
    ref.state[q] = {**state_before, "momentum_buffer": torch.zeros(6), "grad_avg": torch.zeros(6)}
    g = torch.randn(6)
    p.grad, q.grad = g, g.clone()
    opt.step()
    ref.step()
    torch.testing.assert_close(p, q)


def test_state_from_another_optimizer_is_a_clear_error():
    p = torch.randn(4, requires_grad=True)
    sgd = fused_optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.randn(4)
    sgd.step()
    adam = fused_optim.Adam([p], lr=0.1)
    adam.load_state_dict({**sgd.state_dict(), "param_groups": adam.state_dict()["param_groups"]})
    with pytest.raises(RuntimeError, match="has no 'exp_avg'.*other options or by another optimizer"):
        adam.step()
