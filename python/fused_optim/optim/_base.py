"""The one base class of fused_optim's optimizers: grouping, lazy state, and calling the fused op.

No optimizer math lives here. A subclass says which per-parameter state it keeps (``_init_state``) and how to
call its operator on one bucket of tensors (``_launch``). The base class turns each param group into buckets of
tensors that share a device and dtype, caches them across steps (rebuilt when the set of parameters with
gradients, a group's params or the state itself changes: see _state.py), and makes one operator call per bucket:
no per-parameter Python on the steady-state path beyond collecting the gradients.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import numbers
import operator
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor
from torch.autograd.profiler import record_function
from torch.optim import Optimizer

from .. import _C, _ops
from .._dtensor import DTensor, local, local_grad
from ..clip import clip_coefficient, combine_norms, total_norm
from ._state import OptimizerState, ParamState
from ._step_wrapper import profiling, wrap_step


@dataclass
class Bucket:
    """Tensors of one param group that one operator call updates: one device, one dtype."""

    device: torch.device
    dtype: torch.dtype
    indices: list[int]  # positions in group["params"]
    params: list[Tensor]
    state: dict[str, list[Tensor]] = field(default_factory=dict)  # state key -> one tensor per param
    is_complex: bool = False  # complex params are updated through their real views, as torch.optim does
    master_key: str | None = None  # "master_param" or "master_low_bits" when the params have masters
    whole_group: bool = False  # every param of the group, in order (the common case: grads need no picking)
    #: DTensor params (FSDP2, tensor parallel): each param's DTensor, whose local shard the kernels update.
    dtensors: list[Tensor] | None = None
    #: Complex buckets: (complex tensor, its real view) of each param and state tensor. The views keep the storage
    #: they were made on: `p.data = t` must rebuild them, or the step would update memory no one sees.
    real_views: list[tuple[Tensor, Tensor]] = field(default_factory=list)
    _handles: dict[str, Any] = field(default_factory=dict)
    _view_handles: tuple[Any, ...] | None = None  # real_views' tensors and views, as two _C.TensorLists

    def views_current(self) -> bool:
        """The real views still alias their complex tensors (always true for a real bucket); compared in C++, a
        Python loop of data_ptr() calls cost 1 ms a step on 1000 complex params."""
        if self._view_handles is None:
            self._view_handles = tuple(_C.TensorList(list(x)) for x in zip(*self.real_views))
        return not self._view_handles or self._view_handles[0].same_data(self._view_handles[1])

    def lists(self, *names: str) -> list[Any]:
        """The params (``"params"``) and state lists (by key) for an op call. In eager mode they are
        ``fused_optim._C.TensorList`` handles, converted once (converting 1000 tensors through pybind11 on every
        step cost more than the kernels of small tensors); under torch.compile, the plain lists it traces."""
        if torch.compiler.is_compiling():
            return [self.params if n == "params" else self.state[n] for n in names]
        out = []
        for n in names:
            handle = self._handles.get(n)
            if handle is None:
                handle = self._handles[n] = _C.TensorList(self.params if n == "params" else self.state[n])
            out.append(handle)
        return out

    def masters(self) -> Any:
        """The master_params argument of the op: the masters' list, or None without masters."""
        return None if self.master_key is None else self.lists(self.master_key)[0]

    def grads(self, all_grads: list[Tensor | None]) -> list[Tensor]:
        grads = all_grads if self.whole_group else [all_grads[i] for i in self.indices]
        if self.dtensors is not None:
            grads = [local_grad(g, p) for g, p in zip(grads, self.dtensors)]  # type: ignore[arg-type]
        return [torch.view_as_real(g) for g in grads] if self.is_complex else grads  # type: ignore[misc]


@dataclass
class _GroupPlan:
    key: tuple[Any, ...]
    buckets: list[Bucket]
    steps_until_check: int = 0  # of the step counters' range (see _widen_step_counters); 0: on the next step
    #: What the buckets were collected from (see FusedOptimizer._cached_plan): the group's params, as a
    #: ``_C.TensorList`` that compares them by identity in C++ (None when built under torch.compile), and the
    #: state's version.
    params_handle: Any = None
    state_version: int = 0

    def __post_init__(self) -> None:
        self.complex_buckets = [b for b in self.buckets if b.is_complex]

    @property
    def reads_grads_in_cpp(self) -> bool:
        """One bucket of the whole group, plain tensors: its cached params handle can collect the gradients."""
        if len(self.buckets) != 1:
            return False
        b = self.buckets[0]
        return b.whole_group and not b.is_complex and b.dtensors is None


MasterWeights = bool | Literal["split"]

