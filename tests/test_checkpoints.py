"""Checkpoints: a state_dict saved by this version loads in a fresh process through torch.load(weights_only=True)
(the safe loader checkpoints should use) and the run continues exactly; a state_dict that does not fit the
optimizer is refused with an error that says why, before any state is touched."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fused_optim

CASES = {
    "adamw_bf16_master_tensor_lr": (
        "fused_optim.AdamW(ps, lr=torch.tensor(0.01), weight_decay=0.1, master_weights=True)",
        torch.bfloat16,
    ),
    "adamw_split_master_bf16_state": (
        "fused_optim.AdamW(ps, lr=0.01, master_weights='split', state_dtype=torch.bfloat16, max_grad_norm=1.0)",
        torch.bfloat16,
    ),
    "sgd_momentum": ("fused_optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True)", torch.float32),
    "rmsprop_centered": ("fused_optim.RMSprop(ps, lr=0.01, centered=True, momentum=0.5)", torch.float32),
    "adagrad": ("fused_optim.Adagrad(ps, lr=0.05, lr_decay=0.01)", torch.float32),
    "lion_fp16_master": ("fused_optim.Lion(ps, lr=0.001, master_weights=True)", torch.float16),
    "lamb": ("fused_optim.LAMB(ps, lr=0.01)", torch.float32),
}

# Run in this process and in a fresh one: make the params and optimizer, take 3 steps (or load the checkpoint
# taken after them), then 3 more; the fresh process must end where this one does, bit for bit.
SCRIPT = """
import sys, torch, fused_optim
make, dtype, path, mode = sys.argv[1], getattr(torch, sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(0)
ps = [torch.randn(s).to(dtype).requires_grad_() for s in [(7, 5), (33,), (1,)]]
opt = eval(make)
grads = [[torch.randn(p.shape).to(dtype) for p in ps] for _ in range(6)]
def run(steps):
    for gs in steps:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
if mode == "save":
    run(grads[:3])
    torch.save({"optimizer": opt.state_dict(), "params": [p.detach() for p in ps]}, path)
    run(grads[3:])
    torch.save([p.detach() for p in ps], path + ".end")
else:
    ckpt = torch.load(path, weights_only=True)
    with torch.no_grad():
        for p, saved in zip(ps, ckpt["params"]):
            p.copy_(saved)
    opt.load_state_dict(ckpt["optimizer"])
    run(grads[3:])
    torch.save([p.detach() for p in ps], path + ".resumed")
"""


@pytest.mark.parametrize("case", CASES)
def test_state_dict_loads_in_a_fresh_process_with_weights_only(tmp_path, case):
    make, dtype = CASES[case]
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SCRIPT))
    path = str(tmp_path / "ckpt.pt")
    dtype_name = str(dtype).removeprefix("torch.")
    for mode in ("save", "load"):
        out = subprocess.run(
            [sys.executable, str(script), make, dtype_name, path, mode], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr
    end = torch.load(path + ".end", weights_only=True)
    resumed = torch.load(path + ".resumed", weights_only=True)
    for a, b in zip(end, resumed):
        assert torch.equal(a, b)


def _opt(shapes, **kwargs):
    torch.manual_seed(0)
    ps = [torch.randn(s, requires_grad=True) for s in shapes]
    opt = fused_optim.AdamW(ps, lr=0.01, **kwargs)
    for p in ps:
        p.grad = torch.randn(p.shape)
    opt.step()
    return ps, opt


def test_a_different_number_of_groups_is_refused():
    _, saved = _opt([(3,), (4,)])
    torch.manual_seed(0)
    a, b = torch.randn(3, requires_grad=True), torch.randn(4, requires_grad=True)
    opt = fused_optim.AdamW([{"params": [a]}, {"params": [b]}])
    with pytest.raises(ValueError, match="different number of parameter groups"):
        opt.load_state_dict(saved.state_dict())


def test_a_group_of_another_size_is_refused():
    _, saved = _opt([(3,), (4,)])
    opt = fused_optim.AdamW([torch.randn(3, requires_grad=True)])
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict(saved.state_dict())


def test_state_of_another_shape_is_refused_at_load():
    """Same counts, different shapes (params listed in another order): torch.optim loads this silently and fails
    or corrupts later; here load_state_dict refuses it and the optimizer keeps its own state."""
    _, saved = _opt([(3, 4), (5,)])
    ps, opt = _opt([(5,), (3, 4)])
    before = {k: v.clone() for k, v in opt.state[ps[0]].items()}
    with pytest.raises(
        ValueError, match=r"'exp_avg' of param 0 has shape \(3, 4\), but would go to a param of shape \(5,\)"
    ):
        opt.load_state_dict(saved.state_dict())
    for k, v in before.items():
        assert torch.equal(opt.state[ps[0]][k], v)


def test_state_of_another_optimizer_is_refused_at_the_first_step():
    ps, sgd = [torch.randn(4, requires_grad=True)], None
    sgd = fused_optim.SGD(ps, lr=0.1, momentum=0.9)
    ps[0].grad = torch.randn(4)
    sgd.step()
    adam = fused_optim.AdamW(ps)
    adam.load_state_dict({**sgd.state_dict(), "param_groups": adam.state_dict()["param_groups"]})
    with pytest.raises(RuntimeError, match="has no 'exp_avg'"):
        adam.step()


def test_torch_save_of_the_whole_optimizer_is_not_needed(tmp_path):
    """The state_dict holds only tensors and plain Python values, so weights_only=True accepts it (a pickled
    optimizer object would not load that way)."""
    _, opt = _opt([(3,)], master_weights=False)
    torch.save(opt.state_dict(), tmp_path / "sd.pt")
    loaded = torch.load(tmp_path / "sd.pt", weights_only=True)
    assert loaded["param_groups"][0]["lr"] == 0.01


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([str(Path(__file__))]))


# Older and foreign state_dicts, as torch.optim loads them ---------------------------------------------------------

TORCH_KWARGS = {
    "SGD": dict(lr=0.05, momentum=0.9, weight_decay=0.1),
    "RMSprop": dict(lr=0.01, momentum=0.5),
    "Adagrad": dict(lr=0.05),
    "Adam": dict(lr=0.01, weight_decay=0.1),
    "AdamW": dict(lr=0.01, weight_decay=0.1),
}


def _run_on(ours, ref, ours_p, ref_p, steps=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p, q in zip(ours_p, ref_p):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        ours.step()
        ref.step()


@pytest.mark.parametrize("name", TORCH_KWARGS)
def test_an_older_torch_state_dict_loads_as_in_torch(name):
    """Groups saved before an option existed (maximize, decoupled_weight_decay, foreach...) and steps saved as
    numbers: torch.optim fills in the option's default and makes the step a tensor; so does ours."""
    torch.manual_seed(0)
    src_p = [torch.randn(4, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    src = getattr(torch.optim, name)(src_p, foreach=False, **TORCH_KWARGS[name])
    _run_on(src, src, src_p, [], steps=1)
    old = src.state_dict()
    for group in old["param_groups"]:
        for key in ("maximize", "decoupled_weight_decay", "foreach", "differentiable", "capturable", "fused"):
            group.pop(key, None)
    for st in old["state"].values():
        if "step" in st:
            st["step"] = int(st["step"].item())
    ours_p = [p.detach().clone().requires_grad_() for p in src_p]
    ref_p = [p.detach().clone().requires_grad_() for p in src_p]
    ours = getattr(fused_optim, name)(ours_p, **TORCH_KWARGS[name])
    ref = getattr(torch.optim, name)(ref_p, foreach=False, **TORCH_KWARGS[name])
    ours.load_state_dict(old)
    ref.load_state_dict(old)
    _run_on(ours, ref, ours_p, ref_p)
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(p, q)
        for key, value in ref.state[q].items():
            torch.testing.assert_close(ours.state[p][key], value)
    assert ours.param_groups[0]["maximize"] is False


def test_an_adam_state_dict_loads_into_adamw_as_adamw():
    """torch.optim.AdamW keeps its decoupled weight decay whatever the loaded group says; so does ours."""
    torch.manual_seed(0)
    src_p = [torch.randn(6, requires_grad=True)]
    src = torch.optim.Adam(src_p, lr=0.01, weight_decay=0.5, foreach=False)
    _run_on(src, src, src_p, [], steps=1)
    ours_p, ref_p = [src_p[0].detach().clone().requires_grad_()], [src_p[0].detach().clone().requires_grad_()]
    ours, ref = fused_optim.AdamW(ours_p), torch.optim.AdamW(ref_p, foreach=False)
    ours.load_state_dict(src.state_dict())
    ref.load_state_dict(src.state_dict())
    assert ours.param_groups[0]["decoupled_weight_decay"] is ref.param_groups[0]["decoupled_weight_decay"] is True
    _run_on(ours, ref, ours_p, ref_p)
    torch.testing.assert_close(ours_p[0], ref_p[0])


def test_copies_keep_the_clipping_norm():
    import copy
    import pickle

    opt = fused_optim.AdamW([torch.zeros(3, requires_grad=True)], max_grad_norm=0.25)
    assert copy.deepcopy(opt).max_grad_norm == 0.25
    assert pickle.loads(pickle.dumps(opt)).max_grad_norm == 0.25


def test_load_hooks_see_what_torch_optims_do():
    """A pre-hook's returned dict is what loads (here with the dtype conversion of a bf16 param's fp32 moments),
    and a post-hook sees the loaded state."""
    p = torch.randn(8).bfloat16().requires_grad_()
    opt = fused_optim.Adam([p], lr=0.01, master_weights=True)
    p.grad = torch.randn(8).bfloat16()
    opt.step()
    saved = opt.state_dict()
    seen = []

    def pre(optimizer, state_dict):
        state_dict = {**state_dict, "state": {k: dict(v) for k, v in state_dict["state"].items()}}
        state_dict["state"][0]["exp_avg"] = torch.full((8,), 0.5, dtype=torch.bfloat16)  # converted to fp32
        return state_dict

    def post(optimizer):
        seen.append(optimizer.state[p]["exp_avg"].clone())

    opt.register_load_state_dict_pre_hook(pre)
    opt.register_load_state_dict_post_hook(post)
    opt.load_state_dict(saved)
    assert opt.state[p]["exp_avg"].dtype == torch.float32
    assert torch.equal(opt.state[p]["exp_avg"], torch.full((8,), 0.5))
    assert len(seen) == 1 and torch.equal(seen[0], torch.full((8,), 0.5))


def test_a_saved_state_dict_holds_each_state_tensor_once():
    """State tensors are views of shared buffers: torch.save of the state_dict must write each buffer once, not
    once per view (100 params of 1000 elements: about 800 KB of moments, not 80 MB)."""
    import io

    params = [torch.zeros(1000, requires_grad=True) for _ in range(100)]
    opt = fused_optim.AdamW(params)
    for p in params:
        p.grad = torch.ones(1000)
    opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    moments = sum(t.nbytes for st in opt.state.values() for t in st.values())
    assert moments <= buf.tell() < 1.3 * moments
