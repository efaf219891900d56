"""torch.compile traces a step of our optimizers in one graph (the fake kernels), without recompiling when a
tensor lr changes, and the compiled step (functionalized by AOTAutograd) matches torch.optim, or for Lion and LAMB
(which torch.optim lacks) the same optimizer run eagerly."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing

import fused_optim

CASES = {
    "AdamW": (lambda ps, lr: fused_optim.AdamW(ps, lr=lr, amsgrad=True), torch.optim.AdamW, dict(amsgrad=True)),
    "SGD": (lambda ps, lr: fused_optim.SGD(ps, lr=lr, momentum=0.9), torch.optim.SGD, dict(momentum=0.9)),
    "RMSprop": (
        lambda ps, lr: fused_optim.RMSprop(ps, lr=lr, momentum=0.5, centered=True),
        torch.optim.RMSprop,
        dict(momentum=0.5, centered=True),
    ),
    "Adagrad": (lambda ps, lr: fused_optim.Adagrad(ps, lr=lr, lr_decay=0.1), torch.optim.Adagrad, dict(lr_decay=0.1)),
    "Lion": (lambda ps, lr: fused_optim.Lion(ps, lr=lr, weight_decay=0.1), None, None),
    "LAMB": (lambda ps, lr: fused_optim.LAMB(ps, lr=lr), None, None),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("backend", ["counter", "aot_eager"])
def test_compiled_step_one_graph_no_recompile(backend, name):
    make, ref_cls, ref_kwargs = CASES[name]
    torch._dynamo.reset()
    torch.manual_seed(0)
    ours = [torch.randn(10, requires_grad=True), torch.randn(3, 4, requires_grad=True)]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    opt = make(ours, torch.tensor(0.01))
    # torch.optim's class, or (Lion, LAMB) the same optimizer run eagerly with a float lr
    ref_opt = make(ref, 0.01) if ref_cls is None else ref_cls(ref, lr=0.01, foreach=False, **ref_kwargs)
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager" if backend == "counter" else backend)

    @torch.compile(backend=counter, fullgraph=True)
    def step() -> None:
        opt.step()

    for i in range(4):
        for p, q in zip(ours, ref):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        opt.param_groups[0]["lr"].fill_(0.01 * (i + 1))
        ref_opt.param_groups[0]["lr"] = 0.01 * (i + 1)
        if i == 0:
            opt.step()  # state is created eagerly on the first step
        else:
            step()
        ref_opt.step()
    assert counter.frame_count == 1
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q)
