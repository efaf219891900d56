"""LAMB on the fused multi-tensor kernels (update rule: csrc/rules/lamb.h)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .. import _ops
from .._dtensor import all_reduce_sharded_rows
from ._base import Bucket, FusedOptimizer, MasterWeights, check_betas, check_finite, check_lr, check_nonnegative


class LAMB(FusedOptimizer):
    """LAMB, layer-wise adaptive moments (You et al., 2019, "Large Batch Optimization for Deep Learning").

    Each tensor's Adam-style update ``u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p`` is scaled by the trust
    ratio ``||p|| / ||u||`` (1 when either norm is 0), so every layer moves by a step proportional to its own size.
    A step is two fused passes: the first computes every tensor's new moments and update in registers and keeps
    only the two squared norms; the second recomputes them identically, stores the moments and moves the
    parameters (see csrc/rules/lamb.h for why recomputing beats storing the update).

    Sharded parameters: DTensor params (FSDP2's ``fully_shard``) need nothing; the squared norms of their local
    shards are all-reduced over the mesh dimensions that shard them, so every rank applies the trust ratio of the
    whole tensor. For plain tensors sharded by hand (each rank holding a slice of every tensor), pass the group of
    ranks that share the tensors as ``process_group``: the squared norms are summed over it with
    ``torch.distributed.all_reduce`` (one call per step and dtype). The process group is not part of the
    state_dict.

    Args:
        params: parameters or param groups.
        lr: learning rate, a float or a one-element tensor.
        betas: coefficients of the running averages of the gradient and its square.
        eps: added to the denominator for numerical stability.
        weight_decay: added to the update as ``weight_decay * p`` before the trust ratio (as in the paper).
        bias_correction: divide the moments by ``1 - beta^t`` as Adam does.
        maximize: maximize the objective instead of minimizing it.
        process_group: ranks over which the per-tensor norms (and ``max_grad_norm``'s global norm) are
            all-reduced (sharded parameters); None for none.
        master_weights: keep float32 masters for bf16/fp16 params (``"split"``: bf16 only, exact master in 2
            extra bytes); see :class:`~fused_optim.FusedOptimizer`.
        state_dtype: dtype of the state tensors (default: the param's, or float32 with master weights).
        max_grad_norm: clip the gradients of all groups to this global 2-norm, inside the update kernel.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        *,
        bias_correction: bool = True,
        maximize: bool = False,
        process_group: dist.ProcessGroup | None = None,
        master_weights: MasterWeights = False,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, bias_correction=bias_correction, maximize=maximize
        )
        self._check_group(defaults)
        super().__init__(
            params, defaults, master_weights=master_weights, state_dtype=state_dtype, max_grad_norm=max_grad_norm
        )
        self.process_group = process_group

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Optimizer.__getstate__ leaves the process group out (it cannot be pickled): a copy has none.
        super().__setstate__(state)
        self.__dict__.setdefault("process_group", None)

    def _check_group(self, group: dict[str, Any]) -> None:
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        check_lr(lr)
        check_betas(group["betas"])
        check_nonnegative(eps, "epsilon value")
        check_nonnegative(weight_decay, "weight_decay value")
        check_finite(("learning rate", lr), ("epsilon value", eps), ("weight_decay value", weight_decay))
        super()._check_group(group)

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq", "step")

    def _gradients_sharded_over(self) -> Any:
        return self.process_group

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
        hyper = dict(
            beta1=float(beta1),
            beta2=float(beta2),
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            bias_correction=group["bias_correction"],
        )
        params, exp_avgs, exp_avg_sqs, steps = bucket.lists("params", "exp_avg", "exp_avg_sq", "step")
        lists = (params, grads, exp_avgs, exp_avg_sqs, steps)
        masters = bucket.masters()
        sq_norms = _ops.lamb_norms(
            *lists, maximize=group["maximize"], grad_scale=grad_scale, master_params=masters, **hyper
        )
        if bucket.dtensors is not None:  # whole-tensor norms of sharded DTensors: sum over their shards' ranks
            if self.process_group is not None:
                raise ValueError(
                    "LAMB: process_group is for plain tensors sharded by hand; DTensor params (FSDP2) are reduced "
                    "over their own device mesh, leave process_group=None"
                )
            all_reduce_sharded_rows(sq_norms, bucket.dtensors)
        elif self.process_group is not None:
            dist.all_reduce(sq_norms, group=self.process_group)
        _ops.lamb_(
            *lists,
            sq_norms,
            lr=lr,
            maximize=group["maximize"],
            grad_scale=grad_scale,
            found_inf=found_inf,
            master_params=masters,
            **hyper,
        )
