"""Adagrad on the fused multi-tensor kernels (update rule: csrc/rules/adagrad.h)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .. import _ops
from ._base import Bucket, FusedOptimizer, MasterWeights, _pack_state, check_finite, check_lr, check_nonnegative


class Adagrad(FusedOptimizer):
    """Adagrad with torch.optim.Adagrad's arguments, defaults, state keys and state_dict.

    As in torch.optim, the state (``step``, ``sum`` filled with ``initial_accumulator_value``) is created for
    every parameter when the optimizer is built. Gradients must be dense: for sparse gradients use torch.optim's
    Adagrad. ``foreach`` and ``fused`` are accepted for compatibility; the step is always fused.

    Args:
        params: parameters or param groups.
        lr: learning rate, a float or a one-element tensor.
        lr_decay: the lr of step t is ``lr / (1 + (t - 1) * lr_decay)``.
        weight_decay: L2 penalty.
        initial_accumulator_value: starting value of the sum of squared gradients.
        eps: added to the denominator for numerical stability.
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
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        master_weights: MasterWeights = False,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        self._check_group(defaults)
        super().__init__(
            params, defaults, master_weights=master_weights, state_dtype=state_dtype, max_grad_norm=max_grad_norm
        )
        for group in self.param_groups:
            fresh = []
            for p in group["params"]:
                if len(self.state[p]) == 0:
                    self._init_state(p, group, self.state[p])
                    fresh.append(self.state[p])
            _pack_state(fresh, self._state_keys(group))

    def _check_group(self, group: dict[str, Any]) -> None:
        # torch.optim.Adagrad's checks and messages.
        keys = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
        lr, lr_decay, weight_decay, initial_accumulator_value, eps = (group[k] for k in keys)
        check_lr(lr)
        check_nonnegative(lr_decay, "lr_decay value")
        check_nonnegative(weight_decay, "weight_decay value")
        check_nonnegative(initial_accumulator_value, "initial_accumulator_value value")
        check_nonnegative(eps, "epsilon value")
        check_finite(
            ("learning rate", lr),
            ("lr_decay value", lr_decay),
            ("weight_decay value", weight_decay),
            ("initial_accumulator_value value", initial_accumulator_value),
            ("epsilon value", eps),
        )
        super()._check_group(group)

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("sum", "step")

    def _init_state(self, param: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
        # torch.optim reads the value from the defaults, not the group.
        value = float(self.defaults["initial_accumulator_value"])
        fill = complex(value, value) if param.is_complex() else value
        dtype = self._state_dtype(group, param)
        state["sum"] = torch.full_like(param, fill, dtype=dtype, memory_format=torch.preserve_format)

    def _launch(
        self,
        group: dict[str, Any],
        bucket: Bucket,
        grads: list[Tensor],
        lr: Tensor,
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
    ) -> None:
        _ops.adagrad_(
            *bucket.lists("params"),
            grads,
            *bucket.lists("sum", "step"),
            lr=lr,
            lr_decay=float(group["lr_decay"]),
            weight_decay=float(group["weight_decay"]),
            eps=float(group["eps"]),
            maximize=group["maximize"],
            grad_scale=grad_scale,
            found_inf=found_inf,
            master_params=bucket.masters(),
        )
