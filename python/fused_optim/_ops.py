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


def _operator(name: str) -> Callable[..., None]:
    eager = getattr(_C, name)
    traced = getattr(torch.ops.fused_optim, name)

    def call(*args: Any, **kwargs: Any) -> None:
        if torch.compiler.is_compiling():
            traced(*args, **kwargs)
        else:
            eager(*args, **kwargs)

    call.__name__ = name
    call.__doc__ = f"torch.ops.fused_optim.{name}, called the cheapest way for the current mode."
    return call


adam_ = _operator("adam_")
sgd_ = _operator("sgd_")
