"""fused_optim.Lion against a float64 reference written here from the paper (torch.optim has no Lion)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import fused_optim
from reference import TOL
from test_adam import SHAPES, grad_stream, make_params, run

CONFIGS = [
    {},
    {"lr": 0.01},
    {"lr": 0.01, "weight_decay": 0.5},
    {"lr": 0.003, "betas": (0.95, 0.98), "weight_decay": 1.0, "maximize": True},
    {"lr": 0.02, "betas": (0.5, 0.0)},
    {"lr": torch.tensor(0.005), "maximize": True},
]


def hyper(config):
    h = dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False)
    h.update(config)
    h["lr"] = float(h["lr"])
    return h


def lion_reference_step(params, grads, state, *, lr, betas, weight_decay, maximize, near_zero=0.0):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2) in float64, rounded
    once per step into each tensor's dtype:

        c = beta1 * m + (1 - beta1) * g
        p = p * (1 - lr * wd) - lr * sign(c)
        m = beta2 * m + (1 - beta2) * g

    sign() turns a rounding difference of a c near 0 into a move of 2 * lr: each state counts, per element, the
    steps whose |c| was within ``near_zero`` times the size of its terms or below float32's normal range
    (state["flips"]), so the comparison can allow 2 * lr for each of those and nothing elsewhere."""
    beta1, beta2 = betas
    for p, g, s in zip(params, grads, state):
        if g is None:
            continue
        if not s:
            s["exp_avg"] = torch.zeros_like(p)
            s["flips"] = torch.zeros(p.shape, dtype=torch.int64)
        m = s["exp_avg"].double()
        g64 = g.double() * (-1.0 if maximize else 1.0)
        c = beta1 * m + (1 - beta1) * g64
        # also a c below float32's normal range: the kernels compute in float32, where a beta of 1e-111 is 0 and
        # c = beta1 * m with g = 0 has no sign left (found by the long hypothesis profile)
        near = c.abs() <= near_zero * (beta1 * m.abs() + (1 - beta1) * g64.abs())
        s["flips"] += (near | (c.abs() < torch.finfo(torch.float32).tiny)).cpu()
        p.copy_(p.double() * (1 - lr * weight_decay) - lr * torch.sign(c))
        s["exp_avg"].copy_(beta2 * m + (1 - beta2) * g64)


def compare(opt, ours, ref, state, lr, dtype):
    """exp_avg tightly; params within the dtype's tolerance plus 2 * lr per near-zero c of the element."""
    tol = TOL[dtype]
    flips = 0
    for p, q, s in zip(ours, ref, state):
        if not s:
            assert len(opt.state[p]) == 0
            continue
        torch.testing.assert_close(opt.state[p]["exp_avg"], s["exp_avg"], **tol)
        allowed = tol["atol"] + tol["rtol"] * q.double().abs().cpu() + 2.0 * lr * s["flips"] * 1.001
        excess = (p.double() - q.double()).abs().cpu() - allowed
        assert not (excess > 0).any(), f"param of shape {tuple(p.shape)}: worst excess {excess.max().item()}"
        flips += int(s["flips"].sum())
    return flips


def numel(shapes):
    return sum(math.prod(s) for s in shapes)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trajectory_matches_formula(config, dtype, device):
    ours = make_params(SHAPES, dtype, device)
    ref = [p.clone() for p in ours]
    grads = grad_stream(ours, 12, none_every=5)
    opt = fused_optim.Lion(ours, **config)
    run(opt, ours, grads)
    state = [{} for _ in ref]
    h = hyper(config)
    for step_grads in grads:
        lion_reference_step(ref, step_grads, state, **h, near_zero=8 * torch.finfo(dtype).eps)
    flips = compare(opt, ours, ref, state, h["lr"], dtype)
    assert flips < 1e-4 * numel(SHAPES) * 12  # ties are rare: the comparison is tight almost everywhere


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_matches_formula(config, dtype, device, shapes=None, steps=8):
    """Computed in fp32 and rounded once per step. The stored exp_avg may round differently by one ulp, which
    moves c by a few ulps of its terms: such elements may move by 2 * lr the other way."""
    shapes = shapes or [(n,) for n in (1, 31, 32, 33, 1000, 4099)]
    ours = make_params(shapes, dtype, device)
    ref = [p.clone() for p in ours]
    grads = grad_stream(ours, steps)
    opt = fused_optim.Lion(ours, **config)
    run(opt, ours, grads)
    state = [{} for _ in ref]
    h = hyper(config)
    for step_grads in grads:
        lion_reference_step(ref, step_grads, state, **h, near_zero=8 * torch.finfo(dtype).eps)
    flips = compare(opt, ours, ref, state, h["lr"], dtype)
    assert flips < 0.05 * numel(shapes) * steps


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_every_cpu_isa(dtype, cpu_isa):
    shapes = [(n,) for n in range(0, 70)] + [(1000,), (100003,)]
    test_reduced_precision_matches_formula(CONFIGS[3], dtype, "cpu", shapes, steps=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_lr_moves_every_element_by_exactly_lr(dtype, cpu_isa):
    """Without weight decay each element moves by lr against the sign of its first gradient (m starts at 0)."""
    params = [torch.zeros(n, dtype=dtype) for n in (1, 7, 64, 65, 1000)]
    grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(2)).to(dtype) for p in params]
    grads = [torch.where(g == 0, torch.ones_like(g), g) for g in grads]
    run(fused_optim.Lion(params, lr=0.25), params, [grads])
    for p, g in zip(params, grads):
        assert torch.equal(p, -0.25 * torch.sign(g))


