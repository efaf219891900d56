"""SGD with momentum, dampening and Nesterov on the fused multi-tensor kernels (update rule: csrc/rules/sgd.h)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .. import _ops
from ._base import Bucket, FusedOptimizer, MasterWeights, check_finite, check_lr, check_nonnegative, check_real


class SGD(FusedOptimizer):
    """Stochastic gradient descent with torch.optim.SGD's arguments, defaults, state keys and state_dict.

    ``momentum_buffer`` is created from the first gradient, as torch.optim does, and only when ``momentum`` is not
    zero. ``foreach`` and ``fused`` are accepted for compatibility; the step is always fused.

    Args:
        params: parameters or param groups.
        lr: learning rate, a float or a one-element tensor.
        momentum: momentum factor.
        dampening: dampening of the momentum.
        weight_decay: L2 penalty.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening == 0).
        maximize: maximize the objective instead of minimizing it.
        master_weights: keep float32 masters for bf16/fp16 params (``"split"``: bf16 only, exact master in 2
            extra bytes); see :class:`~fused_optim.FusedOptimizer`.
        state_dtype: dtype of the state tensors (default: the param's, or float32 with master weights).
        max_grad_norm: clip the gradients of all groups to this global 2-norm, inside the update kernel.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]],
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        master_weights: MasterWeights = False,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        self._check_group(defaults)
        super().__init__(
            params, defaults, master_weights=master_weights, state_dtype=state_dtype, max_grad_norm=max_grad_norm
        )
        self._new_buffers: set[Tensor] = set()  # params whose buffer the next step fills from the gradient

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._new_buffers = set()

    def _check_group(self, group: dict[str, Any]) -> None:
        # torch.optim.SGD's checks and messages (NaN, which its `<` comparisons let through, included).
        lr, momentum, dampening, weight_decay = (group[k] for k in ("lr", "momentum", "dampening", "weight_decay"))
        check_lr(lr)
        check_nonnegative(momentum, "momentum value")
        check_nonnegative(weight_decay, "weight_decay value")
        check_real(dampening, "dampening value")
        if group["nesterov"] and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        # torch.optim lets inf (and any NaN dampening) through: the parameters become inf or NaN. The kernels refuse
        # it at the first step; refuse it here already, where the message can name the argument.
        check_finite(
            ("learning rate", lr),
            ("momentum value", momentum),
            ("dampening value", dampening),
            ("weight_decay value", weight_decay),
        )
        super()._check_group(group)

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _init_state(self, param: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        if group["momentum"] != 0:
            state["momentum_buffer"] = self._zeros(param, group)
            self._new_buffers.add(param)

    def _start_missing_state(self, param: Tensor, group: dict[str, Any], state: dict[str, Any], key: str) -> Tensor:
        # momentum switched on mid-run: the buffer starts as the next gradient, as torch.optim.SGD's does
        self._new_buffers.add(param)
        return self._zeros(param, group)

    def _launch(
        self,
        group: dict[str, Any],
        bucket: Bucket,
        grads: list[Tensor],
        lr: Tensor,
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
    ) -> None:
        buffers = bucket.state.get("momentum_buffer", [])
        kwargs = dict(
            lr=lr,
            weight_decay=float(group["weight_decay"]),
            momentum=float(group["momentum"]),
            dampening=float(group["dampening"]),
            nesterov=group["nesterov"],
            maximize=group["maximize"],
            grad_scale=grad_scale,
            found_inf=found_inf,
        )
        masters = bucket.state.get(bucket.master_key, []) if bucket.master_key else []
        if self._new_buffers and buffers and group["dampening"] == 0:
            # Without dampening, blending into a zero buffer (0 * momentum + g) is the same as starting it from g:
            # no separate first-step call, and no host read of found_inf to know whether the step happened. (A
            # skipped first step keeps that zero buffer where torch.optim has none: any next step is the same.)
            self._new_buffers.difference_update(group["params"][i] for i in bucket.indices)
        if not (self._new_buffers and buffers):
            params, *state = bucket.lists("params", *(["momentum_buffer"] if buffers else []))
            _ops.sgd_(
                params, grads, state[0] if state else [], is_first_step=False, master_params=bucket.masters(), **kwargs
            )
            return
        # Some buffers were just created: they take the gradient as it is, the others blend it in.
        params = group["params"]
        first = [params[i] in self._new_buffers for i in bucket.indices]
        for flag in (True, False):
            pick = [k for k, f in enumerate(first) if f == flag]
            if pick:
                _ops.sgd_(
                    [bucket.params[k] for k in pick],
                    [grads[k] for k in pick],
                    [buffers[k] for k in pick],
                    is_first_step=flag,
                    master_params=[masters[k] for k in pick] if masters else None,
                    **kwargs,
                )
        # The one host read of found_inf (only with dampening). A skipped first step leaves no buffer, as
        # torch.optim, whose step does not run then, leaves none: a checkpoint taken now, or a buffer put into the
        # state by hand, must not be mistaken for a first step's.
        if found_inf is not None and found_inf.item():
            for i in (i for i, f in zip(bucket.indices, first) if f):
                state = self.state[params[i]]
                del state["momentum_buffer"]
                if not state:
                    del self.state[params[i]]
        self._new_buffers.difference_update(params[i] for i in bucket.indices)
