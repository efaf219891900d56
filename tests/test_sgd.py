"""fused_optim.SGD against torch.optim.SGD (foreach=False) and against the formula in reference.py."""

from __future__ import annotations

import copy

import pytest
import torch

import fused_optim
from reference import TOL, sgd_reference_step
from test_adam import SHAPES, grad_stream, make_params, run

CONFIGS = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
    {"momentum": 0.8, "nesterov": True},
    {"momentum": 0.9, "nesterov": True, "maximize": True, "weight_decay": 0.1},
    {"weight_decay": 0.05, "maximize": True, "lr": 0.2},
]


def full(config):
    return {"lr": 0.1, **config}


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trajectory_matches_torch(config, dtype, device):
    ours = make_params(SHAPES, dtype, device)
    ref = [p.clone() for p in ours]
    grads = grad_stream(ours, 15, none_every=5)  # params without a grad get their buffer later
    run(fused_optim.SGD(ours, **full(config)), ours, grads)
    run(torch.optim.SGD(ref, foreach=False, **full(config)), ref, grads)
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, **TOL[dtype])


@pytest.mark.parametrize("config", CONFIGS[1:5], ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_matches_formula(config, dtype, device):
    """bf16/fp16 params and buffers (torch 2.13's fused CPU SGD left the vectorized part of bf16 params unchanged:
    sizes here span many SIMD blocks)."""
    shapes = [(n,) for n in (1, 31, 32, 33, 1000, 4099)]
    ours = make_params(shapes, dtype, device)
    ref = [p.clone() for p in ours]
    grads = grad_stream(ours, 8)
    opt = fused_optim.SGD(ours, **full(config))
    run(opt, ours, grads)
    state = [{} for _ in ref]
    hyper = dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False)
    hyper.update(config)
    for step_grads in grads:
        sgd_reference_step(ref, step_grads, state, **hyper)
    # Momentum sums terms of order 1 into small results, so a one-ulp rounding difference of an order-1 operand
    # (fp32 then bf16 here, float64 then bf16 in the reference) shows up as an absolute, not relative, error.
    tol = {torch.bfloat16: dict(rtol=1.6e-2, atol=8e-3), torch.float16: dict(rtol=2e-3, atol=1e-3)}.get(
        dtype, TOL[dtype]
    )
    for p, q, s in zip(ours, ref, state):
        torch.testing.assert_close(p, q, **tol)
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], s["momentum_buffer"], **tol)


def test_every_cpu_isa(cpu_isa):
    for dtype in (torch.float32, torch.bfloat16):
        test_reduced_precision_matches_formula({"momentum": 0.9, "weight_decay": 0.01}, dtype, "cpu")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_state_dict_moves_both_ways(momentum, device):
    start = make_params([(4, 5), (13,), ()], torch.float32, device)
    grads = grad_stream(start, 10)
    for first_cls, second_cls in ((fused_optim.SGD, torch.optim.SGD), (torch.optim.SGD, fused_optim.SGD)):
        a = [p.clone() for p in start]
        opt = first_cls(a, lr=0.05, momentum=momentum)
        run(opt, a, grads[:5])
        sd = copy.deepcopy(opt.state_dict())
        b = [p.clone() for p in a]
        opt2 = second_cls(b, lr=0.05, momentum=momentum)
        opt2.load_state_dict(sd)
        run(opt2, b, grads[5:])
        ref = [p.clone() for p in start]
        run(torch.optim.SGD(ref, lr=0.05, momentum=momentum, foreach=False), ref, grads)
        for p, q in zip(b, ref):
            torch.testing.assert_close(p, q)
    ours_sd = fused_optim.SGD(start, lr=0.05, momentum=momentum).state_dict()
    ref_sd = torch.optim.SGD(start, lr=0.05, momentum=momentum).state_dict()
    assert ours_sd["param_groups"] == ref_sd["param_groups"]


def test_state_keys_match_torch(device):
    for momentum in (0.0, 0.5):
        a, b = make_params([(3,)], torch.float32, device), make_params([(3,)], torch.float32, device)
        ours, ref = fused_optim.SGD(a, momentum=momentum), torch.optim.SGD(b, momentum=momentum, foreach=False)
        run(ours, a, grad_stream(a, 1))
        run(ref, b, grad_stream(b, 1))
        assert set(ours.state_dict()["state"].get(0, {})) == set(ref.state_dict()["state"].get(0, {}))


