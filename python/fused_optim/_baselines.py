"""Plain-torch baselines for optimizers torch.optim does not have (Lion, LAMB), written the fastest way plain torch
allows: torch._foreach_* ops over all tensors of a group, as torch.optim's foreach paths are. The benchmark's
yardstick for fused_optim.Lion and fused_optim.LAMB (fused_optim/benchmark.py); not part of the public API."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class ForeachLion(torch.optim.Optimizer):
    """Lion (Chen et al., 2023) with foreach ops."""

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p)
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)
            update = torch._foreach_lerp(exp_avgs, grads, 1 - beta1)
            torch._foreach_sign_(update)
            torch._foreach_add_(params, update, alpha=-lr)
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta2)


class ForeachLAMB(torch.optim.Optimizer):
    """LAMB (You et al., 2019) with foreach ops and bias correction."""

    def __init__(self, params: Any, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            for p in params:
                if not self.state[p]:
                    self.state[p].update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            state = [self.state[p] for p in params]
            m = [s["exp_avg"] for s in state]
            v = [s["exp_avg_sq"] for s in state]
            for s in state:
                s["step"] += 1
            t = state[0]["step"]
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, (1 - beta2**t) ** 0.5)
            torch._foreach_add_(denom, eps)
            update: list[Tensor] = torch._foreach_div(m, denom)
            torch._foreach_div_(update, 1 - beta1**t)
            if wd:
                torch._foreach_add_(update, params, alpha=wd)
            p_norms = torch._foreach_norm(params)
            u_norms = torch._foreach_norm(update)
            ratios = [
                torch.where((pn > 0) & (un > 0), pn / un, torch.ones_like(pn)) for pn, un in zip(p_norms, u_norms)
            ]
            torch._foreach_mul_(update, ratios)
            torch._foreach_add_(params, update, alpha=-lr)
