"""fused_optim.Adam / AdamW against torch.optim (foreach=False) and against the formula in reference.py."""

from __future__ import annotations

import copy

import pytest
import torch

import fused_optim
from reference import TOL, adam_reference_step

# Sizes around SIMD widths (8/16 fp32, 32 bf16 per block), CUDA vector groups (4), chunks (65536) and the
# CPU engine's per-thread split; empty and 0-dim tensors included.
SHAPES = [
    (),
    (0,),
    (1,),
    (3, 0),
    (7,),
    (15,),
    (16,),
    (17,),
    (31,),
    (32,),
    (33,),
    (63,),
    (65,),
    (5, 13),
    (257, 129),
    (65536 + 3,),
    (40000,),
]

PAIRS = {"Adam": (fused_optim.Adam, torch.optim.Adam), "AdamW": (fused_optim.AdamW, torch.optim.AdamW)}

CONFIGS = [
    {},
    {"weight_decay": 0.1},
    {"amsgrad": True},
    {"maximize": True, "weight_decay": 0.05},
    {"betas": (0.8, 0.9), "eps": 1e-6, "lr": 0.05},
    {"amsgrad": True, "maximize": True, "weight_decay": 0.02},
]


def make_params(shapes, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype=dtype, device=device) for s in shapes]


