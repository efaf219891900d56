"""fused_optim.Adagrad against torch.optim.Adagrad (foreach=False) and against a float64 formula written here."""

from __future__ import annotations

import copy

import pytest
import torch

import fused_optim
from reference import TOL
from test_adam import SHAPES, grad_stream, make_params, run
from test_rmsprop import REDUCED_TOL, assert_state_close

CONFIGS = [
    {},
    {"lr_decay": 0.1},
    {"weight_decay": 0.1},
    {"initial_accumulator_value": 0.5},
    {"eps": 1e-3, "lr": 0.1},
    {"maximize": True, "weight_decay": 0.05},
    {"lr_decay": 0.05, "weight_decay": 0.01, "initial_accumulator_value": 0.1, "maximize": True, "lr": 0.05},
    # float64: torch.optim divides a float32 lr tensor by the decay in float32, which float64 params would see
    {"lr": torch.tensor(0.02, dtype=torch.float64), "lr_decay": 0.2},
]


def hyper(config):
    h = dict(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10, maximize=False)
    h.update(config)
    h["lr"] = float(h["lr"])
    return h


def adagrad_reference_step(
    params, grads, state, *, lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize
):
    """One Adagrad step (Duchi et al. 2011, with torch.optim.Adagrad's lr decay, weight decay and maximize),
    computed in float64 from the stored values and rounded once into each tensor's dtype."""
    for p, g, s in zip(params, grads, state):
        if not s:
            s["step"] = 0
            s["sum"] = torch.full_like(p, initial_accumulator_value)
        if g is None:
            continue
        s["step"] += 1
        p64 = p.double()
        d = g.double() * (-1.0 if maximize else 1.0)
        if weight_decay:
            d = d + weight_decay * p64
        clr = lr / (1 + (s["step"] - 1) * lr_decay)
        total = s["sum"].double() + d * d
        s["sum"].copy_(total)
        p.copy_(p64 - clr * d / (total.sqrt() + eps))


# Trajectories against torch.optim ----------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trajectory_matches_torch(config, dtype, device):
    ours = make_params(SHAPES, dtype, device)
    ref = [p.clone() for p in ours]
    grads = grad_stream(ours, 15, none_every=5)
    opt = fused_optim.Adagrad(ours, **config)
    ref_opt = torch.optim.Adagrad(ref, foreach=False, **config)
    run(opt, ours, grads)
    run(ref_opt, ref, grads)
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, **TOL[dtype])
        assert opt.state[p]["step"].item() == ref_opt.state[q]["step"].item()
        assert_state_close(opt.state[p]["sum"], ref_opt.state[q]["sum"], TOL[dtype], "sum")


def test_formula_matches_torch():
    for config in CONFIGS:
        ours = make_params([(7,), (3, 5)], torch.float64, "cpu")
        ref = [p.clone() for p in ours]
        grads = grad_stream(ours, 6, none_every=4)
        state = [{} for _ in ours]
        for step_grads in grads:
            adagrad_reference_step(ours, step_grads, state, **hyper(config))
        run(torch.optim.Adagrad(ref, foreach=False, **config), ref, grads)
        for p, q in zip(ours, ref):
            torch.testing.assert_close(p, q, **TOL[torch.float64])


# Reduced precision against the formula ----------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS[:7], ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_matches_formula(config, dtype, device, shapes=None, steps=8):
    shapes = shapes or [(n,) for n in (1, 31, 32, 33, 1000, 4099)]
    config = {"lr": 0.1, **config}  # a default lr moves bf16 params by less than an ulp: the test would see nothing
    ours = make_params(shapes, dtype, device)
    ref = [p.clone() for p in ours]
    grads = grad_stream(ours, steps, none_every=3)
    opt = fused_optim.Adagrad(ours, **config)
    run(opt, ours, grads)
    state = [{} for _ in ref]
    for step_grads in grads:
        adagrad_reference_step(ref, step_grads, state, **hyper(config))
    tol = REDUCED_TOL.get(dtype, TOL[dtype])
    for p, q, s in zip(ours, ref, state):
        torch.testing.assert_close(p, q, **tol)
        assert opt.state[p]["step"].item() == s["step"]
        assert_state_close(opt.state[p]["sum"], s["sum"], tol, "sum")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_every_cpu_isa(dtype, cpu_isa):
    shapes = [(n,) for n in range(0, 70)] + [(1000,), (100003,)]
    test_reduced_precision_matches_formula(CONFIGS[6], dtype, "cpu", shapes, steps=4)


