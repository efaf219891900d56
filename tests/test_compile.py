"""torch.compile traces a step of our optimizers in one graph (the fake kernels), without recompiling when a
tensor lr changes, and the compiled step (functionalized by AOTAutograd) matches torch.optim."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing

import fused_optim


@pytest.mark.parametrize("backend", ["counter", "aot_eager"])
def test_compiled_step_one_graph_no_recompile(backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    ours = [torch.randn(10, requires_grad=True), torch.randn(3, 4, requires_grad=True)]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    opt = fused_optim.AdamW(ours, lr=torch.tensor(0.01), amsgrad=True)
    ref_opt = torch.optim.AdamW(ref, lr=0.01, amsgrad=True, foreach=False)
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