def grad_stream(params, steps, seed=1, none_every=0):
    """The same gradients for every optimizer under test; with none_every=k, param i has no grad every k-th step."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(steps):
        grads = []
        for i, p in enumerate(params):
            if none_every and (s + i) % none_every == 0:
                grads.append(None)
            else:
                grads.append(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype).to(p.device))
        out.append(grads)
    return out


def run(opt, params, grads_per_step):
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
        opt.step()


def assert_params_close(a, b, dtype):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **TOL[dtype])


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trajectory_matches_torch(name, config, dtype, device):
    ours_cls, ref_cls = PAIRS[name]
    ours_p = make_params(SHAPES, dtype, device)
    ref_p = [p.clone() for p in ours_p]
    grads = grad_stream(ours_p, 20, none_every=7)
    run(ours_cls(ours_p, **config), ours_p, grads)
    run(ref_cls(ref_p, foreach=False, **config), ref_p, grads)
    assert_params_close(ours_p, ref_p, dtype)


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_every_cpu_isa(name, dtype, cpu_isa):
    shapes = [(n,) for n in range(0, 70)] + [(1000,), (100003,)]
    test_reduced_precision_matches_formula(name, {"weight_decay": 0.1, "amsgrad": True}, dtype, "cpu", shapes)


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_matches_formula(name, config, dtype, device, shapes=SHAPES):
    """bf16/fp16 params and state, computed in fp32 and rounded once per step (torch.optim instead rounds after
    every elementwise op, so the reference is the formula, in float64)."""
    ours_cls, _ = PAIRS[name]
    config = dict(config)
    ours_p = make_params(shapes, dtype, device)
    ref_p = [p.clone() for p in ours_p]
    grads = grad_stream(ours_p, 10)
    opt = ours_cls(ours_p, **config)
    run(opt, ours_p, grads)
    hyper = dict(
        lr=config.get("lr", 1e-3),
        betas=config.get("betas", (0.9, 0.999)),
        eps=config.get("eps", 1e-8),
        weight_decay=config.get("weight_decay", 1e-2 if name == "AdamW" else 0.0),
        amsgrad=config.get("amsgrad", False),
        maximize=config.get("maximize", False),
        decoupled=name == "AdamW",
    )
    state = [{} for _ in ref_p]
    for step_grads in grads:
        adam_reference_step(ref_p, step_grads, state, **hyper)
    assert_params_close(ours_p, ref_p, dtype)
    for p, s in zip(ours_p, state):
        torch.testing.assert_close(opt.state[p]["exp_avg"], s["exp_avg"], **TOL[dtype])
        torch.testing.assert_close(opt.state[p]["exp_avg_sq"], s["exp_avg_sq"], **TOL[dtype])
        assert opt.state[p]["step"].item() == s["step"]


def test_many_small_tensors_one_parallel_region(device):
    """1000 tensors of log-uniform size (the benchmark's workload) through one op call, against torch.optim."""
    g = torch.Generator().manual_seed(3)
    sizes = torch.exp(torch.empty(1000).uniform_(4.16, 11.09, generator=g)).long().tolist()
    ours_p = make_params([(n,) for n in sizes], torch.float32, device)
    ref_p = [p.clone() for p in ours_p]
    grads = grad_stream(ours_p, 3)
    run(fused_optim.AdamW(ours_p, lr=0.01), ours_p, grads)
    run(torch.optim.AdamW(ref_p, lr=0.01, foreach=False), ref_p, grads)
    assert_params_close(ours_p, ref_p, torch.float32)


@pytest.mark.cuda
def test_cuda_a_tensor_longer_than_one_launch_matches_torch():
    """One tensor of more chunks than a launch has blocks (320 of 65536 elements) continues in a second launch,
    with a misaligned view (odd storage offset: the scalar path) and small tensors beside it."""
    big = 320 * 65536 + 1000 + 3
    ours_p = [*make_params([(big,), (65536 + 3,)], torch.float32, "cuda"), torch.randn(34, device="cuda")[1:]]
    ref_p = [p.clone() for p in ours_p]
    grads = grad_stream(ours_p, 2)
    run(fused_optim.AdamW(ours_p, lr=0.01, amsgrad=True), ours_p, grads)
    run(torch.optim.AdamW(ref_p, lr=0.01, amsgrad=True, foreach=False), ref_p, grads)
    assert_params_close(ours_p, ref_p, torch.float32)


def test_param_groups_and_tensor_lr(device):
    ours_p = make_params([(10,), (20, 3), (5,)], torch.float32, device)
    ref_p = [p.clone() for p in ours_p]

    def groups(ps):
        return [{"params": ps[:2], "lr": torch.tensor(0.01)}, {"params": ps[2:], "lr": 0.1, "weight_decay": 0.5}]

    ours = fused_optim.AdamW(groups(ours_p), lr=torch.tensor(0.02))
    ref = torch.optim.AdamW(groups(ref_p), lr=torch.tensor(0.02), foreach=False)
    grads = grad_stream(ours_p, 10)
    for i, step_grads in enumerate(grads):
        if i == 5:  # a scheduler would change lr in place
            for opt in (ours, ref):
                opt.param_groups[0]["lr"].fill_(0.003)
                opt.param_groups[1]["lr"] = 0.2
        run(ours, ours_p, [step_grads])
        run(ref, ref_p, [step_grads])
    assert_params_close(ours_p, ref_p, torch.float32)


@pytest.mark.cuda
def test_lr_tensor_on_device():
    ours_p = make_params([(100,), (7,)], torch.float32, "cuda")
    ref_p = [p.clone() for p in ours_p]
    grads = grad_stream(ours_p, 5)
    run(fused_optim.Adam(ours_p, lr=torch.tensor(0.01, device="cuda")), ours_p, grads)
    run(torch.optim.Adam(ref_p, lr=0.01, foreach=False), ref_p, grads)
    assert_params_close(ours_p, ref_p, torch.float32)


def test_complex_params_like_torch(device):
    ours_p = [torch.randn(17, dtype=torch.complex64, device=device), torch.randn(3, 4, device=device)]
    ref_p = [p.clone() for p in ours_p]
    grads = [[torch.randn_like(p) for p in ours_p] for _ in range(5)]
    run(fused_optim.AdamW(ours_p, lr=0.01), ours_p, grads)
    run(torch.optim.AdamW(ref_p, lr=0.01, foreach=False), ref_p, grads)
    assert_params_close(ours_p, ref_p, torch.float32)


# Layouts ---------------------------------------------------------------------------------------------------------


def layout_cases(device):
    g = torch.Generator().manual_seed(5)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device)

    base = rnd(9, 40)
    return {
        # channels_last conv weight with a channels_last grad: dense, same strides, no copies
        "channels_last": (rnd(8, 3, 5, 5).to(memory_format=torch.channels_last), lambda p: torch.randn_like(p)),
        # param and grad with different strides: torch 2.13's fused CPU AdamW gets this wrong
        "grad_transposed": (rnd(33, 17), lambda p: torch.randn(17, 33, device=p.device).t()),
        "param_transposed": (rnd(21, 34).t(), lambda p: torch.randn(34, 21, device=p.device)),
        # a slice with gaps: not dense, staged through a temporary and copied back
        "param_sliced": (base[:, ::3], lambda p: torch.randn(p.shape, device=p.device)),
        "grad_expanded": (rnd(6, 50), lambda p: torch.randn(1, 50, device=p.device).expand(6, 50)),
    }


