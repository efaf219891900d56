"""fused_optim.RMSprop against torch.optim.RMSprop (foreach=False) and against a float64 formula written here."""

from __future__ import annotations

import copy

import pytest
import torch

import fused_optim
from reference import TOL
from test_adam import SHAPES, grad_stream, make_params, run

CONFIGS = [
    {},
    {"momentum": 0.9},
    {"centered": True},
    {"centered": True, "momentum": 0.9, "weight_decay": 0.01},
    {"maximize": True},
    {"maximize": True, "weight_decay": 0.1, "momentum": 0.5},
    {"alpha": 0.9, "eps": 1e-6},
    {"alpha": 0.5, "eps": 1e-3, "lr": 0.05, "centered": True},
    {"lr": torch.tensor(0.02)},
]

# Reduced precision: computed in fp32 by the kernels, in float64 by the formula; a one-ulp rounding difference of an
# order-1 operand shows up as an absolute error (see test_sgd.py).
REDUCED_TOL = {torch.bfloat16: dict(rtol=1.6e-2, atol=8e-3), torch.float16: dict(rtol=2e-3, atol=1e-3)}


def hyper(config):
    """The config with torch.optim.RMSprop's defaults filled in (the formula's keyword arguments)."""
    h = dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False)
    h.update(config)
    h["lr"] = float(h["lr"])
    return h


def rmsprop_reference_step(params, grads, state, *, lr, alpha, eps, weight_decay, momentum, centered, maximize):
    """One RMSprop step (Hinton's lecture 6e, centered variant from Graves 2013, with torch.optim.RMSprop's
    weight decay, momentum and maximize), computed in float64 from the stored values and rounded once into each
    tensor's dtype. Within a step the new averages are used unrounded, as the kernels do."""
    for p, g, s in zip(params, grads, state):
        if g is None:
            continue
        if not s:
            s["step"] = 0
            s["square_avg"] = torch.zeros_like(p)
            if momentum > 0:
                s["momentum_buffer"] = torch.zeros_like(p)
            if centered:
                s["grad_avg"] = torch.zeros_like(p)
        s["step"] += 1
        p64 = p.double()
        d = g.double() * (-1.0 if maximize else 1.0)
        if weight_decay:
            d = d + weight_decay * p64
        sq = alpha * s["square_avg"].double() + (1 - alpha) * d * d
        s["square_avg"].copy_(sq)
        if centered:
            ga = alpha * s["grad_avg"].double() + (1 - alpha) * d
            s["grad_avg"].copy_(ga)
            avg = (sq - ga * ga).sqrt() + eps
        else:
            avg = sq.sqrt() + eps
        if momentum > 0:
            buf = momentum * s["momentum_buffer"].double() + d / avg
            s["momentum_buffer"].copy_(buf)
            p.copy_(p64 - lr * buf)
        else:
            p.copy_(p64 - lr * d / avg)


def assert_state_close(ours, ref, tol, key):
    """States that sum many terms (the momentum buffer) cancel to small values whose error is that of the terms:
    the absolute tolerance scales with the tensor's largest magnitude."""
    ours, ref = ours.cpu(), ref.cpu()
    scale = 1.0 + (ref.abs().max().item() if ref.numel() else 0.0)
    torch.testing.assert_close(ours, ref, rtol=tol["rtol"], atol=tol["atol"] * scale, msg=lambda m: f"{key}: {m}")


# Trajectories against torch.optim ----------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trajectory_matches_torch(config, dtype, device):
    ours = make_params(SHAPES, dtype, device)
    ref = [p.clone() for p in ours]
    grads = grad_stream(ours, 15, none_every=5)  # params without a grad get their state later
    opt = fused_optim.RMSprop(ours, **config)
    ref_opt = torch.optim.RMSprop(ref, foreach=False, **config)
    run(opt, ours, grads)
    run(ref_opt, ref, grads)
    if dtype == torch.float32:
        # RMSprop divides by sqrt(square_avg): where that is tiny, one fp32 rounding moves the result by far more
        # than an ulp, in torch.optim as in ours, differently. So in fp32 both are measured against the same run in
        # float64, and ours may not be more than a few times further from it than torch.optim is.
        exact = [p.double() for p in make_params(SHAPES, torch.float32, device)]
        run(torch.optim.RMSprop(exact, foreach=False, **config), exact, grads_as(grads, torch.float64))
        for p, q, e in zip(ours, ref, exact):
            torch_error = (q.double() - e).abs()
            assert ((p.double() - e).abs() <= 4 * torch_error + 2e-6 + 2e-5 * e.abs()).all()
        return
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, **TOL[dtype])
        for key, value in ref_opt.state[q].items():
            assert_state_close(opt.state[p][key], value, TOL[dtype], key)


