"""Property-based tests (hypothesis): every optimizer on random cases, against torch.optim (foreach=False) or the
float64 formulas the other test files use.

The hand-written tests check the cases someone listed; these draw combinations nobody listed: the optimizer and
its hyperparameters (boundary values included), one or two param groups, 1-6 tensors per group with shapes around
SIMD widths and the CPU engine's per-thread spans (now and then one ~300k-element tensor), float32/float64 params
(against torch.optim) and bf16/fp16 params (against the formula, rounded once per step), sometimes mixed in a
group, memory layouts of params and of each step's gradients (offset, permuted, channels_last, strided slices),
missing gradients, an lr given as a float or a 0-dim tensor, 1-5 steps, and on the CPU the instruction set and
thread count.

Besides the values of params and state, every case checks that a step changes nothing it should not: params
without a gradient (and their state), the gradients, and the memory around a param that is a view.

Profiles: "ci" (the default) is derandomized, so every run tries the same examples, with a bounded budget. "long"
draws fresh examples, 5000 per test, to hunt for bugs by hand:

    FUSED_OPTIM_HYPOTHESIS_PROFILE=long PYTHONPATH=python python -m pytest -q tests/test_properties.py

The profile is applied to these tests only (not loaded globally). No example database is kept: a failure prints
the case and a @reproduce_failure blob that replays it (hypothesis still writes a cache, and on failure a patch,
under .hypothesis/). ``--hypothesis-show-statistics`` shows what the examples covered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fused_optim
from reference import TOL, adam_reference_step, sgd_reference_step
from test_adagrad import adagrad_reference_step
from test_lamb import RATIO_RTOL, lamb_reference_step
from test_lion import lion_reference_step
from test_rmsprop import REDUCED_TOL, rmsprop_reference_step

settings.register_profile(
    "ci",
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("long", settings.get_profile("ci"), max_examples=5000, derandomize=False)
PROFILE = settings.get_profile(os.environ.get("FUSED_OPTIM_HYPOTHESIS_PROFILE", "ci"))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
WITH_TORCH = ["SGD", "RMSprop", "Adagrad", "Adam", "AdamW"]
ALL = [*WITH_TORCH, "Lion", "LAMB"]

# Around SIMD widths (8/16 fp32 and 32 bf16 elements per block), with 2-d, 3-d and 4-d shapes for the layouts.
SMALL_SHAPES = [
    (),
    (0,),
    (1,),
    (3, 0),
    (7,),
    (8,),
    (9,),
    (15,),
    (16,),
    (17,),
    (31,),
    (32,),
    (33,),
    (63,),
    (64,),
    (65,),
    (5, 13),
    (16, 4),
    (3, 33),
    (2, 3, 7),
    (2, 3, 4, 5),
    (1, 16, 1, 1),
    (3, 17, 2, 2),
    (2, 8, 3, 3),
    (4, 1, 5, 7),
]
# Around the CPU engine's span per thread (csrc/cpu/engine.h: at least 32768 elements, cut on multiples of 64).
CHUNK_SHAPES = [(32767,), (32768,), (32769,), (65537,), (256, 128), (129, 255), (2, 16, 32, 32)]
# One span per thread inside a single tensor; rare, to bound the time.
BIG_SHAPE = (601, 499)


# The cases ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a tensor sits in memory. contiguous; offset (an odd storage offset: an unaligned data pointer);
    channels_last (4-d); permuted (dims stored in the order ``perm``, dense); strided (every other element of the
    innermost stored dim: not dense), optionally also permuted."""

    kind: str
    perm: tuple[int, ...] = ()

    def __repr__(self) -> str:
        return self.kind + (f"{list(self.perm)}" if self.perm else "")


@dataclasses.dataclass(frozen=True)
class Group:
    hyper: dict  # the group's hyperparameters, lr as a float
    lr_tensor: torch.dtype | None  # the lr handed to fused_optim as a 0-dim tensor of this dtype, or as the float
    shapes: list[tuple[int, ...]]
    dtypes: list[torch.dtype]
    layouts: list[Layout]


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    groups: list[Group]
    grads: list[list[Layout | None]]  # per step, per param (all groups in order): the grad's layout, None for none
    isa: str
    threads: int
    seed: int


