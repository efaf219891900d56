"""fused_optim.LAMB against a float64 reference written here from the paper (torch.optim has no LAMB), its two
operators, and sharded parameters across processes (process_group)."""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fused_optim
from reference import TOL
from test_adam import SHAPES, grad_stream, make_params, run

CONFIGS = [
    {},
    {"weight_decay": 0.0},
    {"maximize": True},
    {"bias_correction": False},
    {"bias_correction": False, "weight_decay": 0.1, "maximize": True},
    {"lr": 0.05, "betas": (0.8, 0.9), "eps": 1e-3, "weight_decay": 0.5},
    {"lr": torch.tensor(0.01)},
]


def hyper(config):
    h = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, bias_correction=True, maximize=False)
    h.update(config)
    h["lr"] = float(h["lr"])
    return h


def lamb_reference_step(params, grads, state, *, lr, betas, eps, weight_decay, bias_correction, maximize):
    """One LAMB step (You et al. 2019, "Large Batch Optimization for Deep Learning", Algorithm 2), per tensor, in
    float64, rounded once into each tensor's dtype:

        m = b1 * m + (1 - b1) * g,  v = b2 * v + (1 - b2) * g^2
        m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)    (m, v without bias correction)
        u = m_hat / (sqrt(v_hat) + eps) + wd * p
        ratio = ||p|| / ||u|| if both norms are > 0, else 1
        p = p - lr * ratio * u

    Returns the squared norms (||p||^2, ||u||^2) of each tensor that had a gradient; state["moved"] sums the
    magnitude of each element's moves."""
    beta1, beta2 = betas
    norms = []
    for p, g, s in zip(params, grads, state):
        if g is None:
            continue
        if not s:
            s["step"] = 0
            s["exp_avg"] = torch.zeros_like(p)
            s["exp_avg_sq"] = torch.zeros_like(p)
            s["moved"] = torch.zeros(p.shape, dtype=torch.float64, device=p.device)
        s["step"] += 1
        t = s["step"]
        p64 = p.double()
        g64 = g.double() * (-1.0 if maximize else 1.0)
        m = beta1 * s["exp_avg"].double() + (1 - beta1) * g64
        v = beta2 * s["exp_avg_sq"].double() + (1 - beta2) * g64 * g64
        s["exp_avg"].copy_(m)
        s["exp_avg_sq"].copy_(v)
        if bias_correction:
            m, v = m / (1 - beta1**t), v / (1 - beta2**t)
        u = m / (v.sqrt() + eps) + weight_decay * p64
        p_sq, u_sq = (p64 * p64).sum().item(), (u * u).sum().item()
        ratio = math.sqrt(p_sq / u_sq) if p_sq > 0 and u_sq > 0 else 1.0
        p.copy_(p64 - lr * ratio * u)
        s["moved"] = s.get("moved", 0) + (lr * ratio * u).abs()
        norms.append((p_sq, u_sq))
    return norms


def reference_run(start, grads, config):
    ref = [p.clone() for p in start]
    state = [{} for _ in ref]
    for step_grads in grads:
        lamb_reference_step(ref, step_grads, state, **hyper(config))
    return ref, state


# lamb_norms hands the squared norms over in float32 for all but float64 params, so the trust ratio is good to about
# 6e-8 relative: each step may differ by that fraction of its size.
RATIO_RTOL = 2e-7

# bf16/fp16 as in test_sgd.py's reduced-precision test: one-ulp rounding differences of order-1 operands show up as
# absolute errors.
REDUCED_TOL = {torch.bfloat16: dict(rtol=1.6e-2, atol=8e-3), torch.float16: dict(rtol=2e-3, atol=1e-3)}


def assert_params_close(p, q, moved, tol):
    allowed = tol["atol"] + tol["rtol"] * q.double().abs() + RATIO_RTOL * moved
    excess = (p.double() - q.double()).abs() - allowed
    if (excess > 0).any():
        i = int(excess.flatten().argmax())
        pytest.fail(
            f"{int((excess > 0).sum())} of {p.numel()} elements of a param of shape {tuple(p.shape)} differ; "
            f"worst at flat index {i}: ours {p.flatten()[i].item()}, reference {q.flatten()[i].item()}"
        )


