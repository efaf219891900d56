"""RMSprop on the fused multi-tensor kernels (update rule: csrc/rules/rmsprop.h)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .. import _ops
from ._base import Bucket, FusedOptimizer, MasterWeights, check_finite, check_lr, check_nonnegative


class RMSprop(FusedOptimizer):
    """RMSprop with torch.optim.RMSprop's arguments, defaults, state keys and state_dict.

    torch.optim has no fused RMSprop (only foreach and for-loop paths); this one is a single kernel call per
    (device, dtype) of each param group. State: ``step``, ``square_avg``, plus ``momentum_buffer`` when
    ``momentum > 0`` and ``grad_avg`` when ``centered``. ``foreach`` and ``capturable`` are accepted for
    compatibility; on CUDA the step never synchronizes with the host.

    Args:
        params: parameters or param groups.
        lr: learning rate, a float or a one-element tensor.
        alpha: smoothing constant of the running average of squared gradients.
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty.
        momentum: momentum factor.
        centered: normalize by an estimate of the gradient's variance instead of its second moment.
        maximize: maximize the objective instead of minimizing it.
        master_weights: keep float32 masters for bf16/fp16 params (``"split"``: bf16 only, exact master in 2
            extra bytes); see :class:`~fused_optim.FusedOptimizer`.
        state_dtype: dtype of the state tensors (default: the param's, or float32 with master weights).
        max_grad_norm: clip the gradients of all groups to this global 2-norm, inside the update kernel.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]],
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        master_weights: MasterWeights = False,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
        )
        self._check_group(defaults)
        super().__init__(
            params, defaults, master_weights=master_weights, state_dtype=state_dtype, max_grad_norm=max_grad_norm
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        # torch.optim.RMSprop's checks and messages.
        lr, alpha, eps, weight_decay, momentum = (group[k] for k in ("lr", "alpha", "eps", "weight_decay", "momentum"))
        check_lr(lr)
        check_nonnegative(eps, "epsilon value")
        check_nonnegative(momentum, "momentum value")
        check_nonnegative(weight_decay, "weight_decay value")
        check_nonnegative(alpha, "alpha value")
        check_finite(
            ("learning rate", lr),
            ("alpha value", alpha),
            ("epsilon value", eps),
            ("weight_decay value", weight_decay),
            ("momentum value", momentum),
        )
        super()._check_group(group)

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        keys = ["square_avg"]
        if group["momentum"] > 0:
            keys.append("momentum_buffer")
        if group["centered"]:
            keys.append("grad_avg")
        return (*keys, "step")

    def _start_missing_state(self, param: Tensor, group: dict[str, Any], state: dict[str, Any], key: str) -> Tensor:
        if key in ("momentum_buffer", "grad_avg") and "square_avg" in state:
            return self._zeros(param, group)  # momentum or centering switched on mid-run: they start as at step 0
        return super()._start_missing_state(param, group, state, key)

    def _launch(
        self,
        group: dict[str, Any],
        bucket: Bucket,
        grads: list[Tensor],
        lr: Tensor,
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
    ) -> None:
        momentum, centered = float(group["momentum"]), group["centered"]
        params, square_avgs, steps = bucket.lists("params", "square_avg", "step")
        _ops.rmsprop_(
            params,
            grads,
            square_avgs,
            bucket.lists("grad_avg")[0] if centered else [],
            bucket.lists("momentum_buffer")[0] if momentum > 0 else [],
            steps,
            lr=lr,
            alpha=float(group["alpha"]),
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            momentum=momentum,
            centered=centered,
            maximize=group["maximize"],
            grad_scale=grad_scale,
            found_inf=found_inf,
            master_params=bucket.masters(),
        )
