"""References the tests compare with: torch.optim itself, and formulas written out here."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def adam_reference_step(
    params: list[Tensor],
    grads: list[Tensor],
    state: list[dict[str, Tensor]],
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    amsgrad: bool,
    maximize: bool,
    decoupled: bool,
) -> None:
    """One Adam/AdamW step written from the paper, computed in float64 and rounded once into each tensor's dtype
    (params and state keep their own dtype, as fused_optim's kernels do)."""
    beta1, beta2 = betas
    for p, g, s in zip(params, grads, state):
        if not s:
            s["step"] = 0
            s["exp_avg"] = torch.zeros_like(p)
            s["exp_avg_sq"] = torch.zeros_like(p)
            s["max_exp_avg_sq"] = torch.zeros_like(p)
        s["step"] += 1
        t = s["step"]
        g64 = g.double() * (-1.0 if maximize else 1.0)
        p64 = p.double()
        if weight_decay:
            if decoupled:
                p64 = p64 * (1 - lr * weight_decay)
            else:
                g64 = g64 + weight_decay * p64
        m = s["exp_avg"].double() * beta1 + (1 - beta1) * g64
        v = s["exp_avg_sq"].double() * beta2 + (1 - beta2) * g64 * g64
        s["exp_avg"].copy_(m)
        s["exp_avg_sq"].copy_(v)
        if amsgrad:
            v = torch.maximum(s["max_exp_avg_sq"].double(), v)
            s["max_exp_avg_sq"].copy_(v)
        denom = v.sqrt() / math.sqrt(1 - beta2**t) + eps
        p.copy_(p64 - lr / (1 - beta1**t) * m / denom)


TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.float16: dict(rtol=2e-3, atol=1e-4),
    torch.bfloat16: dict(rtol=1.6e-2, atol=1e-3),
}


def sgd_reference_step(
    params: list[Tensor],
    grads: list[Tensor | None],
    state: list[dict[str, Tensor]],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """One SGD step as torch.optim.SGD documents it, in float64, rounded once into each tensor's dtype."""
    for p, g, s in zip(params, grads, state):
        if g is None:
            continue
        d = g.double() * (-1.0 if maximize else 1.0)
        if weight_decay:
            d = d + weight_decay * p.double()
        if momentum:
            # the new buffer is used unrounded in this step and stored in the tensor's dtype for the next
            buf = d if "momentum_buffer" not in s else momentum * s["momentum_buffer"].double() + (1 - dampening) * d
            s["momentum_buffer"] = buf.to(p.dtype)
            d = d + momentum * buf if nesterov else buf
        p.copy_(p.double() - lr * d)
