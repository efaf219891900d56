"""What surrounds every ``step()``: torch.optim's step hooks, profiler labels and grad mode, at low cost.

torch.optim wraps each optimizer class's ``step`` (``Optimizer.profile_hook_step``) to run the step pre/post
hooks and to open a profiler range. That wrapper costs about 5 us per call even when no hook is registered and
no profiler runs, because the range is opened regardless; optimizer-in-backward (one optimizer per parameter) pays
it once per parameter, more than our fused step itself. This wrapper keeps its behaviour (the same hooks, called
with the same arguments in the same order; torch's ``Optimizer.step#<class>.step`` range, which profiling tools
look for) and adds our own labels, but only opens ranges while a profiler is running.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from itertools import chain
from typing import Any

import torch
from torch.autograd.profiler import record_function

try:  # torch's registries of global step hooks (torch.optim.optimizer.register_optimizer_step_*_hook)
    from torch.optim.optimizer import _global_optimizer_post_hooks, _global_optimizer_pre_hooks
except ImportError:  # pragma: no cover - a torch that moved them: keep torch's own wrapper instead
    _global_optimizer_pre_hooks = _global_optimizer_post_hooks = None

_profiler_enabled = torch._C._autograd._profiler_enabled


def profiling() -> bool:
    """True while a torch profiler records (labels are only worth their cost then)."""
    return not torch.compiler.is_compiling() and _profiler_enabled()


def wrap_step(step: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a FusedOptimizer's ``step``: hooks and labels as torch.optim's wrapper gives them, and the body run
    without autograd (the step updates leaves in place)."""
    if _global_optimizer_pre_hooks is None:
        return torch.no_grad()(step)

    @functools.wraps(step)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        self = args[0]  # hooks get self among the args, as from torch's wrapper, and may replace them all
        for pre_hook in chain(_global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(
                        f"{step} must return None or a tuple of (new_args, new_kwargs), but got {result}."
                    )
        if profiling():
            name = type(self).__name__
            with record_function(f"Optimizer.step#{name}.step"), record_function(f"fused_optim.{name}.step"):
                out = _without_grad(step, *args, **kwargs)
        else:
            out = _without_grad(step, *args, **kwargs)
        self._optimizer_step_code()  # the marker torch.profiler's memory profiler looks for
        for post_hook in chain(self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()):
            post_hook(self, args, kwargs)
        return out

    wrapper.hooked = True  # type: ignore[attr-defined]  # tells Optimizer.__init__ not to wrap it again
    return wrapper


def _without_grad(step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if torch.compiler.is_compiling():
        with torch.no_grad():
            return step(*args, **kwargs)
    # torch.no_grad() as a context costs about 1 us (an object per call); the switch itself is far cheaper
    previous = torch.is_grad_enabled()
    torch._C._set_grad_enabled(False)
    try:
        return step(*args, **kwargs)
    finally:
        torch._C._set_grad_enabled(previous)