def layouts(shape: tuple[int, ...]) -> st.SearchStrategy[Layout]:
    kinds = [st.just(Layout("contiguous")), st.just(Layout("offset"))]
    if len(shape) >= 1:
        kinds.append(st.just(Layout("strided")))
    if len(shape) >= 2:
        # any order but the identity (which is "contiguous"): reversed instead
        perms = st.permutations(range(len(shape))).map(lambda p: tuple(p) if p != sorted(p) else tuple(p[::-1]))
        kinds += [perms.map(lambda p: Layout("permuted", p)), perms.map(lambda p: Layout("strided", p))]
    if len(shape) == 4:
        kinds.append(st.just(Layout("channels_last")))
    return st.one_of(kinds)


def floats(lo: float, hi: float, *usual: float) -> st.SearchStrategy[float]:
    """A value in [lo, hi]; the bounds and the usual values are tried often."""
    return st.one_of(st.sampled_from(usual), st.floats(lo, hi, allow_subnormal=False))


def float32_value(x: float) -> float:
    """x rounded to float32, so that a float32 lr tensor holds the value torch.optim gets as a float."""
    return torch.tensor(x, dtype=torch.float32).item()


@st.composite
def hyperparameters(draw: st.DrawFn, name: str) -> dict:
    """Valid values only, with torch.optim's constraints (nesterov needs momentum and no dampening)."""
    h: dict = {"lr": float32_value(draw(floats(0.0, 0.1, 0.0, 1e-3, 0.01, 0.1)))}
    weight_decay = floats(0.0, 0.1, 0.0, 0.01, 0.1)
    maximize = st.booleans()

    def eps(usual: float, l2_decay: float = 0.0) -> float:
        # eps = 0 only where the update divides by a function of the gradient itself: g + wd * p can cancel to
        # exactly 0 in float32 and not in float64, and 0 / 0 is NaN
        return draw(st.sampled_from([usual, 1e-6, 1e-3] + ([0.0] if l2_decay == 0 else [])))

    if name == "SGD":
        momentum = draw(floats(0.0, 0.99, 0.0, 0.9, 0.99))
        dampening = draw(floats(0.0, 1.0, 0.0, 1.0))
        nesterov = momentum > 0 and dampening == 0 and draw(st.booleans())
        h.update(momentum=momentum, dampening=dampening, weight_decay=draw(weight_decay), nesterov=nesterov)
    elif name == "RMSprop":
        centered = draw(st.booleans())
        # Centered divides by sqrt(E[d^2] - E[d]^2), which is alpha * (1 - alpha) * d^2 after the first step: with
        # a small alpha that difference is rounding noise in any implementation.
        alpha = draw(floats(0.5, 0.999, 0.5, 0.99, 0.999) if centered else floats(0.0, 0.999, 0.0, 0.99, 0.999))
        wd = draw(weight_decay)
        h.update(
            alpha=alpha,
            eps=eps(1e-8, wd),
            weight_decay=wd,
            momentum=draw(floats(0.0, 0.99, 0.0, 0.9)),
            centered=centered,
        )
    elif name == "Adagrad":
        wd = draw(weight_decay)
        h.update(
            lr_decay=draw(floats(0.0, 0.5, 0.0, 0.1)),
            weight_decay=wd,
            initial_accumulator_value=draw(floats(0.0, 1.0, 0.0, 0.1)),
            eps=eps(1e-10, wd),
        )
    elif name in ("Adam", "AdamW"):
        wd = draw(floats(0.0, 1.0, 0.0, 0.01, 1.0) if name == "AdamW" else weight_decay)
        h.update(
            betas=(draw(floats(0.0, 0.999, 0.9, 0.0, 0.999)), draw(floats(0.0, 0.9999, 0.999, 0.0, 0.9999))),
            eps=eps(1e-8, wd if name == "Adam" else 0.0),  # AdamW's decay is decoupled: it leaves g alone
            weight_decay=wd,
            amsgrad=draw(st.booleans()),
        )
    elif name == "Lion":
        h.update(
            betas=(draw(floats(0.0, 1.0, 0.9, 0.0, 1.0)), draw(floats(0.0, 1.0, 0.99, 0.0, 1.0))),
            weight_decay=draw(floats(0.0, 1.0, 0.0, 0.1, 1.0)),
        )
    elif name == "LAMB":
        h.update(
            betas=(draw(floats(0.0, 0.999, 0.9, 0.0, 0.999)), draw(floats(0.0, 0.9999, 0.999, 0.0, 0.9999))),
            eps=eps(1e-6),  # LAMB adds its decay to the update, after the division
            weight_decay=draw(weight_decay),
            bias_correction=draw(st.booleans()),
        )
    h["maximize"] = draw(maximize)
    return h


