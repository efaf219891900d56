"""The parts of torch.optim's contract that other code relies on beyond the update itself: step pre/post hooks,
grad mode, profiler ranges, a step at lr=0 that changes nothing (torch.distributed.checkpoint creates state that
way), and one optimizer per parameter (optimizer-in-backward). Our step has its own wrapper instead of torch's
(optim/_step_wrapper.py), so each behaviour is compared with a torch.optim optimizer doing the same."""

from __future__ import annotations

import json

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import fused_optim

ALL = {
    "AdamW": lambda ps, **kw: fused_optim.AdamW(ps, amsgrad=True, **kw),
    "Adam": lambda ps, **kw: fused_optim.Adam(ps, weight_decay=0.1, **kw),
    "SGD": lambda ps, **kw: fused_optim.SGD(ps, momentum=0.9, nesterov=True, weight_decay=0.1, **kw),
    "RMSprop": lambda ps, **kw: fused_optim.RMSprop(ps, momentum=0.5, centered=True, weight_decay=0.1, **kw),
    "Adagrad": lambda ps, **kw: fused_optim.Adagrad(ps, lr_decay=0.1, weight_decay=0.1, **kw),
    "Lion": lambda ps, **kw: fused_optim.Lion(ps, weight_decay=0.1, **kw),
    "LAMB": lambda ps, **kw: fused_optim.LAMB(ps, weight_decay=0.1, **kw),
}


def params(dtype=torch.float32, shapes=((4, 3), (5,))):
    torch.manual_seed(0)
    return [torch.randn(s, dtype=dtype, requires_grad=True) for s in shapes]


def set_grads(ps, seed=0):
    g = torch.Generator().manual_seed(seed)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g).to(p.dtype)


# Step hooks ---------------------------------------------------------------------------------------------------


def record_hooks(opt, events):
    def record(kind):
        # the optimizer itself is among the args (torch's wrapper passes self in them): name it to compare runs
        return lambda o, a, k: events.append((kind, type(o).__name__, tuple("self" if x is o else x for x in a), k))

    return [
        register_optimizer_step_pre_hook(record("global pre")),
        opt.register_step_pre_hook(record("pre")),
        opt.register_step_post_hook(record("post")),
        register_optimizer_step_post_hook(record("global post")),
    ]


def test_step_hooks_run_as_torch_optims_do():
    runs = {}
    for which, cls in (("ours", fused_optim.AdamW), ("torch", torch.optim.AdamW)):
        ps = params()
        opt = cls(ps, lr=0.1)
        events = []
        handles = record_hooks(opt, events)
        set_grads(ps)
        opt.step()
        opt.step(closure=None)
        for h in handles:
            h.remove()
        opt.step()  # removed hooks stay silent
        runs[which] = events
    assert runs["ours"] == runs["torch"]
    assert [e[0] for e in runs["ours"]] == ["global pre", "pre", "post", "global post"] * 2


def test_pre_hook_may_replace_the_arguments():
    ps = params()
    opt = fused_optim.SGD(ps, lr=0.1)
    calls = []

    def closure():
        calls.append(True)
        return torch.tensor(1.5)

    opt.register_step_pre_hook(lambda o, args, kwargs: (args, {"closure": closure}))  # args = (opt,)
    set_grads(ps)
    assert opt.step() == 1.5 and calls == [True]


def test_pre_hook_with_a_bad_return_value_is_an_error():
    opt = fused_optim.SGD(params(), lr=0.1)
    opt.register_step_pre_hook(lambda o, args, kwargs: "nonsense")
    with pytest.raises(RuntimeError, match="must return None or a tuple of"):
        opt.step()


def test_post_hook_sees_the_updated_params():
    ps = params()
    opt = fused_optim.SGD(ps, lr=0.1)
    before = ps[0].detach().clone()
    seen = []
    opt.register_step_post_hook(lambda o, a, k: seen.append(ps[0].detach().clone()))
    set_grads(ps)
    opt.step()
    torch.testing.assert_close(seen[0], before - 0.1 * ps[0].grad)


# Grad mode ----------------------------------------------------------------------------------------------------


