"""CUDA graphs: a step of every optimizer can be captured once and replayed.

That needs three things, whatever the ``capturable`` flag says (our step always has them): nothing in the step
reads a device value on the host (step counters advance in-kernel; lr, grad_scale and found_inf are read by the
kernels), the tensors the graph holds are updated in place at fixed addresses every step, and values that change
between replays (a tensor lr set by a scheduler) are read at run time, not baked in when the step is first built.
On the GPU the tests capture and replay; on the CPU they check each of the three on the same Python path.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

import fused_optim
from fused_optim.lr_scheduler import CosineAnnealingLR

OPTIMIZERS = {
    "AdamW": lambda ps, lr, **kw: fused_optim.AdamW(ps, lr=lr, amsgrad=True, capturable=True, **kw),
    "Adam": lambda ps, lr, **kw: fused_optim.Adam(ps, lr=lr, weight_decay=0.1, capturable=True, **kw),
    "SGD": lambda ps, lr, **kw: fused_optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True, **kw),
    "RMSprop": lambda ps, lr, **kw: fused_optim.RMSprop(ps, lr=lr, momentum=0.5, centered=True, capturable=True, **kw),
    "Adagrad": lambda ps, lr, **kw: fused_optim.Adagrad(ps, lr=lr, lr_decay=0.1, **kw),
    "Lion": lambda ps, lr, **kw: fused_optim.Lion(ps, lr=lr, weight_decay=0.1, **kw),
    "LAMB": lambda ps, lr, **kw: fused_optim.LAMB(ps, lr=lr, **kw),
}
SHAPES = [(33, 17), (1000,), (7,), (0,)]


@contextlib.contextmanager
def no_host_reads():
    """Fail on any Python-level read of a tensor's value (a device->host sync on the GPU, illegal under capture)."""

    def fail(self, *args, **kwargs):
        raise AssertionError("the optimizer step read a tensor's value on the host")

    names = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
    saved = {n: getattr(torch.Tensor, n) for n in names}
    try:
        for n in names:
            setattr(torch.Tensor, n, fail)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


def make_params(device="cpu", dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.randn(s, device=device, dtype=dtype, requires_grad=True) for s in SHAPES]


def set_grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g).to(p)


def test_the_no_host_read_guard_catches_a_read():
    with pytest.raises(AssertionError, match="on the host"), no_host_reads():
        bool(torch.ones(()) > 0)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("extras", ["plain", "amp_and_clip", "master_weights"])
def test_step_never_reads_a_tensor_on_the_host(name, extras):
    dtype = torch.bfloat16 if extras == "master_weights" else torch.float32
    params = make_params(dtype=dtype)
    kwargs = {"max_grad_norm": 1.0} if extras == "amp_and_clip" else {}
    if extras == "master_weights":
        kwargs["master_weights"] = True
    opt = OPTIMIZERS[name](params, torch.tensor(0.01), **kwargs)
    if extras == "amp_and_clip":  # what torch.amp.GradScaler.step hands a fused optimizer
        opt.grad_scale, opt.found_inf = torch.tensor(4.0), torch.tensor(0.0)
    for step in range(3):  # the first step creates the state; capture happens on a later one
        set_grads(params, step)
        with no_host_reads():
            opt.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_is_updated_in_place(name):
    """A graph replays the kernels on the addresses it captured: no step may swap a tensor for a new one."""
    params = make_params()
    lr = torch.tensor(0.01)
    opt = OPTIMIZERS[name](params, lr, max_grad_norm=1.0)
    scheduler = CosineAnnealingLR(opt, T_total=10, warmup_steps=2)
    set_grads(params, 0)
    opt.step()
    scheduler.step()

    def addresses():
        tensors = [*params, opt.param_groups[0]["lr"], *(t for s in opt.state.values() for t in s.values())]
        return [(id(t), t.data_ptr()) for t in tensors if isinstance(t, torch.Tensor)]

    before = addresses()
    for step in range(1, 4):
        set_grads(params, step)
        opt.step()
        scheduler.step()
    assert addresses() == before
    assert opt.param_groups[0]["lr"] is lr  # the scheduler wrote the tensor lr in place


@pytest.mark.parametrize("name", ["AdamW", "SGD", "RMSprop", "Adagrad"])
def test_tensor_lr_changed_in_place_is_read_each_step(name):
    """The cached plan must not keep the lr of the step that built it: compare with torch.optim fed floats."""
    ours = make_params()
    ref = [p.detach().clone().requires_grad_() for p in ours]
    lr = torch.tensor(0.0)
    opt = OPTIMIZERS[name](ours, lr)
    ours_only = ("lr", "capturable", "foreach", "fused", "decoupled_weight_decay")
    kwargs = {k: v for k, v in opt.defaults.items() if k not in ours_only}
    ref_opt = getattr(torch.optim, name)(ref, lr=0.0, foreach=False, **kwargs)
    for step, value in enumerate([0.01, 0.03, 0.002, 0.05]):
        lr.fill_(value)
        ref_opt.param_groups[0]["lr"] = value
        set_grads(ours, step)
        set_grads(ref, step)
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q)


# On the GPU: capture one step in a CUDA graph and replay it -----------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("extras", ["plain", "clip", "bf16_master"])
def test_cuda_graph_replay_matches_eager_steps(name, extras):
    dtype = torch.bfloat16 if extras == "bf16_master" else torch.float32
    kwargs = {"max_grad_norm": 0.5} if extras == "clip" else {"master_weights": True} if dtype != torch.float32 else {}
    warmup, replays = 3, 5
    lrs = [0.01, 0.02, 0.005, 0.03, 0.01, 0.002, 0.04, 0.01]
    grads = []
    for step in range(warmup + replays):
        g = torch.Generator().manual_seed(step)
        grads.append([torch.randn(s, generator=g).to("cuda", dtype) for s in SHAPES])

    # eager: the same optimizer stepped the ordinary way
    eager_params = make_params("cuda", dtype)
    eager_lr = torch.tensor(lrs[0], device="cuda")
    eager = OPTIMIZERS[name](eager_params, eager_lr, **kwargs)
    for step, g in enumerate(grads):
        eager_lr.fill_(lrs[step])
        for p, gi in zip(eager_params, g):
            p.grad = gi.clone()
        eager.step()

    # graphed: warm-up steps on a side stream (they create the state), then capture one step and replay it
    params = make_params("cuda", dtype)
    lr = torch.tensor(lrs[0], device="cuda")
    opt = OPTIMIZERS[name](params, lr, **kwargs)
    for p in params:
        p.grad = torch.zeros_like(p)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for step in range(warmup):
            lr.fill_(lrs[step])
            for p, gi in zip(params, grads[step]):
                p.grad.copy_(gi)
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.step()
    for step in range(warmup, warmup + replays):
        lr.fill_(lrs[step])
        for p, gi in zip(params, grads[step]):
            p.grad.copy_(gi)
        graph.replay()
    torch.cuda.synchronize()

    for p, q in zip(params, eager_params):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    for p, q in zip(params, eager_params):
        for key, value in eager.state[q].items():
            torch.testing.assert_close(opt.state[p][key], value, rtol=1e-6, atol=1e-6, msg=f"state {key!r}")