#: The state key of each kind of master: a float32 copy, or the int16 low halves of a split float32 master.
MASTER_KEYS = {"full": "master_param", "split": "master_low_bits"}
_HALF = (torch.float16, torch.bfloat16)
#: Step counters are float32 tensors, as in torch.optim, which count exactly up to 2^24 and then stop (2^24 + 1
#: rounds back): the bias corrections of Adam, Adagrad's lr decay and LAMB would freeze there. Counters that come
#: within 2 * _STEP_CHECK_EVERY of it are widened to float64 (exact to 2^53), which the kernels also take; the
#: range is checked when a plan is built and every _STEP_CHECK_EVERY steps after (one device read on a GPU).
_STEP_CHECK_EVERY = 2**16
_WIDEN_STEPS_AT = 2**24 - 2 * _STEP_CHECK_EVERY
_GROUP_OPTIONS = ("master_weights", "state_dtype")
_NP_BOOL = ("bool", "bool_")  # numpy's bool scalar type, in numpy 2 and 1
#: The boolean options of the optimizers' param groups.
_FLAGS = frozenset(
    ("amsgrad", "maximize", "nesterov", "centered", "decoupled_weight_decay", "bias_correction", "capturable")
)


class FusedOptimizer(Optimizer):
    """Base class: subclasses define ``_state_keys``, ``_init_state`` and ``_launch``.

    Mixed precision (every optimizer takes these keyword arguments; they are group options, so a param group may
    override them):

    - ``master_weights=True``: bf16 and fp16 params get a float32 master copy (``state[p]["master_param"]``). The
      kernel updates the master in fp32 and writes it, rounded to nearest even, into the param in the same pass,
      so updates smaller than the param's resolution accumulate instead of being lost. fp32/fp64 params ignore it.
    - ``master_weights="split"`` (bf16 params only): the param holds the high 16 bits of the float32 master and
      ``state[p]["master_low_bits"]`` (int16) the low 16 bits. The master is exact at 2 bytes per parameter
      instead of 4; the price is that the bf16 weights the model sees are the master truncated, not rounded (an
      error of up to one bf16 ulp instead of half of one).
    - ``state_dtype``: the dtype of the optimizer's moment and buffer tensors. By default the param's dtype, as in
      torch.optim, or float32 with master weights. ``torch.bfloat16`` halves their memory; the update is still
      computed in fp32 and each stored moment is rounded once per step.

    Gradients may be float32, bfloat16 or float16 whatever the params' dtype.

    CUDA graphs: a step never reads a device value on the host and updates every tensor in place, so it can be
    captured and replayed (after a warm-up step has created the state). A float lr is baked into the captured
    kernels; for an lr that changes between replays, pass a tensor on the device (schedulers update it in place).

    DTensor params (FSDP2's ``fully_shard``): the kernels update each rank's local shard, with state created
    sharded like its param; quantities over whole tensors (LAMB's norms, ``max_grad_norm``) are all-reduced.
    """

    #: torch.amp.GradScaler sets ``grad_scale`` / ``found_inf`` on the optimizer and the kernels consume them.
    _step_supports_amp_scaling = True

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        *,
        master_weights: MasterWeights = False,
        state_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        if defaults.get("differentiable"):
            raise ValueError(f"{type(self).__name__}: differentiable=True is not supported by fused_optim")
        _check_mixed_precision(master_weights, state_dtype)
        # Group options only when set, so that param_groups (and state_dict) stay exactly torch.optim's by default.
        if master_weights:
            defaults = {**defaults, "master_weights": master_weights}
        if state_dtype is not None:
            defaults = {**defaults, "state_dtype": state_dtype}
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {max_grad_norm}")
        super().__init__(params, defaults)
        self.state: OptimizerState = OptimizerState(self.state)
        self._plans: dict[int | None, _GroupPlan] = {}  # _group_key(group) -> its cached plan
        self._lr_cache: dict[int, tuple[float, Tensor]] = {}  # id(group) -> (float lr, that lr as a tensor)
        #: Clip all gradients to this global 2-norm (None: no clipping), see ``step``.
        self.max_grad_norm = max_grad_norm
        #: The global gradient norm (unscaled) of the last step taken with ``max_grad_norm``, as a tensor.
        self.grad_norm: Tensor | None = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        with warnings.catch_warnings():  # torch only warns about duplicates: refused below
            warnings.filterwarnings("ignore", message=".*duplicate parameters")
            super().add_param_group(param_group)
        group = self.param_groups[-1]
        params = group["params"]
        try:
            if len({id(p) for p in params}) != len(params):
                raise ValueError(
                    f"{type(self).__name__}: a param group lists the same parameter twice; one fused pass would "
                    "update it twice at once (torch.optim only warns, and its own code paths disagree on the result)"
                )
            # torch.optim checks only the constructor's defaults; a group's own values would fail at the first step
            # with a message that names nothing (`float(None)`, "not enough values to unpack").
            self._check_group(group)
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise
        if hasattr(self, "_plans"):  # the cached plans hold the state tensors
            self._plans.clear()

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's state_dict, with each param's state as a plain dict (as torch.optim's), so that
        ``torch.load(..., weights_only=True)`` and other libraries see exactly torch.optim's structure."""
        state_dict = super().state_dict()
        state = state_dict.get("state")
        if isinstance(state, dict):
            state_dict["state"] = {k: dict(v) if isinstance(v, ParamState) else v for k, v in state.items()}
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's load_state_dict, except that state keeps the dtype this optimizer uses for it.

        torch.optim casts every floating-point state tensor to its param's dtype, which would round a float32
        master or float32 moments of a bf16 param to bf16. Here masters stay float32 and moments take the group's
        state dtype, converted from the saved values (so an fp32 torch.optim checkpoint loads losslessly into a
        bf16 model with master weights; its master is created from the param on the next step). The group options
        master_weights and state_dtype of this optimizer stay in force where the saved groups lack them (a
        torch.optim state_dict has neither)."""
        # torch.optim's pre-hooks run here, so that the dict they return is the one converted below, and the
        # post-hooks after the conversion; neither runs again inside torch.optim's load_state_dict.
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        hooks = self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks
        self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = {}, {}
        try:
            self._load_state_dict(state_dict)
        finally:
            self._optimizer_load_state_dict_pre_hooks, self._optimizer_load_state_dict_post_hooks = hooks
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._check_state_shapes(state_dict)
        options = [{k: g[k] for k in _GROUP_OPTIONS if k in g} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, own in zip(self.param_groups, options):
            for key, value in own.items():
                group.setdefault(key, value)
        saved_state = state_dict["state"]
        saved_ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        for group in self.param_groups:
            for p in group["params"]:
                saved = saved_state.get(next(saved_ids))
                if saved is None or p.is_complex():
                    continue
                for key, value in saved.items():
                    if not isinstance(value, Tensor):
                        continue
                    loaded = self.state[p][key]
                    if key == MASTER_KEYS["split"]:  # torch converted the int16 bits to the param's dtype
                        loaded = value.to(device=p.device)
                    elif key != "step" and value.is_floating_point():
                        want = torch.float32 if key == MASTER_KEYS["full"] else self._state_dtype(group, p)
                        if loaded.dtype != want:
                            loaded = value.to(device=p.device, dtype=want)
                    # torch.optim keeps the saved tensor itself where no cast was needed; the kernels update state
                    # in place, so that would also advance the state_dict (and any optimizer it came from).
                    if local(loaded).data_ptr() == local(value).data_ptr() and loaded.numel() > 0:
                        loaded = loaded.clone()
                    self.state[p][key] = loaded
        self._plans.clear()

    def _check_state_shapes(self, state_dict: dict[str, Any]) -> None:
        """Refuse, before anything changes, saved state whose tensors do not have their new param's shape (params
        listed in another order, or another model): torch.optim would load it and fail or go wrong later. Group
        counts and sizes are torch.optim's own check, in load_state_dict."""
        saved_groups = state_dict.get("param_groups", [])
        if len(saved_groups) != len(self.param_groups):
            return
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(self.param_groups, saved_groups)):
            return
        saved_state = state_dict.get("state", {})
        for group, saved in zip(self.param_groups, saved_groups):
            for p, pid in zip(group["params"], saved["params"]):
                for key, value in saved_state.get(pid, {}).items():
                    if isinstance(value, Tensor) and value.dim() > 0 and value.shape != p.shape:
                        raise ValueError(
                            f"{type(self).__name__}.load_state_dict: saved state {key!r} of param {pid} has shape "
                            f"{tuple(value.shape)}, but would go to a param of shape {tuple(p.shape)}; the saved "
                            "optimizer's params were in another order or of other sizes"
                        )

    def __getstate__(self) -> dict[str, Any]:  # pickling and copy.deepcopy: torch.optim's, and the clipping norm
        return {**super().__getstate__(), "max_grad_norm": self.max_grad_norm}

    def __setstate__(self, state: dict[str, Any]) -> None:  # unpickling, copy.deepcopy and load_state_dict
        super().__setstate__(state)
        self.state = OptimizerState(self.state)
        self._plans = {}
        self._lr_cache = {}
        self.__dict__.setdefault("max_grad_norm", None)
        self.__dict__.setdefault("grad_norm", None)
        # As torch.optim's own __setstate__: a group saved before an option existed (an older torch, another
        # optimizer) takes the option's constructor default, and a step saved as a number becomes a counter.
        absent = _constructor_defaults(type(self))
        for group in self.param_groups:
            for key, value in absent.items():
                if key in self.defaults and key not in _GROUP_OPTIONS:  # those: see load_state_dict
                    group.setdefault(key, value)
        for st in self.state.values():
            step = st.get("step")
            if step is not None and not isinstance(step, Tensor):
                st["step"] = torch.tensor(float(step), dtype=torch.float32)

    # Mixed precision ----------------------------------------------------------------------------------------

    def _master_mode(self, group: dict[str, Any], dtype: torch.dtype) -> str | None:
        """ "full", "split" or None for params of this dtype in this group."""
        mode = group.get("master_weights", False)
        if not mode or dtype not in _HALF:
            return None
        if mode == "split":
            if dtype != torch.bfloat16:
                raise ValueError(
                    f"{type(self).__name__}: master_weights='split' needs bfloat16 params, got {dtype}; "
                    "use master_weights=True for float16"
                )
            return "split"
        return "full"

    def _state_dtype(self, group: dict[str, Any], param: Tensor) -> torch.dtype:
        """The dtype of this param's moments and buffers."""
        if param.is_complex():
            return param.dtype
        if group.get("state_dtype") is not None:
            return group["state_dtype"]
        return torch.float32 if self._master_mode(group, param.dtype) else param.dtype

    def _zeros(self, param: Tensor, group: dict[str, Any]) -> Tensor:
        """A zero state tensor for ``param`` in the group's state dtype (helper for ``_init_state``)."""
        dtype = self._state_dtype(group, param)
        return torch.zeros_like(param, dtype=dtype, memory_format=torch.preserve_format)

    def _add_master(self, param: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        """Create the param's master if its group wants one and it has none (new state, or loaded without)."""
        mode = self._master_mode(group, param.dtype)
        if mode is None or MASTER_KEYS[mode] in state:
            return
        if mode == "full":
            state["master_param"] = param.detach().to(torch.float32, memory_format=torch.preserve_format, copy=True)
        else:  # the bf16 param is the high half; a zero low half makes the master equal to it exactly
            state["master_low_bits"] = torch.zeros_like(param, dtype=torch.int16, memory_format=torch.preserve_format)

    @torch.no_grad()
    def refresh_master_weights(self) -> None:
        """Make every master weight equal to its param again, after code changed bf16/fp16 params in place
        (loading model weights, re-initialising a layer, editing ``p.data``).

        With ``master_weights`` a step updates the float32 master and writes the param from it, so an edit of the
        param alone is undone by the next step (as with DeepSpeed's and apex's masters). Loading this optimizer's
        state_dict restores the masters it saved; call this after loading only the model."""
        for p, state in self.state.items():
            if "master_param" in state:
                state["master_param"].copy_(p.detach())
            if "master_low_bits" in state:  # the param is the master's high half already
                state["master_low_bits"].zero_()

    # Subclass interface -------------------------------------------------------------------------------------

    def _check_group(self, group: dict[str, Any]) -> None:
        """Refuse a param group's bad hyperparameters with an error that names them. Subclasses check their own
        values (torch.optim's checks and messages, before super().__init__ on the defaults) and then call this for
        the common ones. It runs on every group added, and again when a step fails on a group, to name a value
        changed since then (a step re-checks nothing while it succeeds: the ops check values themselves)."""
        for key in _FLAGS.intersection(group):
            value = group[key]
            if not (isinstance(value, bool) or type(value).__module__ == "numpy" and type(value).__name__ in _NP_BOOL):
                # torch.optim takes any truthy value; the fused ops take a bool, and "yes" or None is a mistake
                raise TypeError(f"{type(self).__name__}: {key} must be a bool, got {value!r}")
        _check_mixed_precision(group.get("master_weights", False), group.get("state_dtype"))

    def _state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The per-parameter state tensors the operator takes (including ``step`` where the optimizer has one)."""
        raise NotImplementedError

    def _init_state(self, param: Tensor, group: dict[str, Any], state: dict[str, Any]) -> None:
        """Create the state of a parameter on its first step (torch.optim's keys and dtypes). By default a float32
        ``step`` counter beside the param (when the optimizer keeps one) and zeros for every other key."""
        keys = self._state_keys(group)
        if "step" in keys:
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
        for key in keys:
            if key != "step":
                state[key] = self._zeros(param, group)

    def _start_missing_state(self, param: Tensor, group: dict[str, Any], state: dict[str, Any], key: str) -> Tensor:
        """The value of state ``key`` for a param whose state predates the option that needs it (amsgrad or momentum
        switched on mid-run, or a state_dict saved with other options). Subclasses return how such a buffer starts
        where that is well defined; otherwise this error."""
        raise RuntimeError(
            f"{type(self).__name__}: the state of a parameter has no {key!r}, which these options need; it was made "
            "with other options or by another optimizer. Recreate the optimizer, or load a state_dict saved with "
            "these options"
        )

    def _launch(
        self,
        group: dict[str, Any],
        bucket: Bucket,
        grads: list[Tensor],
        lr: Tensor,
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
    ) -> None:
        """Call the fused operator on one bucket."""
        raise NotImplementedError

    # Step ---------------------------------------------------------------------------------------------------

    @wrap_step
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale: Tensor | None = getattr(self, "grad_scale", None)
        found_inf: Tensor | None = getattr(self, "found_inf", None)
        grads_per_group = [self._gradients(group) for group in self.param_groups]
        if self.max_grad_norm is not None:
            grad_scale = self._clip(grads_per_group, grad_scale)
        label = profiling()
        for group, all_grads in zip(self.param_groups, grads_per_group):
            try:
                self._step_group(group, all_grads, grad_scale, found_inf, label)
            except (TypeError, ValueError):  # the ops' own checks raise RuntimeErrors that name the value already
                self._check_group(group)  # a value set to None or of a bad type since the group was added: name it
                raise
        return loss

    def _step_group(
        self,
        group: dict[str, Any],
        all_grads: Any,
        grad_scale: Tensor | None,
        found_inf: Tensor | None,
        label: bool,
    ) -> None:
        for bucket in self._plan(group, all_grads).buckets:
            device = bucket.device
            args = (
                group,
                bucket,
                bucket.grads(all_grads),
                self._lr_arg(group, device),
                _on(grad_scale, device),
                _on(found_inf, device),
            )
            if label:  # one profiler range per kernel launch, saying what it updates
                name = f"fused_optim.{type(self).__name__}: {len(bucket.params)} {bucket.dtype} tensors on {device}"
                with record_function(name):
                    self._launch(*args)
            else:
                self._launch(*args)

    def _gradients(self, group: dict[str, Any]) -> Any:
        """The group's gradients: a list with None where a param has none or, in the steady state (every param has
        one and the cached plan covers the whole group), the plan's ``_C.TensorList`` of them, collected in one C++
        pass instead of one Python attribute read per param."""
        plan = self._cached_plan(group)
        if plan is not None and plan.reads_grads_in_cpp and not torch.compiler.is_compiling():
            grads = plan.buckets[0].lists("params")[0].grads()
            if grads is not None:
                return grads
        return [p.grad for p in group["params"]]

    def _lr_arg(self, group: dict[str, Any], device: torch.device) -> Tensor:
        """The group's lr as the one-element tensor the operators take. A tensor lr stays where it is unless it is
        on another accelerator; a float becomes a CPU tensor, made once per value (making one costs more than
        the whole step of a one-parameter optimizer)."""
        lr = group["lr"]
        if isinstance(lr, Tensor):
            return lr if lr.device.type == "cpu" or lr.device == device else lr.to(device)
        if torch.compiler.is_compiling():
            return torch.tensor(float(lr), dtype=torch.float64)
        cached = self._lr_cache.get(id(group))
        if cached is None or cached[0] != lr:
            if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
                raise TypeError(
                    f"{type(self).__name__}: a param group's lr must be a float or a one-element tensor, got {lr!r}"
                )
            cached = self._lr_cache[id(group)] = (lr, torch.tensor(float(lr), dtype=torch.float64))
        return cached[1]

    def _clip(self, grads_per_group: list[list[Tensor | None]], grad_scale: Tensor | None) -> Tensor | None:
        """Global-norm clipping folded into the kernels' gradient scale: the kernels divide every gradient by
        ``grad_scale``, so dividing by ``grad_scale / coefficient`` unscales and clips in the same multiplication,
        without a pass that rewrites the gradients. Same result as GradScaler.unscale_ + clip_grad_norm_ + step.
        Nothing leaves the device."""
        norms, loose = [], []
        for grads in grads_per_group:
            if isinstance(grads, _C.TensorList) and len(grads) and grads.uniform():  # one pass, no Python per grad
                norms.append(_ops.grad_norm(grads, 2.0))
            else:
                loose += [g for g in (grads.tensors() if isinstance(grads, _C.TensorList) else grads) if g is not None]
        if loose:
            norms.append(total_norm(loose))
        if not norms:  # no gradients: the norm of nothing, as torch.nn.utils.clip_grad_norm_ reports it
            self.grad_norm = torch.zeros(())
            return grad_scale
        norm = combine_norms(norms)
        group = self._gradients_sharded_over()
        if group is not None:  # each rank holds a slice of every tensor: the global norm sums over them
            square = norm.square()
            dist.all_reduce(square, group=group)
            norm = square.sqrt()
        if grad_scale is not None:
            norm = norm / grad_scale.to(norm.device)
        self.grad_norm = norm
        coef = clip_coefficient(norm, self.max_grad_norm)
        return (grad_scale.to(norm.device) if grad_scale is not None else 1.0) / coef

    def _gradients_sharded_over(self) -> Any:
        """The process group over which plain-tensor params are sharded by hand (LAMB's ``process_group``), whose
        ranks' clipping norms add up to the global one; None for none."""
        return None

    def _plan(self, group: dict[str, Any], all_grads: list[Tensor | None]) -> _GroupPlan:
        # Which params have a gradient decides the buckets. "All of them" is the common case, checked by identity
        # at C speed (`None in grads` would call Tensor.__eq__ on every gradient) instead of building a tuple of
        # 1000 flags every step.
        if isinstance(all_grads, _C.TensorList):  # collected in C++ only when every param has a gradient
            has_grad = [True]
        elif torch.compiler.is_compiling():  # dynamo traces plain Python, not map() over operator functions
            has_grad = [g is not None for g in all_grads]
        else:
            has_grad = list(map(operator.is_not, all_grads, itertools.repeat(None)))
        # Options that change which state tensors the op takes (amsgrad, momentum, masters) also rebuild the plan.
        options = (self._state_keys(group), group.get("master_weights", False))
        key = (options, () if all(has_grad) else tuple(has_grad))
        plan = self._plans.get(_group_key(group))  # still current: _gradients dropped it otherwise
        if plan is None or plan.key != key:
            # The countdown belongs to the group, not to one pattern of gradients: restarting it here would read
            # the counters (a GPU sync) on every step of a model whose set of gradients changes every step (MoE).
            plan = self._new_plan(group, all_grads, key, plan, 0 if plan is None else plan.steps_until_check)
        if torch.compiler.is_compiling():  # a compiled step would guard on (and recompile for) the countdown
            return plan
        plan.steps_until_check -= 1
        if plan.steps_until_check < 0 and self._widen_step_counters(group, plan):
            plan = self._new_plan(group, all_grads, key, plan, _STEP_CHECK_EVERY)
        return plan

    def _new_plan(
        self,
        group: dict[str, Any],
        all_grads: list[Tensor | None],
        key: tuple[Any, ...],
        previous: _GroupPlan | None,
        countdown: int,
    ) -> _GroupPlan:
        plan = _GroupPlan(key, self._build_buckets(group, all_grads), countdown)
        plan.state_version = self.state.version  # after the build, which creates state
        if previous is not None:  # same params: _cached_plan checked them this step
            plan.params_handle = previous.params_handle
        if plan.params_handle is None and not torch.compiler.is_compiling():
            plan.params_handle = _C.TensorList(list(group["params"]))
        self._plans[_group_key(group)] = plan
        return plan

    def _cached_plan(self, group: dict[str, Any]) -> _GroupPlan | None:
        """The group's cached plan if it still describes the group (None, and dropped, if not): the same params,
        by identity and in order (a param replaced in ``group["params"]`` must not leave the old one training on
        the new one's gradient) and of the same dtypes and devices (``p.data = p.data.double()``), state unchanged
        since (see _state.py), and complex tensors' real views still on their storage."""
        state = self.state
        if type(state) is not OptimizerState:  # replaced by user code (`opt.state = defaultdict(dict)`)
            self.state = state = OptimizerState(state)
        cache_key = _group_key(group)
        plan = self._plans.get(cache_key)
        if plan is None:
            return None
        if plan.state_version == state.version and (
            torch.compiler.is_compiling()  # dynamo guards on the params itself
            or (
                plan.params_handle is not None
                and plan.params_handle.holds(group["params"])
                and (not plan.complex_buckets or all(b.views_current() for b in plan.complex_buckets))
            )
        ):
            return plan
        del self._plans[cache_key]
        return None

    def _widen_step_counters(self, group: dict[str, Any], plan: _GroupPlan) -> bool:
        """Make the group's float32 step counters float64 when the largest is near 2^24 (see _WIDEN_STEPS_AT);
        True if it did (the plan holds the old counters then)."""
        plan.steps_until_check = _STEP_CHECK_EVERY
        top = self._largest_float32_step(group, plan)
        if top is None:
            plan.steps_until_check = 0  # no reads while a CUDA graph is captured: check on the next step
            return False
        if top < _WIDEN_STEPS_AT:
            return False
        for p, step in self._float32_steps(group):
            self.state[p]["step"] = step.to(torch.float64)
        return True

    def _float32_steps(self, group: dict[str, Any]) -> list[tuple[Tensor, Tensor]]:
        """(param, step counter) of the group's params whose counter is float32."""
        steps = [(p, self.state[p].get("step")) for p in group["params"] if p in self.state]
        return [(p, s) for p, s in steps if s is not None and s.dtype == torch.float32]

    def _largest_float32_step(self, group: dict[str, Any], plan: _GroupPlan) -> float | None:
        """The largest float32 step counter of every param of the group, those without a gradient this step
        included (the countdown outlives the plan they are missing from); None while a CUDA graph is captured."""
        whole = plan.buckets[0] if len(plan.buckets) == 1 and plan.buckets[0].whole_group else None
        if whole is not None and whole.state.get("step") and whole.state["step"][0].dtype == torch.float32:
            top = whole.lists("step")[0].host_max()  # CPU counters (one dtype per op): read in C++, no Python reads
            if top is not None:
                return top
        by_device: dict[torch.device, list[Tensor]] = {}
        for _, step in self._float32_steps(group):
            if step.device.type != "meta":
                by_device.setdefault(step.device, []).append(step)
        top = 0.0
        for device, steps in by_device.items():
            if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
                return None
            top = max(top, torch.stack(steps).max().item())
        return top

    def _build_buckets(self, group: dict[str, Any], all_grads: list[Tensor | None]) -> list[Bucket]:
        fresh = []
        stateless = not self._state_keys(group)  # SGD without momentum: no entry at all, as torch.optim makes none
        for p, g in zip(group["params"], all_grads):
            if g is None or (stateless and p not in self.state and self._master_mode(group, p.dtype) is None):
                continue
            state = self.state[p]
            if len(state) == 0:
                self._init_state(p, group, state)
                fresh.append(state)
            else:  # an option switched on since the state was made (or loaded): start what it needs
                for key in self._state_keys(group):
                    if key not in state:
                        state[key] = self._start_missing_state(p, group, state, key)
            self._add_master(p, group, state)
        _pack_state(fresh, (*self._state_keys(group), *MASTER_KEYS.values()))

        # One counter dtype per group (an op call takes one): float64 once any counter is (see _WIDEN_STEPS_AT).
        steps = [self.state.get(p, {}).get("step") for p, g in zip(group["params"], all_grads) if g is not None]
        step_dtype = torch.float64 if any(s is not None and s.dtype == torch.float64 for s in steps) else torch.float32
        buckets: dict[tuple[torch.device, torch.dtype, bool], Bucket] = {}
        for i, (p, g) in enumerate(zip(group["params"], all_grads)):
            if g is None:
                continue
            state = self.state.get(p, {})
            # Steps loaded from a torch.optim state_dict may be CPU tensors: the kernels want them beside p.
            step = state.get("step")
            if step is not None and (step.device != p.device or step.dtype != step_dtype):
                state["step"] = step.to(device=p.device, dtype=step_dtype)
            is_dtensor = isinstance(p, DTensor)
            b = buckets.get((p.device, p.dtype, is_dtensor))
            if b is None:
                b = Bucket(p.device, p.dtype, [], [], is_complex=p.is_complex(), dtensors=[] if is_dtensor else None)
                buckets[(p.device, p.dtype, is_dtensor)] = b
                mode = self._master_mode(group, p.dtype)
                b.master_key = MASTER_KEYS[mode] if mode else None
                b.state = {k: [] for k in (*self._state_keys(group), *([b.master_key] if mode else []))}
            b.indices.append(i)
            if b.dtensors is not None:
                b.dtensors.append(p)
            # The kernels see plain tensors: a DTensor's local shard (state made by zeros_like(p) is sharded
            # like p, so shards line up), and a complex tensor's real view.
            b.params.append(_real_view(b, local(p)))
            for k in b.state:
                t = local(state[k])
                b.state[k].append(t if k == "step" else _real_view(b, t))
        if len(buckets) == 1:
            (b,) = buckets.values()
            b.whole_group = len(b.indices) == len(all_grads)
        return list(buckets.values())


def _real_view(bucket: Bucket, t: Tensor) -> Tensor:
    """What the kernels see of ``t``: itself, or its real view in a complex bucket (remembered, see real_views)."""
    if not bucket.is_complex:
        return t
    view = torch.view_as_real(t)
    bucket.real_views.append((t, view))
    return view


@functools.cache
def _constructor_defaults(cls: type) -> dict[str, Any]:
    """The keyword defaults of an optimizer class's constructor (what an absent group option means)."""
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty and name != "params"
    }


def _check_mixed_precision(master_weights: Any, state_dtype: Any) -> None:
    if not (master_weights is True or master_weights is False or master_weights == "split"):
        raise ValueError(f"master_weights must be False, True or 'split', got {master_weights!r}")
    if state_dtype not in (None, torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise ValueError(f"state_dtype must be None or a floating-point torch.dtype, got {state_dtype!r}")


_PACK_ALIGN_BYTES = 64  # a cache line; a multiple of every vector width the kernels load


def _pack_state(states: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    """Move freshly created state tensors into one buffer per (key, device, dtype), each state a view of it.

    The kernels stream through parameters, gradients and state together; with 1000 small tensors, state that sits
    end to end in memory measured about 10 % faster per step than 1000 separate allocations. Each state tensor
    stays an ordinary tensor of its parameter's shape and strides (state_dict is unchanged); only dense layouts are
    packed. Each view starts on a 64-byte boundary: one odd-sized tensor (a bias of 10) must not leave the views
    after it misaligned, which would cost every later tensor the GPU's vector loads.
    """
    groups: dict[tuple[str, torch.device, torch.dtype], list[dict[str, Any]]] = {}
    for state in states:
        for key in keys:
            if key == "step":  # a 0-dim counter: nothing to stream
                continue
            t = state.get(key)
            if t is not None and t.numel() > 0 and not isinstance(t, DTensor) and _is_dense(t):
                groups.setdefault((key, t.device, t.dtype), []).append(state)
    for (key, device, dtype), members in groups.items():
        if len(members) < 2:
            continue
        align = max(1, _PACK_ALIGN_BYTES // dtype.itemsize)
        offsets = []
        end = 0
        for m in members:
            offsets.append(end)
            end += -(-m[key].numel() // align) * align
        buffer = torch.empty(end, device=device, dtype=dtype)
        for m, offset in zip(members, offsets):
            t = m[key]
            view = buffer.as_strided(t.shape, t.stride(), offset)
            view.copy_(t)
            m[key] = view


def _group_key(group: dict[str, Any]) -> int | None:
    """A param group's key in the plan cache: the id of its first param (a param belongs to one group only). Not
    id(group): torch.compile before torch 2.14 cannot trace id() of a dict, only of a tensor."""
    params = group["params"]
    return id(params[0]) if params else None


def _is_dense(t: Tensor) -> bool:
    """True when the tensor's elements exactly fill a block of memory (any order of dimensions)."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def check_real(value: Any, what: str) -> None:
    """Refuse a hyperparameter that is not a number (None, a string...) by name, before comparing it."""
    if not isinstance(value, (numbers.Real, Tensor)):
        raise TypeError(f"Invalid {what}: {value!r} (must be a real number)")


def check_lr(lr: float | Tensor) -> None:
    """torch.optim's checks and messages for ``lr``, so code that catches them keeps working."""
    check_real(lr, "learning rate (lr)")
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not lr.is_floating_point():
            raise ValueError(f"Tensor lr must be floating point, got {lr.dtype}")
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_nonnegative(value: float, what: str) -> None:
    """torch.optim's check and message for a hyperparameter that must be >= 0 (NaN included)."""
    check_real(value, what)
    if not value >= 0.0:
        raise ValueError(f"Invalid {what}: {value}")


def check_finite(*named: tuple[str, Any]) -> None:
    """Refuse inf (and NaN) hyperparameters by name: torch.optim lets inf through (the parameters become inf or NaN,
    or stop moving) and the kernels would only refuse it at the first step."""
    for what, value in named:
        if not math.isfinite(value):
            raise ValueError(f"Invalid {what}: {value} (must be finite)")


def check_betas(betas: tuple[float, float], *, closed: bool = False) -> None:
    """Each beta in [0, 1), or [0, 1] with ``closed`` (Lion's betas may be 1), with torch.optim's message."""
    if not hasattr(betas, "__len__") or len(betas) != 2:  # torch.optim ignores a third beta, fails on one
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        check_real(beta, f"beta parameter at index {i}")
        if not (0.0 <= beta <= 1.0 if closed else 0.0 <= beta < 1.0):
            raise ValueError(f"Invalid beta parameter at index {i}: {beta}")


def _on(t: Tensor | None, device: torch.device) -> Tensor | None:
    return t if t is None or t.device == device else t.to(device)