@pytest.mark.parametrize(
    "case", ["channels_last", "grad_transposed", "param_transposed", "param_sliced", "grad_expanded"]
)
def test_layouts(case, device):
    param, make_grad = layout_cases(device)[case]
    ours_p = [param]
    ref_p = [param.detach().clone(memory_format=torch.preserve_format)]
    torch.manual_seed(0)
    grads = [[make_grad(param)] for _ in range(6)]
    run(fused_optim.AdamW([ours_p[0]], lr=0.01, amsgrad=True), ours_p, grads)
    run(torch.optim.AdamW(ref_p, lr=0.01, amsgrad=True, foreach=False), ref_p, grads)
    assert_params_close(ours_p, ref_p, torch.float32)
    if case == "param_sliced":  # the rest of the storage is untouched
        assert ours_p[0].stride() == (40, 3)


# state_dict --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("amsgrad", [False, True])
def test_state_dict_moves_both_ways(name, amsgrad, device):
    ours_cls, ref_cls = PAIRS[name]
    start = make_params([(4, 5), (13,), ()], torch.float32, device)
    grads = grad_stream(start, 10)

    # Ours for 5 steps, then continue in torch.optim; and torch.optim for 5 steps, then continue in ours.
    for first_cls, second_cls in ((ours_cls, ref_cls), (ref_cls, ours_cls)):
        kw = lambda c: {"foreach": False} if c is ref_cls else {}  # noqa: E731
        a = [p.clone() for p in start]
        opt = first_cls(a, lr=0.01, amsgrad=amsgrad, **kw(first_cls))
        run(opt, a, grads[:5])
        sd = copy.deepcopy(opt.state_dict())
        b = [p.clone() for p in a]
        opt2 = second_cls(b, lr=0.01, amsgrad=amsgrad, **kw(second_cls))
        opt2.load_state_dict(sd)
        run(opt2, b, grads[5:])
        # the uninterrupted torch.optim run
        ref = [p.clone() for p in start]
        run(ref_cls(ref, lr=0.01, amsgrad=amsgrad, foreach=False), ref, grads)
        assert_params_close(b, ref, torch.float32)

    sd = ours_cls(start, lr=0.01, amsgrad=amsgrad).state_dict()
    ref_sd = ref_cls(start, lr=0.01, amsgrad=amsgrad).state_dict()
    assert sd["param_groups"] == ref_sd["param_groups"]


def test_state_keys_match_torch(device):
    p_ours, p_ref = make_params([(3,)], torch.float32, device), make_params([(3,)], torch.float32, device)
    for amsgrad in (False, True):
        ours = fused_optim.Adam(p_ours, amsgrad=amsgrad)
        ref = torch.optim.Adam(p_ref, amsgrad=amsgrad, foreach=False)
        run(ours, p_ours, grad_stream(p_ours, 1))
        run(ref, p_ref, grad_stream(p_ref, 1))
        s_ours, s_ref = ours.state_dict()["state"][0], ref.state_dict()["state"][0]
        assert set(s_ours) == set(s_ref)
        assert s_ours["step"].dtype == s_ref["step"].dtype == torch.float32
        assert s_ours["step"].item() == 1.0


def test_hooks_and_closure(device):
    p = make_params([(5,)], torch.float32, device)
    opt = fused_optim.Adam(p, lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda *a: calls.append("pre"))
    opt.register_step_post_hook(lambda *a: calls.append("post"))

    def closure():
        opt.zero_grad()
        loss = (p[0] ** 2).sum()
        p[0].requires_grad_(True)
        return loss

    p[0].grad = torch.ones_like(p[0])
    assert opt.step(lambda: 3.0) == 3.0
    assert calls == ["pre", "post"]
    del closure


# GradScaler protocol -------------------------------------------------------------------------------------------


