"""Fake (meta) kernels of the fused_optim operators, so torch.compile can trace a step without running it.

The ops mutate their inputs in place (LAMB's norms and grad_norm return a new tensor), so a fake kernel checks what
shapes and dtypes allow and raises the kind of error the real kernel would. One generic fake serves every op: it
reads the op's schema to find the tensor lists, which all line up with the first one (params, or tensors).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

# Lists an op call may leave empty (the variant does not use them) and lists that are not shaped like the params.
_MAY_BE_EMPTY = {"max_exp_avg_sqs", "momentum_buffers", "grad_avgs", "master_params"}
_SCALAR_LISTS = {"state_steps"}


def _norm_dtype(tensors: list[Tensor]) -> torch.dtype:
    return torch.float64 if tensors and tensors[0].dtype == torch.float64 else torch.float32


def _device(tensors: list[Tensor]) -> torch.device:
    return tensors[0].device if tensors else torch.device("cpu")


# The results of the ops that return one, from their first list.
_RESULTS: dict[str, Callable[[list[Tensor]], Tensor]] = {
    "lamb_norms": lambda params: torch.empty((len(params), 2), dtype=_norm_dtype(params), device=_device(params)),
    "grad_norm": lambda tensors: torch.empty((), dtype=_norm_dtype(tensors), device=_device(tensors)),
}


def _check_lists(op: str, first_name: str, first: list[Tensor], lists: dict[str, list[Tensor]]) -> None:
    for name, tensors in lists.items():
        torch._check(
            len(tensors) == len(first) or (name in _MAY_BE_EMPTY and len(tensors) == 0),
            lambda name=name, tensors=tensors: (
                f"{op}: {name} has {len(tensors)} tensors but {first_name} has {len(first)}"
            ),
        )
        for i, (t, p) in enumerate(zip(tensors, first)):
            if name in _SCALAR_LISTS:
                torch._check(t.numel() == 1, lambda name=name, i=i: f"{op}: {name}[{i}] must have one element")
                continue
            torch._check(
                t.shape == p.shape,
                lambda name=name, i=i, t=t, p=p: (
                    f"{op}: {name}[{i}] has shape {tuple(t.shape)} but {first_name}[{i}] has shape {tuple(p.shape)}"
                ),
            )
            torch._check(
                t.dtype.is_floating_point or (name == "master_params" and t.dtype == torch.int16),
                lambda name=name, i=i, t=t: f"{op}: {name}[{i}] has dtype {t.dtype}; a floating-point dtype is needed",
            )


def _check_devices(
    op: str, first_name: str, first: list[Tensor], lists: dict[str, list[Tensor]], bound: dict[str, Any]
) -> None:
    """One device for every list, as the real kernels demand. This fake also serves calls where any tensor is on
    the meta device (the dispatcher picks it then), so a meta tensor among CPU ones must be an error here, not a
    silent no-op. Scalar arguments (lr, grad_scale, found_inf, sq_norms) may also be CPU tensors."""
    if not first:
        return
    device = first[0].device
    for name, tensors in [(first_name, first), *lists.items()]:
        for i, t in enumerate(tensors):
            torch._check(
                t.device == device,
                lambda name=name, i=i, t=t: (
                    f"{op}: {name}[{i}] is on {t.device} but {first_name}[0] is on {device}; "
                    "all tensors of one call must be on one device"
                ),
            )
    for name in ("lr", "grad_scale", "found_inf", "sq_norms"):
        t = bound.get(name)
        if isinstance(t, Tensor):
            torch._check(
                t.device == device or t.device.type == "cpu",
                lambda name=name, t=t: f"{op}: {name} is on {t.device} but {first_name}[0] is on {device}",
            )


def _make_fake(name: str) -> Callable[..., Any]:
    schema = getattr(torch.ops.fused_optim, name).default._schema
    names = [a.name for a in schema.arguments]
    list_names = [a.name for a in schema.arguments if "Tensor[]" in str(a.type) or "List[Tensor]" in str(a.type)]
    op = f"fused_optim.{name}"

    def fake(*args: Any, **kwargs: Any) -> Tensor | None:
        bound = {**dict(zip(names, args)), **kwargs}
        lists = {n: bound[n] for n in list_names if bound.get(n) is not None}
        first_name = list_names[0]
        first = lists.pop(first_name)
        _check_lists(op, first_name, first, lists)
        _check_devices(op, first_name, first, lists, bound)
        lr = bound.get("lr")
        if lr is not None:
            torch._check(lr.numel() == 1, lambda: f"{op}: lr must have one element")
        sq_norms = bound.get("sq_norms")
        if sq_norms is not None:
            torch._check(
                tuple(sq_norms.shape) == (len(first), 2) and sq_norms.dtype == _norm_dtype(first),
                lambda: (
                    f"{op}: sq_norms must be a {_norm_dtype(first)} tensor of shape ({len(first)}, 2), "
                    f"got {sq_norms.dtype} of shape {tuple(sq_norms.shape)}"
                ),
            )
        if name == "grad_norm":
            norm_type = bound.get("norm_type", 2.0)
            torch._check(
                norm_type == 2.0 or norm_type == float("inf"),
                lambda: f"{op}: norm_type must be 2 or inf, got {norm_type}",
            )
        result = _RESULTS.get(name)
        return result(first) if result else None

    fake.__name__ = f"_{name}_fake"
    return fake


for _name in ("adam_", "sgd_", "rmsprop_", "adagrad_", "lion_", "lamb_norms", "lamb_", "grad_norm"):
    torch.library.register_fake(f"fused_optim::{_name}")(_make_fake(_name))