@st.composite
def cases(draw: st.DrawFn, names: list[str], dtypes: list[torch.dtype]) -> Case:
    name = draw(st.sampled_from(names))
    dtype = draw(st.sampled_from(dtypes))
    mixed = draw(st.integers(0, 3)) == 0  # in one case in four the params' dtypes vary: a bucket per dtype
    shape = st.sampled_from(SMALL_SHAPES + SMALL_SHAPES + CHUNK_SHAPES)  # chunk-sized in about one draw in 7
    group_shapes = [draw(st.lists(shape, min_size=1, max_size=6)) for _ in range(draw(st.integers(1, 2)))]
    if draw(st.integers(0, 9)) == 7:  # about one case in 10 holds one big tensor
        g = draw(st.integers(0, len(group_shapes) - 1))
        group_shapes[g][draw(st.integers(0, len(group_shapes[g]) - 1))] = BIG_SHAPE
    groups = []
    for shapes in group_shapes:
        hyper = draw(hyperparameters(name))
        lr_tensor = draw(st.sampled_from([None, torch.float32, torch.float64]))
        types = [draw(st.sampled_from(dtypes)) if mixed else dtype for _ in shapes]
        groups.append(Group(hyper, lr_tensor, shapes, types, [draw(layouts(s)) for s in shapes]))
    all_shapes = [s for shapes in group_shapes for s in shapes]
    steps = draw(st.integers(1, 5))
    # about one gradient in four is missing; each step's gradients get their own layouts
    grad = [st.one_of(st.none(), layouts(s), layouts(s), layouts(s)) for s in all_shapes]
    grads = [[draw(g) for g in grad] for _ in range(steps)]
    isa = draw(st.sampled_from(fused_optim._C.cpu_supported_isas()))
    threads = draw(st.sampled_from([2, 1, 3]))
    return Case(name, groups, grads, isa, threads, draw(st.integers(0, 2**31 - 1)))


# Building and running a case -----------------------------------------------------------------------------------


def describe(case: Case) -> None:
    """What the case exercises, counted by ``pytest --hypothesis-show-statistics``."""
    dtypes = sorted({str(t).removeprefix("torch.") for g in case.groups for t in g.dtypes})
    event(f"{case.name} {'+'.join(dtypes)}")
    shapes = [s for g in case.groups for s in g.shapes]
    event(f"{len(case.groups)} group(s)")
    event("a big tensor" if BIG_SHAPE in shapes else "no big tensor")
    event(f"{sum(math.prod(s) for s in shapes) // 32768 * 32768}+ elements in all")
    for kind in sorted({lay.kind for g in case.groups for lay in g.layouts}):
        event(f"param layout {kind}")
    grads = [lay for step in case.grads for lay in step]
    event("some grads None" if None in grads else "no grad None")
    event(
        "grad layout differs"
        if any(
            lay is not None and lay != g_lay
            for step in case.grads
            for lay, g_lay in zip(step, [lay for g in case.groups for lay in g.layouts])
        )
        else "grad layouts as params"
    )
    event(f"{case.threads} thread(s), {case.isa}")