def test_found_inf_skips_the_step(device):
    params = make_params([(10,), (3, 3)], torch.float32, device)
    before = [p.clone() for p in params]
    opt = fused_optim.Adam(params, lr=0.1)
    run(opt, params, grad_stream(params, 1))
    after_one = [p.clone() for p in params]
    state_before = copy.deepcopy(opt.state_dict())
    opt.grad_scale = torch.tensor(1.0, device=device)
    opt.found_inf = torch.tensor(1.0, device=device)
    run(opt, params, grad_stream(params, 1, seed=9))
    for p, q in zip(params, after_one):
        assert torch.equal(p, q)
    assert not all(torch.equal(p, q) for p, q in zip(params, before))
    for k, s in opt.state_dict()["state"].items():
        for key, value in s.items():
            assert torch.equal(value, state_before["state"][k][key]), key


def test_grad_scale_is_undone_in_kernel(device):
    params = make_params([(100,), (7,)], torch.float32, device)
    ref = [p.clone() for p in params]
    grads = grad_stream(params, 5)
    scale = 1024.0
    opt = fused_optim.AdamW(params, lr=0.01)
    opt.grad_scale = torch.tensor(scale, device=device)
    opt.found_inf = torch.tensor(0.0, device=device)
    run(opt, params, [[g * scale for g in gs] for gs in grads])
    run(torch.optim.AdamW(ref, lr=0.01, foreach=False), ref, grads)
    assert_params_close(params, ref, torch.float32)


def test_torch_amp_grad_scaler(device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).to(device)
    ref_model = copy.deepcopy(model)
    opt = fused_optim.Adam(model.parameters(), lr=0.01)
    ref_opt = torch.optim.Adam(ref_model.parameters(), lr=0.01, foreach=False)
    scaler, ref_scaler = (torch.amp.GradScaler(device, init_scale=2.0**12) for _ in range(2))
    for step in range(6):
        x = torch.randn(32, 8, device=device)
        for m, o, s in ((model, opt, scaler), (ref_model, ref_opt, ref_scaler)):
            o.zero_grad()
            s.scale(m(x).pow(2).mean()).backward()
            if step == 3:  # an overflow: both must skip the step
                next(m.parameters()).grad[0, 0] = float("inf")
            s.step(o)
            s.update()
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, **TOL[torch.float32])
    assert scaler.get_scale() == ref_scaler.get_scale()
    assert opt.state[next(model.parameters())]["step"].item() == 5


# Bad input -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1.0}, "Invalid learning rate"),
        ({"lr": float("nan")}, "Invalid learning rate"),
        ({"lr": torch.tensor([0.1, 0.2])}, "1-element"),
        ({"eps": -1e-8}, "Invalid epsilon"),
        ({"betas": (1.0, 0.999)}, "beta parameter at index 0"),
        ({"betas": (0.9, -0.1)}, "beta parameter at index 1"),
        ({"weight_decay": -0.1}, "Invalid weight_decay"),
        ({"differentiable": True}, "differentiable"),
    ],
)
def test_bad_hyperparameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fused_optim.Adam([torch.zeros(3)], **kwargs)
    if "differentiable" not in kwargs:  # torch.optim raises the same error type
        with pytest.raises(ValueError):
            torch.optim.Adam([torch.zeros(3)], **kwargs)


def test_sparse_gradient_is_rejected():
    p = torch.zeros(4, 3)
    p.grad = torch.eye(4, 3).to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        fused_optim.Adam([p]).step()


def test_integer_params_are_rejected():
    p = torch.zeros(4, dtype=torch.int32)
    p.grad = torch.zeros(4, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="dtype"):
        fused_optim.Adam([p]).step()


def test_lr_zero_changes_nothing(device):
    params = make_params([(50,), (4, 4)], torch.float32, device)
    before = [p.clone() for p in params]
    run(fused_optim.Adam(params, lr=0.0, weight_decay=0.1), params, grad_stream(params, 3))
    for p, q in zip(params, before):
        assert torch.equal(p, q)


def test_mixed_dtypes_in_one_group(device):
    """One group holding fp32, fp64, bf16 and fp16 params: one op call per dtype, each matching its reference."""
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.float32]
    ours_p = [make_params([(33,)], dt, device, seed=i)[0] for i, dt in enumerate(dtypes)]
    ref_p = [p.clone() for p in ours_p]
    grads = grad_stream(ours_p, 5)
    opt = fused_optim.AdamW(ours_p, lr=0.01)
    run(opt, ours_p, grads)
    state = [{} for _ in ref_p]
    for step_grads in grads:
        adam_reference_step(
            ref_p,
            step_grads,
            state,
            lr=0.01,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=0.01,
            amsgrad=False,
            maximize=False,
            decoupled=True,
        )
    for p, q, dt in zip(ours_p, ref_p, dtypes):
        torch.testing.assert_close(p, q, **TOL[dt])
    assert len(opt._plan(opt.param_groups[0], [p.grad for p in ours_p]).buckets) == 4


