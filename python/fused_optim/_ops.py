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
    """A Python function with the operator's schema as its signature (positional and keyword-only arguments,
    defaults), generated from the schema so that Python binds keyword arguments in C: mapping them by hand cost
    about 1 us per call, which optimizer-in-backward (one optimizer per parameter) pays on every parameter."""
    eager = getattr(_C, name)
    traced = getattr(torch.ops.fused_optim, name)
    arguments = traced.default._schema.arguments
    signature, call_args = [], []
    for a in arguments:
        if a.kwarg_only and "*" not in signature:
            signature.append("*")
        signature.append(f"{a.name}=_defaults[{a.name!r}]" if a.has_default_value() else a.name)
        call_args.append(a.name)
    names = ", ".join(call_args)
    source = (
        f"def {name}({', '.join(signature)}):\n"
        f"    if _is_compiling():\n"
        f"        return _traced({', '.join(f'{n}={n}' for n in call_args)})\n"
        f"    try:\n"
        f"        return _eager({names})\n"  # the eager binding takes every argument positionally, in schema order
        f"    except TypeError as error:\n"
        f"        if 'incompatible function arguments' not in str(error):\n"
        f"            raise\n"
        # pybind11 refused an argument before the call, naming none of them (arg0..arg16): torch.ops' parser
        # converts the same arguments and, where it cannot either, says which argument and why.
        f"    return _traced({', '.join(f'{n}={n}' for n in call_args)})\n"
    )
    scope: dict[str, Any] = {
        "_defaults": {a.name: a.default_value for a in arguments if a.has_default_value()},
        "_is_compiling": torch.compiler.is_compiling,
        "_traced": traced,
        "_eager": eager,
    }
    exec(compile(source, f"<fused_optim._ops.{name}>", "exec"), scope)
    call = scope[name]
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
