"""Fake (meta) kernels of the fused_optim operators, so torch.compile can trace a step without running it.

The ops mutate their inputs in place and return nothing, so a fake kernel only checks what can be checked from
shapes and dtypes and raises the same kind of error the real kernel would.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MAY_BE_EMPTY = ("max_exp_avg_sqs", "momentum_buffers", "grad_avgs")


def _check_lists(op: str, params: list[Tensor], **lists: list[Tensor]) -> None:
    for name, tensors in lists.items():
        torch._check(
            len(tensors) == len(params) or (name in _MAY_BE_EMPTY and len(tensors) == 0),
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
                t.dtype.is_floating_point,
                lambda name=name, i=i, t=t: f"{op}: {name}[{i}] has dtype {t.dtype}; a floating-point dtype is needed",
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
    master_params: list[Tensor] | None = None,
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
    master_params: list[Tensor] | None = None,
) -> None:
    _check_lists("fused_optim.sgd_", params, grads=grads, momentum_buffers=momentum_buffers)
    torch._check(lr.numel() == 1, lambda: "fused_optim.sgd_: lr must have one element")


@torch.library.register_fake("fused_optim::rmsprop_")
def _rmsprop_fake(
    params: list[Tensor],
    grads: list[Tensor],
    square_avgs: list[Tensor],
    grad_avgs: list[Tensor],
    momentum_buffers: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Tensor,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    master_params: list[Tensor] | None = None,
) -> None:
    _check_lists(
        "fused_optim.rmsprop_",
        params,
        grads=grads,
        square_avgs=square_avgs,
        grad_avgs=grad_avgs,
        momentum_buffers=momentum_buffers,
        state_steps=state_steps,
    )
    torch._check(lr.numel() == 1, lambda: "fused_optim.rmsprop_: lr must have one element")


@torch.library.register_fake("fused_optim::adagrad_")
def _adagrad_fake(
    params: list[Tensor],
    grads: list[Tensor],
    state_sums: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: Tensor,
    lr_decay: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    master_params: list[Tensor] | None = None,
) -> None:
    _check_lists("fused_optim.adagrad_", params, grads=grads, state_sums=state_sums, state_steps=state_steps)
    torch._check(lr.numel() == 1, lambda: "fused_optim.adagrad_: lr must have one element")


@torch.library.register_fake("fused_optim::lion_")
def _lion_fake(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    *,
    lr: Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    maximize: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    master_params: list[Tensor] | None = None,
) -> None:
    _check_lists("fused_optim.lion_", params, grads=grads, exp_avgs=exp_avgs)
    torch._check(lr.numel() == 1, lambda: "fused_optim.lion_: lr must have one element")


@torch.library.register_fake("fused_optim::lamb_norms")
def _lamb_norms_fake(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction: bool,
    maximize: bool,
    grad_scale: Tensor | None = None,
    master_params: list[Tensor] | None = None,
) -> Tensor:
    _check_lists(
        "fused_optim.lamb_norms",
        params,
        grads=grads,
        exp_avgs=exp_avgs,
        exp_avg_sqs=exp_avg_sqs,
        state_steps=state_steps,
    )
    device = params[0].device if params else torch.device("cpu")
    return torch.empty((len(params), 2), dtype=_lamb_norm_dtype(params), device=device)


def _lamb_norm_dtype(params: list[Tensor]) -> torch.dtype:
    return torch.float64 if params and params[0].dtype == torch.float64 else torch.float32


@torch.library.register_fake("fused_optim::lamb_")
def _lamb_fake(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    sq_norms: Tensor,
    *,
    lr: Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    bias_correction: bool,
    maximize: bool,
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
    master_params: list[Tensor] | None = None,
) -> None:
    _check_lists(
        "fused_optim.lamb_",
        params,
        grads=grads,
        exp_avgs=exp_avgs,
        exp_avg_sqs=exp_avg_sqs,
        state_steps=state_steps,
    )
    torch._check(
        tuple(sq_norms.shape) == (len(params), 2) and sq_norms.dtype == _lamb_norm_dtype(params),
        lambda: (
            f"fused_optim.lamb_: sq_norms must be a {_lamb_norm_dtype(params)} tensor of shape ({len(params)}, 2), "
            f"got {sq_norms.dtype} of shape {tuple(sq_norms.shape)}"
        ),
    )
    torch._check(lr.numel() == 1, lambda: "fused_optim.lamb_: lr must have one element")


@torch.library.register_fake("fused_optim::grad_norm")
def _grad_norm_fake(tensors: list[Tensor], norm_type: float = 2.0) -> Tensor:
    torch._check(
        norm_type == 2.0 or norm_type == float("inf"),
        lambda: f"fused_optim.grad_norm: norm_type must be 2 or inf, got {norm_type}",
    )
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = torch.float64 if tensors and tensors[0].dtype == torch.float64 else torch.float32
    return torch.empty((), dtype=dtype, device=device)