def grads_as(grads, dtype):
    return [[None if g is None else g.to(dtype) for g in step] for step in grads]


def test_formula_matches_torch():
    """The float64 formula of this file against torch.optim itself, so the reduced-precision tests below compare
    with the right thing."""
    for config in CONFIGS:
        ours = make_params([(7,), (3, 5)], torch.float64, "cpu")
        ref = [p.clone() for p in ours]
        grads = grad_stream(ours, 6, none_every=4)
        state = [{} for _ in ours]
        for step_grads in grads:
            rmsprop_reference_step(ours, step_grads, state, **hyper(config))
        run(torch.optim.RMSprop(ref, foreach=False, **config), ref, grads)
        for p, q in zip(ours, ref):
            torch.testing.assert_close(p, q, **TOL[torch.float64])


# Reduced precision against the formula ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS[:8], ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_matches_formula(config, dtype, device, shapes=None, steps=8):
    shapes = shapes or [(n,) for n in (1, 31, 32, 33, 1000, 4099)]
    ours = make_params(shapes, dtype, device)
    ref = [p.clone() for p in ours]
    grads = grad_stream(ours, steps)
    opt = fused_optim.RMSprop(ours, **config)
    run(opt, ours, grads)
    state = [{} for _ in ref]
    for step_grads in grads:
        rmsprop_reference_step(ref, step_grads, state, **hyper(config))
    tol = REDUCED_TOL.get(dtype, TOL[dtype])
    for p, q, s in zip(ours, ref, state):
        torch.testing.assert_close(p, q, **tol)
        assert opt.state[p]["step"].item() == s["step"]
        for key in ("square_avg", "momentum_buffer", "grad_avg"):
            assert (key in opt.state[p]) == (key in s), key
            if key in s:
                assert_state_close(opt.state[p][key], s[key], tol, key)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_every_cpu_isa(dtype, cpu_isa):
    shapes = [(n,) for n in range(0, 70)] + [(1000,), (100003,)]
    for config in ({"centered": True, "momentum": 0.9, "weight_decay": 0.01}, {"maximize": True}):
        test_reduced_precision_matches_formula(config, dtype, "cpu", shapes, steps=4)


# state_dict --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [{}, {"momentum": 0.9}, {"centered": True, "momentum": 0.5}], ids=str)
def test_state_dict_moves_both_ways(config, device):
    start = make_params([(4, 5), (13,), ()], torch.float32, device)
    grads = grad_stream(start, 10)
    ours_cls, ref_cls = fused_optim.RMSprop, torch.optim.RMSprop
    for first_cls, second_cls in ((ours_cls, ref_cls), (ref_cls, ours_cls)):
        kw = lambda c: {"foreach": False} if c is ref_cls else {}  # noqa: E731
        a = [p.clone() for p in start]
        opt = first_cls(a, lr=0.01, **config, **kw(first_cls))
        run(opt, a, grads[:5])
        sd = copy.deepcopy(opt.state_dict())
        b = [p.clone() for p in a]
        opt2 = second_cls(b, lr=0.01, **config, **kw(second_cls))
        opt2.load_state_dict(sd)
        run(opt2, b, grads[5:])
        ref = [p.clone() for p in start]
        ref_opt = torch.optim.RMSprop(ref, lr=0.01, foreach=False, **config)
        run(ref_opt, ref, grads)
        for p, q in zip(b, ref):
            torch.testing.assert_close(p, q, **TOL[torch.float32])
        assert opt2.state[b[0]]["step"].item() == ref_opt.state[ref[0]]["step"].item() == 10
    ours_sd = ours_cls(start, lr=0.01, **config).state_dict()
    ref_sd = ref_cls(start, lr=0.01, **config).state_dict()
    assert ours_sd["param_groups"] == ref_sd["param_groups"]


@pytest.mark.parametrize("config", [{}, {"momentum": 0.9}, {"centered": True}, {"centered": True, "momentum": 0.1}])
def test_state_keys_match_torch(config, device):
    a, b = make_params([(3,)], torch.float32, device), make_params([(3,)], torch.float32, device)
    ours, ref = fused_optim.RMSprop(a, **config), torch.optim.RMSprop(b, foreach=False, **config)
    run(ours, a, grad_stream(a, 1))
    run(ref, b, grad_stream(b, 1))
    s_ours, s_ref = ours.state_dict()["state"][0], ref.state_dict()["state"][0]
    assert set(s_ours) == set(s_ref)
    for key in s_ref:
        assert s_ours[key].dtype == s_ref[key].dtype, key
    assert s_ours["step"].item() == 1.0