def test_step_runs_without_grad_and_restores_grad_mode():
    ps = params()
    opt = fused_optim.AdamW(ps, lr=0.1)
    set_grads(ps)
    modes = []

    def closure():
        modes.append(torch.is_grad_enabled())  # a closure computes a loss with autograd, as in torch.optim
        return torch.tensor(0.0)

    opt.step(closure)
    assert modes == [True] and torch.is_grad_enabled()
    assert all(p.grad_fn is None and p.requires_grad for p in ps)
    with torch.no_grad():
        opt.step()
        assert not torch.is_grad_enabled()  # the caller's mode survives the step

    opt.param_groups[0]["lr"] = torch.tensor([0.1, 0.2])  # the step raises; grad mode must still come back
    with pytest.raises(RuntimeError, match="lr"):
        opt.step()
    assert torch.is_grad_enabled()


# Profiler ranges ----------------------------------------------------------------------------------------------


def trace_events(tmp_path, fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    return [e for e in json.loads(path.read_text())["traceEvents"] if e.get("ph") == "X"]


def inside(inner, outer):
    return outer["ts"] <= inner["ts"] and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"]


def test_profiler_shows_the_step_and_each_kernel_launch(tmp_path):
    ps = params() + params(torch.float64, shapes=((6,),))
    opt = fused_optim.AdamW(ps, lr=0.1)
    set_grads(ps)
    opt.step()
    events = trace_events(tmp_path, opt.step)
    by_name = {}
    for e in events:
        by_name.setdefault(e["name"], []).append(e)
    (step,) = by_name["fused_optim.AdamW.step"]
    (torch_range,) = by_name["Optimizer.step#AdamW.step"]  # the name torch's own tools look for
    assert inside(step, torch_range)
    launch32 = by_name["fused_optim.AdamW: 2 torch.float32 tensors on cpu"][0]
    launch64 = by_name["fused_optim.AdamW: 1 torch.float64 tensors on cpu"][0]
    ops = by_name["fused_optim::adam_"]  # one per dispatch key the call passes through (Autograd, CPU)
    for launch in (launch32, launch64):
        assert inside(launch, step)
        assert any(inside(op, launch) for op in ops)  # the operator the launch called, nested in its range


@pytest.mark.parametrize("name", ALL)
def test_profiler_labels_every_optimizer(tmp_path, name):
    ps = params()
    opt = ALL[name](ps, lr=0.1)
    set_grads(ps)
    names = {e["name"] for e in trace_events(tmp_path, opt.step)}
    assert f"fused_optim.{type(opt).__name__}.step" in names
    assert any(n.startswith("fused_optim::") for n in names)


def test_no_ranges_without_a_profiler(monkeypatch):
    """The ranges cost time, so they are only opened while a profiler records."""
    opened = []
    monkeypatch.setattr(torch.autograd.profiler.record_function, "__enter__", lambda self: opened.append(self))
    ps = params()
    opt = fused_optim.AdamW(ps, lr=0.1)
    set_grads(ps)
    opt.step()
    assert opened == []


# lr = 0 -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("precision", ["float32", "bf16_master", "bf16_split_master"])
def test_a_step_with_lr_zero_changes_no_param(name, precision):
    """torch.distributed.checkpoint creates optimizer state by stepping at lr=0 before it loads a checkpoint
    (get_optimizer_state_dict of a fresh optimizer), and counts on the params staying exactly as they are."""
    dtype = torch.float32 if precision == "float32" else torch.bfloat16
    kwargs = {}
    if precision != "float32":
        kwargs["master_weights"] = "split" if precision == "bf16_split_master" else True
    ps = params(dtype)
    before = [p.detach().clone() for p in ps]
    opt = ALL[name](ps, lr=0.0, **kwargs)
    for seed in range(3):
        set_grads(ps, seed)  # zero grads in the checkpoint loader; any gradient must leave the params alone
        opt.step()
    for p, b in zip(ps, before):
        assert torch.equal(p, b)
    if kwargs:
        master_key = "master_low_bits" if kwargs["master_weights"] == "split" else "master_param"
        for p, b in zip(ps, before):
            m = opt.state[p][master_key]
            assert torch.equal(m, torch.zeros_like(m)) if master_key == "master_low_bits" else torch.equal(m, b.float())


def test_a_step_with_tensor_lr_zero_changes_no_param():
    ps = params()
    before = [p.detach().clone() for p in ps]
    opt = fused_optim.AdamW(ps, lr=torch.tensor(0.0), weight_decay=0.5)
    set_grads(ps)
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(ps, before))