def test_skipped_first_step_keeps_the_buffer_new(device):
    """A GradScaler-skipped first step must not count as the buffer's first gradient."""
    params = make_params([(6,)], torch.float32, device)
    ref = [p.clone() for p in params]
    opt = fused_optim.SGD(params, lr=0.1, momentum=0.9)
    opt.found_inf = torch.tensor(1.0, device=device)
    run(opt, params, grad_stream(params, 1, seed=7))
    del opt.found_inf
    grads = grad_stream(params, 3)
    run(opt, params, grads)
    run(torch.optim.SGD(ref, lr=0.1, momentum=0.9, foreach=False), ref, grads)
    torch.testing.assert_close(params[0], ref[0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -0.1}, "Invalid learning rate"),
        ({"momentum": -0.5}, "Invalid momentum value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
        ({"nesterov": True}, "Nesterov momentum requires"),
        ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "Nesterov momentum requires"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fused_optim.SGD([torch.zeros(2)], **kwargs)
    with pytest.raises(ValueError, match=message):
        torch.optim.SGD([torch.zeros(2)], **kwargs)


def test_article_gradient_descent_finds_the_minimum():
    """The source article's first example: minimize (x - 2)^2 with plain gradient descent and with momentum."""
    for kwargs in ({"lr": 0.01}, {"lr": 0.01, "momentum": 0.9}):
        theta = torch.zeros(1, requires_grad=True)
        opt = fused_optim.SGD([theta], **kwargs)
        for _ in range(1000):
            opt.zero_grad()
            ((theta - 2) ** 2).sum().backward()
            opt.step()
        assert abs(theta.item() - 2.0) < 1e-3


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_opcheck(momentum, device):
    params = [torch.randn(n, device=device) for n in (3, 40)]
    args = (params, [torch.randn_like(p) for p in params], [torch.randn_like(p) for p in params] if momentum else [])
    kwargs = dict(
        lr=torch.tensor(0.1),
        weight_decay=0.01,
        momentum=momentum,
        dampening=0.0,
        nesterov=False,
        maximize=False,
        is_first_step=False,
    )
    torch.library.opcheck(torch.ops.fused_optim.sgd_, args, kwargs)


def test_op_rejects_bad_arguments():
    p = [torch.zeros(3)]
    kwargs = dict(
        lr=torch.tensor(0.1),
        weight_decay=0.0,
        momentum=0.0,
        dampening=0.0,
        nesterov=False,
        maximize=False,
        is_first_step=False,
    )
    with pytest.raises(RuntimeError, match="momentum_buffers given but momentum is 0"):
        torch.ops.fused_optim.sgd_(p, [torch.zeros(3)], [torch.zeros(3)], **kwargs)
    with pytest.raises(RuntimeError, match="Nesterov momentum requires"):
        torch.ops.fused_optim.sgd_(p, [torch.zeros(3)], [], **{**kwargs, "nesterov": True})
    with pytest.raises(RuntimeError, match=r"grads\[0\] has shape"):
        torch.ops.fused_optim.sgd_(p, [torch.zeros(4)], [], **kwargs)


def test_first_momentum_step_reads_no_flag_on_the_host_without_dampening():
    """With dampening 0 the first step blends into the zero buffer, which equals torch's buf = grad, so a GradScaler
    step needs no host read of found_inf even on the first step; a skipped first step is then redone correctly."""
    from unittest import mock

    ours = make_params([(8,), (3,)], torch.float32, "cpu")
    ref = [p.clone() for p in ours]
    opt = fused_optim.SGD(ours, lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref, lr=0.1, momentum=0.9, foreach=False)
    grads = grad_stream(ours, 3)
    opt.grad_scale, opt.found_inf = torch.tensor(1.0), torch.tensor(1.0)  # the first step is skipped
    for p, g in zip(ours, grads[0]):
        p.grad = g.clone()
    with mock.patch.object(torch.Tensor, "item", side_effect=AssertionError("host read of a device flag")):
        opt.step()
    opt.found_inf = torch.tensor(0.0)
    run(opt, ours, grads[1:])
    run(ref_opt, ref, grads[1:])
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, **TOL[torch.float32])
