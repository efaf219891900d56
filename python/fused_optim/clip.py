"""Gradient clipping by global norm, with the norm computed by one fused multi-tensor pass.

``clip_grad_norm_`` is a drop-in for ``torch.nn.utils.clip_grad_norm_``. The optimizers' ``max_grad_norm`` option
goes further: it never rescales the gradients at all, but folds the clip coefficient into the scale the update
kernel already applies (the GradScaler's inverse scale), so clipping costs one read of the gradients.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from . import _ops
from ._dtensor import DTensor, dist, local, without_partial

__all__ = ["clip_grad_norm_", "combine_norms", "total_norm"]


def total_norm(grads: Iterable[Tensor], norm_type: float = 2.0) -> Tensor:
    """The ``norm_type`` norm (2 or inf) of all elements of ``grads`` together, as a 0-dim float32 tensor (float64
    if any gradient is float64) on the first gradient's device. One fused pass per (device, dtype); no host sync.
    DTensor gradients count whole: the norms of their local shards are all-reduced over the mesh dimensions that
    shard them (one all-reduce per mesh dimension), so every rank gets the same global norm. Sparse gradients
    count by their (coalesced) values.
    """
    grads = [grads] if isinstance(grads, Tensor) else [g for g in grads if g is not None]  # not its rows
    if not grads:
        return torch.tensor(0.0)
    norm_type = float(norm_type)
    is_inf = norm_type == float("inf")
    if norm_type != 2.0 and not is_inf:
        raise ValueError(f"total_norm: norm_type must be 2 or inf, got {norm_type}")
    groups: dict[tuple[Any, ...], list[Tensor]] = {}
    for g in grads:
        if g.layout != torch.strided:  # its norm is its values' norm, once duplicate COO indices are summed
            g = (g.coalesce() if g.layout == torch.sparse_coo else g).values()
        shards: tuple[Any, ...] = ()
        if isinstance(g, DTensor):
            g = without_partial(g)  # a Partial gradient's local tensor is a summand, whose norm is no part of it
            shards = (g.device_mesh, tuple(d for d, pl in enumerate(g.placements) if pl.is_shard()))
            g = g.to_local()
        if g.is_complex():  # the max norm is of |z|, not of the real and imaginary parts; the 2-norm is either
            g = g.abs() if is_inf else torch.view_as_real(g)
        groups.setdefault((g.device, g.dtype, shards), []).append(g)
    norms = []
    for (_, _, shards), group in groups.items():
        norm = _ops.grad_norm(group, norm_type)
        if shards and shards[1]:
            mesh, dims = shards
            norm = norm if is_inf else norm.square()
            for d in dims:
                dist.all_reduce(norm, op=dist.ReduceOp.MAX if is_inf else dist.ReduceOp.SUM, group=mesh.get_group(d))
            norm = norm if is_inf else norm.sqrt()
        norms.append(norm)
    return combine_norms(norms, norm_type)


def combine_norms(norms: list[Tensor], norm_type: float = 2.0) -> Tensor:
    """The norm of the union of disjoint sets of elements, from each set's norm (2 or inf), on the first norm's
    device, float64 if any norm is."""
    if len(norms) == 1:
        return norms[0]
    device = norms[0].device
    dtype = torch.float64 if any(n.dtype == torch.float64 for n in norms) else torch.float32
    stacked = torch.stack([n.to(device, dtype) for n in norms])
    return stacked.max() if float(norm_type) == float("inf") else stacked.square().sum().sqrt()


def clip_coefficient(norm: Tensor, max_norm: float) -> Tensor:
    """torch's clip coefficient: ``max_norm / (norm + 1e-6)``, clamped to at most 1."""
    return (max_norm / (norm + 1e-6)).clamp(max=1.0)


@torch.no_grad()
def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> Tensor:
    """Like ``torch.nn.utils.clip_grad_norm_``: scales the gradients in place so that their global norm is at most
    ``max_norm`` and returns the norm before clipping. The norm (2 or inf; other orders are handed to torch) comes
    from one fused pass. ``foreach`` is accepted for compatibility.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    else:
        is_generator = isinstance(parameters, types.GeneratorType)
        parameters = list(parameters)
        if is_generator and not parameters:  # torch's warning: usually a model.parameters() already consumed
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=3)
    # torch converts both with float() and then scales by whatever comes out: a negative max_norm flips the
    # gradients' sign, a NaN one (or a NaN norm_type) makes them NaN. Refuse those by name. (A tensor max_norm is
    # used as it is, as before: reading it would synchronize with its device.)
    norm_type = _as_float(norm_type, "norm_type")
    if not isinstance(max_norm, Tensor):
        max_norm = _as_float(max_norm, "max_norm")
        if not max_norm >= 0.0:
            raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    if math.isnan(norm_type):
        raise ValueError(f"clip_grad_norm_: norm_type must be a number, got {norm_type}")
    if norm_type not in (2.0, math.inf):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    norm = total_norm(grads, norm_type)
    if error_if_nonfinite and bool(torch.logical_or(norm.isnan(), norm.isinf())):
        raise RuntimeError(
            f"The total norm of order {float(norm_type)} for gradients from `parameters` is non-finite, so it cannot "
            "be clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    coef = clip_coefficient(norm, max_norm)
    groups: dict[torch.device, list[Tensor]] = {}
    for g in grads:
        if g.layout != torch.strided:  # torch 2.11's foreach ops refuse sparse tensors
            g.mul_(coef.to(g.device))
        else:
            groups.setdefault(g.device, []).append(local(g))  # a DTensor's shard scales in place
    for device, group in groups.items():
        torch._foreach_mul_(group, coef.to(device))
    return norm


def _as_float(value: Any, name: str) -> float:
    """float(value) as torch's clip_grad_norm_ takes it, with an error that names the argument."""
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise type(e)(f"clip_grad_norm_: {name} must be a number, got {value!r}") from None
