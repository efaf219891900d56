"""Mixed precision for every optimizer: float32 and split master weights, bf16 optimizer state, gradients of
another dtype than the params, state_dict round trips that keep those dtypes, and the GradScaler protocol.

The references are the same fused optimizer run in float32 (a master must follow exactly the float32
trajectory), torch.optim's float32 classes (foreach=False) and the float64 formulas in reference.py.
"""

from __future__ import annotations

import io

import pytest
import torch

import fused_optim
from reference import TOL, adam_reference_step, sgd_reference_step
from test_adam import grad_stream, make_params

# Odd sizes: whole SIMD blocks (16/32/64 elements) plus scalar tails, ~1900 elements in all.
SHAPES = [(7,), (33,), (5, 13), (257,), (31, 17), (1031,)]
STEPS = 12

# name -> (fused class, hyperparameters, torch.optim class or None). Every option that adds a state tensor is on.
OPTIMIZERS = {
    "SGD": (fused_optim.SGD, dict(lr=1e-2, momentum=0.9, dampening=0.1, weight_decay=0.01), torch.optim.SGD),
    "RMSprop": (
        fused_optim.RMSprop,
        dict(lr=1e-2, momentum=0.5, centered=True, weight_decay=0.01),
        torch.optim.RMSprop,
    ),
    "Adagrad": (
        fused_optim.Adagrad,
        dict(lr=1e-2, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
        torch.optim.Adagrad,
    ),
    "Adam": (fused_optim.Adam, dict(lr=1e-2, weight_decay=0.01, amsgrad=True), torch.optim.Adam),
    "AdamW": (fused_optim.AdamW, dict(lr=1e-2, weight_decay=0.1), torch.optim.AdamW),
    "Lion": (fused_optim.Lion, dict(lr=1e-3, weight_decay=0.1), None),
    "LAMB": (fused_optim.LAMB, dict(lr=1e-2, weight_decay=0.01), None),
}
WITH_TORCH = [name for name, (_, _, ref) in OPTIMIZERS.items() if ref is not None]

# A master must be the float32 trajectory: the same fp32 arithmetic on the same values.
MASTER_TOL = dict(rtol=1e-6, atol=1e-7)


# Helpers -----------------------------------------------------------------------------------------------------------


def make(name, params, **options):
    cls, hyper, _ = OPTIMIZERS[name]
    return cls(params, **hyper, **options)


def make_torch(name, params):
    _, hyper, ref_cls = OPTIMIZERS[name]
    return ref_cls(params, foreach=False, **hyper)


def set_grads(params, grads):
    """p.grad = g, also where g has another dtype (torch >= 2.10 refuses that unless p.grad_dtype is None)."""
    for p, g in zip(params, grads):
        if g is not None and g.dtype != p.dtype:
            p.grad_dtype = None
        p.grad = None if g is None else g.clone()


def step(opt, params, grads, dtype=None):
    set_grads(params, grads if dtype is None else [g.to(dtype) for g in grads])
    opt.step()


def run(opt, params, grads_per_step, dtype=None):
    for grads in grads_per_step:
        step(opt, params, grads, dtype)


def fp32_copies(params):
    return [p.detach().float().clone() for p in params]


def joined_master(param, low_bits):
    """The float32 master of a split pair: the bf16 param is its high half, the int16 tensor its low half."""
    return ((param.view(torch.int16).int() << 16) | (low_bits.int() & 0xFFFF)).view(torch.float32)


def truncated(master):
    """The bf16 whose bits are the high half of each float32 (truncation, not rounding)."""
    return (master.view(torch.int32) >> 16).to(torch.int16).view(torch.bfloat16)


def master_of(opt, p):
    state = opt.state[p]
    if "master_low_bits" in state:
        return joined_master(p, state["master_low_bits"])
    return state["master_param"]


def moments(opt, p):
    """The optimizer's moment/buffer tensors of p (every floating-point state tensor but step and the master)."""
    return {
        k: v
        for k, v in opt.state[p].items()
        if k not in ("step", "master_param", "master_low_bits") and isinstance(v, torch.Tensor) and v.numel() > 1
    }


def snapshot(opt, params):
    return [p.detach().clone() for p in params], [
        {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()} for p in params
    ]


def assert_same_state(opt, params, snap):
    saved_params, saved_state = snap
    for i, (p, q) in enumerate(zip(params, saved_params)):
        assert torch.equal(p, q), f"param {i} changed"
        state = opt.state[p]
        assert set(state) == set(saved_state[i]), f"param {i}: state keys {set(state)} != {set(saved_state[i])}"
        for k, v in saved_state[i].items():
            assert state[k].dtype == v.dtype, f"param {i}: {k} changed dtype"
            assert torch.equal(state[k], v), f"param {i}: {k} changed"


def assert_states_equal(opt_a, params_a, opt_b, params_b):
    """Same params and the same state tensors, bit for bit."""
    for i, (p, q) in enumerate(zip(params_a, params_b)):
        assert torch.equal(p, q), f"param {i} differs"
        sa, sb = opt_a.state[p], opt_b.state[q]
        assert set(sa) == set(sb)
        for k in sa:
            assert sa[k].dtype == sb[k].dtype, f"param {i}: {k} is {sa[k].dtype} vs {sb[k].dtype}"
            assert torch.equal(sa[k], sb[k]), f"param {i}: {k} differs"


# 1. float32 masters of bf16 params ------------------------------------------------------------------------------


@pytest.mark.parametrize("grad_dtype", [torch.bfloat16, torch.float32], ids=["bf16_grads", "fp32_grads"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_master_follows_the_fp32_trajectory(name, grad_dtype, device):
    params = make_params(SHAPES, torch.bfloat16, device)
    ref = fp32_copies(params)  # the same (bf16-rounded) start in float32
    grads = grad_stream(params, STEPS)  # bf16 values: exact in every grad dtype
    opt = make(name, params, master_weights=True)
    ref_opt = make(name, ref)
    for step_grads in grads:
        step(opt, params, step_grads, grad_dtype)
        step(ref_opt, ref, step_grads, torch.float32)
        for i, (p, r) in enumerate(zip(params, ref)):
            master = opt.state[p]["master_param"]
            assert master.dtype == torch.float32 and "master_low_bits" not in opt.state[p]
            torch.testing.assert_close(master, r, **MASTER_TOL, msg=lambda m, i=i: f"master {i}: {m}")
            # the param is the master rounded to nearest even, at every step
            assert torch.equal(p, master.bfloat16()), f"param {i} is not master.bfloat16()"
    for p, r in zip(params, ref):
        ours, theirs = moments(opt, p), moments(ref_opt, r)
        assert set(ours) == set(theirs) and ours
        for k in ours:
            assert ours[k].dtype == torch.float32, f"{k} is {ours[k].dtype}: state of mastered params is float32"
            torch.testing.assert_close(ours[k], theirs[k], **MASTER_TOL)
        if "step" in opt.state[p]:
            assert opt.state[p]["step"].item() == STEPS


@pytest.mark.parametrize("name", WITH_TORCH)
def test_master_matches_torch_fp32(name, device):
    params = make_params(SHAPES, torch.bfloat16, device)
    ref = fp32_copies(params)
    grads = grad_stream(params, STEPS)
    opt = make(name, params, master_weights=True)
    run(opt, params, grads)
    run(make_torch(name, ref), ref, grads, torch.float32)
    for p, r in zip(params, ref):
        torch.testing.assert_close(opt.state[p]["master_param"], r, **TOL[torch.float32])


# 2. split masters: lossless ---------------------------------------------------------------------------------------


def check_split_master(name, grad_dtype, device, shapes=SHAPES, steps=STEPS):
    params = make_params(shapes, torch.bfloat16, device)
    ref = fp32_copies(params)
    grads = grad_stream(params, steps)
    opt = make(name, params, master_weights="split")
    ref_opt = make(name, ref)
    for step_grads in grads:
        step(opt, params, step_grads, grad_dtype)
        step(ref_opt, ref, step_grads, torch.float32)
        for i, (p, r) in enumerate(zip(params, ref)):
            low = opt.state[p]["master_low_bits"]
            assert low.dtype == torch.int16 and low.shape == p.shape and "master_param" not in opt.state[p]
            master = joined_master(p, low)
            # bit-exact: the split master loses nothing against a float32 param
            assert torch.equal(master, r), f"{name} param {i}: max |diff| {(master - r).abs().max().item()}"
            assert torch.equal(p.view(torch.int16), truncated(master).view(torch.int16))
    for p, r in zip(params, ref):
        ours, theirs = moments(opt, p), moments(ref_opt, r)
        for k in ours:
            assert ours[k].dtype == torch.float32
            assert torch.equal(ours[k], theirs[k]), k


@pytest.mark.parametrize("grad_dtype", [torch.bfloat16, torch.float32], ids=["bf16_grads", "fp32_grads"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_split_master_is_lossless(name, grad_dtype, device):
    check_split_master(name, grad_dtype, device)


def test_split_master_starts_equal_to_the_param(device):
    """A fresh split master has zero low bits; a skipped first step (found_inf) creates the state only."""
    params = make_params(SHAPES, torch.bfloat16, device)
    before = [p.clone() for p in params]
    opt = fused_optim.AdamW(params, master_weights="split")
    opt.found_inf = torch.tensor(1.0, device=device)
    run(opt, params, grad_stream(params, 1))
    for p, q in zip(params, before):
        assert torch.equal(opt.state[p]["master_low_bits"], torch.zeros_like(p, dtype=torch.int16))
        assert torch.equal(joined_master(p, opt.state[p]["master_low_bits"]), q.float())


@pytest.mark.parametrize("name", ["SGD", "AdamW", "Lion", "LAMB"])
def test_masters_every_cpu_isa(name, cpu_isa):
    """Both master streams through each ISA's vector loop and the scalar tail (sizes 1..69 and one large)."""
    shapes = [(n,) for n in range(1, 70)] + [(3001,)]
    check_split_master(name, torch.bfloat16, "cpu", shapes, steps=5)
    params = make_params(shapes, torch.bfloat16, "cpu")
    ref = fp32_copies(params)
    grads = grad_stream(params, 5)
    opt = make(name, params, master_weights=True)
    run(opt, params, grads, torch.float32)
    run(make(name, ref), ref, grads, torch.float32)
    for p, r in zip(params, ref):
        torch.testing.assert_close(opt.state[p]["master_param"], r, **MASTER_TOL)
        assert torch.equal(p, opt.state[p]["master_param"].bfloat16())


# 3. fp16 params with float32 masters ------------------------------------------------------------------------------


@pytest.mark.parametrize("grad_dtype", [torch.float16, torch.float32], ids=["fp16_grads", "fp32_grads"])
@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "Lion", "LAMB"])
def test_fp16_master_follows_the_fp32_trajectory(name, grad_dtype, device):
    params = make_params(SHAPES, torch.float16, device)
    ref = fp32_copies(params)
    grads = grad_stream(params, STEPS)  # fp16 values
    opt = make(name, params, master_weights=True)
    ref_opt = make(name, ref)
    for step_grads in grads:
        step(opt, params, step_grads, grad_dtype)
        step(ref_opt, ref, step_grads, torch.float32)
        for p, r in zip(params, ref):
            master = opt.state[p]["master_param"]
            assert master.dtype == torch.float32
            torch.testing.assert_close(master, r, **MASTER_TOL)
            assert torch.equal(p, master.half())


# 4. updates below the param's resolution accumulate in the master --------------------------------------------------


@pytest.mark.parametrize("master_weights", [False, True, "split"], ids=["none", "full", "split"])
def test_tiny_updates_accumulate(master_weights, device):
    n, lr, steps = 67, 1e-4, 1000
    p = torch.ones(n, dtype=torch.bfloat16, device=device)
    opt = fused_optim.SGD([p], lr=lr, master_weights=master_weights)
    grad = torch.ones_like(p)
    expected = torch.ones(n, device=device)  # the same subtractions in float32
    lr32 = torch.tensor(lr, dtype=torch.float32, device=device)
    for _ in range(steps):
        p.grad = grad
        opt.step()
        expected = expected - lr32
    if not master_weights:
        # 1 - 1e-4 rounds back to 1 in bf16 (ulp 2**-8 below 1): every update is lost
        assert torch.equal(p, torch.ones_like(p))
        return
    master = master_of(opt, p)
    torch.testing.assert_close(master, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(master, torch.full_like(master, 1 - steps * lr), rtol=0, atol=5e-5)
    if master_weights == "split":
        assert torch.equal(p, truncated(master))
    else:
        assert torch.equal(p, master.bfloat16())
    assert torch.equal(p, torch.full_like(p, 0.8984375))  # 230/256, the bf16 nearest to 0.9 (and below it)


# 5. bf16 optimizer state -----------------------------------------------------------------------------------------

# bf16 moments are rounded once per step (relative error up to 2**-9), and the errors of successive steps add up.
# Measured over 12 steps of these hyperparameters and 5 seeds, against fp32 state: the worst param error is
# SGD 2.4e-3, RMSprop 2.0e-3, Adagrad 5.8e-5, Adam 5.1e-4, AdamW 4.1e-4, Lion 2.0e-3 (one sign flip of a
# near-zero interpolation moves an element by 2 * lr), LAMB 1.0e-3; the worst moment error is 1.2 % of the
# tensor's largest magnitude. The tolerances leave 2-3x room (the params move by ~0.1 to 1 in these runs).
BF16_STATE_PARAM_ATOL = {
    "SGD": 6e-3,
    "RMSprop": 5e-3,
    "Adagrad": 2e-4,
    "Adam": 1.5e-3,
    "AdamW": 1.5e-3,
    "Lion": 4.1e-3,
    "LAMB": 3e-3,
}
BF16_STATE_MOMENT_RTOL = 2.5e-2  # of the reference tensor's largest magnitude


def param_tol(name):
    return dict(rtol=0, atol=BF16_STATE_PARAM_ATOL[name])


def assert_moment_close(ours, ref, key):
    atol = BF16_STATE_MOMENT_RTOL * ref.abs().max().item()
    torch.testing.assert_close(ours.float(), ref.float(), rtol=0, atol=atol, msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_bf16_state_fp32_params(name, device):
    params = make_params(SHAPES, torch.float32, device)
    ref = fp32_copies(params)
    grads = grad_stream(params, STEPS)
    opt = make(name, params, state_dtype=torch.bfloat16)
    ref_opt = make_torch(name, ref) if OPTIMIZERS[name][2] else make(name, ref)
    run(opt, params, grads)
    run(ref_opt, ref, grads)
    for p, r in zip(params, ref):
        ours = moments(opt, p)
        assert ours, "no moments"
        for k, v in ours.items():
            assert v.dtype == torch.bfloat16, f"{k} is {v.dtype}"
            assert_moment_close(v, ref_opt.state[r][k], k)
        torch.testing.assert_close(p, r, **param_tol(name))
        assert p.dtype == torch.float32


@pytest.mark.parametrize("grad_dtype", [torch.bfloat16, torch.float32], ids=["bf16_grads", "fp32_grads"])
@pytest.mark.parametrize("master_weights", [True, "split"], ids=["full", "split"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_bf16_state_with_master(name, master_weights, grad_dtype, device):
    """bf16 params, masters and bf16 moments: exactly the computation of fp32 params with bf16 moments."""
    params = make_params(SHAPES, torch.bfloat16, device)
    same = fp32_copies(params)  # fp32 params, bf16 state: the same arithmetic on the same values
    full = fp32_copies(params)  # fp32 params and state
    grads = grad_stream(params, STEPS)
    opt = make(name, params, master_weights=master_weights, state_dtype=torch.bfloat16)
    same_opt = make(name, same, state_dtype=torch.bfloat16)
    full_opt = make(name, full)
    run(opt, params, grads, grad_dtype)
    run(same_opt, same, grads, torch.float32)
    run(full_opt, full, grads, torch.float32)
    for p, s, f in zip(params, same, full):
        master = master_of(opt, p)
        if master_weights is True:
            assert opt.state[p]["master_param"].dtype == torch.float32
            assert torch.equal(p, master.bfloat16())
        else:
            assert opt.state[p]["master_low_bits"].dtype == torch.int16
            assert torch.equal(p, truncated(master))
        torch.testing.assert_close(master, s, **MASTER_TOL)
        torch.testing.assert_close(master, f, **param_tol(name))
        for k, v in moments(opt, p).items():
            assert v.dtype == torch.bfloat16, f"{k} is {v.dtype}"
            torch.testing.assert_close(v, moments(same_opt, s)[k], **MASTER_TOL)


@pytest.mark.parametrize("name", ["Adam", "LAMB"])
def test_bf16_state_with_fp16_master(name, device):
    params = make_params(SHAPES, torch.float16, device)
    same = fp32_copies(params)
    grads = grad_stream(params, STEPS)
    opt = make(name, params, master_weights=True, state_dtype=torch.bfloat16)
    same_opt = make(name, same, state_dtype=torch.bfloat16)
    run(opt, params, grads)
    run(same_opt, same, grads, torch.float32)
    for p, s in zip(params, same):
        torch.testing.assert_close(opt.state[p]["master_param"], s, **MASTER_TOL)
        assert torch.equal(p, opt.state[p]["master_param"].half())
        assert all(v.dtype == torch.bfloat16 for v in moments(opt, p).values())


def test_adamw_bf16_moments_error_after_100_steps(device):
    """How much bf16 moments cost AdamW over 100 steps: the param error against fp32 moments (torch.optim),
    relative to how far the params moved. Measured with 4 seeds (lr 1e-2, N(0, 1) gradients, 1931 elements):
    0.39-0.40 % of the distance moved (largest element error ~1.9e-3 for moves of up to ~0.4). The bound allows
    other seeds, not moments that are truncated instead of rounded (simulated with torch.optim: 2.3 %)."""
    params = make_params(SHAPES, torch.float32, device)
    start = [p.clone() for p in params]
    ref = fp32_copies(params)
    grads = grad_stream(params, 100)
    run(fused_optim.AdamW(params, lr=1e-2, state_dtype=torch.bfloat16), params, grads)
    run(torch.optim.AdamW(ref, lr=1e-2, foreach=False), ref, grads)
    err = torch.cat([(p - r).flatten() for p, r in zip(params, ref)]).norm()
    moved = torch.cat([(r - s).flatten() for r, s in zip(ref, start)]).norm()
    rel = (err / moved).item()
    print(f"AdamW bf16 moments, 100 steps: |p - p_fp32| / |p_fp32 - p0| = {rel:.2e}")
    assert 0 < rel < 1.5e-2


# 6. gradients of another dtype without masters ------------------------------------------------------------------


@pytest.mark.parametrize("grad_dtype", [torch.bfloat16, torch.float16], ids=["bf16_grads", "fp16_grads"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fp32_params_low_precision_grads(name, grad_dtype, device):
    params = make_params(SHAPES, torch.float32, device)
    ref = [p.clone() for p in params]
    grads = [[g.to(grad_dtype) for g in gs] for gs in grad_stream(params, 6)]
    opt, ref_opt = make(name, params), make(name, ref)
    run(opt, params, grads)
    run(ref_opt, ref, grads, torch.float32)  # the same values, upcast
    for p in params:
        assert p.grad.dtype == grad_dtype
    assert_states_equal(opt, params, ref_opt, ref)


@pytest.mark.parametrize("param_dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_gradients_of_mixed_dtypes_in_one_group_are_not_rounded(name, param_dtype, device):
    """A bf16 gradient first and wider ones after it: each is used at its own precision (converted to the compute
    type), not rounded to the first one's dtype."""
    params = make_params(SHAPES, param_dtype, device)
    ref = [p.clone() for p in params]
    compute = torch.float64 if param_dtype == torch.float64 else torch.float32
    dtypes = [torch.bfloat16, compute, torch.float16]
    grads = [[g.double().to(dtypes[i % 3]) for i, g in enumerate(gs)] for gs in grad_stream(params, 4)]
    opt, ref_opt = make(name, params), make(name, ref)
    run(opt, params, grads)
    run(ref_opt, ref, grads, compute)  # the same values, each upcast exactly
    assert_states_equal(opt, params, ref_opt, ref)


@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16], ids=["fp32_grads", "bf16_grads"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_fp64_params_lower_precision_grads(name, grad_dtype, device):
    params = make_params(SHAPES, torch.float64, device)
    ref = [p.clone() for p in params]
    grads = [[g.to(grad_dtype) for g in gs] for gs in grad_stream(params, 6)]
    opt, ref_opt = make(name, params), make(name, ref)
    run(opt, params, grads)
    run(ref_opt, ref, grads, torch.float64)
    assert_states_equal(opt, params, ref_opt, ref)


@pytest.mark.parametrize("param_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_half_params_fp32_grads_without_master(name, param_dtype, device):
    """16-bit params and state, fp32 gradients (not representable in the param dtype), against the float64
    formula fed the fp32 gradients, rounded once per step into the param/state dtype."""
    params = make_params(SHAPES, param_dtype, device)
    ref = [p.clone() for p in params]
    grads = grad_stream(fp32_copies(params), 8)  # float32 values
    opt = make(name, params)
    run(opt, params, grads)
    state = [{} for _ in ref]
    hyper = OPTIMIZERS[name][1]
    for step_grads in grads:
        if name == "SGD":
            sgd_reference_step(ref, step_grads, state, nesterov=False, maximize=False, **hyper)
        else:
            adam_reference_step(
                ref,
                step_grads,
                state,
                lr=hyper["lr"],
                betas=(0.9, 0.999),
                eps=1e-8,
                weight_decay=hyper["weight_decay"],
                amsgrad=hyper.get("amsgrad", False),
                maximize=False,
                decoupled=name == "AdamW",
            )
    tol = {torch.bfloat16: dict(rtol=1.6e-2, atol=8e-3), torch.float16: dict(rtol=2e-3, atol=1e-3)}[param_dtype]
    for p, q, s in zip(params, ref, state):
        assert p.dtype == param_dtype and all(v.dtype == param_dtype for v in moments(opt, p).values())
        torch.testing.assert_close(p, q, **tol)
        key = "momentum_buffer" if name == "SGD" else "exp_avg"
        torch.testing.assert_close(opt.state[p][key], s[key], **tol)


# 7. state_dict -------------------------------------------------------------------------------------------------

SAVE_CASES = {
    "bf16_full": (torch.bfloat16, dict(master_weights=True)),
    "bf16_split": (torch.bfloat16, dict(master_weights="split")),
    "bf16_full_bf16_state": (torch.bfloat16, dict(master_weights=True, state_dtype=torch.bfloat16)),
    "fp16_full": (torch.float16, dict(master_weights=True)),
    "fp32_bf16_state": (torch.float32, dict(state_dtype=torch.bfloat16)),
}


def save_and_load(sd):
    buffer = io.BytesIO()
    torch.save(sd, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def expected_dtypes(param_dtype, options):
    master = options.get("master_weights", False)
    state = options.get("state_dtype") or (torch.float32 if master else param_dtype)
    return master, state


@pytest.mark.parametrize(
    "name, case",
    [(n, c) for c in SAVE_CASES for n in OPTIMIZERS if c != "fp16_full" or n in ("SGD", "Adam")],  # fp16: two
)
def test_state_dict_round_trip_continues_identically(name, case, device):
    param_dtype, options = SAVE_CASES[case]
    start = make_params(SHAPES, param_dtype, device)
    grads = grad_stream(start, 10)
    whole = [p.clone() for p in start]
    whole_opt = make(name, whole, **options)
    run(whole_opt, whole, grads)

    first = [p.clone() for p in start]
    first_opt = make(name, first, **options)
    run(first_opt, first, grads[:5])
    sd = save_and_load(first_opt.state_dict())
    second = [p.clone() for p in first]
    second_opt = make(name, second, **options)
    second_opt.load_state_dict(sd)
    master, state_dtype = expected_dtypes(param_dtype, options)
    for p in second:
        state = second_opt.state[p]
        if master is True:
            assert state["master_param"].dtype == torch.float32
        elif master == "split":
            assert state["master_low_bits"].dtype == torch.int16
        for k, v in moments(second_opt, p).items():
            assert v.dtype == state_dtype, f"{k} loaded as {v.dtype}, not {state_dtype}"
    assert_states_equal(second_opt, second, first_opt, first)  # loading lost nothing
    run(second_opt, second, grads[5:])
    assert_states_equal(second_opt, second, whole_opt, whole)


def test_torch_fp32_checkpoint_into_bf16_master_weights(device):
    """The documented migration: a float32 torch.optim.AdamW checkpoint loaded into fused_optim.AdamW over the
    bf16 copy of the model with master_weights=True keeps the moments float32 and exact, and the next step
    creates the master from the param."""
    params32 = make_params(SHAPES, torch.float32, device)
    grads = grad_stream(params32, 4)
    torch_opt = torch.optim.AdamW(params32, lr=1e-2, foreach=False)
    run(torch_opt, params32, grads[:3])
    sd = save_and_load(torch_opt.state_dict())

    params = [p.detach().bfloat16() for p in params32]
    opt = fused_optim.AdamW(params, lr=1e-2, master_weights=True)
    opt.load_state_dict(sd)
    for p, q in zip(params, params32):
        state = opt.state[p]
        for k in ("exp_avg", "exp_avg_sq"):
            assert state[k].dtype == torch.float32, f"{k} loaded as {state[k].dtype}; master weights keep fp32 state"
            assert torch.equal(state[k], torch_opt.state[q][k])
        assert "master_param" not in state
    assert opt.param_groups[0].get("master_weights") is True, "load_state_dict dropped master_weights=True"

    # the next step: the same as a float32 fused AdamW from the bf16-rounded params with the same state
    ref = fp32_copies(params)
    ref_opt = fused_optim.AdamW(ref, lr=1e-2)
    ref_opt.load_state_dict(sd)
    step(opt, params, [g.bfloat16() for g in grads[3]])
    step(ref_opt, ref, [g.bfloat16().float() for g in grads[3]])
    for p, r in zip(params, ref):
        master = opt.state[p]["master_param"]
        assert master.dtype == torch.float32
        torch.testing.assert_close(master, r, **MASTER_TOL)
        assert torch.equal(p, master.bfloat16())
        assert opt.state[p]["exp_avg"].dtype == torch.float32


def test_param_groups_choose_their_own_precision(device):
    """master_weights and state_dtype are group options."""
    a, b, c = (make_params([(37,), (100,)], torch.bfloat16, device, seed=s) for s in range(3))
    opt = fused_optim.Adam(
        [
            {"params": a},
            {"params": b, "master_weights": "split"},
            {"params": c, "master_weights": False, "state_dtype": torch.bfloat16},
        ],
        lr=1e-2,
        master_weights=True,
    )
    run(opt, [*a, *b, *c], grad_stream([*a, *b, *c], 2))
    for p in a:
        assert opt.state[p]["master_param"].dtype == torch.float32
        assert opt.state[p]["exp_avg"].dtype == torch.float32
    for p in b:
        assert opt.state[p]["master_low_bits"].dtype == torch.int16
        assert opt.state[p]["exp_avg"].dtype == torch.float32
    for p in c:
        assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"}
        assert opt.state[p]["exp_avg"].dtype == torch.bfloat16


# 8. errors -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_split_master_needs_bf16(name):
    params = make_params([(5,), (40,)], torch.float16, "cpu")
    with pytest.raises(ValueError, match="bfloat16"):
        opt = make(name, params, master_weights="split")
        run(opt, params, grad_stream(params, 1))


@pytest.mark.parametrize("bad", ["yes", "full", 2])
def test_bad_master_weights(bad):
    with pytest.raises(ValueError, match="master_weights"):
        fused_optim.AdamW([torch.zeros(3, dtype=torch.bfloat16)], master_weights=bad)
    opt = fused_optim.AdamW([torch.zeros(3)])
    with pytest.raises(ValueError, match="master_weights"):
        opt.add_param_group({"params": [torch.zeros(2)], "master_weights": bad})


def test_bad_state_dtype():
    with pytest.raises(ValueError, match="state_dtype"):
        fused_optim.Adam([torch.zeros(3)], state_dtype=torch.int32)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adam", "Lion", "LAMB"])
def test_fp64_params_with_bf16_state_is_refused(name):
    params = make_params([(5,), (40,)], torch.float64, "cpu")
    opt = make(name, params, state_dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="supported combinations are: state Double with no master"):
        run(opt, params, grad_stream(params, 1))


def test_op_rejects_wrong_master_dtypes():
    kwargs = dict(
        lr=torch.tensor(0.1),
        weight_decay=0.0,
        momentum=0.0,
        dampening=0.0,
        nesterov=False,
        maximize=False,
        is_first_step=False,
    )
    p = [torch.zeros(5, dtype=torch.bfloat16)]
    g = [torch.ones(5, dtype=torch.bfloat16)]
    with pytest.raises(RuntimeError, match="master_params must be float32"):
        torch.ops.fused_optim.sgd_(p, g, [], master_params=[torch.zeros(5, dtype=torch.float16)], **kwargs)
    with pytest.raises(RuntimeError, match="master_params"):  # split (int16) masters are for bf16 params only
        fp16 = [torch.zeros(5, dtype=torch.float16)]
        torch.ops.fused_optim.sgd_(fp16, fp16, [], master_params=[torch.zeros(5, dtype=torch.int16)], **kwargs)
    with pytest.raises(RuntimeError, match="master_params"):
        torch.ops.fused_optim.sgd_(p, g, [], master_params=[torch.zeros(5, dtype=torch.float64)], **kwargs)
    # and a right one works, straight through the op
    master = [torch.full((5,), 1.0 + 2**-12)]
    torch.ops.fused_optim.sgd_(p, g, [], master_params=master, **kwargs)
    torch.testing.assert_close(master[0], torch.full((5,), 1.0 + 2**-12 - 0.1), **MASTER_TOL)
    assert torch.equal(p[0], master[0].bfloat16())


# 9. GradScaler protocol --------------------------------------------------------------------------------------------

SCALER_SETTINGS = {
    "fp32": (torch.float32, {}),
    "bf16_full": (torch.bfloat16, dict(master_weights=True)),
    "bf16_split": (torch.bfloat16, dict(master_weights="split")),
}


@pytest.mark.parametrize("setting", SCALER_SETTINGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_grad_scale_is_undone(name, setting, device):
    dtype, options = SCALER_SETTINGS[setting]
    params = make_params(SHAPES, dtype, device)
    ref = [p.clone() for p in params]
    grads = grad_stream(params, 6)
    opt, ref_opt = make(name, params, **options), make(name, ref, **options)
    opt.grad_scale = torch.tensor(1024.0, device=device)
    run(opt, params, [[g * 1024 for g in gs] for gs in grads])  # exact: a power of two
    run(ref_opt, ref, grads)
    for p, r in zip(params, ref):
        if options:
            torch.testing.assert_close(master_of(opt, p), master_of(ref_opt, r), **MASTER_TOL)
        torch.testing.assert_close(p, r, **(MASTER_TOL if dtype == torch.float32 else TOL[dtype]))
        for k, v in moments(opt, p).items():
            torch.testing.assert_close(v, moments(ref_opt, r)[k], **MASTER_TOL)


@pytest.mark.parametrize("setting", SCALER_SETTINGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_found_inf_skips_the_whole_step(name, setting, device):
    """A skipped step changes nothing, neither on the first step (fresh state) nor later: params, every state
    tensor (steps, moments, masters) stay bit-identical, and the run equals one that never saw those steps."""
    dtype, options = SCALER_SETTINGS[setting]
    params = make_params(SHAPES, dtype, device)
    ref = [p.clone() for p in params]
    grads = grad_stream(params, 6)
    bad = [
        torch.full_like(g, float("inf")) if i % 2 else torch.full_like(g, float("nan")) for i, g in enumerate(grads[0])
    ]
    opt, ref_opt = make(name, params, **options), make(name, ref, **options)

    def skipped(grads_of_step):
        before = [p.clone() for p in params]
        opt.found_inf = torch.tensor(1.0, device=device)
        opt.grad_scale = torch.tensor(1024.0, device=device)
        step(opt, params, grads_of_step)
        del opt.found_inf, opt.grad_scale
        for p, q in zip(params, before):
            assert torch.equal(p, q)

    skipped(bad)  # on fresh state
    for p in params:
        for k, v in opt.state[p].items():
            if k == "step":
                assert v.item() == 0, "a skipped step was counted"
            elif k == "master_param":
                assert torch.equal(v, p.float())
            elif k == "master_low_bits":
                assert not v.any()
    run(opt, params, grads[:3])
    run(ref_opt, ref, grads[:3])
    snap = snapshot(opt, params)
    skipped(bad)
    assert_same_state(opt, params, snap)
    skipped(grads[3])  # finite gradients, but the scaler found an inf elsewhere
    assert_same_state(opt, params, snap)
    opt.found_inf = torch.tensor(0.0, device=device)  # a step that was not skipped
    run(opt, params, grads[3:])
    del opt.found_inf
    run(ref_opt, ref, grads[3:])
    assert_states_equal(opt, params, ref_opt, ref)


FOUND_INF_FLAGS = {
    "two": lambda device: torch.tensor(2.0, device=device),  # GradScaler sums per-device flags: two overflowed
    "nan": lambda device: torch.tensor(float("nan"), device=device),
    "shape_1": lambda device: torch.ones(1, device=device),  # one element, not 0-dim
}


@pytest.mark.parametrize("flag", FOUND_INF_FLAGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_any_non_zero_found_inf_skips_exactly_one_step(name, flag, device):
    """Every non-zero found_inf skips the step, and the step counters go back by exactly one whatever the flag's
    value or shape (on a GPU they are advanced before the kernels read them and taken back after)."""
    params = make_params(SHAPES, torch.float32, device)
    ref = [p.clone() for p in params]
    grads = grad_stream(params, 4)
    opt, ref_opt = make(name, params), make(name, ref)
    run(opt, params, grads[:2])
    run(ref_opt, ref, grads[:2])
    snap = snapshot(opt, params)
    opt.found_inf = FOUND_INF_FLAGS[flag](device)
    opt.grad_scale = torch.tensor(1.0, device=device)
    step(opt, params, grads[2])
    del opt.found_inf, opt.grad_scale
    assert_same_state(opt, params, snap)
    run(opt, params, grads[2:])
    run(ref_opt, ref, grads[2:])
    assert_states_equal(opt, params, ref_opt, ref)


def test_torch_grad_scaler_end_to_end():
    """torch.amp.GradScaler("cpu") drives an fp16 model with float32 masters: a finite step equals the unscaled
    step, an inf gradient skips the step (params, master, moments and step untouched) and halves the scale."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).half()
    params = list(model.parameters())
    ref = fp32_copies(params)
    opt = fused_optim.Adam(params, lr=1e-2, master_weights=True)
    ref_opt = fused_optim.Adam(ref, lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)

    x = torch.randn(32, 8).half()
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(model(x).float().pow(2).mean()).backward()
        unscaled = [p.grad.float() / scaler.get_scale() for p in params]  # exact: a power of two
        scaler.step(opt)
        scaler.update()
        assert not hasattr(opt, "found_inf") and not hasattr(opt, "grad_scale")
        step(ref_opt, ref, unscaled)
        for p, r in zip(params, ref):
            torch.testing.assert_close(opt.state[p]["master_param"], r, **MASTER_TOL)
            assert torch.equal(p, opt.state[p]["master_param"].half())
    scale = scaler.get_scale()
    assert scale == 1024.0

    snap = snapshot(opt, params)
    opt.zero_grad()
    bad_x = x.clone()
    bad_x[0, 0] = float("inf")
    scaler.scale(model(bad_x).float().pow(2).mean()).backward()
    assert not all(torch.isfinite(p.grad).all() for p in params)
    scaler.step(opt)
    scaler.update()
    assert_same_state(opt, params, snap)
    assert scaler.get_scale() == scale * 0.5


@pytest.mark.parametrize("master_weights", [True, "split"])
def test_an_edited_param_is_kept_only_after_refresh_master_weights(master_weights, device):
    """The master is what a step updates: an in-place edit of the bf16 param is undone by the next step (a full
    master) or keeps stale low bits (a split one) unless refresh_master_weights() makes the master equal to it,
    after which the run is that of a fresh optimizer."""
    torch.manual_seed(0)
    p = torch.randn(300, device=device).bfloat16().requires_grad_()
    opt = fused_optim.SGD([p], lr=1e-3, master_weights=master_weights)
    grads = [torch.randn(300, device=device).bfloat16() for _ in range(4)]
    for g in grads[:3]:
        p.grad = g
        opt.step()
    with torch.no_grad():
        p.fill_(0.5)
    p.grad = grads[3]
    opt.step()
    if master_weights is True:
        assert (p - 0.5).abs().min() > 0.01  # the old weights came back from the master
    else:  # the param is the split master's high half: the edit stays, with stale low bits below its resolution
        assert ((p.float() - 0.5).abs() <= 0.01).all()

    with torch.no_grad():
        p.fill_(0.5)
    opt.refresh_master_weights()
    fresh_p = p.detach().clone().requires_grad_()
    fresh = fused_optim.SGD([fresh_p], lr=1e-3, master_weights=master_weights)
    for g in grads:
        p.grad, fresh_p.grad = g, g.clone()
        opt.step()
        fresh.step()
    assert torch.equal(p, fresh_p)
    key = "master_param" if master_weights is True else "master_low_bits"
    assert torch.equal(opt.state[p][key], fresh.state[fresh_p][key])