# state_dict --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [{}, {"initial_accumulator_value": 0.3, "lr_decay": 0.1}], ids=str)
def test_state_is_created_in_init_like_torch(config, device):
    params = make_params([(4, 5), (13,), ()], torch.float32, device)
    ours = fused_optim.Adagrad(params, **config).state_dict()
    ref = torch.optim.Adagrad(params, **config).state_dict()
    assert ours["param_groups"] == ref["param_groups"]
    assert set(ours["state"]) == set(ref["state"]) == {0, 1, 2}
    for k, s in ref["state"].items():
        assert set(ours["state"][k]) == set(s) == {"step", "sum"}
        for key, value in s.items():
            assert ours["state"][k][key].dtype == value.dtype, key
            assert ours["state"][k][key].shape == value.shape, key
            assert torch.equal(ours["state"][k][key].cpu(), value.cpu()), key


def test_state_dict_moves_both_ways(device):
    start = make_params([(4, 5), (13,), ()], torch.float32, device)
    grads = grad_stream(start, 10, none_every=4)
    config = dict(lr=0.05, lr_decay=0.1, initial_accumulator_value=0.2)
    ours_cls, ref_cls = fused_optim.Adagrad, torch.optim.Adagrad
    for first_cls, second_cls in ((ours_cls, ref_cls), (ref_cls, ours_cls)):
        kw = lambda c: {"foreach": False} if c is ref_cls else {}  # noqa: E731
        a = [p.clone() for p in start]
        opt = first_cls(a, **config, **kw(first_cls))
        run(opt, a, grads[:5])
        sd = copy.deepcopy(opt.state_dict())
        b = [p.clone() for p in a]
        opt2 = second_cls(b, **config, **kw(second_cls))
        opt2.load_state_dict(sd)
        run(opt2, b, grads[5:])
        ref = [p.clone() for p in start]
        ref_opt = torch.optim.Adagrad(ref, foreach=False, **config)
        run(ref_opt, ref, grads)
        for p, q in zip(b, ref):
            torch.testing.assert_close(p, q, **TOL[torch.float32])
        for p, q in zip(b, ref):
            assert opt2.state[p]["step"].item() == ref_opt.state[q]["step"].item()


def test_state_keys_and_dtypes_after_a_step(device):
    a, b = make_params([(3,)], torch.float32, device), make_params([(3,)], torch.float32, device)
    ours, ref = fused_optim.Adagrad(a), torch.optim.Adagrad(b, foreach=False)
    run(ours, a, grad_stream(a, 1))
    run(ref, b, grad_stream(b, 1))
    s_ours, s_ref = ours.state_dict()["state"][0], ref.state_dict()["state"][0]
    assert set(s_ours) == set(s_ref)
    for key in s_ref:
        assert s_ours[key].dtype == s_ref[key].dtype, key
    assert s_ours["step"].item() == s_ref["step"].item() == 1.0


# Param groups, lr, GradScaler --------------------------------------------------------------------------------------


def test_param_groups_with_different_hyperparameters(device):
    ours_p = make_params([(10,), (20, 3), (5,), (40,)], torch.float32, device)
    ref_p = [p.clone() for p in ours_p]

    def groups(ps):
        return [
            {"params": ps[:1], "lr": torch.tensor(0.01), "lr_decay": 0.3},
            {"params": ps[1:2], "weight_decay": 0.1, "eps": 1e-3},
            {"params": ps[2:3], "maximize": True},
            {"params": ps[3:], "lr": 0.5, "lr_decay": 0.01, "weight_decay": 0.02},
        ]

    ours = fused_optim.Adagrad(groups(ours_p), lr=0.02, initial_accumulator_value=0.1)
    ref = torch.optim.Adagrad(groups(ref_p), lr=0.02, initial_accumulator_value=0.1, foreach=False)
    grads = grad_stream(ours_p, 10, none_every=3)
    for i, step_grads in enumerate(grads):
        if i == 5:
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
    config = dict(lr=0.1, initial_accumulator_value=0.5, weight_decay=0.1)
    run(fused_optim.Adagrad(ours_p, **config), ours_p, grads)
    run(torch.optim.Adagrad(ref_p, foreach=False, **config), ref_p, grads)
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(p, q, **TOL[torch.float32])


def test_found_inf_skips_the_step(device):
    params = make_params([(10,), (3, 3), (100,)], torch.float32, device)
    opt = fused_optim.Adagrad(params, lr=0.1, lr_decay=0.1)
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
        for key, value in s.items():
            assert torch.equal(state_after[k][key], value), key
    assert state_after[0]["step"].item() == 2.0


def test_found_inf_on_the_op_changes_nothing():
    params = [torch.randn(40), torch.randn(3)]
    sums = [torch.rand_like(p) for p in params]
    steps = [torch.tensor(4.0), torch.tensor(7.0)]
    before = [t.clone() for t in params + sums + steps]
    torch.ops.fused_optim.adagrad_(
        params,
        [torch.randn_like(p) for p in params],
        sums,
        steps,
        lr=torch.tensor(0.1),
        lr_decay=0.1,
        weight_decay=0.1,
        eps=1e-10,
        maximize=False,
        found_inf=torch.ones(1),
    )
    for t, u in zip(params + sums + steps, before):
        assert torch.equal(t, u)