# Optimizer in backward ----------------------------------------------------------------------------------------


def test_optimizer_in_backward_matches_a_whole_model_optimizer():
    """One optimizer per parameter, stepped by a hook as each gradient is accumulated
    (torch.distributed.optim._apply_optimizer_in_backward), equals one optimizer over the model."""
    in_backward = pytest.importorskip("torch.distributed.optim")._apply_optimizer_in_backward

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))

    ours, ref = model(), model()
    in_backward(fused_optim.AdamW, ours.parameters(), {"lr": 0.01, "weight_decay": 0.1})
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.01, weight_decay=0.1, foreach=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x = torch.randn(5, 6, generator=g)
        ours(x).square().mean().backward()  # steps each parameter as its gradient is ready
        ref(x).square().mean().backward()
        ref_opt.step()
        ref_opt.zero_grad()
    for p, q in zip(ours.parameters(), ref.parameters()):
        assert p.grad is None  # the hook stepped and released each gradient
        torch.testing.assert_close(p, q)
    assert all(len(opts) == 1 for opts in (p._in_backward_optimizers for p in ours.parameters()))


# Editing the state and the param lists between steps ------------------------------------------------------------
# The step caches the tensors it collected from the state and the groups; code that edits them (a reset, a loop
# that moves the state to another device, a param added to a group) must be seen by the next step, as torch.optim
# sees it. Each edit is applied to ours and to torch.optim's AdamW alike, and both run on.


def _replace_every_state_tensor(opt, ps):  # what offloading the state to another device and back does
    for st in opt.state.values():
        for k, v in list(st.items()):
            st[k] = v.clone()


def _clear_state(opt, ps):
    opt.state.clear()


def _new_state_mapping(opt, ps):
    import collections

    opt.state = collections.defaultdict(dict)


def _delete_one_params_state(opt, ps):
    del opt.state[ps[1]]


def _zero_one_moment(opt, ps):
    opt.state[ps[0]]["exp_avg"] = torch.zeros_like(ps[0])


def _replace_one_params_state(opt, ps):
    opt.state[ps[1]] = {k: v.clone() * (2 if k == "exp_avg" else 1) for k, v in opt.state[ps[1]].items()}


def _append_a_param(opt, ps):
    opt.param_groups[0]["params"].append(ps[2])


def _drop_a_param(opt, ps):
    opt.param_groups[0]["params"] = opt.param_groups[0]["params"][:1]


def _replace_a_param_in_place(opt, ps):  # the same list, the same length: only the identity of an entry changes
    opt.param_groups[0]["params"][1] = ps[2]


def _replace_all_params_in_place(opt, ps):
    opt.param_groups[0]["params"][:] = [ps[2], ps[0]]


@pytest.mark.parametrize(
    "edit",
    [
        _replace_every_state_tensor,
        _clear_state,
        _new_state_mapping,
        _delete_one_params_state,
        _zero_one_moment,
        _replace_one_params_state,
        _append_a_param,
        _drop_a_param,
        _replace_a_param_in_place,
        _replace_all_params_in_place,
    ],
)
def test_edits_of_state_and_groups_between_steps_are_seen(edit):
    ours_p = params(shapes=((4, 3), (5,), (7,)))
    ref_p = [p.detach().clone().requires_grad_() for p in ours_p]
    ours = fused_optim.AdamW(ours_p[:2], lr=0.1)
    ref = torch.optim.AdamW(ref_p[:2], lr=0.1, foreach=False)
    for step in range(6):
        if step == 3:
            edit(ours, ours_p)
            edit(ref, ref_p)
        for ps, opt in ((ours_p, ours), (ref_p, ref)):
            set_grads(ps, seed=step)
            opt.step()
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(p, q)
    assert len(ours.state) == len(ref.state)
    for p, q in zip(ours_p, ref_p):
        assert ours.state[p].keys() == ref.state[q].keys()
        for k in ref.state[q]:
            torch.testing.assert_close(ours.state[p][k], ref.state[q][k])


