"""DTensor parameters (FSDP2's ``fully_shard``, tensor parallelism): the kernels run on local shards.

An optimizer step is elementwise, so updating each rank's local shard of a parameter, with the matching shards of
its gradient and state, is the whole distributed step; no communication is needed. The exceptions are quantities
over whole tensors (LAMB's per-tensor norms, the global gradient norm of clipping), whose local partial sums are
all-reduced over the mesh dimensions that shard each tensor.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

try:
    from torch.distributed.tensor import DTensor, Replicate
except ImportError:  # a torch built without distributed support has no DTensors
    DTensor = ()  # type: ignore[assignment,misc]  # isinstance(x, ()) is always False


def local(t: Tensor) -> Tensor:
    """The local shard of a DTensor (a view: updating it in place updates the DTensor), else ``t`` itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def local_grad(grad: Tensor, param: Any) -> Tensor:
    """The local shard of ``param``'s gradient, laid out as ``param``'s shard. A gradient placed otherwise (e.g.
    Partial after a tensor-parallel backward) is redistributed first, as DTensor's own ops would do."""
    if not isinstance(grad, DTensor):
        raise TypeError(
            f"a DTensor parameter of shape {tuple(param.shape)} has a plain-tensor gradient; gradients of DTensor "
            "parameters must be DTensors"
        )
    if grad.device_mesh != param.device_mesh or grad.placements != param.placements:
        grad = grad.redistribute(param.device_mesh, param.placements)
    return grad.to_local()


def without_partial(t: Any) -> Any:
    """``t`` with its Partial placements (pending sums, as a tensor-parallel backward leaves gradients) reduced to
    Replicate; ``t`` itself when it has none."""
    if not any(pl.is_partial() for pl in t.placements):
        return t
    return t.redistribute(t.device_mesh, [Replicate() if pl.is_partial() else pl for pl in t.placements])


def all_reduce_sharded_rows(values: Tensor, dtensors: list[Any]) -> None:
    """Sum row ``i`` of ``values`` (partial sums over the local shard of ``dtensors[i]``) over the ranks that hold
    the other shards of that tensor, in place. Rows of replicated tensors are already whole and stay as they are."""
    rows: dict[tuple[Any, tuple[int, ...]], list[int]] = {}
    for i, t in enumerate(dtensors):
        dims = tuple(d for d, placement in enumerate(t.placements) if placement.is_shard())
        if dims:
            rows.setdefault((t.device_mesh, dims), []).append(i)
    for (mesh, dims), indices in rows.items():
        index = torch.tensor(indices, device=values.device)
        part = values.index_select(0, index)
        for d in dims:
            dist.all_reduce(part, group=mesh.get_group(d))
        values.index_copy_(0, index, part)