def test_zero_c_gives_no_move(cpu_isa):
    """sign(0) = 0, as torch.sign: an exactly zero interpolation leaves the parameter where it is."""
    n = 77  # SIMD blocks and a tail
    params = [torch.linspace(-1, 1, n)]
    start = params[0].clone()
    opt = fused_optim.Lion(params, lr=0.1)
    run(opt, params, [[torch.zeros(n)]])  # m = 0 and g = 0: c = 0
    assert torch.equal(params[0], start)
    assert torch.equal(opt.state[params[0]]["exp_avg"], torch.zeros(n))

    # beta1 = 0.5, beta2 = 0: after a step with g, m = g; a step with -g has c = 0.5 * g - 0.5 * g = 0 exactly.
    params = [torch.linspace(-1, 1, n)]
    opt = fused_optim.Lion(params, lr=0.1, betas=(0.5, 0.0))
    g = torch.tensor([1.0, -0.25, 3.0, -2.0, 0.5]).repeat(16)[:n]
    run(opt, params, [[g]])
    after_one = params[0].clone()
    torch.testing.assert_close(after_one, start - 0.1 * torch.sign(g))
    run(opt, params, [[-g]])
    assert torch.equal(params[0], after_one)
    assert torch.equal(opt.state[params[0]]["exp_avg"], -g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_nan_gradient_propagates_like_torch_sign(dtype, cpu_isa):
    n = 100
    params = [torch.randn(n).to(dtype)]
    ref = params[0].clone()
    g = torch.randn(n).to(dtype)
    nan_at = [0, 5, 31, 64, 99]  # in SIMD blocks and in the tail
    g[nan_at] = float("nan")
    opt = fused_optim.Lion(params, lr=0.01)
    run(opt, params, [[g]])
    c = 0.1 * g.double()
    expected = (ref.double() - 0.01 * torch.sign(c)).to(dtype)
    assert torch.isnan(params[0][nan_at]).all()
    assert torch.isnan(opt.state[params[0]]["exp_avg"][nan_at]).all()
    finite = torch.ones(n, dtype=torch.bool)
    finite[nan_at] = False
    torch.testing.assert_close(params[0][finite], expected[finite])


# state_dict --------------------------------------------------------------------------------------------------------


def test_state_dict_roundtrip_continues_identically(device):
    start = make_params([(4, 5), (13,), (), (1000,)], torch.float32, device)
    grads = grad_stream(start, 10)
    config = dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)
    a = [p.clone() for p in start]
    opt = fused_optim.Lion(a, **config)
    run(opt, a, grads[:5])
    import io

    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    b = [p.clone() for p in a]
    opt2 = fused_optim.Lion(b, lr=0.5)  # the loaded param_groups replace these hyperparameters
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95)
    run(opt2, b, grads[5:])
    run(opt, a, grads[5:])
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    # and the uninterrupted run agrees with the formula
    ref = [p.clone() for p in start]
    state = [{} for _ in ref]
    for step_grads in grads:
        lion_reference_step(ref, step_grads, state, **hyper(config), near_zero=8 * torch.finfo(torch.float32).eps)
    compare(opt2, b, ref, state, 0.01, torch.float32)


def test_state_keys(device):
    p = make_params([(3,)], torch.float32, device)
    opt = fused_optim.Lion(p)
    assert opt.state_dict()["state"] == {}
    run(opt, p, grad_stream(p, 1))
    assert set(opt.state_dict()["state"][0]) == {"exp_avg"}
    assert opt.state_dict()["param_groups"][0] == {
        "lr": 1e-4,
        "betas": (0.9, 0.99),
        "weight_decay": 0.0,
        "maximize": False,
        "params": [0],
    }


def test_param_groups_with_different_hyperparameters(device):
    ours = make_params([(10,), (20, 3), (5,)], torch.float32, device)
    ref = [p.clone() for p in ours]
    configs = [{"lr": 0.01}, {"lr": 0.002, "weight_decay": 0.3, "betas": (0.5, 0.9)}, {"maximize": True}]
    opt = fused_optim.Lion([{"params": [p], **c} for p, c in zip(ours, configs)], lr=0.05)
    grads = grad_stream(ours, 6)
    run(opt, ours, grads)
    for i, c in enumerate(configs):
        h = hyper({"lr": 0.05, **c})
        state = [{}]
        for step_grads in grads:
            lion_reference_step([ref[i]], [step_grads[i]], state, **h, near_zero=1e-6)
        compare(opt, [ours[i]], [ref[i]], state, h["lr"], torch.float32)