def test_state_saves_and_copies_as_torch_optims_plain_dicts():
    import copy
    import io
    import pickle

    ps = params()
    opt = fused_optim.AdamW(ps, lr=0.1)
    set_grads(ps)
    opt.step()
    sd = opt.state_dict()
    assert all(type(st) is dict for st in sd["state"].values())
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True)["state"][0].keys() == sd["state"][0].keys()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.state.keys() != opt.state.keys()  # new param objects
        set_grads(list(clone.state.keys()))
        clone.step()  # and the copy steps with its own state
        assert [st["step"].item() for st in clone.state.values()] == [2.0, 2.0]
    assert [st["step"].item() for st in opt.state.values()] == [1.0, 1.0]


def test_every_kind_of_state_edit_changes_the_version():
    from fused_optim.optim._state import OptimizerState

    p, q = torch.zeros(1), torch.zeros(2)
    state = OptimizerState()
    edits = [
        lambda s: s[p].__setitem__("a", 1),  # also creates p's dict
        lambda s: s[p].update(b=2),
        lambda s: s[p].setdefault("c", 3),
        lambda s: s[p].pop("c"),
        lambda s: s[p].__delitem__("b"),
        lambda s: s[p].__ior__({"d": 4}),
        lambda s: s[p].popitem(),
        lambda s: s[p].clear(),
        lambda s: s.__setitem__(p, {"x": 1}),
        lambda s: s[p].__setitem__("y", 2),  # a plain dict stored in it is tracked too
        lambda s: s.update({q: {}}),
        lambda s: s.pop(q),
        lambda s: s.setdefault(q, {}),
        lambda s: s.__ior__({q: {}}),
        lambda s: s.popitem(),
        lambda s: s.__delitem__(p),
        lambda s: s.clear(),
    ]
    for i, edit in enumerate(edits):
        before = state.version
        edit(state)
        assert state.version != before, f"edit {i} was not noticed"
    assert state == {}
    assert repr(state) == "defaultdict(<class 'dict'>, {})"  # as torch.optim's state prints


def _run_alike(make_ours, make_ref, shapes, edit, steps=5, dtype=torch.float32):
    """Ours and torch.optim's on equal params: ``edit(opt, params, step)`` before every step, then compare."""
    torch.manual_seed(0)
    ours_p = [torch.randn(s, dtype=dtype, requires_grad=True) for s in shapes]
    ref_p = [p.detach().clone().requires_grad_() for p in ours_p]
    ours, ref = make_ours(ours_p), make_ref(ref_p)
    for step in range(steps):
        for ps, opt in ((ours_p, ours), (ref_p, ref)):
            edit(opt, ps, step)
            g = torch.Generator().manual_seed(step)
            for p in ps:
                p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            opt.step()
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(p, q)
    return ours, ref, ours_p, ref_p


def test_a_new_state_mapping_is_taken_before_any_plan_exists():
    """`opt.state = defaultdict(dict)` right after add_param_group (no plan cached) crashed the next step."""
    import collections

    def edit(opt, ps, step):
        if step == 2:
            opt.add_param_group({"params": [ps[2]]})
        if step in (0, 2):
            opt.state = collections.defaultdict(dict)

    def ours(ps):
        return fused_optim.Adam(ps[:2], lr=0.1)

    def ref(ps):
        return torch.optim.Adam(ps[:2], lr=0.1, foreach=False)

    _run_alike(ours, ref, ((3,), (4,), (2,)), edit)