def materialize(shape, layout: Layout, dtype, device, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """A tensor of ``shape`` laid out as ``layout`` says, of N(0, 1) values, and the tensor owning its memory (the
    same tensor unless it is a view; the memory around a view is random too)."""

    def filled(*size):
        return torch.randn(size, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)

    if layout.kind == "contiguous":
        base = filled(*shape)
        return base, base
    if layout.kind == "offset":
        base = filled(math.prod(shape) + 3)
        return base[3:].view(shape), base
    if layout.kind == "channels_last":
        base = filled(*shape).contiguous(memory_format=torch.channels_last)
        return base, base
    perm = layout.perm or tuple(range(len(shape)))
    inverse = sorted(range(len(perm)), key=perm.__getitem__)
    stored = [shape[i] for i in perm]
    if layout.kind == "permuted":
        base = filled(*stored)
        return base.permute(inverse), base
    base = filled(*stored[:-1], 2 * stored[-1])  # strided
    return base[..., ::2].permute(inverse), base


def make_params(case: Case, device, gen) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """The params of each group (views as the layouts say) and their bases."""
    params, bases = [], []
    for group in case.groups:
        made = [materialize(*spec, device, gen) for spec in zip(group.shapes, group.layouts, group.dtypes)]
        params.append([p for p, _ in made])
        bases += [b for _, b in made]
    return params, bases


def build(cls, params: list[list[torch.Tensor]], case: Case, tensor_lr: bool, **kwargs):
    """One optimizer over the case's groups. torch.optim.Adagrad takes initial_accumulator_value from its
    constructor only (fused_optim too): the first group's value goes there."""
    groups = []
    for group, ps in zip(case.groups, params):
        hyper = dict(group.hyper)
        if tensor_lr and group.lr_tensor is not None:
            hyper["lr"] = torch.tensor(hyper["lr"], dtype=group.lr_tensor)
        hyper.pop("initial_accumulator_value", None)
        groups.append({"params": ps, **hyper})
    if case.name == "Adagrad":
        kwargs["initial_accumulator_value"] = case.groups[0].hyper["initial_accumulator_value"]
    return cls(groups, **kwargs)


def contiguous_copy(t: torch.Tensor, dtype=None) -> torch.Tensor:
    return t.detach().to(dtype or t.dtype).clone(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def engine(case: Case, device: str):
    """The case's CPU instruction set and thread count, restored afterwards."""
    if device != "cpu":
        yield
        return
    isa, threads = fused_optim._C.cpu_isa(), torch.get_num_threads()
    fused_optim._C.set_cpu_isa(case.isa)
    torch.set_num_threads(case.threads)
    try:
        yield
    finally:
        fused_optim._C.set_cpu_isa(isa)
        torch.set_num_threads(threads)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equal, NaN included (eps = 0 and a zero gradient make 0 / 0, in torch.optim too)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


def shaker(seed: int):
    """shake(g, dtype): g in float64 times 1 +- 4 units of roundoff of ``dtype`` (a random sign per element). Runs
    on shaken gradients show where a result is ill-conditioned: where rounding in the kernels, of that size, moves it
    by far more than an ulp, and one implementation may differ from another by that much."""
    gen = torch.Generator().manual_seed(seed)

    def shake(g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        sign = torch.randint(0, 2, g.shape, generator=gen).to(g.device, torch.float64) * 2 - 1
        return g.double() * (1 + 4 * torch.finfo(dtype).eps / 2 * sign)

    return shake


def snapshot_state(opt, p) -> dict:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in opt.state[p].items()}


def run(case: Case, opt, params, device, gen, mirrors=(), steps=None) -> list[list[torch.Tensor | None]]:
    """Steps ``opt`` with fresh random gradients laid out as the case says, checking after each step that params
    without a gradient, their state and the gradients are unchanged. ``mirrors``: (optimizer, params, transform)
    stepped with contiguous copies of the same gradients in their params' dtypes, passed through
    ``transform(param index, gradient)`` unless it is None. ``steps``: which of the case's steps (default: all).
    Returns the gradients of every step (contiguous)."""
    history = []
    for step_layouts in [case.grads[i] for i in steps] if steps is not None else case.grads:
        grads = [
            None if lay is None else materialize(p.shape, lay, p.dtype, device, gen)[0]
            for p, lay in zip(params, step_layouts)
        ]
        history.append([None if g is None else contiguous_copy(g) for g in grads])
        idle = {i: (p.clone(), snapshot_state(opt, p)) for i, (p, g) in enumerate(zip(params, grads)) if g is None}
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for i, (before, state) in idle.items():
            assert same(params[i], before), f"param {i} has no grad but changed"
            after = snapshot_state(opt, params[i])
            assert after.keys() == state.keys(), f"param {i} has no grad but its state keys changed"
            for k, v in state.items():
                assert same(after[k], v) if isinstance(v, torch.Tensor) else after[k] == v, (
                    f"param {i} has no grad but its state {k!r} changed"
                )
        for i, (g, saved) in enumerate(zip(grads, history[-1])):
            assert g is None or same(g, saved), f"the step changed the gradient of param {i}"
        for mirror, mirror_params, transform in mirrors:
            for i, (p, g) in enumerate(zip(mirror_params, history[-1])):
                g = None if g is None else g.to(p.dtype)
                p.grad = g if g is None or transform is None else transform(i, g)
            mirror.step()
    return history


def assert_views_in_place(params: list[torch.Tensor], bases: list[torch.Tensor], before: list[torch.Tensor], ptrs):
    """Each param was updated where it lies: same memory, and nothing of its base outside it changed."""
    for i, (p, base, old, ptr) in enumerate(zip(params, bases, before, ptrs)):
        assert p.data_ptr() == ptr, f"param {i} was moved"
        if p is base:
            continue
        expected = old.clone()
        expected.as_strided(p.shape, p.stride(), p.storage_offset()).copy_(p)
        assert same(base, expected), f"param {i} ({tuple(p.shape)}, {p.stride()}): memory around it changed"


def assert_close(ours, theirs, tol, what, exact=None, shaken=None, scale_atol=False, allow=None):
    """|ours - theirs| <= atol + rtol * |theirs| elementwise (atol times theirs' largest magnitude with
    ``scale_atol``: states that cancel to small values carry the error of their larger terms). With ``exact`` and
    ``shaken`` (see test_matches_torch), an element may instead be as far from ``exact`` as 4 times ``theirs`` is,
    plus 4 times what shaking the inputs moved it. ``allow``: a further allowance per element."""
    ours, theirs = ours.detach().double().cpu(), theirs.detach().double().cpu()
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    if ours.numel() == 0:
        return
    atol = tol["atol"] * (theirs.abs().nan_to_num(0.0).max().item() if scale_atol else 1.0)
    if allow is not None:
        atol = atol + allow
    ok = (ours - theirs).abs() <= atol + tol["rtol"] * theirs.abs()
    # overflowed in both (an ill-conditioned update that blew up: inf or nan, depending on the order of operations)
    ok |= ~ours.isfinite() & ~theirs.isfinite()
    if exact is not None:
        exact, shaken = exact.detach().double().cpu(), shaken.detach().double().cpu()
        spread = 4 * (theirs - exact).abs() + 4 * (shaken - exact).abs()
        ok |= (ours - exact).abs() <= spread + atol + tol["rtol"] * exact.abs()
    if not ok.all():
        i = int((~ok).flatten().nonzero()[0])
        raise AssertionError(
            f"{what}: {int((~ok).sum())} of {ok.numel()} elements differ; first at flat index {i}: "
            f"ours {ours.flatten()[i].item()!r}, reference {theirs.flatten()[i].item()!r}"
            + ("" if exact is None else f", float64 run {exact.flatten()[i].item()!r}")
        )


# Against torch.optim --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@PROFILE
@given(case=cases(WITH_TORCH, [torch.float32, torch.float64]))
def test_matches_torch(case, device):
    """float32/float64 params against torch.optim (foreach=False) on contiguous copies.

    Where a result is ill-conditioned (g + wd * p cancels and is then divided by, or a square root of a small
    average is), one rounding moves it by far more than an ulp, in torch.optim as in ours, differently. Such
    elements are measured by two more torch.optim runs in float64: one exact, one with every gradient shaken by 4
    units of roundoff of the param's dtype (see assert_close). Only the gradients: where g + wd * p cancels, shaking
    both by the same relative amount can cancel too."""
    describe(case)
    gen, shake = torch.Generator().manual_seed(case.seed), shaker(case.seed + 1)
    groups, bases = make_params(case, device, gen)
    params = [p for ps in groups for p in ps]
    before, ptrs = [b.clone() for b in bases], [p.data_ptr() for p in params]
    ours = build(getattr(fused_optim, case.name), groups, case, tensor_lr=True)
    ref_cls = getattr(torch.optim, case.name)
    copies = {
        "ref": [[contiguous_copy(p) for p in ps] for ps in groups],
        "exact": [[contiguous_copy(p, torch.float64) for p in ps] for ps in groups],
        "shaken": [[contiguous_copy(p, torch.float64) for p in ps] for ps in groups],
    }
    optimizers = {k: build(ref_cls, v, case, tensor_lr=False, foreach=False) for k, v in copies.items()}
    flat = {k: [q for qs in v for q in qs] for k, v in copies.items()}
    mirrors = [(optimizers[k], flat[k], None) for k in ("ref", "exact")]
    mirrors.append((optimizers["shaken"], flat["shaken"], lambda i, g: shake(g, params[i].dtype)))
    peak = [e.abs() for e in flat["exact"]]  # the largest magnitude each element went through
    with engine(case, device):
        for step in range(len(case.grads)):
            run(case, ours, params, device, gen, mirrors, steps=[step])
            for top, e in zip(peak, flat["exact"]):
                torch.maximum(top, e.abs(), out=top)

    assert_views_in_place(params, bases, before, ptrs)
    ref, exact, shaken = optimizers["ref"], optimizers["exact"], optimizers["shaken"]
    for i, (p, q, e, sh) in enumerate(zip(params, flat["ref"], flat["exact"], flat["shaken"])):
        tol = TOL[p.dtype]
        # a param that went through larger values (RMSprop's first steps are about lr / sqrt(1 - alpha)) keeps the
        # rounding error it had there
        assert_close(p, q, tol, f"param {i}", exact=e, shaken=sh, allow=tol["rtol"] * peak[i].cpu())
        s, r = ours.state[p], ref.state[q]
        assert s.keys() == r.keys(), f"param {i}: state keys {sorted(s)}, torch.optim has {sorted(r)}"
        for k in r:
            if k == "step":
                assert float(s[k]) == float(r[k]), f"param {i}: step {float(s[k])}, torch.optim {float(r[k])}"
            else:
                ex, shk = exact.state[e][k], shaken.state[sh][k]
                assert_close(s[k], r[k], tol, f"param {i}: {k}", exact=ex, shaken=shk, scale_atol=True)


# Against the float64 formulas ----------------------------------------------------------------------------------


def formula_step(name: str, hyper: dict, params, grads, state) -> None:
    """One step of the float64 reference formula of ``name`` (rounded once into each tensor's dtype)."""
    if name in ("Adam", "AdamW"):  # adam_reference_step has no notion of a missing gradient
        have = [i for i, g in enumerate(grads) if g is not None]
        pick = [params[i] for i in have], [grads[i] for i in have], [state[i] for i in have]
        adam_reference_step(*pick, **hyper, decoupled=name == "AdamW")
    elif name == "Lion":
        for p, g, s in zip(params, grads, state):  # counts the c within rounding of 0 in p's dtype
            lion_reference_step([p], [g], [s], **hyper, near_zero=8 * torch.finfo(p.dtype).eps)
    else:
        step = {
            "SGD": sgd_reference_step,
            "RMSprop": rmsprop_reference_step,
            "Adagrad": adagrad_reference_step,
            "LAMB": lamb_reference_step,
        }[name]
        step(params, grads, state, **hyper)


def expected_keys(name: str, hyper: dict, ref_state: dict) -> set[str]:
    """The state keys fused_optim must have where the formula kept ``ref_state`` (torch.optim's keys)."""
    keys = set(ref_state) - {"flips", "moved"}  # the references' bookkeeping
    if name in ("Adam", "AdamW") and not hyper["amsgrad"]:
        keys.discard("max_exp_avg_sq")
    return keys


@pytest.mark.parametrize("device", DEVICES)
@PROFILE
@given(case=cases(ALL, [torch.bfloat16, torch.float16]))
def test_reduced_precision_matches_formula(case, device):
    """bf16/fp16 params and state of every optimizer, computed in fp32 and rounded once per step (torch.optim rounds
    after each operation, so the reference is the float64 formula, rounded once per step too)."""
    check_against_formula(case, device)


@pytest.mark.parametrize("device", DEVICES)
@PROFILE
@given(case=cases(["Lion", "LAMB"], [torch.float32, torch.float64]))
def test_lion_and_lamb_match_formula(case, device):
    """Lion and LAMB (torch.optim has neither) in float32/float64 against their float64 formulas."""
    check_against_formula(case, device)


def check_against_formula(case, device):
    describe(case)
    gen = torch.Generator().manual_seed(case.seed)
    groups, bases = make_params(case, device, gen)
    params = [p for ps in groups for p in ps]
    before, ptrs = [b.clone() for b in bases], [p.data_ptr() for p in params]
    starts = [[contiguous_copy(p) for p in ps] for ps in groups]
    ours = build(getattr(fused_optim, case.name), groups, case, tensor_lr=True)
    with engine(case, device):
        history = run(case, ours, params, device, gen)

    assert_views_in_place(params, bases, before, ptrs)
    shake, first = shaker(case.seed + 1), 0
    for group, ps, start in zip(case.groups, groups, starts):
        hyper = dict(group.hyper)
        if case.name == "Adagrad":  # torch.optim's rule: the constructor's value (see build)
            hyper["initial_accumulator_value"] = case.groups[0].hyper["initial_accumulator_value"]
        # the formula, and the formula on gradients shaken by the kernels' roundoff (float32 but for float64)
        ref, shaken = Reference([q.clone() for q in start]), Reference([q.clone() for q in start])
        computed_in = [torch.float64 if p.dtype == torch.float64 else torch.float32 for p in ps]
        for grads in history:
            grads = grads[first : first + len(ps)]
            ref.step(case.name, hyper, grads)
            shaken.step(case.name, hyper, [None if g is None else shake(g, t) for g, t in zip(grads, computed_in)])
        compare_with_formula(case.name, hyper, ours, ps, ref, shaken, first)
        first += len(ps)


class Reference:
    """A formula run on params of their own, tracking per element the largest magnitude the param went through, how
    far it moved, and whether a state it divides by was ever out of the normal range (see DENOMINATORS)."""

    def __init__(self, params: list[torch.Tensor]):
        self.params, self.state = params, [{} for _ in params]
        self.peak = [q.double().cpu().abs() for q in params]
        self.moved = [torch.zeros(q.shape, dtype=torch.float64) for q in params]
        self.fragile = [torch.zeros(q.shape, dtype=torch.bool) for q in params]

    def step(self, name: str, hyper: dict, grads: list[torch.Tensor | None]) -> None:
        start = [q.double().cpu() for q in self.params]
        formula_step(name, hyper, self.params, grads, self.state)
        for q, s, a, top, m, f in zip(self.params, self.state, start, self.peak, self.moved, self.fragile):
            now = q.double().cpu()
            torch.maximum(top, now.abs(), out=top)
            m += (now - a).abs()
            for k in DENOMINATORS.intersection(s):
                f |= s[k].abs().cpu() < torch.finfo(q.dtype).tiny


# State that the update divides by (through a square root). Where the reference stored it below the dtype's normal
# range (fp16: 6e-5, reached by 0.001 * g^2 for |g| < 0.25), it has only a few significant bits, and the one
# rounding of the kernel's float32 value may differ from that of the float64 value by a large fraction of it: the
# param may then differ by up to what it moved.
DENOMINATORS = {"square_avg", "exp_avg_sq", "max_exp_avg_sq", "sum"}


def compare_with_formula(name, hyper, opt, params, ref: Reference, shaken: Reference, first: int) -> None:
    for i, (p, s) in enumerate(zip(params, ref.state)):
        keys = expected_keys(name, hyper, s)
        assert opt.state[p].keys() == keys, f"param {first + i}: state keys {sorted(opt.state[p])}, want {sorted(keys)}"
    for i, (p, q, s, sh) in enumerate(zip(params, ref.params, ref.state, shaken.params)):
        tol = REDUCED_TOL.get(p.dtype, TOL[p.dtype])
        # Allowances: 4 times what shaking the gradients changed (ill-conditioned elements); the rounding error of
        # the largest value the param went through (as in test_matches_torch); what it moved where a denominator
        # was out of range.
        allow = 4 * (sh.double() - q.double()).abs().cpu() + tol["rtol"] * ref.peak[i]
        allow += torch.where(ref.fragile[i], ref.moved[i], 0.0)
        if name == "LAMB":  # the trust ratio's norms reach the kernel in float32 (test_lamb.RATIO_RTOL)
            allow += RATIO_RTOL * ref.moved[i]
        if name == "Lion" and s:  # sign() of a c within rounding of 0 may go either way (as in test_lion.compare)
            allow += 2.0 * hyper["lr"] * s["flips"] * 1.001
        assert_close(p, q, tol, f"param {first + i}", allow=allow)
        for k in expected_keys(name, hyper, s):
            if k == "step":
                assert float(opt.state[p][k]) == s[k], f"param {first + i}: step {float(opt.state[p][k])} != {s[k]}"
            else:
                allow = 4 * (shaken.state[i][k].double() - s[k].double()).abs().cpu()
                assert_close(opt.state[p][k], s[k], tol, f"param {first + i}: {k}", scale_atol=True, allow=allow)


# Bugs the tests above found (fixed; kept as regression tests) ----------------------------------------------------


def test_sgd_momentum_below_float32_range_fills_the_buffer():
    p, q = torch.ones(3), torch.ones(3)
    ours = fused_optim.SGD([p], lr=0.1, momentum=1e-50)
    ref = torch.optim.SGD([q], lr=0.1, momentum=1e-50, foreach=False)
    for opt, t in ((ours, p), (ref, q)):
        t.grad = torch.full((3,), 0.5)
        opt.step()
    assert torch.equal(p, q)  # the params agree (the momentum is negligible)
    assert torch.equal(ours.state[p]["momentum_buffer"], ref.state[q]["momentum_buffer"])  # torch: the gradient


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_beta1_below_half_averages_like_torch(name):
    p, q = torch.zeros(1), torch.zeros(1)
    ours = getattr(fused_optim, name)([p], lr=1e-3, betas=(0.0, 0.0))
    ref = getattr(torch.optim, name)([q], lr=1e-3, betas=(0.0, 0.0), foreach=False)
    for g in (1.0, 1e-8):
        for opt, t in ((ours, p), (ref, q)):
            t.grad = torch.tensor([g])
            opt.step()
    assert ref.state[q]["exp_avg"].item() == torch.tensor(1e-8).item()  # beta1 = 0: the last gradient
    assert ours.state[p]["exp_avg"].item() == ref.state[q]["exp_avg"].item()
    torch.testing.assert_close(p, q)  # torch.optim's second step moves by lr / 2 (g / (|g| + eps), eps = g)
