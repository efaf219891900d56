"""Lion on the fused multi-tensor kernels (update rule: csrc/rules/lion.h)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .. import _ops
from ._base import Bucket, FusedOptimizer, MasterWeights, check_betas, check_finite, check_lr, check_nonnegative


class Lion(FusedOptimizer):
    """Lion, EvoLved Sign Momentum (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms").

    Each step moves every parameter by ``lr`` times the sign of an interpolation of its momentum and gradient, so
    all updates have the same magnitude: use a learning rate 3-10x smaller than AdamW's and a weight decay
    3-10x larger, as the paper advises. Weight decay is decoupled (``p *= 1 - lr * weight_decay``). One state
    tensor per parameter, ``exp_avg`` (the key lion-pytorch uses), so Lion needs half of Adam's state memory.

    Args:
        params: parameters or param groups.
        lr: learning rate, a float or a one-element tensor.
        betas: (beta1, beta2): beta1 interpolates the update direction, beta2 is the momentum's decay.
        weight_decay: decoupled weight decay.
        maximize: maximize the objective instead of minimizing it.
        master_weights: keep float32 masters for bf16/fp16 params (``"split"``: bf16 only, exact master in 2
            extra bytes); see :class:`~fused_optim.FusedOptimizer`.
        state_dtype: dtype of the state tensors (default: the param's, or float32 with master weights).
        max_grad_norm: clip the gradients of all groups to this global 2-norm, inside the update kernel.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]],
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        master_weights: MasterWeights = False,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)
        self._check_group(defaults)
        super().__init__(
            params, defaults, master_weights=master_weights, state_dtype=state_dtype, max_grad_norm=max_grad_norm
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        lr, weight_decay = group["lr"], group["weight_decay"]
        check_lr(lr)
        check_betas(group["betas"], closed=True)
        check_nonnegative(weight_decay, "weight_decay value")
        check_finite(("learning rate", lr), ("weight_decay value", weight_decay))
        super()._check_group(group)

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg",)

    def _launch(
        self,
        group: dict[str, Any],
        bucket: Bucket,
        grads: list[Tensor],
        lr: Tensor,
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
    ) -> None:
        beta1, beta2 = group["betas"]
        _ops.lion_(
            *bucket.lists("params"),
            grads,
            *bucket.lists("exp_avg"),
            lr=lr,
            beta1=float(beta1),
            beta2=float(beta2),
            weight_decay=float(group["weight_decay"]),
            maximize=group["maximize"],
            grad_scale=grad_scale,
            found_inf=found_inf,
            master_params=bucket.masters(),
        )
