"""Adam and AdamW on the fused multi-tensor kernels (update rule: csrc/rules/adam.h)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .. import _ops
from ._base import Bucket, FusedOptimizer, MasterWeights, check_betas, check_finite, check_lr, check_nonnegative


class Adam(FusedOptimizer):
    """Adam (Kingma & Ba, 2014) with torch.optim.Adam's arguments, defaults, state keys and state_dict.

    Every step is one fused kernel call per (device, dtype) of each param group, on CPU or CUDA. With
    ``decoupled_weight_decay=True`` it is AdamW. ``foreach``, ``fused`` and ``capturable`` are accepted for
    compatibility and have no effect: the step is always fused, and on CUDA it never synchronizes with the host
    (lr may be a tensor on the device). Parameters of fp32, fp64, fp16 and bf16 are updated in their own dtype
    with fp32 (fp64 for fp64) arithmetic.

    Args:
        params: parameters or param groups (dicts), as for any torch optimizer.
        lr: learning rate, a float or a one-element tensor.
        betas: coefficients of the running averages of the gradient and its square (floats, or one-element
            tensors, read on the host each step as in torch's fused path).
        eps: added to the denominator for numerical stability.
        weight_decay: L2 penalty (decoupled from the gradient with ``decoupled_weight_decay``).
        amsgrad: use the maximum of past second moments (AMSGrad).
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
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        master_weights: MasterWeights = False,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        self._check_group(defaults)
        super().__init__(
            params, defaults, master_weights=master_weights, state_dtype=state_dtype, max_grad_norm=max_grad_norm
        )

    def _check_group(self, group: dict[str, Any]) -> None:
        # torch.optim's checks and messages, so code that catches them keeps working.
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        check_lr(lr)
        check_nonnegative(eps, "epsilon value")
        check_betas(group["betas"])
        check_nonnegative(weight_decay, "weight_decay value")
        check_finite(("learning rate", lr), ("epsilon value", eps), ("weight_decay value", weight_decay))
        super()._check_group(group)

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"] else ("exp_avg", "exp_avg_sq")
        return (*keys, "step")

    def _start_missing_state(self, param: Tensor, group: dict[str, Any], state: dict[str, Any], key: str) -> Tensor:
        if key == "max_exp_avg_sq" and "exp_avg_sq" in state:
            # amsgrad switched on mid-run: the running maximum starts at the current second moment
            return state["exp_avg_sq"].clone()
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
        beta1, beta2 = group["betas"]
        amsgrad = group["amsgrad"]
        params, exp_avgs, exp_avg_sqs, steps = bucket.lists("params", "exp_avg", "exp_avg_sq", "step")
        _ops.adam_(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            bucket.lists("max_exp_avg_sq")[0] if amsgrad else [],
            steps,
            lr=lr,
            beta1=float(beta1),
            beta2=float(beta2),
            weight_decay=float(group["weight_decay"]),
            eps=float(group["eps"]),
            amsgrad=amsgrad,
            maximize=group["maximize"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            grad_scale=grad_scale,
            found_inf=found_inf,
            master_params=bucket.masters(),
        )


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2017): Adam with decoupled weight decay, as torch.optim.AdamW.

    Same arguments and defaults as torch.optim.AdamW (``weight_decay=1e-2``); see :class:`Adam`.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]],
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        master_weights: MasterWeights = False,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            master_weights=master_weights,
            state_dtype=state_dtype,
            max_grad_norm=max_grad_norm,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:  # as torch.optim.AdamW: an Adam state_dict loads as AdamW still
            group["decoupled_weight_decay"] = True