def test_found_inf_skips_the_step(device):
    params = make_params([(10,), (3, 3), (100,)], torch.float32, device)
    opt = fused_optim.Lion(params, lr=0.1, weight_decay=0.1)
    run(opt, params, grad_stream(params, 2))
    after = [p.clone() for p in params]
    state_before = copy.deepcopy(opt.state_dict())
    opt.grad_scale = torch.tensor(1.0, device=device)
    opt.found_inf = torch.tensor(1.0, device=device)
    run(opt, params, grad_stream(params, 2, seed=9))
    for p, q in zip(params, after):
        assert torch.equal(p, q)
    for k, s in state_before["state"].items():
        assert torch.equal(opt.state_dict()["state"][k]["exp_avg"], s["exp_avg"])


def test_grad_scale_is_undone_in_kernel(device):
    """exp_avg stores unscaled gradients (the sign alone would not show a missing unscale)."""
    params = make_params([(100,), (7,)], torch.float32, device)
    ref = [p.clone() for p in params]
    grads = grad_stream(params, 4)
    opt = fused_optim.Lion(params, lr=0.01, weight_decay=0.1)
    opt.grad_scale = torch.tensor(1024.0, device=device)
    opt.found_inf = torch.tensor(0.0, device=device)
    run(opt, params, [[g * 1024.0 for g in gs] for gs in grads])
    state = [{} for _ in ref]
    for step_grads in grads:
        lion_reference_step(ref, step_grads, state, **hyper({"lr": 0.01, "weight_decay": 0.1}), near_zero=1e-6)
    compare(opt, params, ref, state, 0.01, torch.float32)


# Bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1e-4}, "Invalid learning rate"),
        ({"lr": float("nan")}, "Invalid learning rate"),
        ({"lr": torch.tensor([0.1, 0.2])}, "1-element"),
        ({"betas": (1.1, 0.99)}, "Invalid beta parameter at index 0"),
        ({"betas": (-0.1, 0.99)}, "Invalid beta parameter at index 0"),
        ({"betas": (0.9, 1.5)}, "Invalid beta parameter at index 1"),
        ({"weight_decay": -0.1}, "Invalid weight_decay value"),
    ],
    ids=str,
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fused_optim.Lion([torch.zeros(3)], **kwargs)


def test_betas_of_one_are_allowed():
    """beta1 = 1 moves by the sign of the momentum alone; beta2 = 1 freezes the momentum (closed interval)."""
    p = [torch.zeros(3)]
    opt = fused_optim.Lion(p, lr=0.1, betas=(1.0, 1.0))
    run(opt, p, [[torch.ones(3)]])
    assert torch.equal(p[0], torch.zeros(3))  # m = 0 and beta1 = 1: c = 0
    assert torch.equal(opt.state[p[0]]["exp_avg"], torch.zeros(3))


def lion_op_args(device="cpu", dtype=torch.float32):
    params = [torch.randn(n, device=device, dtype=dtype) for n in (3, 40, 0)]
    args = (params, [torch.randn_like(p) for p in params], [torch.randn_like(p) for p in params])
    kwargs = dict(lr=torch.tensor(0.1), beta1=0.9, beta2=0.99, weight_decay=0.01, maximize=False)
    return args, kwargs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(dtype, device):
    args, kwargs = lion_op_args(device, dtype)
    torch.library.opcheck(torch.ops.fused_optim.lion_, args, kwargs)
    kwargs.update(grad_scale=torch.tensor(2.0, device=device), found_inf=torch.tensor(0.0, device=device))
    torch.library.opcheck(torch.ops.fused_optim.lion_, args, kwargs)


def test_op_rejects_bad_arguments():
    op = torch.ops.fused_optim.lion_
    (params, grads, exp_avgs), kwargs = lion_op_args()
    with pytest.raises(RuntimeError, match="exp_avgs has 2 tensors but params has 3"):
        op(params, grads, exp_avgs[:2], **kwargs)
    with pytest.raises(RuntimeError, match=r"grads\[1\] has shape"):
        op(params, [grads[0], torch.zeros(41), grads[2]], exp_avgs, **kwargs)
    with pytest.raises(RuntimeError, match="lr must have one element"):
        op(params, grads, exp_avgs, **{**kwargs, "lr": torch.tensor([0.1, 0.2])})
    with pytest.raises(RuntimeError, match="beta"):
        op(params, grads, exp_avgs, **{**kwargs, "beta1": 1.5})


def test_a_tiny_beta2_keeps_its_precision(device, cpu_isa):
    """As LAMB's beta1 (test_lamb): the momentum's weight 1 - beta2 near 1 must not round its complement away."""
    p = torch.ones(100, device=device, requires_grad=True)
    opt = fused_optim.Lion([p], lr=0.1, betas=(0.9, 1e-7))
    for g in (3.0, -1e-9):
        p.grad = torch.full((100,), g, device=device)
        opt.step()
    expected = 1e-7 * (1 - 1e-7) * 3.0 + (1 - 1e-7) * -1e-9
    torch.testing.assert_close(opt.state[p]["exp_avg"], torch.full_like(p, expected), rtol=1e-6, atol=0)