# Param groups, lr, GradScaler --------------------------------------------------------------------------------------


def test_param_groups_with_different_hyperparameters(device):
    ours_p = make_params([(10,), (20, 3), (5,), (40,)], torch.float32, device)
    ref_p = [p.clone() for p in ours_p]

    def groups(ps):
        return [
            {"params": ps[:1], "lr": torch.tensor(0.01), "centered": True},
            {"params": ps[1:2], "alpha": 0.9, "momentum": 0.8, "weight_decay": 0.1},
            {"params": ps[2:3], "eps": 1e-3, "maximize": True},
            {"params": ps[3:], "lr": 0.05, "centered": True, "momentum": 0.3, "alpha": 0.7},
        ]

    ours = fused_optim.RMSprop(groups(ours_p), lr=0.02)
    ref = torch.optim.RMSprop(groups(ref_p), lr=0.02, foreach=False)
    grads = grad_stream(ours_p, 10)
    for i, step_grads in enumerate(grads):
        if i == 5:  # a scheduler would change lr in place
            for opt in (ours, ref):
                opt.param_groups[0]["lr"].fill_(0.003)
                opt.param_groups[1]["lr"] = 0.2
        run(ours, ours_p, [step_grads])
        run(ref, ref_p, [step_grads])
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(p, q, **TOL[torch.float32])
    for g_ours, g_ref in zip(ours.state_dict()["param_groups"], ref.state_dict()["param_groups"]):
        assert {**g_ours, "foreach": False} == g_ref


def test_complex_params_like_torch(device):
    ours_p = [torch.randn(17, dtype=torch.complex64, device=device), torch.randn(3, 4, device=device)]
    ref_p = [p.clone() for p in ours_p]
    grads = [[torch.randn_like(p) for p in ours_p] for _ in range(5)]
    run(fused_optim.RMSprop(ours_p, lr=0.01, centered=True, momentum=0.5), ours_p, grads)
    run(torch.optim.RMSprop(ref_p, lr=0.01, centered=True, momentum=0.5, foreach=False), ref_p, grads)
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(p, q, **TOL[torch.float32])


@pytest.mark.parametrize("config", [{}, {"centered": True, "momentum": 0.9}], ids=str)
def test_found_inf_skips_the_step(config, device):
    params = make_params([(10,), (3, 3), (100,)], torch.float32, device)
    opt = fused_optim.RMSprop(params, lr=0.1, **config)
    run(opt, params, grad_stream(params, 2))
    after = [p.clone() for p in params]
    state_before = copy.deepcopy(opt.state_dict())
    opt.grad_scale = torch.tensor(1.0, device=device)
    opt.found_inf = torch.tensor(1.0, device=device)
    run(opt, params, grad_stream(params, 2, seed=9))
    for p, q in zip(params, after):
        assert torch.equal(p, q)
    state_after = opt.state_dict()["state"]
    for k, s in state_before["state"].items():
        assert set(s) == set(state_after[k])
        for key, value in s.items():
            assert torch.equal(state_after[k][key], value), key
    assert state_after[0]["step"].item() == 2.0


def test_found_inf_on_the_op_changes_nothing():
    params = [torch.randn(40), torch.randn(3)]
    lists = [[torch.rand_like(p) for p in params] for _ in range(3)]
    steps = [torch.tensor(4.0), torch.tensor(7.0)]
    before = [t.clone() for t in params + sum(lists, []) + steps]
    torch.ops.fused_optim.rmsprop_(
        params,
        [torch.randn_like(p) for p in params],
        *lists,
        steps,
        lr=torch.tensor(0.1),
        alpha=0.9,
        eps=1e-8,
        weight_decay=0.1,
        momentum=0.9,
        centered=True,
        maximize=False,
        found_inf=torch.ones(1),
    )
    for t, u in zip(params + sum(lists, []) + steps, before):
        assert torch.equal(t, u)


