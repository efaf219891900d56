"""``optimizer.state`` that knows when it was changed from outside a step.

A step reuses the tensors it collected from the state on earlier steps (collecting them is per-parameter Python).
Code that edits the state instead of the tensors in it (``state.clear()`` to reset, ``state[p]["exp_avg"] = ...``,
a loop that moves every state tensor to another device) must make the next step collect them anew, or that step
would update the old tensors and the edit would be silently lost. Every mutation of the outer mapping or of a
param's state dict stamps the mapping with a fresh version; a step compares one integer.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

_versions = itertools.count(1)  # global, so that a different mapping never shows a version a plan recorded


class ParamState(dict):
    """One param's state dict; each change stamps its optimizer's state with a new version."""

    __slots__ = ("_owner",)

    def __init__(self, owner: OptimizerState, items: Any = ()) -> None:
        super().__init__(items)
        self._owner = owner

    def _touch(self) -> None:
        self._owner.version = next(_versions)

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self._touch()

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self._touch()

    def __ior__(self, other: Any) -> ParamState:
        super().__ior__(other)
        self._touch()
        return self

    def clear(self) -> None:
        super().clear()
        self._touch()

    def pop(self, *args: Any) -> Any:
        self._touch()
        return super().pop(*args)

    def popitem(self) -> Any:
        self._touch()
        return super().popitem()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        self._touch()
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._touch()

    def __reduce__(self) -> Any:  # saved and copied as a plain dict: checkpoints must not name this class
        return dict, (dict(self),)


class OptimizerState(defaultdict):
    """``optimizer.state``: a ``defaultdict(dict)`` whose values are ParamState dicts (a plain dict stored in it is
    copied into one) and whose ``version`` changes with every mutation, its own or its values'."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__(self._new_param_state)
        self.version = next(_versions)
        for key, value in dict(items).items():
            self[key] = value

    def _new_param_state(self) -> ParamState:
        return ParamState(self)

    def __setitem__(self, key: Any, value: Any) -> None:
        if not (isinstance(value, ParamState) and value._owner is self) and isinstance(value, dict):
            value = ParamState(self, value)
        super().__setitem__(key, value)
        self.version = next(_versions)

    def __delitem__(self, key: Any) -> None:
        super().__delitem__(key)
        self.version = next(_versions)

    def clear(self) -> None:
        super().clear()
        self.version = next(_versions)

    def pop(self, *args: Any) -> Any:
        self.version = next(_versions)
        return super().pop(*args)

    def popitem(self) -> Any:
        self.version = next(_versions)
        return super().popitem()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> OptimizerState:
        self.update(other)
        return self

    def __repr__(self) -> str:  # torch.optim's, not the default factory's (a bound method of this mapping)
        return f"defaultdict({dict!r}, {dict.__repr__(self)})"

    def copy(self) -> defaultdict:
        return defaultdict(dict, {k: dict(v) if isinstance(v, dict) else v for k, v in self.items()})

    __copy__ = copy

    def __reduce__(self) -> Any:  # pickled, deep-copied and saved as torch.optim's defaultdict(dict)
        return defaultdict, (dict,), None, None, iter(self.items())