def assert_matches(opt, ours, ref, state, dtype):
    tol = REDUCED_TOL.get(dtype, TOL[dtype])
    for p, q, s in zip(ours, ref, state):
        assert_params_close(p, q, s.get("moved", 0.0), tol)
        if s:
            assert opt.state[p]["step"].item() == s["step"]
            torch.testing.assert_close(opt.state[p]["exp_avg"], s["exp_avg"], **tol)
            torch.testing.assert_close(opt.state[p]["exp_avg_sq"], s["exp_avg_sq"], **tol)
        else:
            assert len(opt.state[p]) == 0


# Trajectories against the formula ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trajectory_matches_formula(config, dtype, device):
    ours = make_params(SHAPES, dtype, device)
    grads = grad_stream(ours, 10, none_every=4)
    ref, state = reference_run(ours, grads, config)
    opt = fused_optim.LAMB(ours, **config)
    run(opt, ours, grads)
    assert_matches(opt, ours, ref, state, dtype)


@pytest.mark.parametrize("config", CONFIGS[:6], ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_matches_formula(config, dtype, device, shapes=None, steps=8):
    shapes = shapes or [(n,) for n in (1, 31, 32, 33, 1000, 4099)] + [(5, 13)]
    config = {"lr": 0.05, **config}  # a default lr moves bf16 params by less than an ulp: the test would see nothing
    ours = make_params(shapes, dtype, device)
    grads = grad_stream(ours, steps)
    ref, state = reference_run(ours, grads, config)
    opt = fused_optim.LAMB(ours, **config)
    run(opt, ours, grads)
    assert_matches(opt, ours, ref, state, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_every_cpu_isa(dtype, cpu_isa):
    shapes = [(n,) for n in range(0, 70)] + [(1000,), (100003,)]
    test_reduced_precision_matches_formula(CONFIGS[5], dtype, "cpu", shapes, steps=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_big_tensor_split_across_threads(dtype, device):
    """300_000 elements: the CPU engine cuts the tensor into one range per thread; the norm is of the whole."""
    ours = make_params([(300_000,), (100, 30)], dtype, device)
    grads = grad_stream(ours, 3)
    config = {"lr": 0.02, "weight_decay": 0.1}
    ref, state = reference_run(ours, grads, config)
    opt = fused_optim.LAMB(ours, **config)
    run(opt, ours, grads)
    assert_matches(opt, ours, ref, state, dtype)


def test_zero_initialised_param_has_ratio_one(device):
    ours = [torch.zeros(50, device=device), torch.zeros(3, 4, device=device)]
    grads = grad_stream(ours, 3)
    ref, state = reference_run(ours, grads, {})
    opt = fused_optim.LAMB(ours)
    run(opt, ours, grads[:1])
    # step 1 from 0: u = g / (|g| + eps) (bias-corrected), the ratio is 1, so p = -lr * g / (|g| + eps)
    for p, g in zip(ours, grads[0]):
        torch.testing.assert_close(p, -1e-3 * g / (g.abs() + 1e-6))
    run(opt, ours, grads[1:])
    assert_matches(opt, ours, ref, state, torch.float32)


def test_zero_update_has_ratio_one_and_decay_alone_scales_by_lr(device):
    p = make_params([(40,), (6, 7)], torch.float32, device)
    start = [t.clone() for t in p]
    zeros = [[torch.zeros_like(t) for t in p]]
    run(fused_optim.LAMB(p, lr=0.1, weight_decay=0.0), p, zeros)  # ||u|| = 0: ratio 1, and u = 0
    for t, s in zip(p, start):
        assert torch.equal(t, s)
    run(fused_optim.LAMB(p, lr=0.1, weight_decay=0.3), p, zeros)  # u = wd * p: ratio 1 / wd, p *= 1 - lr
    for t, s in zip(p, start):
        torch.testing.assert_close(t, s * 0.9)


# The operators ---------------------------------------------------------------------------------------------------


def lamb_op_args(shapes=((3,), (40,), (0,), (300_000,)), device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in shapes]
    grads = [torch.randn(p.shape, generator=g).to(device=device, dtype=dtype) for p in params]
    exp_avgs = [(torch.randn(p.shape, generator=g) * 0.1).to(device=device, dtype=dtype) for p in params]
    exp_avg_sqs = [(torch.rand(p.shape, generator=g) * 0.01).to(device=device, dtype=dtype) for p in params]
    steps = [torch.tensor(float(i + 2), device=device) for i in range(len(params))]
    hyper_args = dict(beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.01, bias_correction=True)
    return params, grads, exp_avgs, exp_avg_sqs, steps, hyper_args


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_lamb_norms_then_lamb_is_one_step(maximize, dtype, device):
    """lamb_norms changes nothing and returns the reference's squared norms; lamb_ with them finishes the step."""
    params, grads, m, v, steps, h = lamb_op_args(device=device, dtype=dtype)
    state = [{"step": int(s.item()), "exp_avg": a.clone(), "exp_avg_sq": b.clone()} for s, a, b in zip(steps, m, v)]
    ref = [p.clone() for p in params]
    expected = lamb_reference_step(
        ref,
        grads,
        state,
        lr=0.01,
        betas=(h["beta1"], h["beta2"]),
        eps=h["eps"],
        weight_decay=h["weight_decay"],
        bias_correction=h["bias_correction"],
        maximize=maximize,
    )
    inputs = [[t.clone() for t in lst] for lst in (params, m, v, steps)]
    sq_norms = torch.ops.fused_optim.lamb_norms(params, grads, m, v, steps, maximize=maximize, **h)
    assert sq_norms.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert sq_norms.shape == (len(params), 2)
    assert sq_norms.device == params[0].device
    rtol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(dtype, 1e-5)
    torch.testing.assert_close(sq_norms.cpu().double(), torch.tensor(expected, dtype=torch.float64), rtol=rtol, atol=0)
    for lst, before in zip((params, m, v, steps), inputs):  # the first pass stores nothing
        for t, b in zip(lst, before):
            assert torch.equal(t, b)

    torch.ops.fused_optim.lamb_(params, grads, m, v, steps, sq_norms, lr=torch.tensor(0.01), maximize=maximize, **h)
    tol = REDUCED_TOL.get(dtype, TOL[dtype])
    for p, q, s in zip(params, ref, state):
        assert_params_close(p, q, s["moved"], tol)
    for a, b, s in zip(m, v, state):
        torch.testing.assert_close(a, s["exp_avg"], **tol)
        torch.testing.assert_close(b, s["exp_avg_sq"], **tol)
    assert [s.item() for s in steps] == [3.0, 4.0, 5.0, 6.0]


def test_fp16_moments_that_underflow_do_not_change_the_direction():
    """A first-step gradient of 6e-4 makes exp_avg_sq = 0.001 * g^2, below fp16's range. Both passes must use the
    direction computed in fp32 (about -1 here), not one recomputed from the stored zero (which was m / eps)."""
    p = torch.full((32,), -2.0, dtype=torch.float16)
    opt = fused_optim.LAMB([p], lr=1e-3, weight_decay=0.0)
    p.grad = torch.full((32,), -6.2e-4, dtype=torch.float16)
    opt.step()
    assert opt.state[p]["exp_avg_sq"].eq(0).all()  # the premise: the stored moment underflowed
    torch.testing.assert_close(p, torch.full((32,), -2.0 + 1e-3 * 2.0, dtype=torch.float16))  # ratio ||p||/||u||=2


def test_lamb_uses_the_given_norms():
    """The trust ratio comes from sq_norms (all-reduced by the caller), not from the local tensors."""
    params, grads, m, v, steps, h = lamb_op_args(shapes=((64,),))
    sq_norms = torch.ops.fused_optim.lamb_norms(params, grads, m, v, steps, maximize=False, **h)
    start = [[t.clone() for t in lst] for lst in (params, m, v, steps)]
    scaled = sq_norms.clone()
    scaled[0, 0] *= 4.0  # twice the parameter norm: twice the ratio
    torch.ops.fused_optim.lamb_(params, grads, m, v, steps, scaled, lr=torch.tensor(0.01), maximize=False, **h)
    moved_twice = start[0][0] - params[0]
    for lst, before in zip((params, m, v, steps), start):
        for t, b in zip(lst, before):
            t.copy_(b)
    torch.ops.fused_optim.lamb_(params, grads, m, v, steps, sq_norms, lr=torch.tensor(0.01), maximize=False, **h)
    torch.testing.assert_close(moved_twice, 2 * (start[0][0] - params[0]))


def test_lamb_rejects_a_wrong_sq_norms():
    params, grads, m, v, steps, h = lamb_op_args()
    n = len(params)
    good = torch.ops.fused_optim.lamb_norms(params, grads, m, v, steps, maximize=False, **h)
    lr = torch.tensor(0.01)
    before = [p.clone() for p in params]
    for bad in (torch.zeros(n), torch.zeros(n + 1, 2), torch.zeros(n, 3), good.double(), torch.zeros(2, n).t()):
        with pytest.raises(RuntimeError, match=r"sq_norms must be a contiguous Float tensor of shape \(4, 2\)"):
            torch.ops.fused_optim.lamb_(params, grads, m, v, steps, bad, lr=lr, maximize=False, **h)
    for p, q in zip(params, before):
        assert torch.equal(p, q)


def test_ops_reject_bad_arguments():
    params, grads, m, v, steps, h = lamb_op_args()
    with pytest.raises(RuntimeError, match="exp_avgs has 3 tensors but params has 4"):
        torch.ops.fused_optim.lamb_norms(params, grads, m[:3], v, steps, maximize=False, **h)
    with pytest.raises(RuntimeError, match="state_steps has 3 tensors but params has 4"):
        torch.ops.fused_optim.lamb_norms(params, grads, m, v, steps[:3], maximize=False, **h)
    with pytest.raises(RuntimeError, match="beta2"):
        torch.ops.fused_optim.lamb_norms(params, grads, m, v, steps, maximize=False, **{**h, "beta2": 1.0})
    sq = torch.zeros(4, 2)
    with pytest.raises(RuntimeError, match="exp_avg_sqs has 2 tensors but params has 4"):
        torch.ops.fused_optim.lamb_(params, grads, m, v[:2], steps, sq, lr=torch.tensor(0.1), maximize=False, **h)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck(dtype, device):
    params, grads, m, v, steps, h = lamb_op_args(shapes=((3,), (40,), (0,)), device=device, dtype=dtype)
    lists = (params, grads, m, v, steps)
    torch.library.opcheck(torch.ops.fused_optim.lamb_norms, lists, dict(maximize=False, **h))
    torch.library.opcheck(
        torch.ops.fused_optim.lamb_norms, lists, dict(maximize=True, grad_scale=torch.tensor(2.0, device=device), **h)
    )
    sq_norms = torch.rand(len(params), 2, device=device)
    scaler = dict(grad_scale=torch.tensor(2.0, device=device), found_inf=torch.tensor(0.0, device=device))
    torch.library.opcheck(
        torch.ops.fused_optim.lamb_, (*lists, sq_norms), dict(lr=torch.tensor(0.01), maximize=False, **h, **scaler)
    )


# state_dict, groups, GradScaler, bad input -----------------------------------------------------------------------


def test_state_dict_roundtrip_continues_identically(device):
    start = make_params([(4, 5), (13,), (), (1000,)], torch.float32, device)
    grads = grad_stream(start, 10)
    config = dict(lr=0.01, betas=(0.8, 0.95), weight_decay=0.1, bias_correction=False)
    a = [p.clone() for p in start]
    opt = fused_optim.LAMB(a, **config)
    run(opt, a, grads[:5])
    sd = copy.deepcopy(opt.state_dict())
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert sd["state"][0]["step"].dtype == torch.float32
    b = [p.clone() for p in a]
    opt2 = fused_optim.LAMB(b, lr=0.5)
    opt2.load_state_dict(sd)
    run(opt2, b, grads[5:])
    run(opt, a, grads[5:])
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    ref, state = reference_run(start, grads, config)
    assert_matches(opt2, b, ref, state, torch.float32)


def test_defaults():
    group = fused_optim.LAMB([torch.zeros(2)]).param_groups[0]
    assert {k: group[k] for k in ("lr", "betas", "eps", "weight_decay", "bias_correction", "maximize")} == dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, bias_correction=True, maximize=False
    )


def test_param_groups_with_different_hyperparameters(device):
    ours = make_params([(10,), (20, 3), (5,)], torch.float32, device)
    configs = [{"lr": torch.tensor(0.01)}, {"betas": (0.5, 0.9), "weight_decay": 0.0}, {"bias_correction": False}]
    opt = fused_optim.LAMB([{"params": [p], **c} for p, c in zip(ours, configs)], lr=0.05)
    grads = grad_stream(ours, 6)
    refs, states = [], []
    for i, c in enumerate(configs):  # each group on its own: the trust ratio is per tensor
        ref, state = reference_run([ours[i]], [[g[i]] for g in grads], {"lr": 0.05, **c})
        refs += ref
        states += state
    run(opt, ours, grads)
    assert_matches(opt, ours, refs, states, torch.float32)


def test_found_inf_skips_the_step(device):
    params = make_params([(10,), (3, 3), (100,)], torch.float32, device)
    opt = fused_optim.LAMB(params, lr=0.1)
    run(opt, params, grad_stream(params, 2))
    after = [p.clone() for p in params]
    state_before = copy.deepcopy(opt.state_dict())
    opt.grad_scale = torch.tensor(1.0, device=device)
    opt.found_inf = torch.tensor(1.0, device=device)
    run(opt, params, grad_stream(params, 2, seed=9))
    for p, q in zip(params, after):
        assert torch.equal(p, q)
    for k, s in state_before["state"].items():
        for key, value in s.items():
            assert torch.equal(opt.state_dict()["state"][k][key], value), key
    assert opt.state[params[0]]["step"].item() == 2.0


def test_grad_scale_is_undone_in_kernel(device):
    params = make_params([(100,), (7,)], torch.float32, device)
    grads = grad_stream(params, 4)
    ref, state = reference_run(params, grads, {"lr": 0.01, "eps": 1e-2})
    opt = fused_optim.LAMB(params, lr=0.01, eps=1e-2)
    opt.grad_scale = torch.tensor(1024.0, device=device)
    opt.found_inf = torch.tensor(0.0, device=device)
    run(opt, params, [[g * 1024.0 for g in gs] for gs in grads])
    assert_matches(opt, params, ref, state, torch.float32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1e-3}, "Invalid learning rate"),
        ({"lr": torch.tensor([0.1, 0.2])}, "1-element"),
        ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0"),
        ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1"),
        ({"eps": -1e-6}, "Invalid epsilon value"),
        ({"weight_decay": -0.01}, "Invalid weight_decay value"),
    ],
    ids=str,
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fused_optim.LAMB([torch.zeros(3)], **kwargs)