@pytest.mark.parametrize("kind", ["SGD", "Adam", "Adagrad"])
def test_complex_params_and_state_replaced_through_data_are_seen(kind):
    """A complex tensor is stepped through its real view; `p.data = t` must not leave the step on the old one."""
    make = {
        "SGD": (lambda ps: fused_optim.SGD(ps, lr=0.1, momentum=0.9),
                lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, foreach=False), "momentum_buffer"),
        "Adam": (lambda ps: fused_optim.Adam(ps, lr=0.1), lambda ps: torch.optim.Adam(ps, lr=0.1, foreach=False),
                 "exp_avg"),
        "Adagrad": (lambda ps: fused_optim.Adagrad(ps, lr=0.1),
                    lambda ps: torch.optim.Adagrad(ps, lr=0.1, foreach=False), "sum"),
    }  # fmt: skip
    ours, ref, key = make[kind]

    def edit(opt, ps, step):
        if step == 2:
            ps[0].data = torch.full_like(ps[0], 1 + 2j)
        if step == 3:
            buf = opt.state[ps[1]][key]
            buf.data = torch.full_like(buf, 0.5 + 0.5j)

    ours_opt, ref_opt, ours_p, ref_p = _run_alike(ours, ref, ((3,), (2, 2)), edit, dtype=torch.complex64)
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(ours_opt.state[p][key], ref_opt.state[q][key])


def test_a_param_whose_dtype_changes_in_place_is_seen():
    """module.double() on part of a model: `p.data = p.data.double()` keeps the param object."""

    def edit(opt, ps, step):
        if step == 2:
            ps[0].data = ps[0].data.double()

    def ours(ps):
        return fused_optim.SGD(ps, lr=0.1)

    def ref(ps):
        return torch.optim.SGD(ps, lr=0.1, foreach=False)

    _, _, ours_p, _ = _run_alike(ours, ref, ((3,), (4,)), edit)
    assert [p.dtype for p in ours_p] == [torch.float64, torch.float32]


def test_sgd_without_momentum_keeps_no_state():
    """As torch.optim.SGD: no empty entry per param, so state_dict is {} and survives a param replacement."""
    _, _, ours_p, _ = _run_alike(
        lambda ps: fused_optim.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1), ((3,), (4,)), lambda *a: None
    )
    ours = fused_optim.SGD(ours_p, lr=0.1)
    set_grads(ours_p)
    ours.step()
    assert len(ours.state) == 0 and ours.state_dict()["state"] == {}
    ours.param_groups[0]["params"][0] = torch.zeros(3, requires_grad=True)
    assert ours.state_dict()["state"] == {}
    master = fused_optim.SGD([torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)], master_weights=True)
    set_grads(master.param_groups[0]["params"])
    master.step()
    assert list(master.state_dict()["state"][0]) == ["master_param"]  # the master is state


def test_sgd_with_dampening_after_a_skipped_first_step_is_torchs():
    """GradScaler skips the first step (inf): torch.optim then has no buffer. A checkpoint taken now, or a buffer
    put in by hand, must go on as torch's does (the zero buffer made for the skipped step is not kept)."""

    def first_step_skipped(cls):
        p = torch.ones(2, requires_grad=True)
        kwargs = {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}
        opt = cls([p], **kwargs) if cls is fused_optim.SGD else cls([p], foreach=False, **kwargs)
        scaler = torch.amp.GradScaler("cpu")
        scaler.scale((p * torch.tensor([float("inf"), 1.0])).sum()).backward()
        scaler.step(opt)
        scaler.update()
        return p, opt, kwargs

    for setup in ("resume", "by hand"):
        results = []
        for cls in (fused_optim.SGD, torch.optim.SGD):
            p, opt, kwargs = first_step_skipped(cls)
            assert len(opt.state) == 0
            if setup == "resume":
                opt = cls([p], **kwargs)
                opt.load_state_dict(first_step_skipped(cls)[1].state_dict())
            else:
                opt.state[p]["momentum_buffer"] = torch.full_like(p, 3.0)
            p.grad = torch.ones_like(p)
            opt.step()
            results.append(opt.state[p]["momentum_buffer"])
        torch.testing.assert_close(results[0], results[1])


def test_a_cached_tensor_list_no_longer_holds_a_tensor_whose_dtype_changed():
    from fused_optim import _C

    a, b = torch.zeros(3), torch.zeros(2)
    handle = _C.TensorList([a, b])
    assert handle.holds([a, b]) and not handle.holds([b, a]) and not handle.holds([a])
    a.data = a.data.double()  # the same tensor object, another dtype
    assert not handle.holds([a, b])
