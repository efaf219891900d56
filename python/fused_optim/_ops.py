"""How the optimizers call the operators.

In eager mode through ``fused_optim._C``'s pybind11 bindings, which enter the same dispatcher entry as
``torch.ops.fused_optim.*`` (same kernels, same profiler events) but convert long tensor lists several times more
cheaply than torch.ops' generic argument parsing; under torch.compile through ``torch.ops`` so the compiler sees
the operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from . import _C


def _operator(name: str) -> Callable[..., Any]:
    eager = getattr(_C, name)
    traced = getattr(torch.ops.fused_optim, name)
    arguments = traced.default._schema.arguments
    names = [a.name for a in arguments]
    defaults = {a.name: a.default_value for a in arguments if a.has_default_value()}

    def call(*args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():
            return traced(*args, **kwargs)
        if kwargs:  # the eager binding takes every argument positionally, in schema order
            try:
                rest = [kwargs.pop(n) if n in kwargs else defaults[n] for n in names[len(args) :]]
            except KeyError as e:
                raise TypeError(f"fused_optim.{name}: missing argument {e}") from None
            if kwargs:
                raise TypeError(f"fused_optim.{name}: unexpected arguments {sorted(kwargs)}")
            args = (*args, *rest)
        return eager(*args)

    call.__name__ = name
    call.__doc__ = f"torch.ops.fused_optim.{name}, called the cheapest way for the current mode."
    return call


adam_ = _operator("adam_")
sgd_ = _operator("sgd_")
rmsprop_ = _operator("rmsprop_")
adagrad_ = _operator("adagrad_")
lion_ = _operator("lion_")
lamb_norms = _operator("lamb_norms")
lamb_ = _operator("lamb_")
grad_norm = _operator("grad_norm")
