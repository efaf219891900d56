"""fused_optim.profiling and fused_optim.bandwidth: bytes counted from the tensors, profiling leaves no trace,
each advice rule fires exactly when it applies, launches are counted, errors are clear, and the CLI runs."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import fused_optim
from fused_optim.bandwidth import measure_bandwidth
from fused_optim.profiling import (
    LARGE_MODEL,
    MANY_TENSORS,
    SMALL_NUMEL,
    TINY_NUMEL,
    StepProfile,
    TensorSet,
    add_cli,
    advise,
    bytes_per_step,
    profile_step,
)

SIZES = [(7, 3), (100,), (10,)]  # 131 elements
N = 131


def make_params(sizes=SIZES, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = []
    for s in sizes:
        p = torch.nn.Parameter(torch.randn(s, generator=g).to(dtype))
        p.grad = (torch.randn(s, generator=g) * 1e-2).to(dtype)
        params.append(p)
    return params


def quick(optimizer, **kwargs) -> StepProfile:
    """profile_step with the fewest steps and a given bandwidth (no measuring)."""
    options = dict(steps=2, warmup=1, profiler_steps=1, bandwidth_gbps=1.0, progress=False)
    return profile_step(optimizer, **{**options, **kwargs})


# Bytes moved --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, per_param",
    [
        # AdamW fp32: p read + written (8), g read (4), exp_avg and exp_avg_sq read + written (8 + 8).
        (lambda ps: fused_optim.AdamW(ps), 28),
        (lambda ps: torch.optim.AdamW(ps, foreach=False), 28),
        # SGD with momentum: p (8), g (4), momentum_buffer (8); without momentum no state.
        (lambda ps: fused_optim.SGD(ps, momentum=0.9), 20),
        (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9), 20),
        (lambda ps: fused_optim.SGD(ps), 12),
        # LAMB's two passes read p, g, m, v twice (32) and write p, m, v once (12).
        (lambda ps: fused_optim.LAMB(ps), 44),
        # In-kernel clipping reads the grads once more for the norm.
        (lambda ps: fused_optim.AdamW(ps, max_grad_norm=1.0), 32),
    ],
)
def test_bytes_per_step_fp32(make, per_param):
    opt = make(make_params())
    opt.step()
    assert bytes_per_step(opt) == per_param * N
    prof = quick(opt)
    assert prof.bytes_per_step == per_param * N and prof.bytes_per_param == per_param
    assert prof.effective_gbps == pytest.approx(per_param * N / (prof.median_ms / 1e3) / 1e9)


def test_bytes_per_step_mixed_precision():
    # bf16 p (2 + 2), bf16 g (2), fp32 moments (16), then a float32 master (8) or int16 low bits (4).
    opt = fused_optim.AdamW(make_params(dtype=torch.bfloat16), master_weights=True)
    assert quick(opt).bytes_per_step == 30 * N
    opt = fused_optim.AdamW(make_params(dtype=torch.bfloat16), master_weights="split")
    assert quick(opt).bytes_per_step == 26 * N
    opt = fused_optim.AdamW(make_params(dtype=torch.bfloat16), master_weights="split", state_dtype=torch.bfloat16)
    assert quick(opt).bytes_per_step == 18 * N


def test_params_without_grad_are_not_counted():
    params = make_params()
    params[1].grad = None
    prof = quick(fused_optim.AdamW(params))
    assert (prof.params, prof.tensors, prof.elements) == (3, 2, 31)
    assert prof.bytes_per_step == 28 * 31


# Leaving no trace ---------------------------------------------------------------------------------------------

OPTIMIZERS = {
    "fused AdamW": lambda ps: fused_optim.AdamW(ps, lr=0.1, weight_decay=0.1),
    "fused SGD momentum": lambda ps: fused_optim.SGD(ps, lr=0.1, momentum=0.9),
    "fused LAMB bf16 split": lambda ps: fused_optim.LAMB(ps, lr=0.1, master_weights="split"),
    "torch AdamW forloop": lambda ps: torch.optim.AdamW(ps, lr=0.1, foreach=False),
    "torch SGD foreach": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=True),
}


def state_tensors(opt):
    return [(id(p), k, v) for p, s in opt.state.items() for k, v in s.items() if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("stepped_before", [0, 2])
def test_profiling_restores_params_grads_and_state_exactly(name, stepped_before):
    params = make_params(dtype=torch.bfloat16 if "bf16" in name else torch.float32)
    opt = OPTIMIZERS[name](params)
    for _ in range(stepped_before):
        opt.step()
    twin_params, twin = copy.deepcopy((params, opt))  # never profiled
    for p, q in zip(params, twin_params):
        q.grad = p.grad.clone()  # Parameter's deepcopy leaves the grad behind
    before = [(p.detach().clone(), p.grad, p.grad.clone()) for p in params]
    before_state = state_tensors(opt)
    before_values = [v.clone() for _, _, v in before_state]
    groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups])

    prof = quick(opt, steps=3, warmup=2)
    assert prof.tensors == 3

    for p, (value, grad, grad_value) in zip(params, before):
        assert torch.equal(p, value) and p.grad is grad and torch.equal(p.grad, grad_value)
    after_state = state_tensors(opt)
    assert [(i, k) for i, k, _ in after_state] == [(i, k) for i, k, _ in before_state]
    for (_, _, obj), (_, _, now), value in zip(before_state, after_state, before_values):
        assert now is obj and torch.equal(now, value)  # the same tensors, with their old values
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups
    # The next steps are those of the optimizer that was never profiled, bit for bit.
    for _ in range(2):
        opt.step()
        twin.step()
    for p, q in zip(params, twin_params):
        assert torch.equal(p, q)
    for (_, k, a), (_, _, b) in zip(state_tensors(opt), state_tensors(twin)):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("cls", [fused_optim.AdamW, torch.optim.AdamW])
def test_step_hooks_do_not_run_while_profiling_and_stay_registered(cls):
    opt = cls(make_params())
    calls = []
    opt.register_step_post_hook(lambda *_: calls.append("own"))
    handle = register_optimizer_step_post_hook(lambda *_: calls.append("global"))
    try:
        quick(opt)
        assert calls == []
        opt.step()
        assert calls == ["own", "global"]
    finally:
        handle.remove()


def test_restore_false_leaves_the_steps_in_place():
    params = make_params()
    before = params[0].detach().clone()
    opt = fused_optim.SGD(params, lr=0.1)
    quick(opt, restore=False, steps=1, warmup=0)
    assert not torch.equal(params[0], before)


# Launches -----------------------------------------------------------------------------------------------------


def test_one_launch_per_dtype_for_fused_optim():
    prof = quick(fused_optim.AdamW(make_params()))
    assert prof.launches_per_step == 1 and prof.kernels_per_step is None
    assert prof.launches == {"fused_optim.AdamW: 3 torch.float32 tensors on cpu": 1}

    params = make_params() + make_params([(5,), (6, 2)], dtype=torch.bfloat16, seed=1)
    prof = quick(fused_optim.AdamW(params))
    assert prof.launches_per_step == 2 and len(prof.launches) == 2
    assert {s.dtype: s.tensors for s in prof.param_sets} == {"float32": 3, "bfloat16": 2}


def test_operator_calls_of_torch_optim_are_counted_per_tensor():
    prof = quick(torch.optim.AdamW(make_params(), foreach=False))
    assert prof.launches_per_step >= 3 * 5  # several aten ops per tensor
    assert prof.launches == {} and any(op.name.startswith("aten::") for op in prof.top_ops)


def test_no_profiler():
    prof = quick(fused_optim.AdamW(make_params()), profiler_steps=0)
    assert prof.launches_per_step is None and prof.top_ops == []
    assert "not profiled" in prof.report()


# Advice -------------------------------------------------------------------------------------------------------


def has(prof: StepProfile, text: str) -> bool:
    return any(text in a for a in prof.advice)


def test_clean_step_gets_no_advice():
    prof = quick(fused_optim.AdamW(make_params()), bandwidth_gbps=1e-6)
    assert prof.advice == []
    assert "none: nothing in this step calls for a change" in prof.report()


def test_advice_switch_from_torch_optim():
    assert has(quick(torch.optim.AdamW(make_params()), bandwidth_gbps=1e-6), "fused_optim.AdamW")
    assert has(quick(torch.optim.SGD(make_params(), lr=0.1), bandwidth_gbps=1e-6), "drop-in replacement: fused_")
    assert not has(quick(torch.optim.NAdam(make_params()), bandwidth_gbps=1e-6), "drop-in")  # no fused NAdam
    assert not has(quick(fused_optim.SGD(make_params()), bandwidth_gbps=1e-6), "drop-in")


def test_advice_many_tiny_tensors():
    def prof(n, numel, bandwidth=1e9, make=fused_optim.SGD):
        return quick(make(make_params([(numel,)] * n), lr=0.1), bandwidth_gbps=bandwidth)

    tiny = prof(MANY_TENSORS + 1, 64)  # far below the bandwidth given
    assert has(tiny, "elements: per-tensor costs") and has(tiny, "in 1 launch per step")
    assert not has(tiny, "of the machine's")  # the low-share rule would say the same again
    assert not has(prof(MANY_TENSORS, 64), "elements: per-tensor costs")
    assert not has(prof(MANY_TENSORS + 1, TINY_NUMEL), "elements: per-tensor costs")
    assert not has(prof(MANY_TENSORS + 1, 64, bandwidth=1e-6), "elements: per-tensor costs")  # fused and fast: fine
    slow = prof(MANY_TENSORS + 1, 64, bandwidth=1e-6, make=torch.optim.SGD)  # torch.optim's: always worth saying
    assert has(slow, "torch.optim.SGD works per tensor or per chunk of tensors; fused_optim.SGD takes them all")


def test_advice_strided_params_and_grads():
    base = torch.randn(8, 32)
    sliced = torch.nn.Parameter(base[:, :16])  # not dense
    sliced.grad = torch.randn(8, 16)
    prof = quick(fused_optim.AdamW([sliced]))
    assert (prof.strided_params, prof.strided_grads) == (1, 0) and has(prof, "staging buffer")

    transposed = torch.nn.Parameter(torch.randn(32, 8).t())  # dense, with its grad laid out alike: no copy
    transposed.grad = torch.randn(32, 8).t()
    prof = quick(fused_optim.AdamW([transposed]), bandwidth_gbps=1e-6)
    assert (prof.strided_params, prof.strided_grads) == (0, 0) and prof.advice == []

    plain = torch.nn.Parameter(torch.randn(8, 32))
    plain.grad = torch.randn(32, 8).t()  # row-major param, column-major grad
    prof = quick(fused_optim.AdamW([plain]))
    assert (prof.strided_params, prof.strided_grads) == (0, 1) and has(prof, "staging buffer")


def test_advice_half_params_without_master():
    prof = quick(fused_optim.AdamW(make_params(dtype=torch.float16)), bandwidth_gbps=1e-6)
    assert prof.half_without_master == {"float16": 3}
    assert has(prof, "3 float16 params have no float32 master") and has(prof, "master_weights=True")
    assert not has(prof, "'split'")  # fp16 cannot split
    prof = quick(torch.optim.AdamW(make_params(dtype=torch.bfloat16)), bandwidth_gbps=1e-6)
    assert has(prof, "fused_optim.AdamW(..., master_weights=True) (bf16 also takes master_weights='split'")
    prof = quick(fused_optim.AdamW(make_params(dtype=torch.float16), master_weights=True), bandwidth_gbps=1e-6)
    assert prof.half_without_master == {} and not has(prof, "master")


def test_advice_without_a_drop_in_or_a_profiler_reads_as_words():
    """No fused equivalent (NAdam) and no profiled launches: no 'a fused_optim optimizer(...)' call, no '?'."""
    prof = quick(torch.optim.NAdam(make_params(dtype=torch.bfloat16)), bandwidth_gbps=1e-6)
    assert has(prof, "Use a fused_optim optimizer with master_weights=True")
    tiny = quick(fused_optim.SGD(make_params([(64,)] * (MANY_TENSORS + 1)), lr=0.1), bandwidth_gbps=1e9,
                 profiler_steps=0)  # fmt: skip
    assert has(tiny, "already updates them in few launches") and not has(tiny, "?")
    params = make_params() + make_params([(5,)], dtype=torch.bfloat16, seed=1)
    opt = fused_optim.AdamW(params, master_weights=True, state_dtype=torch.bfloat16)
    prof = quick(opt, bandwidth_gbps=1e-6, profiler_steps=0)
    assert has(prof, "once per set and param group. Unless") and not has(prof, "?")


def test_advice_fp32_state_of_half_params():
    prof = quick(fused_optim.AdamW(make_params(dtype=torch.bfloat16), master_weights=True), bandwidth_gbps=1e-6)
    assert prof.fp32_state_of_half_bytes == 2 * 4 * N  # exp_avg and exp_avg_sq; not the master
    assert prof.advice and all("state_dtype=torch.bfloat16" in a for a in prof.advice)
    opt = fused_optim.AdamW(make_params(dtype=torch.bfloat16), master_weights=True, state_dtype=torch.bfloat16)
    assert quick(opt, bandwidth_gbps=1e-6).advice == []


def test_advice_grad_scaler_without_in_kernel_unscale():
    scaler = torch.amp.GradScaler("cpu")
    assert has(quick(torch.optim.AdamW(make_params()), scaler=scaler), "scaler.step() first unscales")
    assert not has(quick(fused_optim.AdamW(make_params()), scaler=scaler), "unscale")
    assert not has(quick(torch.optim.AdamW(make_params())), "unscale")
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    assert not has(quick(torch.optim.AdamW(make_params()), scaler=disabled), "unscale")


def test_advice_clipping_outside_the_step():
    assert has(quick(fused_optim.AdamW(make_params()), clipping_outside=True), "Pass max_grad_norm=<max_norm>")
    assert has(quick(torch.optim.SGD(make_params(), lr=0.1), clipping_outside=True), "to fused_optim.SGD instead")
    opt = fused_optim.AdamW(make_params(), max_grad_norm=1.0)
    assert has(quick(opt, clipping_outside=True), "clips a second time")
    assert not has(quick(fused_optim.AdamW(make_params())), "clip")


def test_advice_low_bandwidth_share():
    def advice(sizes, bandwidth):
        return quick(fused_optim.SGD(make_params(sizes)), bandwidth_gbps=bandwidth)

    prof = advice(SIZES, 1e9)
    assert prof.bandwidth_share < 0.5 and has(prof, "of the machine's")
    assert not has(advice(SIZES, 1e-6), "of the machine's")
    assert not has(advice([(SMALL_NUMEL,)], 1e9), "of the machine's")  # large tensors: not fixed costs


def test_advice_several_devices_or_dtypes():
    params = make_params() + make_params([(5,)], dtype=torch.bfloat16, seed=1)
    prof = quick(fused_optim.AdamW(params, master_weights=True, state_dtype=torch.bfloat16), bandwidth_gbps=1e-6)
    assert len(prof.advice) == 1 and has(prof, "2 device/dtype sets (mostly float32 on cpu; also 1 bfloat16 on cpu)")


def test_advice_fp32_params_of_a_large_model_on_gpu():
    prof = quick(fused_optim.AdamW(make_params()), bandwidth_gbps=1e-6)

    def with_set(device, dtype, elements):
        return advise(dataclasses.replace(prof, param_sets=[TensorSet(device, dtype, 10, elements)]))

    assert any("master_weights='split'" in a for a in with_set("cuda:0", "float32", LARGE_MODEL))
    assert with_set("cuda:0", "float32", LARGE_MODEL - 1) == []
    assert with_set("cpu", "float32", LARGE_MODEL) == []
    assert with_set("cuda:0", "bfloat16", LARGE_MODEL) == []


# Errors and defaults ------------------------------------------------------------------------------------------


def test_errors():
    params = make_params()
    for p in params:
        p.grad = None
    with pytest.raises(ValueError, match=r"has a \.grad; call loss\.backward\(\)"):
        profile_step(fused_optim.AdamW(params), progress=False)
    opt = fused_optim.AdamW(make_params())
    for bad in (dict(steps=0), dict(steps=1.5), dict(warmup=-1), dict(profiler_steps=True)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            profile_step(opt, progress=False, **bad)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        profile_step(make_params(), progress=False)


def test_measured_bandwidth_and_report(capsys):
    prof = profile_step(fused_optim.AdamW(make_params()), steps=3, warmup=1, profiler_steps=1)
    assert prof.bandwidth_gbps > 0 and prof.bandwidth_device == "cpu" and len(prof.times_ms) == 3
    assert "profiling fused_optim.AdamW.step" in capsys.readouterr().err  # the progress bar
    text = prof.report()
    for piece in ("fused_optim.AdamW.step on cpu", "28.0 B per parameter", "1 operator call", "fused_optim::adam_"):
        assert piece in text
    json.dumps(prof.to_dict())


def test_measure_bandwidth_small_and_cached():
    value = measure_bandwidth("cpu", nbytes=3 << 20, repeats=2)
    assert 0.01 < value < 1e5  # GB/s
    assert measure_bandwidth("cpu", nbytes=3 << 20, repeats=2) == value  # cached
    assert measure_bandwidth("cpu", nbytes=3 << 20, repeats=2, refresh=True) > 0
    with pytest.raises(ValueError, match="nbytes"):
        measure_bandwidth("cpu", nbytes=4)


# Command line -------------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command", required=True)
    add_cli(sub)
    args = ap.parse_args(["profile", *argv])
    return args.func(args)


FAST = ("--workload", "tiny", "--steps", "2", "--warmup", "1", "--profiler-steps", "1", "--bandwidth", "10")


def test_cli_fused_and_torch(capsys):
    assert run_cli(*FAST) == 0
    captured = capsys.readouterr()
    assert "fused_optim.AdamW.step on cpu" in captured.out and "28.0 B per parameter" in captured.out
    assert "workload tiny: 8 tensors" in captured.out and "profiling" in captured.err

    assert run_cli(*FAST, "--optimizer", "torch.momentum", "--impl", "foreach", "--no-progress") == 0
    captured = capsys.readouterr()
    assert "torch.optim.SGD (foreach=True).step" in captured.out and "fused_optim.SGD" in captured.out
    assert captured.err.count("profiling") == 0


def test_cli_mixed_precision_json(capsys):
    argv = (*FAST, "--dtype", "bfloat16", "--master-weights", "split", "--optimizer", "lion", "--json")
    assert run_cli(*argv, "--no-progress") == 0
    data = json.loads(capsys.readouterr().out)
    # Lion, bf16 params with split masters: p read + written (2 + 2), g read (2), float32 exp_avg (4 + 4), low bits
    # (2 + 2).
    assert data["optimizer"] == "fused_optim.Lion" and data["bytes_per_param"] == 18
    assert data["elements"] == 8320 and data["advice"] == [] or data["advice"]


def test_cli_errors(capsys):
    assert run_cli(*FAST, "--optimizer", "nonsense") == 2
    assert "unknown optimizer 'nonsense'" in capsys.readouterr().err
    assert run_cli(*FAST, "--optimizer", "torch.lion") == 2
    assert "torch.optim has no Lion" in capsys.readouterr().err
    assert run_cli(*FAST, "--optimizer", "torch.adamw", "--master-weights") == 2
    assert "--master-weights is a fused_optim option" in capsys.readouterr().err
    assert run_cli(*FAST, "--impl", "fused") == 2
    assert "torch.NAME" in capsys.readouterr().err
    assert run_cli(*FAST, "--device", "nonsense") == 2
    assert "is not a device" in capsys.readouterr().err
    for argv in (("--steps", "0"), ("--warmup", "x"), ("--bandwidth", "-1"), ("--workload", "huge")):
        with pytest.raises(SystemExit) as e:
            run_cli(*argv)
        assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        run_cli("--help")
    assert e.value.code == 0 and "many-tiny" in capsys.readouterr().out
