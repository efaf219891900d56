"""Putting an optimizer back exactly as it was, for the tools that step it on the caller's behalf
(:func:`fused_optim.profile_step`, :func:`fused_optim.find_lr`).

The restore is in place: the same state tensors, group dicts and lr tensors come back with their old values, so
views (packed state), references the caller holds and captured CUDA graphs stay valid. ``load_state_dict`` would
restore the values but into new tensors.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.optim.optimizer as torch_optimizer
from torch import Tensor
from torch.optim import Optimizer

_OWN_ATTRS = ("state", "param_groups", "_plans")  # restored separately (_plans: FusedOptimizer's bucket cache)


def _copy(value: Any) -> Any:
    return value.detach().clone() if isinstance(value, Tensor) else copy.deepcopy(value)


def _put_back(current: Any, saved: Any) -> Any:
    """``saved``, written into ``current``'s tensors where it has them (the same objects stay in use)."""
    if isinstance(current, Tensor) and isinstance(saved, Tensor) and current.shape == saved.shape:
        current.copy_(saved)
        return current
    if isinstance(current, (tuple, list)) and type(current) is type(saved) and len(current) == len(saved):
        items = [_put_back(c, v) for c, v in zip(current, saved)]
        if all(a is b for a, b in zip(items, current)):
            return current
        return type(current)(items)
    return saved


class OptimizerSnapshot:
    """An optimizer's state, param groups and attributes (not its params: see the callers) at one moment."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        with torch.no_grad():
            # param -> key -> (the value object, a copy of its value)
            self.state = {p: {k: (v, _copy(v)) for k, v in s.items()} for p, s in optimizer.state.items()}
            self.group_list = optimizer.param_groups
            self.groups = [(g, {k: (v, _copy(v)) for k, v in g.items() if k != "params"}) for g in self.group_list]
        # attribute -> (the object, a copy of a set/dict/list's contents)
        self.attrs = {
            k: (v, copy.copy(v) if isinstance(v, (set, dict, list)) else None)
            for k, v in vars(optimizer).items()
            if k not in _OWN_ATTRS
        }

    def restore(self) -> None:
        optimizer = self.optimizer
        # Entries deleted or put back change the state's version, which drops a FusedOptimizer's cached plans.
        with torch.no_grad():
            for p in [p for p in optimizer.state if p not in self.state]:  # state created since the snapshot
                del optimizer.state[p]
            for p, entries in self.state.items():
                current = optimizer.state[p]
                for key in [k for k in current if k not in entries]:
                    del current[key]
                for key, (obj, value) in entries.items():
                    if isinstance(obj, Tensor):
                        if current.get(key) is not obj:
                            current[key] = obj
                        obj.copy_(value)
                    else:
                        current[key] = value
            for group, saved in self.groups:
                for key in [k for k in group if k != "params" and k not in saved]:
                    del group[key]
                for key, (obj, value) in saved.items():
                    group[key] = _put_back(obj, value)
        optimizer.param_groups = self.group_list
        self.group_list[:] = [group for group, _ in self.groups]
        for key in [k for k in vars(optimizer) if k not in _OWN_ATTRS and k not in self.attrs]:
            delattr(optimizer, key)  # e.g. a flag the step set
        for key, (obj, contents) in self.attrs.items():
            if getattr(optimizer, key, None) is not obj:
                setattr(optimizer, key, obj)
            if isinstance(obj, (set, dict)):
                obj.clear()
                obj.update(contents)
            elif isinstance(obj, list):
                obj[:] = contents


_HOOKS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")
_GLOBAL_HOOKS = ("_global_optimizer_pre_hooks", "_global_optimizer_post_hooks")


@contextmanager
def step_hooks_muted(optimizer: Optimizer) -> Iterator[None]:
    """Step ``optimizer`` without its step pre/post hooks, nor those registered for every optimizer
    (``torch.optim.optimizer.register_optimizer_step_post_hook``): they may act outside the optimizer (an EMA of
    the weights, logging), and their effects could not be undone."""
    own = {name: getattr(optimizer, name) for name in _HOOKS if hasattr(optimizer, name)}
    global_hooks = {name: getattr(torch_optimizer, name) for name in _GLOBAL_HOOKS if hasattr(torch_optimizer, name)}
    for name, hooks in own.items():
        setattr(optimizer, name, type(hooks)())
    saved_global = {name: hooks.copy() for name, hooks in global_hooks.items()}
    for hooks in global_hooks.values():
        hooks.clear()  # cleared in place: torch's step wrapper reads these dicts by module attribute
    try:
        yield
    finally:
        for name, hooks in own.items():
            setattr(optimizer, name, hooks)
        for name, hooks in global_hooks.items():
            hooks.update(saved_global[name])
