"""Fake (meta) kernels of the fused_optim operators, so torch.compile can trace a step without running it.

The ops mutate their inputs in place and return nothing, so a fake kernel only checks what can be checked from
shapes and dtypes and raises the same kind of error the real kernel would.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_lists(op: str, params: list[Tensor], **lists: list[Tensor]) -> None:
    for name, tensors in lists.items():
        torch._check(
            len(tensors) == len(params) or (name in ("max_exp_avg_sqs", "momentum_buffers") and len(tensors) == 0),
            lambda name=name, tensors=tensors: f"{op}: {name} has {len(tensors)} tensors but params has {len(params)}",
        )
        for i, (t, p) in enumerate(zip(tensors, params)):
            if name == "state_steps":
                torch._check(t.numel() == 1, lambda i=i: f"{op}: state_steps[{i}] must have one element")
                continue
            torch._check(
                t.shape == p.shape,
                lambda name=name, i=i, t=t, p=p: (
                    f"{op}: {name}[{i}] has shape {tuple(t.shape)} but params[{i}] has shape {tuple(p.shape)}"
                ),
            )
            torch._check(
                t.dtype == p.dtype,
                lambda name=name, i=i, t=t, p=p: (
                    f"{op}: {name}[{i}] has dtype {t.dtype} but params[{i}] has dtype {p.dtype}"
                ),
            )


@torch.library.register_fake("fused_optim::adam_")
def _adam_fake(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    eps: float,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    _check_lists(
        "fused_optim.adam_",
        params,
        grads=grads,
        exp_avgs=exp_avgs,
        exp_avg_sqs=exp_avg_sqs,
        max_exp_avg_sqs=max_exp_avg_sqs,
        state_steps=state_steps,
    )
    torch._check(lr.numel() == 1, lambda: "fused_optim.adam_: lr must have one element")


@torch.library.register_fake("fused_optim::sgd_")
def _sgd_fake(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor],
    *,
    lr: Tensor,
    weight_decay: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    maximize: bool,
    is_first_step: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    _check_lists("fused_optim.sgd_", params, grads=grads, momentum_buffers=momentum_buffers)
    torch._check(lr.numel() == 1, lambda: "fused_optim.sgd_: lr must have one element")
