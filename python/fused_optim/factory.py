"""Build an optimizer by name, in the style of timm's ``create_optimizer_v2`` and HF's Trainer: by default biases
and normalization weights (every parameter with fewer than two dimensions) get no weight decay."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .optim import LAMB, SGD, Adagrad, Adam, AdamW, Lion, RMSprop

__all__ = ["create_optimizer", "list_optimizers", "param_groups_weight_decay"]

# name -> (class, defaults the name implies)
_REGISTRY: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (SGD, {}),
    "momentum": (SGD, {"momentum": 0.9}),
    "nesterov": (SGD, {"momentum": 0.9, "nesterov": True}),
    "rmsprop": (RMSprop, {}),
    "adagrad": (Adagrad, {}),
    "adam": (Adam, {}),
    "adamw": (AdamW, {}),
    "lion": (Lion, {}),
    "lamb": (LAMB, {}),
}


def list_optimizers() -> list[str]:
    """The names :func:`create_optimizer` knows."""
    return sorted(_REGISTRY)


def param_groups_weight_decay(
    model: torch.nn.Module,
    weight_decay: float,
    no_weight_decay: Iterable[str] = (),
    *,
    filter_bias_and_norm: bool = True,
) -> list[dict[str, Any]]:
    """Two param groups of ``model``'s trainable parameters: with ``weight_decay``, and without it for the names
    listed in ``no_weight_decay`` (exact parameter names, as ``named_parameters`` gives them; a name the model does
    not have is an error) and, with ``filter_bias_and_norm``, for biases, normalization weights and other
    parameters of fewer than two dimensions."""
    if isinstance(no_weight_decay, str):  # set("fc.bias") would be a set of letters, matching nothing
        raise TypeError(f"no_weight_decay must be a list of parameter names, not the string {no_weight_decay!r}")
    skip = set(no_weight_decay)
    unknown = skip - {name for name, _ in model.named_parameters()}
    if unknown:  # a misspelt name would leave its parameter decayed without a word
        raise ValueError(f"no_weight_decay names parameters the model does not have: {sorted(unknown)}")
    decay: list[Tensor] = []
    no_decay: list[Tensor] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        small = filter_bias_and_norm and (p.ndim <= 1 or name.endswith(".bias"))
        (no_decay if small or name in skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def create_optimizer(
    name_or_class: str | type[torch.optim.Optimizer],
    model_or_params: torch.nn.Module | Iterable[Tensor] | Iterable[dict[str, Any]],
    lr: float | Tensor | None = None,
    weight_decay: float | None = None,
    *,
    filter_bias_and_norm: bool = True,
    no_weight_decay: Iterable[str] = (),
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """Create an optimizer.

    Args:
        name_or_class: a name from :func:`list_optimizers` (case-insensitive; "momentum" and "nesterov" are SGD
            with momentum 0.9) or any optimizer class, fused_optim's or torch.optim's.
        model_or_params: a module, or parameters / param groups as any optimizer takes them.
        lr: the learning rate (None: the optimizer's default).
        weight_decay: weight decay (None: the optimizer's default, e.g. AdamW's 0.01); for a module with
            ``filter_bias_and_norm``, applied to parameters of two or more dimensions only (see
            :func:`param_groups_weight_decay`).
        no_weight_decay: more parameter names to exclude from weight decay.
        **kwargs: passed to the optimizer (e.g. ``betas``, ``master_weights``, ``max_grad_norm``).
    """
    if isinstance(name_or_class, str):
        key = name_or_class.lower().replace("_", "").replace("-", "")
        if key not in _REGISTRY:
            raise ValueError(f"unknown optimizer {name_or_class!r}; known: {', '.join(list_optimizers())}")
        cls, implied = _REGISTRY[key]
        kwargs = {**implied, **kwargs}
    elif isinstance(name_or_class, type) and issubclass(name_or_class, torch.optim.Optimizer):
        cls = name_or_class
    else:
        raise TypeError(f"name_or_class must be a name or a torch.optim.Optimizer subclass, got {name_or_class!r}")
    signature = inspect.signature(cls).parameters
    takes_weight_decay = "weight_decay" in signature
    if weight_decay is None:
        default = signature["weight_decay"].default if takes_weight_decay else 0.0
        weight_decay = default if isinstance(default, numbers.Real) else 0.0
    # The groups built below carry weight_decay past the optimizer's own check of its default (and torch.optim's
    # optimizers let inf through, which makes every parameter NaN).
    if not isinstance(weight_decay, numbers.Real):
        raise TypeError(f"weight_decay must be a number, got {weight_decay!r}")
    if not 0.0 <= weight_decay < math.inf:
        raise ValueError(f"Invalid weight_decay value: {weight_decay} (must be finite and >= 0)")
    if weight_decay and not takes_weight_decay:  # Rprop, LBFGS, SparseAdam: group keys they would never read
        raise ValueError(f"{cls.__name__} takes no weight_decay")
    if isinstance(model_or_params, torch.nn.Module):
        if not any(p.requires_grad for p in model_or_params.parameters()):  # else two empty groups, silently
            raise ValueError("optimizer got an empty parameter list: the module has no trainable parameters")
        if weight_decay and (filter_bias_and_norm or no_weight_decay):
            params: Any = param_groups_weight_decay(
                model_or_params, weight_decay, no_weight_decay, filter_bias_and_norm=filter_bias_and_norm
            )
            weight_decay = 0.0  # carried by the groups
        else:
            params = [p for p in model_or_params.parameters() if p.requires_grad]
    else:
        if no_weight_decay:
            raise ValueError("no_weight_decay names parameters, so it needs a module, not a list of parameters")
        params = model_or_params
    if lr is not None:
        kwargs["lr"] = lr
    if takes_weight_decay:
        kwargs["weight_decay"] = weight_decay
    return cls(params, **kwargs)