def test_grad_scale_is_undone_in_kernel(device):
    params = make_params([(100,), (7,)], torch.float32, device)
    ref = [p.clone() for p in params]
    grads = grad_stream(params, 5)
    scale = 1024.0
    config = dict(lr=0.1, weight_decay=0.1, eps=1e-2, initial_accumulator_value=0.3)
    opt = fused_optim.Adagrad(params, **config)
    opt.grad_scale = torch.tensor(scale, device=device)
    opt.found_inf = torch.tensor(0.0, device=device)
    run(opt, params, [[g * scale for g in gs] for gs in grads])
    run(torch.optim.Adagrad(ref, foreach=False, **config), ref, grads)
    for p, q in zip(params, ref):
        torch.testing.assert_close(p, q, **TOL[torch.float32])


# Bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": -0.1}, {"lr_decay": -0.1}, {"weight_decay": -1.0}, {"initial_accumulator_value": -0.5}, {"eps": -1e-8}],
    ids=str,
)
def test_bad_hyperparameters_like_torch(kwargs):
    with pytest.raises(ValueError) as ref_err:
        torch.optim.Adagrad([torch.zeros(2)], **kwargs)
    with pytest.raises(ValueError) as ours_err:
        fused_optim.Adagrad([torch.zeros(2)], **kwargs)
    assert str(ours_err.value) == str(ref_err.value)


def test_sparse_gradient_is_rejected():
    p = torch.zeros(4, 3)
    before = p.clone()
    p.grad = torch.eye(4, 3).to_sparse()
    opt = fused_optim.Adagrad([p])
    with pytest.raises((RuntimeError, ValueError), match="sparse"):
        opt.step()
    assert torch.equal(p, before)


def adagrad_op_args(device="cpu", dtype=torch.float32):
    params = [torch.randn(n, device=device, dtype=dtype) for n in (3, 40, 0)]
    args = (
        params,
        [torch.randn_like(p) for p in params],
        [torch.rand_like(p) for p in params],
        [torch.tensor(float(i), device=device) for i in range(len(params))],
    )
    kwargs = dict(lr=torch.tensor(0.1), lr_decay=0.1, weight_decay=0.01, eps=1e-10, maximize=False)
    return args, kwargs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(dtype, device):
    args, kwargs = adagrad_op_args(device, dtype)
    torch.library.opcheck(torch.ops.fused_optim.adagrad_, args, kwargs)
    kwargs.update(grad_scale=torch.tensor(2.0, device=device), found_inf=torch.tensor(0.0, device=device))
    torch.library.opcheck(torch.ops.fused_optim.adagrad_, args, kwargs)


def test_op_uses_and_advances_the_steps():
    """lr decay follows the step counters passed in (each tensor its own)."""
    p = [torch.zeros(1), torch.zeros(1)]
    sums = [torch.zeros(1), torch.zeros(1)]
    steps = [torch.tensor(0.0), torch.tensor(9.0)]
    torch.ops.fused_optim.adagrad_(
        p, [torch.ones(1), torch.ones(1)], sums, steps, lr=torch.tensor(1.0), lr_decay=0.5, weight_decay=0.0,
        eps=0.0, maximize=False,
    )  # fmt: skip
    assert [s.item() for s in steps] == [1.0, 10.0]
    # step 1: clr = 1; step 10: clr = 1 / (1 + 9 * 0.5); the first update is grad / sqrt(grad^2) = 1
    torch.testing.assert_close(p[0], torch.tensor([-1.0]))
    torch.testing.assert_close(p[1], torch.tensor([-1.0 / 5.5]))


def test_op_rejects_bad_arguments():
    op = torch.ops.fused_optim.adagrad_
    (params, grads, sums, steps), kwargs = adagrad_op_args()
    with pytest.raises(RuntimeError, match="state_sums has 2 tensors but params has 3"):
        op(params, grads, sums[:2], steps, **kwargs)
    with pytest.raises(RuntimeError, match="grads has 4 tensors but params has 3"):
        op(params, grads + [torch.zeros(1)], sums, steps, **kwargs)
    with pytest.raises(RuntimeError, match="state_steps has 1 tensors but params has 3"):
        op(params, grads, sums, steps[:1], **kwargs)
    with pytest.raises(RuntimeError, match=r"state_sums\[0\] has shape"):
        op(params, grads, [torch.zeros(4), *sums[1:]], steps, **kwargs)
    with pytest.raises(RuntimeError, match=r"state_sums\[1\] has dtype"):
        op(params, grads, [sums[0], sums[1].double(), sums[2]], steps, **kwargs)
    with pytest.raises(RuntimeError, match="lr_decay"):
        op(params, grads, sums, steps, **{**kwargs, "lr_decay": -1.0})