def test_new_grads_and_param_groups_are_noticed(device):
    """The cached plan must follow parameters that gain a gradient later and groups added later."""
    a, b, c = make_params([(4,), (5,), (6,)], torch.float32, device)
    ref = [t.clone() for t in (a, b, c)]
    opt = fused_optim.Adam([a, b], lr=0.1)
    ref_opt = torch.optim.Adam(ref[:2], lr=0.1, foreach=False)
    for step in range(6):
        if step == 3:
            opt.add_param_group({"params": [c], "lr": 0.05})
            ref_opt.add_param_group({"params": [ref[2]], "lr": 0.05})
        for i, (x, y) in enumerate(zip((a, b, c), ref)):
            g = None if (i == 1 and step < 2) else torch.full_like(x, 0.1 * (step + 1))
            x.grad, y.grad = g, None if g is None else g.clone()
        opt.step()
        ref_opt.step()
    for x, y in zip((a, b, c), ref):
        torch.testing.assert_close(x, y)


def test_state_is_packed_but_shaped_like_params(device):
    """Fresh state lives in one buffer per key (views), keeps each param's shape and strides, starts each view on
    a 64-byte boundary (odd sizes before it included), and saves and loads like ordinary tensors."""
    params = [
        torch.randn(4, 3, 5, 5, device=device).to(memory_format=torch.channels_last),
        torch.randn(7, device=device),
        torch.randn(6, 9, device=device).t(),
        torch.randn(3, device=device),
    ]
    ref = [p.detach().clone(memory_format=torch.preserve_format) for p in params]
    grads = grad_stream(params, 4)
    opt = fused_optim.AdamW(params, lr=0.01)
    run(opt, params, grads)
    run(torch.optim.AdamW(ref, lr=0.01, foreach=False), ref, grads)
    assert_params_close(params, ref, torch.float32)
    storages = {opt.state[p]["exp_avg"].untyped_storage().data_ptr() for p in params}
    assert len(storages) == 1
    for p in params:
        assert opt.state[p]["exp_avg"].data_ptr() % 64 == 0
        assert opt.state[p]["exp_avg"].stride() == p.stride()
        assert opt.state[p]["exp_avg_sq"].shape == p.shape
    import io

    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    clone = fused_optim.AdamW([p.detach().clone() for p in params], lr=0.01)
    clone.load_state_dict(loaded)
    for i, p in enumerate(params):
        torch.testing.assert_close(clone.state_dict()["state"][i]["exp_avg"], opt.state[p]["exp_avg"])


def test_deepcopy_and_pickle_keep_working(device):
    import pickle

    params = make_params([(8,), (3, 3)], torch.float32, device)
    opt = fused_optim.AdamW(params, lr=0.01)
    run(opt, params, grad_stream(params, 2))
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        cparams = [p for g in clone.param_groups for p in g["params"]]
        before = [p.clone() for p in cparams]
        run(clone, cparams, grad_stream(cparams, 1))
        assert all(not torch.equal(p, q) for p, q in zip(cparams, before))
        assert clone.state[cparams[0]]["step"].item() == 3


def test_loaded_state_does_not_alias_the_state_dict():
    """torch.optim's load_state_dict keeps the saved tensors themselves where no cast is needed; our kernels update
    state in place, so a loaded optimizer must own copies (else stepping it would advance the source too)."""
    a = make_params([(5,), (3,)], torch.float32, "cpu")
    grads = grad_stream(a, 3)
    first = fused_optim.AdamW(a)
    run(first, a, grads[:2])
    b = [p.clone() for p in a]
    second = fused_optim.AdamW(b)
    second.load_state_dict(first.state_dict())
    before = {k: v.clone() for k, v in first.state[a[0]].items()}
    run(second, b, grads[2:])
    for k, v in first.state[a[0]].items():
        assert torch.equal(v, before[k]), k