def test_grad_scale_is_undone_in_kernel(device):
    params = make_params([(100,), (7,)], torch.float32, device)
    ref = [p.clone() for p in params]
    grads = grad_stream(params, 5)
    scale = 1024.0
    config = dict(lr=0.01, weight_decay=0.1, eps=1e-2, momentum=0.5, centered=True)  # eps and decay see the scale
    opt = fused_optim.RMSprop(params, **config)
    opt.grad_scale = torch.tensor(scale, device=device)
    opt.found_inf = torch.tensor(0.0, device=device)
    run(opt, params, [[g * scale for g in gs] for gs in grads])
    run(torch.optim.RMSprop(ref, foreach=False, **config), ref, grads)
    for p, q in zip(params, ref):
        torch.testing.assert_close(p, q, **TOL[torch.float32])


# Bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": -0.1}, {"eps": -1e-8}, {"momentum": -0.5}, {"weight_decay": -1.0}, {"alpha": -0.9}],
    ids=str,
)
def test_bad_hyperparameters_like_torch(kwargs):
    with pytest.raises(ValueError) as ref_err:
        torch.optim.RMSprop([torch.zeros(2)], **kwargs)
    with pytest.raises(ValueError) as ours_err:
        fused_optim.RMSprop([torch.zeros(2)], **kwargs)
    assert str(ours_err.value) == str(ref_err.value)


def rmsprop_op_args(centered, momentum, device="cpu", dtype=torch.float32):
    params = [torch.randn(n, device=device, dtype=dtype) for n in (3, 40, 0)]
    args = (
        params,
        [torch.randn_like(p) for p in params],
        [torch.rand_like(p) for p in params],
        [torch.rand_like(p) * 0.1 for p in params] if centered else [],
        [torch.randn_like(p) for p in params] if momentum else [],
        [torch.tensor(float(i), device=device) for i in range(len(params))],
    )
    kwargs = dict(
        lr=torch.tensor(0.1),
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.01,
        momentum=momentum,
        centered=centered,
        maximize=False,
    )
    return args, kwargs


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_opcheck(centered, momentum, device):
    args, kwargs = rmsprop_op_args(centered, momentum, device)
    torch.library.opcheck(torch.ops.fused_optim.rmsprop_, args, kwargs)
    args, kwargs = rmsprop_op_args(centered, momentum, device, torch.bfloat16)
    kwargs.update(grad_scale=torch.tensor(2.0, device=device), found_inf=torch.tensor(0.0, device=device))
    torch.library.opcheck(torch.ops.fused_optim.rmsprop_, args, kwargs)


def test_op_advances_the_steps():
    args, kwargs = rmsprop_op_args(True, 0.9)
    torch.ops.fused_optim.rmsprop_(*args, **kwargs)
    assert [s.item() for s in args[5]] == [1.0, 2.0, 3.0]


def test_op_rejects_bad_arguments():
    op = torch.ops.fused_optim.rmsprop_
    args, kwargs = rmsprop_op_args(False, 0.0)
    params, grads, square_avgs, _, _, steps = args
    with pytest.raises(RuntimeError, match="square_avgs has 2 tensors but params has 3"):
        op(params, grads, square_avgs[:2], [], [], steps, **kwargs)
    with pytest.raises(RuntimeError, match="grads has 1 tensors but params has 3"):
        op(params, grads[:1], square_avgs, [], [], steps, **kwargs)
    with pytest.raises(RuntimeError, match="state_steps has 2 tensors but params has 3"):
        op(params, grads, square_avgs, [], [], steps[:2], **kwargs)
    with pytest.raises(RuntimeError, match="grad_avgs given but centered is false"):
        op(params, grads, square_avgs, [torch.zeros_like(p) for p in params], [], steps, **kwargs)
    with pytest.raises(RuntimeError, match="momentum_buffers given but momentum is 0"):
        op(params, grads, square_avgs, [], [torch.zeros_like(p) for p in params], steps, **kwargs)
    with pytest.raises(RuntimeError, match="grad_avgs has 0 tensors but params has 3"):
        op(params, grads, square_avgs, [], [], steps, **{**kwargs, "centered": True})
    with pytest.raises(RuntimeError, match=r"square_avgs\[1\] has shape"):
        op(params, grads, [square_avgs[0], torch.zeros(41), square_avgs[2]], [], [], steps, **kwargs)
    with pytest.raises(RuntimeError, match="alpha"):
        op(params, grads, square_avgs, [], [], steps, **{**kwargs, "alpha": -1.0})


def test_sparse_gradient_is_rejected():
    p = torch.zeros(4, 3)
    p.grad = torch.eye(4, 3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        fused_optim.RMSprop([p]).step()