def test_deepcopy_drops_the_process_group():
    import threading

    p = [torch.randn(5)]
    opt = fused_optim.LAMB(p, process_group=threading.Lock())  # stands in for an unpicklable process group
    assert "process_group" not in opt.state_dict()["param_groups"][0]
    opt.process_group = None  # a single process: nothing to all-reduce
    run(opt, p, grad_stream(p, 1))
    opt.process_group = threading.Lock()
    clone = copy.deepcopy(opt)
    assert clone.process_group is None
    assert clone.state[clone.param_groups[0]["params"][0]]["step"].item() == 1.0


# process_group: sharded parameters across two processes ----------------------------------------------------------

DIST_SHAPES = [(10, 3), (7,), (64, 5), (33, 2), (4,)]
DIST_CONFIG = {"lr": 0.02, "weight_decay": 0.1}
DIST_STEPS = 4


def shard(tensors, rank, world_size):
    return [t.chunk(world_size, dim=0)[rank].clone() for t in tensors]


def _dist_worker(rank, world_size, init_file, out_dir, max_grad_norm=None):
    """One rank: its half of each tensor (and of each gradient), LAMB over the default group."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        full = make_params(DIST_SHAPES, torch.float32, "cpu")
        grads = grad_stream(full, DIST_STEPS)
        params = shard(full, rank, world_size)
        opt = fused_optim.LAMB(params, process_group=dist.group.WORLD, max_grad_norm=max_grad_norm, **DIST_CONFIG)
        run(opt, params, [shard(g, rank, world_size) for g in grads])
        torch.save(params, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Skip the interpreter's teardown: on this 2-core machine gloo's threads sometimes abort the exiting process
    # ("terminate called without an active exception"), with or without fused_optim, after the results are saved.
    os._exit(0)


@pytest.mark.parametrize("max_grad_norm", [None, 0.5])
def test_process_group_sharded_matches_single_process(tmp_path, max_grad_norm):
    """The trust ratios' norms and, with max_grad_norm, the clipping norm are those of the whole tensors."""
    world_size = 2
    args = (world_size, str(tmp_path / "init"), str(tmp_path), max_grad_norm)
    mp.spawn(_dist_worker, args=args, nprocs=world_size, join=True)
    shards = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    gathered = [torch.cat(pieces, dim=0) for pieces in zip(*shards)]

    full = make_params(DIST_SHAPES, torch.float32, "cpu")
    grads = grad_stream(full, DIST_STEPS)
    single = [p.clone() for p in full]
    run(fused_optim.LAMB(single, max_grad_norm=max_grad_norm, **DIST_CONFIG), single, grads)
    for p, q in zip(gathered, single):
        torch.testing.assert_close(p, q, **TOL[torch.float32])
    if max_grad_norm is not None:
        return
    ref, _ = reference_run(full, grads, DIST_CONFIG)
    for p, r in zip(gathered, ref):
        torch.testing.assert_close(p, r, **TOL[torch.float32])

    # without the all-reduce each half would use its own norms: the comparison above can tell
    alone = []
    for rank in range(world_size):
        params = shard(full, rank, world_size)
        run(fused_optim.LAMB(params, **DIST_CONFIG), params, [shard(g, rank, world_size) for g in grads])
        alone.append(params)
    unreduced = [torch.cat(pieces, dim=0) for pieces in zip(*alone)]
    assert any(not torch.allclose(p, q, **TOL[torch.float32]) for p, q in zip(unreduced, single))


def test_a_tiny_beta1_keeps_its_precision(device, cpu_isa):
    """1 - beta1 rounds to float32 near 1, and the complement torch.lerp would take of it (1.19e-7 for 1e-7) is 19 %
    off: LAMB has no torch.optim to round like, so its moving average follows the formula to float32 rounding."""
    g1 = torch.full((100,), 3.0, device=device)
    g2 = torch.full((100,), -1e-9, device=device)
    p = torch.ones(100, device=device, requires_grad=True)
    opt = fused_optim.LAMB([p], lr=0.1, betas=(1e-7, 0.0), bias_correction=False)
    for g in (g1, g2):
        p.grad = g
        opt.step()
    expected = 1e-7 * (1 - 1e-7) * 3.0 + (1 - 1e-7) * -1e-9  # about 2.99e-7
    torch.testing.assert_close(opt.state[p]["exp_avg"], torch.full_like(p, expected), rtol=1e-6, atol=0)
