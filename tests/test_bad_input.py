"""Bad input (issue 8): public functions and operators refuse wrong devices, dtypes, shapes, list lengths, sparse
tensors and non-finite hyperparameters with an error that names the argument, before changing anything; and what
torch.optim supports (complex params, non-contiguous gradients, sparse gradients in clipping) works. One case per
rejection; those other test files already cover (torch's messages for negative hyperparameters, test_ops.py's op
checks, master_weights / state_dtype values) are not repeated here.

Policy: where torch.optim checks a value we raise its error and message; where it lets a value through that
trains to inf/NaN or not at all (inf lr, eps or weight_decay; NaN in SGD, whose checks compare with ``<``), we
raise a ValueError that names the argument. Values torch accepts on purpose (lr=0, a negative SGD dampening,
Lion's betas of 1, max_norm=inf) keep working.

Every param group is checked when added (torch.optim checks only the constructor's values), and a group whose step
fails on a value written since is checked again, so the error names it. Flags must be bools (torch.optim takes any
truthy value).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import fused_optim
from fused_optim import _ops, amp
from fused_optim import lr_scheduler as sched
from fused_optim.clip import total_norm

INF, NAN = math.inf, math.nan

OPTIMIZERS = {
    "SGD": fused_optim.SGD,
    "RMSprop": fused_optim.RMSprop,
    "Adagrad": fused_optim.Adagrad,
    "Adam": fused_optim.Adam,
    "AdamW": fused_optim.AdamW,
    "Lion": fused_optim.Lion,
    "LAMB": fused_optim.LAMB,
}
#: Options under which each optimizer keeps all of its state (so every state list reaches the kernel).
FULL = {
    "SGD": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
    "RMSprop": dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.1),
    "Adagrad": dict(lr=0.1, lr_decay=0.01, weight_decay=0.1),
    "Adam": dict(lr=0.01, amsgrad=True, weight_decay=0.1),
    "AdamW": dict(lr=0.01, amsgrad=True),
    "Lion": dict(lr=0.01, weight_decay=0.1),
    "LAMB": dict(lr=0.01),
}


def run(opt: torch.optim.Optimizer, params: list[torch.Tensor], grads: list[list[torch.Tensor]]) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


# Optimizer constructors -----------------------------------------------------------------------------------------

#: Each optimizer's float hyperparameters, with the words torch.optim's message uses for them.
WORDS = {
    "lr": "learning rate",
    "eps": "epsilon value",
    "initial_accumulator_value": "initial_accumulator_value value",
}
FLOAT_ARGS = {
    "SGD": ["lr", "momentum", "dampening", "weight_decay"],
    "RMSprop": ["lr", "alpha", "eps", "weight_decay", "momentum"],
    "Adagrad": ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"],
    "Adam": ["lr", "eps", "weight_decay"],
    "AdamW": ["lr", "eps", "weight_decay"],
    "Lion": ["lr", "weight_decay"],
    "LAMB": ["lr", "eps", "weight_decay"],
}


@pytest.mark.parametrize("value", [INF, NAN], ids=["inf", "nan"])
@pytest.mark.parametrize("name, arg", [(n, a) for n, args in FLOAT_ARGS.items() for a in args], ids=str)
def test_non_finite_hyperparameter_is_refused_by_name(name, arg, value):
    """torch.optim accepts inf everywhere (and NaN in SGD), and the parameters go inf/NaN or stop moving; the
    kernels would refuse the value at the first step. Refused at construction, naming the argument in torch's
    words ("Invalid epsilon value: inf")."""
    words = WORDS.get(arg, f"{arg} value")
    with pytest.raises(ValueError, match=rf"Invalid {words}: {value}"):
        OPTIMIZERS[name]([torch.zeros(3)], **{arg: value})


@pytest.mark.parametrize(
    "name, kwargs, error, message",
    [
        # betas must be a pair: torch.optim ignores a third beta and fails on one with an IndexError
        ("Adam", {"betas": (0.9,)}, ValueError, r"betas must be a pair \(beta1, beta2\), got \(0.9,\)"),
        ("AdamW", {"betas": (0.9, 0.99, 0.9)}, ValueError, "betas must be a pair"),
        ("Lion", {"betas": (0.9,)}, ValueError, "betas must be a pair"),
        ("LAMB", {"betas": 0.9}, ValueError, "betas must be a pair"),
        # SGD now shares the others' lr check: an integer tensor is refused here, not at the first step
        ("SGD", {"lr": torch.tensor(1)}, ValueError, "Tensor lr must be floating point"),
        ("SGD", {"lr": torch.tensor([0.1, 0.2])}, ValueError, "Tensor lr must be 1-element"),
        ("SGD", {"lr": torch.tensor(INF)}, ValueError, r"Invalid learning rate: inf \(must be finite\)"),
        ("SGD", {"momentum": NAN, "nesterov": True}, ValueError, "Invalid momentum value: nan"),
        ("Adam", {"lr": torch.tensor(1)}, ValueError, "Tensor lr must be floating point"),
        ("Adam", {"lr": -INF}, ValueError, "Invalid learning rate: -inf"),
        ("Adam", {"max_grad_norm": -1.0}, ValueError, "max_grad_norm must be positive, got -1.0"),
        ("Lion", {"max_grad_norm": NAN}, ValueError, "max_grad_norm must be positive, got nan"),
        ("Adam", {"differentiable": True}, ValueError, "differentiable=True is not supported"),
    ],
    ids=str,
)
def test_bad_constructor_argument(name, kwargs, error, message):
    with pytest.raises(error, match=message):
        OPTIMIZERS[name]([torch.zeros(3)], **kwargs)


def _in_two_groups():
    p = torch.zeros(3)
    return [{"params": [p]}, {"params": [p]}]


@pytest.mark.parametrize(
    "params, error, message",
    [
        (lambda: [], ValueError, "optimizer got an empty parameter list"),
        (lambda: torch.zeros(3), TypeError, "should be an iterable of Tensors or dicts"),
        (lambda: [torch.zeros(3, requires_grad=True) * 2], ValueError, "can't optimize a non-leaf Tensor"),
        (lambda: [1.0], TypeError, "can only optimize Tensors"),
        (_in_two_groups, ValueError, "some parameters appear in more than one parameter group"),
    ],
    ids=["empty", "a_tensor", "non_leaf", "not_a_tensor", "same_param_in_two_groups"],
)
@pytest.mark.parametrize("name", ["SGD", "Adagrad", "LAMB"])
def test_bad_params_get_torchs_errors(name, params, error, message):
    """torch.optim.Optimizer's own checks of params (Adagrad, which makes its state in __init__, included)."""
    with pytest.raises(error, match=message):
        OPTIMIZERS[name](params())


def test_values_torch_accepts_on_purpose_still_work():
    """Only non-finite values are new rejections: SGD's negative dampening and max_grad_norm=inf (no clipping,
    but the norm is recorded) are accepted, and SGD with a negative dampening matches torch."""
    grads = [[torch.randn(5)] for _ in range(3)]
    ours, ref = [torch.ones(5)], [torch.ones(5)]
    run(fused_optim.SGD(ours, lr=0.1, momentum=0.9, dampening=-0.5), ours, grads)
    run(torch.optim.SGD(ref, lr=0.1, momentum=0.9, dampening=-0.5, foreach=False), ref, grads)
    torch.testing.assert_close(ours[0], ref[0])
    p = [torch.ones(5)]
    opt = fused_optim.Adam(p, lr=0.1, max_grad_norm=INF)
    run(opt, p, [[torch.full((5,), 100.0)]])
    torch.testing.assert_close(opt.grad_norm, torch.tensor(100.0 * math.sqrt(5)))
    torch.testing.assert_close(p[0], torch.full((5,), 0.9))  # Adam's first step: lr * sign(g), unclipped


# Optimizer steps --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SGD", "AdamW", "Lion", "LAMB"])  # Adam, RMSprop, Adagrad: in their own files
def test_sparse_gradient_is_refused_before_anything_changes(name):
    emb = torch.nn.Embedding(5, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    with pytest.raises(RuntimeError, match=r"grads\[0\] is a sparse tensor; fused_optim needs dense tensors"):
        OPTIMIZERS[name](emb.parameters(), **FULL[name]).step()
    assert torch.equal(emb.weight.detach(), before)


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_integer_params_are_refused(name, dtype):
    p = torch.zeros(4, dtype=dtype)
    p.grad = torch.zeros(4, dtype=dtype)
    with pytest.raises(RuntimeError, match=r"params\[0\] has dtype (Int|Bool); supported dtypes are float32"):
        OPTIMIZERS[name]([p], **FULL[name]).step()


@pytest.mark.parametrize(
    "grad, message",
    [
        (torch.ones(5), r"grads\[0\] has shape \[5\] but params\[0\] has shape \[4\]"),
        (torch.ones(4, dtype=torch.int32), r"grads\[0\] has dtype Int but must be Float"),
        (torch.ones(4, dtype=torch.complex64), r"grads\[0\] has dtype ComplexFloat but must be Float"),
    ],
    ids=["shape", "int", "complex"],
)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_gradient_of_another_shape_or_dtype_is_refused(name, grad, message):
    """Setting ``p.grad`` checks shape and dtype; ``p.grad.data = ...`` (or a C++ extension) does not."""
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.zeros(4)
    p.grad.data = grad
    with pytest.raises(RuntimeError, match=message):
        OPTIMIZERS[name]([p], **FULL[name]).step()
    assert torch.equal(p.detach(), torch.zeros(4))


@pytest.mark.parametrize(
    "lr, message",
    [
        (-0.1, "invalid lr -0.1"),
        (INF, "invalid lr inf"),
        (torch.tensor(-0.1), "invalid lr -0.1"),
        (torch.tensor(1), "lr must be a floating-point tensor, got Long"),
    ],
    ids=str,
)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_group_lr_set_after_construction_is_checked_at_the_step(name, lr, message):
    """A scheduler or user code may write any lr into a param group; torch.optim then steps uphill (negative) or to
    inf. The kernels refuse it by name and change nothing."""
    p = torch.zeros(4)
    opt = OPTIMIZERS[name]([p], **FULL[name])
    opt.param_groups[0]["lr"] = lr
    p.grad = torch.ones(4)
    with pytest.raises(RuntimeError, match=message):
        opt.step()
    assert torch.equal(p, torch.zeros(4))


@pytest.mark.parametrize(
    "name, key, named",
    [
        ("Adam", "lr", "learning rate"),
        ("Adam", "weight_decay", "weight_decay"),
        ("Adam", "eps", "epsilon"),
        ("SGD", "momentum", "momentum"),
        ("SGD", "dampening", "dampening"),
        ("RMSprop", "alpha", "alpha"),
        ("Adagrad", "lr_decay", "lr_decay"),
        ("Lion", "weight_decay", "weight_decay"),
        ("LAMB", "eps", "epsilon"),
    ],
)
@pytest.mark.parametrize("when", ["in the group", "set after construction"])
def test_group_value_none_is_refused_by_name(name, key, named, when):
    """torch.optim checks only the constructor's values; a group's own None (or one written later) would fail at the
    step with `float() argument must be ... not 'NoneType'`, naming nothing."""
    p = torch.zeros(4)
    if when == "in the group":
        with pytest.raises(TypeError, match=f"{named}.*None"):
            OPTIMIZERS[name]([{"params": [p], key: None}], **FULL[name])
        return
    opt = OPTIMIZERS[name]([p], **FULL[name])
    opt.param_groups[0][key] = None
    p.grad = torch.ones(4)
    with pytest.raises(TypeError, match=f"{named}.*None"):
        opt.step()
    assert torch.equal(p, torch.zeros(4))


@pytest.mark.parametrize("name", ["Adam", "Lion", "LAMB"])
def test_group_betas_of_one_element_are_refused_by_name(name):
    p = torch.zeros(4)
    with pytest.raises(ValueError, match="betas must be a pair"):
        OPTIMIZERS[name]([{"params": [p], "betas": (0.9,)}])
    opt = OPTIMIZERS[name]([p])
    opt.param_groups[0]["betas"] = (0.9,)  # after construction: named at the step instead of "not enough values"
    p.grad = torch.ones(4)
    with pytest.raises(ValueError, match="betas must be a pair"):
        opt.step()


def test_group_added_with_a_bad_value_is_not_kept():
    opt = fused_optim.Adam([torch.zeros(4)])
    with pytest.raises(ValueError, match="Invalid epsilon value"):
        opt.add_param_group({"params": [torch.zeros(2)], "eps": -1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize(
    "name, flag",
    [
        ("Adam", "amsgrad"),
        ("Adam", "maximize"),
        ("SGD", "nesterov"),
        ("RMSprop", "centered"),
        ("LAMB", "bias_correction"),
    ],
)
@pytest.mark.parametrize("value", ["yes", None, 0.5])
def test_flag_that_is_not_a_bool_is_refused_by_name(name, flag, value):
    """torch.optim takes any truthy value; a string or None where a bool belongs is more likely a mistake."""
    p = torch.zeros(4)
    with pytest.raises(TypeError, match=f"{flag} must be a bool"):
        OPTIMIZERS[name]([p], **{**FULL[name], flag: value})


def test_flag_set_to_a_non_bool_after_construction_is_named_at_the_step():
    p = torch.zeros(4)
    opt = fused_optim.Adam([p])
    opt.param_groups[0]["amsgrad"] = "yes"
    p.grad = torch.ones(4)
    with pytest.raises((TypeError, RuntimeError), match="amsgrad"):
        opt.step()


def test_numpy_bool_flags_are_accepted():
    np = pytest.importorskip("numpy")
    p = torch.zeros(4, requires_grad=True)
    q = p.detach().clone().requires_grad_()
    opt = fused_optim.Adam([p], lr=0.1, amsgrad=np.bool_(True), maximize=np.bool_(False))
    ref = torch.optim.Adam([q], lr=0.1, amsgrad=True, foreach=False)
    p.grad, q.grad = torch.arange(4.0), torch.arange(4.0)
    opt.step()
    ref.step()
    torch.testing.assert_close(p, q)


# What must work: complex params, non-contiguous tensors, meta params -----------------------------------------


def test_complex_sgd_params_like_torch():
    """SGD with momentum, Nesterov and weight decay on complex params (Adam, RMSprop and Adagrad: own files)."""
    torch.manual_seed(0)
    ours = [torch.randn(3, 5, dtype=torch.complex64), torch.randn(7, dtype=torch.complex64)]
    ref = [p.clone() for p in ours]
    grads = [[torch.randn_like(p) for p in ours] for _ in range(4)]
    run(fused_optim.SGD(ours, **FULL["SGD"]), ours, grads)
    run(torch.optim.SGD(ref, **FULL["SGD"], foreach=False), ref, grads)
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("name", ["Lion", "LAMB"])
def test_complex_params_are_updated_as_their_real_views(name):
    """torch.optim has no Lion or LAMB; fused_optim updates complex params as torch.optim's optimizers do, through
    their real views: the same as optimizing the (..., 2) real tensors, with complex state."""
    torch.manual_seed(0)
    cplx = [torch.randn(3, 5, dtype=torch.complex64), torch.randn(7, dtype=torch.complex64)]
    real = [torch.view_as_real(p.clone()) for p in cplx]
    grads = [[torch.randn_like(p) for p in cplx] for _ in range(4)]
    opt = OPTIMIZERS[name](cplx, **FULL[name])
    run(opt, cplx, grads)
    run(OPTIMIZERS[name](real, **FULL[name]), real, [[torch.view_as_real(g) for g in gs] for gs in grads])
    for p, q in zip(cplx, real):
        torch.testing.assert_close(torch.view_as_real(p), q, rtol=0, atol=0)
    assert opt.state[cplx[0]]["exp_avg"].dtype == torch.complex64


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_non_contiguous_params_and_grads_match_contiguous_ones(name):
    """A sliced (gapped) param with a transposed gradient gives the result of contiguous copies, on every optimizer
    (AdamW's layouts against torch: test_adam.py)."""
    torch.manual_seed(0)
    base = torch.randn(6, 24)
    sliced = [base[:, ::3]]
    dense = [sliced[0].contiguous()]
    grads = [[torch.randn(8, 6).t()] for _ in range(4)]
    run(OPTIMIZERS[name](sliced, **FULL[name]), sliced, grads)
    run(OPTIMIZERS[name](dense, **FULL[name]), dense, [[g.contiguous() for g in gs] for gs in grads])
    torch.testing.assert_close(sliced[0], dense[0], rtol=0, atol=0)
    assert sliced[0].stride() == (24, 3)


@pytest.mark.parametrize("name", ["SGD", "RMSprop", "Adagrad"])
def test_non_contiguous_grads_match_torch(name):
    torch.manual_seed(0)
    ours = [torch.randn(6, 8)]
    ref = [ours[0].clone()]
    grads = [[torch.randn(8, 6).t()] for _ in range(4)]
    run(OPTIMIZERS[name](ours, **FULL[name]), ours, grads)
    run(getattr(torch.optim, name)(ref, **FULL[name], foreach=False), ref, grads)
    torch.testing.assert_close(ours[0], ref[0])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_meta_params_step_like_torch(name):
    """Params on the meta device (shape tracing) step without error, as torch.optim's do."""
    p = torch.nn.Parameter(torch.zeros(4, device="meta"))
    p.grad = torch.ones(4, device="meta")
    OPTIMIZERS[name]([p], **FULL[name]).step()


# Operators, called directly ---------------------------------------------------------------------------------------


def op_kwargs(op: str) -> dict:
    """A valid call of torch.ops.fused_optim.<op> on three float32 params of different sizes."""
    params = [torch.randn(n) for n in (5, 17, 64)]
    grads = [torch.randn(n) for n in (5, 17, 64)]

    def state():
        return [torch.rand_like(p) for p in params]

    def steps():
        return [torch.tensor(float(i)) for i in range(3)]

    lr = torch.tensor(0.01)
    if op == "adam_":
        return dict(
            params=params,
            grads=grads,
            exp_avgs=state(),
            exp_avg_sqs=state(),
            max_exp_avg_sqs=[],
            state_steps=steps(),
            lr=lr,
            beta1=0.9,
            beta2=0.999,
            weight_decay=0.1,
            eps=1e-8,
            amsgrad=False,
            maximize=False,
            decoupled_weight_decay=True,
        )
    if op == "sgd_":
        return dict(
            params=params,
            grads=grads,
            momentum_buffers=state(),
            lr=lr,
            weight_decay=0.1,
            momentum=0.9,
            dampening=0.0,
            nesterov=False,
            maximize=False,
            is_first_step=False,
        )
    if op == "rmsprop_":
        return dict(
            params=params,
            grads=grads,
            square_avgs=state(),
            grad_avgs=state(),
            momentum_buffers=state(),
            state_steps=steps(),
            lr=lr,
            alpha=0.99,
            eps=1e-8,
            weight_decay=0.1,
            momentum=0.5,
            centered=True,
            maximize=False,
        )
    if op == "adagrad_":
        return dict(
            params=params,
            grads=grads,
            state_sums=state(),
            state_steps=steps(),
            lr=lr,
            lr_decay=0.01,
            weight_decay=0.1,
            eps=1e-10,
            maximize=False,
        )
    if op == "lion_":
        return dict(
            params=params,
            grads=grads,
            exp_avgs=state(),
            lr=lr,
            beta1=0.9,
            beta2=0.99,
            weight_decay=0.1,
            maximize=False,
        )
    if op in ("lamb_norms", "lamb_"):
        kwargs = dict(
            params=params,
            grads=grads,
            exp_avgs=state(),
            exp_avg_sqs=state(),
            state_steps=steps(),
            beta1=0.9,
            beta2=0.999,
            eps=1e-6,
            weight_decay=0.01,
            bias_correction=True,
            maximize=False,
        )
        if op == "lamb_":
            kwargs.update(sq_norms=torch.ones(3, 2), lr=lr)
        return kwargs
    assert op == "grad_norm"
    return dict(tensors=params, norm_type=2.0)


UPDATE_OPS = ["adam_", "sgd_", "rmsprop_", "adagrad_", "lion_", "lamb_"]
#: Each op's float arguments, which must be finite (and in range): op -> names.
OP_FLOATS = {
    "adam_": ["beta1", "beta2", "weight_decay", "eps"],
    "sgd_": ["weight_decay", "momentum", "dampening"],
    "rmsprop_": ["alpha", "eps", "weight_decay", "momentum"],
    "adagrad_": ["lr_decay", "weight_decay", "eps"],
    "lion_": ["beta1", "beta2", "weight_decay"],
    "lamb_norms": ["beta1", "beta2", "eps", "weight_decay"],
    "lamb_": ["beta1", "beta2", "eps", "weight_decay"],
}


def call(op: str, via: str, kwargs: dict):
    fn = getattr(torch.ops.fused_optim, op) if via == "torch.ops" else getattr(_ops, op)
    with torch.no_grad():
        return fn(**kwargs)


def set_item(name: str, i: int, value) -> object:
    def corrupt(kwargs):
        kwargs[name] = list(kwargs[name])
        kwargs[name][i] = value(kwargs[name][i]) if callable(value) else value

    return corrupt


def set_arg(name: str, value) -> object:
    def corrupt(kwargs):
        kwargs[name] = value

    return corrupt


def append(name: str, value: torch.Tensor) -> object:
    def corrupt(kwargs):
        kwargs[name] = [*kwargs[name], value]

    return corrupt


def with_bf16_masters(corrupt_masters):
    """The standard mixed-precision call (bf16 params, fp32 state and masters), then ``corrupt_masters``."""

    def corrupt(kwargs):
        kwargs["params"] = [p.bfloat16() for p in kwargs["params"]]
        kwargs["master_params"] = corrupt_masters([p.float() for p in kwargs["params"]])

    return corrupt


# (op, what is wrong, corruption, expected message): each is a check test_ops.py and the per-optimizer files do not
# exercise on that op.
OP_CASES = [
    ("adam_", "params of two dtypes", set_item("params", 1, torch.Tensor.double),
     r"params\[1\] has dtype Double but must be Float like params\[0\]"),
    ("lion_", "params of two dtypes", set_item("params", 2, torch.Tensor.half),
     r"params\[2\] has dtype Half but must be Float like params\[0\]"),
    ("grad_norm", "tensors of two dtypes", set_item("tensors", 1, torch.Tensor.double),
     r"tensors\[1\] has dtype Double"),
    ("adagrad_", "one grad too many", append("grads", torch.zeros(1)), "grads has 4 tensors but params has 3"),
    ("lion_", "one grad too many", append("grads", torch.zeros(1)), "grads has 4 tensors but params has 3"),
    ("sgd_", "a momentum buffer of another dtype", set_item("momentum_buffers", 1, torch.Tensor.double),
     r"momentum_buffers\[1\] has dtype Double but must be Float"),
    ("adagrad_", "a sum of another dtype", set_item("state_sums", 1, torch.Tensor.double),
     r"state_sums\[1\] has dtype Double but must be Float"),
    ("lion_", "a momentum of another shape", set_item("exp_avgs", 2, torch.zeros(3)),
     r"exp_avgs\[2\] has shape \[3\] but params\[2\] has shape \[64\]"),
    ("rmsprop_", "a grad_avg of another shape", set_item("grad_avgs", 0, torch.zeros(5, 1)),
     r"grad_avgs\[0\] has shape \[5, 1\] but params\[0\] has shape \[5\]"),
    ("adam_", "a grad of another rank", set_item("grads", 0, lambda g: g.reshape(1, 5)),
     r"grads\[0\] has shape \[1, 5\] but params\[0\] has shape \[5\]"),
    ("adagrad_", "an int64 step", set_item("state_steps", 0, torch.Tensor.long),
     r"state_steps\[0\] must be a one-element float32 or float64 tensor"),
    ("rmsprop_", "a step of two elements", set_item("state_steps", 1, torch.zeros(2)),
     r"state_steps\[1\] must be a one-element float32 or float64 tensor"),
    ("lamb_norms", "one float64 step among float32", set_item("state_steps", 2, torch.Tensor.double),
     r"state_steps\[2\] is Double but state_steps\[0\] is Float"),
    ("adagrad_", "one step missing", lambda k: k["state_steps"].pop(), "state_steps has 2 tensors but params has 3"),
    ("lamb_", "one step missing", lambda k: k["state_steps"].pop(), "state_steps has 2 tensors but params has 3"),
    ("sgd_", "an integer lr", set_arg("lr", torch.tensor(1)), "lr must be a floating-point tensor, got Long"),
    ("lion_", "a complex lr", set_arg("lr", torch.tensor(0.1 + 0j)), "lr must be a floating-point tensor, got Complex"),
    ("adagrad_", "an lr of two elements", set_arg("lr", torch.ones(2)), r"lr must have one element, got shape \[2\]"),
    ("adam_", "a grad_scale of two elements", set_arg("grad_scale", torch.ones(2)), "grad_scale must have one element"),
    ("sgd_", "an integer grad_scale", set_arg("grad_scale", torch.tensor(2)),
     "grad_scale must be a floating-point tensor, got Long"),
    ("lamb_norms", "an integer grad_scale", set_arg("grad_scale", torch.tensor(2)),
     "grad_scale must be a floating-point tensor, got Long"),
    ("rmsprop_", "a bool found_inf", set_arg("found_inf", torch.tensor(False)),
     "found_inf must be a floating-point tensor, got Bool"),
    ("lamb_", "a found_inf of two elements", set_arg("found_inf", torch.zeros(2)), "found_inf must have one element"),
    ("adagrad_", "float64 masters", with_bf16_masters(lambda ms: [m.double() for m in ms]),
     "master_params must be float32 .* got Double for BFloat16 params"),
    ("lion_", "masters for float32 params", set_arg("master_params", [torch.zeros(n) for n in (5, 17, 64)]),
     "no kernel for Float params with Float optimizer state and a float32 master"),
    ("sgd_", "one master missing", with_bf16_masters(lambda ms: ms[:2]),
     "master_params has 2 tensors but params has 3"),
    ("rmsprop_", "a master of another shape", with_bf16_masters(lambda ms: [ms[0], torch.zeros(2), ms[2]]),
     r"master_params\[1\] has shape \[2\] but params\[1\] has shape \[17\]"),
    ("sgd_", "a sparse param", set_item("params", 1, torch.Tensor.to_sparse), r"params\[1\] is a sparse tensor"),
    ("lamb_norms", "a sparse grad", set_item("grads", 2, torch.Tensor.to_sparse), r"grads\[2\] is a sparse tensor"),
    ("grad_norm", "a sparse tensor", set_item("tensors", 0, torch.Tensor.to_sparse),
     r"tensors\[0\] is a sparse tensor"),
    ("adam_", "a sparse state tensor", set_item("exp_avg_sqs", 0, torch.Tensor.to_sparse),
     r"exp_avg_sqs\[0\] is a sparse tensor"),
    ("lion_", "a param that requires grad, outside no_grad", None, "call it under torch.no_grad"),
    ("grad_norm", "norm_type NaN", set_arg("norm_type", NAN), "norm_type must be 2 or inf, got nan"),
]  # fmt: skip


@pytest.mark.parametrize("via", ["torch.ops", "_ops"])
@pytest.mark.parametrize("op, what, corrupt, message", OP_CASES, ids=[f"{c[0]}-{c[1]}" for c in OP_CASES])
def test_op_refuses_a_bad_argument_by_name_before_writing(op, what, corrupt, message, via):
    torch.manual_seed(0)
    kwargs = op_kwargs(op)
    if corrupt is not None:
        corrupt(kwargs)
    first = "tensors" if op == "grad_norm" else "params"
    before = [t.clone() for t in kwargs[first] if t.layout == torch.strided]
    if corrupt is None:  # grad mode on, a mutated tensor requiring grad
        kwargs["params"][0].requires_grad_(True)
        fn = getattr(torch.ops.fused_optim, op) if via == "torch.ops" else getattr(_ops, op)
        with pytest.raises(RuntimeError, match=message):
            fn(**kwargs)
    else:
        with pytest.raises(RuntimeError, match=message):
            call(op, via, kwargs)
    after = [t for t in kwargs[first] if t.layout == torch.strided]
    for t, b in zip(after, before):
        assert torch.equal(t.detach(), b)


@pytest.mark.parametrize("value", [INF, NAN], ids=["inf", "nan"])
@pytest.mark.parametrize("op, arg", [(op, a) for op, args in OP_FLOATS.items() for a in args], ids=str)
def test_op_refuses_a_non_finite_float_argument(op, arg, value):
    kwargs = op_kwargs(op)
    kwargs[arg] = value
    with pytest.raises(RuntimeError, match=rf"invalid {arg} {value} \(must be finite"):
        call(op, "torch.ops", kwargs)


@pytest.mark.parametrize("value", [INF, NAN, -0.5], ids=["inf", "nan", "negative"])
@pytest.mark.parametrize("op", UPDATE_OPS)
def test_op_refuses_a_bad_lr_value(op, value):
    kwargs = op_kwargs(op)
    kwargs["lr"] = torch.tensor(value)
    before = [p.clone() for p in kwargs["params"]]
    with pytest.raises(RuntimeError, match=rf"invalid lr {value}"):
        call(op, "_ops", kwargs)
    assert all(torch.equal(p, b) for p, b in zip(kwargs["params"], before))


@pytest.mark.cuda
@pytest.mark.parametrize(
    "op, corrupt, message",
    [
        ("adam_", set_item("exp_avgs", 0, torch.Tensor.cpu), r"exp_avgs\[0\] is on cpu but params\[0\] is on cuda"),
        ("adagrad_", set_item("state_steps", 1, torch.Tensor.cpu), r"state_steps\[1\] is on cpu but params\[1\]"),
        ("lion_", set_item("params", 2, torch.Tensor.cpu), r"params\[2\] is on cpu but params\[0\] is on cuda"),
    ],
    ids=["state", "step", "param"],
)
def test_op_refuses_tensors_on_two_devices(op, corrupt, message):
    """(test_ops.py checks a gradient on the CPU.) Written from the C++ messages; needs a GPU to run."""
    kwargs = {k: [t.cuda() for t in v] if isinstance(v, list) else v for k, v in op_kwargs(op).items()}
    corrupt(kwargs)
    with pytest.raises(RuntimeError, match=message):
        call(op, "torch.ops", kwargs)


def test_op_none_in_a_list_is_named_by_torch_ops():
    kwargs = op_kwargs("adam_")
    kwargs["params"][1] = None
    with pytest.raises(RuntimeError, match="Expected a value of type 'List\\[Tensor\\]' for argument 'params'"):
        call("adam_", "torch.ops", kwargs)


def test_op_none_in_a_list_is_named_by_the_eager_binding():
    """pybind11 refuses the call naming no argument (arg0, arg1...); _ops then lets torch.ops' parser name it."""
    kwargs = op_kwargs("adam_")
    kwargs["params"][1] = None
    with pytest.raises(RuntimeError, match="Expected a value of type 'List\\[Tensor\\]' for argument 'params'"):
        call("adam_", "_ops", kwargs)


def test_op_flag_of_the_wrong_type_is_named_by_the_eager_binding():
    kwargs = op_kwargs("adam_")
    kwargs["amsgrad"] = "yes"
    with pytest.raises(RuntimeError, match="argument 'amsgrad'"):
        call("adam_", "_ops", kwargs)


@pytest.mark.parametrize(
    "op, corrupt, message",
    [
        ("adam_", set_item("grads", 1, lambda g: g.to("meta")), r"grads\[1\] is on meta"),
        ("sgd_", set_arg("lr", torch.tensor(0.1, device="meta")), "lr is on meta"),
        ("grad_norm", set_item("tensors", 1, lambda t: t.to("meta")), r"tensors\[1\] is on meta"),
    ],
    ids=["adam_-grad", "sgd_-lr", "grad_norm-tensor"],
)
def test_op_refuses_a_meta_tensor_among_cpu_tensors(op, corrupt, message):
    kwargs = op_kwargs(op)
    corrupt(kwargs)
    with pytest.raises(RuntimeError, match=message):
        call(op, "torch.ops", kwargs)


def test_op_refuses_an_overlapping_state_tensor_before_writing():
    kwargs = op_kwargs("adam_")
    kwargs["exp_avgs"][1] = torch.zeros(1).expand(17)
    before = [p.clone() for p in kwargs["params"]]
    with pytest.raises(RuntimeError, match=r"exp_avgs\[1\]"):
        call("adam_", "torch.ops", kwargs)
    assert all(torch.equal(p, b) for p, b in zip(kwargs["params"], before))


# Clipping ---------------------------------------------------------------------------------------------------------


def with_grads(n=3, scale=10.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(7, generator=g)) for _ in range(n)]
    for p in params:
        p.grad = torch.randn(7, generator=g) * scale
    return params


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"max_norm": -1.0}, ValueError, "clip_grad_norm_: max_norm must be >= 0, got -1.0"),
        ({"max_norm": NAN}, ValueError, "clip_grad_norm_: max_norm must be >= 0, got nan"),
        ({"max_norm": -INF}, ValueError, "clip_grad_norm_: max_norm must be >= 0, got -inf"),
        ({"max_norm": None}, TypeError, "clip_grad_norm_: max_norm must be a number, got None"),
        ({"max_norm": "one"}, ValueError, "clip_grad_norm_: max_norm must be a number, got 'one'"),
        ({"max_norm": 1.0, "norm_type": NAN}, ValueError, "clip_grad_norm_: norm_type must be a number, got nan"),
        ({"max_norm": 1.0, "norm_type": None}, TypeError, "clip_grad_norm_: norm_type must be a number, got None"),
    ],
    ids=str,
)
def test_clip_grad_norm_refuses_bad_arguments_before_scaling(kwargs, error, message):
    """torch scales by a negative coefficient (flipping every gradient) or a NaN one without a word."""
    params = with_grads()
    before = [p.grad.clone() for p in params]
    with pytest.raises(error, match=message):
        fused_optim.clip_grad_norm_(params, **kwargs)
    assert all(torch.equal(p.grad, b) for p, b in zip(params, before))


@pytest.mark.parametrize(
    "grads, norm_type, error, message",
    [
        ([torch.ones(3)], 3.0, ValueError, "total_norm: norm_type must be 2 or inf, got 3.0"),
        ([torch.ones(3)], NAN, ValueError, "total_norm: norm_type must be 2 or inf, got nan"),
        ([torch.ones(3, dtype=torch.int32)], 2.0, RuntimeError, r"has dtype Int; supported dtypes are float32"),
    ],
    ids=["norm_type_3", "norm_type_nan", "int"],
)
def test_total_norm_refuses(grads, norm_type, error, message):
    with pytest.raises(error, match=message):
        total_norm(grads, norm_type)


@pytest.mark.parametrize("norm_type", [2.0, INF])
def test_clip_grad_norm_of_sparse_gradients_matches_torch_on_their_dense_form(norm_type):
    """Sparse gradients (an uncoalesced COO one: index 2 twice) are clipped as their dense form is; they stay
    sparse. (torch 2.14 clips them too; torch 2.11's clip_grad_norm_ raises NotImplementedError on them.)"""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(10, 4, sparse=True)
    (emb(torch.tensor([1, 2, 2, 7])) * 5).sum().backward()
    dense = torch.nn.Parameter(emb.weight.detach().clone())
    dense.grad = emb.weight.grad.to_dense()
    extra = with_grads()  # a dense gradient beside it, in the same global norm
    extra_ref = [q.detach().clone().requires_grad_() for q in extra]
    for q, r in zip(extra, extra_ref):
        r.grad = q.grad.clone()
    assert not emb.weight.grad.is_coalesced()
    n_ours = fused_optim.clip_grad_norm_([emb.weight, *extra], 1.0, norm_type)
    n_ref = torch.nn.utils.clip_grad_norm_([dense, *extra_ref], 1.0, norm_type)
    torch.testing.assert_close(n_ours, n_ref)
    assert emb.weight.grad.layout == torch.sparse_coo
    torch.testing.assert_close(emb.weight.grad.to_dense(), dense.grad)
    for q, r in zip(extra, extra_ref):
        torch.testing.assert_close(q.grad, r.grad)


@pytest.mark.parametrize("max_norm, norm_type", [(0.0, 2.0), (INF, 2.0), (1.0, 3.0), (1.0, -INF)], ids=str)
def test_clip_grad_norm_edge_values_match_torch(max_norm, norm_type):
    """max_norm=0 zeroes the gradients and inf leaves them, as in torch; other orders are torch's own."""
    ours, ref = with_grads(), with_grads()
    n_ours = fused_optim.clip_grad_norm_(ours, max_norm, norm_type)
    n_ref = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type)
    torch.testing.assert_close(n_ours, n_ref, rtol=1e-5, atol=0)
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p.grad, q.grad)


def test_clip_grad_norm_warns_about_an_empty_generator_like_torch():
    """A model.parameters() generator already consumed clips nothing: torch warns, and so do we."""
    gen = (p for p in [])
    with pytest.warns(UserWarning, match="empty generator"):
        assert fused_optim.clip_grad_norm_(gen, 1.0).item() == 0.0


def test_total_norm_of_one_tensor_is_its_norm():
    """A bare tensor is one gradient, not an iterable of its rows (which was right, and one op call per row)."""
    t = torch.randn(100, 7)
    torch.testing.assert_close(total_norm(t), torch.linalg.vector_norm(t))


# create_optimizer -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"weight_decay": -0.1}, ValueError, r"Invalid weight_decay value: -0.1"),
        ({"weight_decay": NAN}, ValueError, r"Invalid weight_decay value: nan"),
        ({"weight_decay": INF}, ValueError, r"Invalid weight_decay value: inf"),
        ({"weight_decay": "0.1"}, TypeError, r"weight_decay must be a number, got '0.1'"),
        ({"weight_decay": 0.1, "no_weight_decay": "fc.bias"}, TypeError, "no_weight_decay must be a list"),
        ({"weight_decay": 0.1, "no_weight_decay": ["wieght"]}, ValueError, r"does not have: \['wieght'\]"),
    ],
    ids=str,
)
@pytest.mark.parametrize("name", ["adamw", torch.optim.AdamW])
def test_create_optimizer_refuses_bad_arguments(name, kwargs, error, message):
    """With a module, weight_decay goes into param groups, past the optimizer's check of its default: -0.1 trained
    with a negative decay (torch.optim) or failed at the first step (fused_optim)."""
    with pytest.raises(error, match=message):
        fused_optim.create_optimizer(name, torch.nn.Linear(3, 2), **kwargs)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_create_optimizer_refuses_a_module_without_trainable_params(weight_decay):
    """With weight decay it used to build an optimizer of two empty groups, which trains nothing."""
    frozen = torch.nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="empty parameter list: the module has no trainable parameters"):
        fused_optim.create_optimizer("adamw", frozen, weight_decay=weight_decay)


def test_create_optimizer_refuses_weight_decay_for_an_optimizer_without_it():
    with pytest.raises(ValueError, match="Rprop takes no weight_decay"):
        fused_optim.create_optimizer(torch.optim.Rprop, torch.nn.Linear(3, 2), weight_decay=0.1)
    with pytest.raises(ValueError, match="needs a module"):
        fused_optim.create_optimizer("adamw", torch.nn.Linear(3, 2).parameters(), no_weight_decay=["bias"])


def test_create_optimizer_passes_the_optimizers_own_errors():
    with pytest.raises(ValueError, match=r"Invalid learning rate: inf \(must be finite\)"):
        fused_optim.create_optimizer("adamw", torch.nn.Linear(3, 2), lr=INF)
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening"):
        fused_optim.create_optimizer("nesterov", torch.nn.Linear(3, 2), momentum=0.0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'betas'"):
        fused_optim.create_optimizer("sgd", torch.nn.Linear(3, 2), betas=(0.9, 0.99))


# amp -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"dtype": torch.float32}, ValueError, "dtype must be torch.float16 or torch.bfloat16"),
        ({"dtype": torch.int32}, ValueError, "dtype must be torch.float16 or torch.bfloat16"),
        ({"dtype": "float16"}, ValueError, r"dtype must be torch.float16 or .*; got 'float16'"),
        ({"accumulation_steps": 1.5}, ValueError, "accumulation_steps must be an integer of at least 1, got 1.5"),
        ({"accumulation_steps": NAN}, ValueError, "accumulation_steps must be an integer of at least 1, got nan"),
        ({"accumulation_steps": True}, ValueError, "accumulation_steps must be an integer of at least 1, got True"),
        ({"accumulation_steps": -2}, ValueError, "accumulation_steps must be at least 1, got -2"),
        ({"init_scale": 0.0}, ValueError, "init_scale must be a positive finite number, got 0.0"),
        ({"init_scale": NAN}, ValueError, "init_scale must be a positive finite number, got nan"),
        ({"init_scale": INF}, ValueError, "init_scale must be a positive finite number, got inf"),
        ({"max_grad_norm": NAN}, ValueError, "max_grad_norm must be positive, got nan"),
    ],
    ids=str,
)
def test_mixed_precision_refuses_bad_arguments(kwargs, error, message):
    """torch.autocast only warns for another dtype and then runs in float32; a NaN accumulation count made every
    loss NaN; a zero loss scale skips every step. All silently, before these checks."""
    opt = fused_optim.AdamW(torch.nn.Linear(3, 2).parameters())
    with pytest.raises(error, match=message):
        amp.MixedPrecision(opt, device_type="cpu", **kwargs)


@pytest.mark.parametrize("optimizer", [None, torch.nn.Linear(3, 2)], ids=["None", "a_module"])
def test_mixed_precision_needs_an_optimizer(optimizer):
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer, got"):
        amp.MixedPrecision(optimizer, device_type="cpu")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"dtype": torch.float64}, "dtype must be torch.float16"), ({"init_scale": -1.0}, "init_scale must be")],
    ids=str,
)
def test_amp_grad_refuses_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message), amp.grad(device_type="cpu", **kwargs):
        pass


# Schedulers, lr_finder, profiling ------------------------------------------------------------------------------


def _sgd():
    return fused_optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sched.CosineAnnealingLR(_sgd(), T_total=0), "lengths must be positive"),
        (lambda: sched.CosineAnnealingLR(_sgd(), T_max=-5), "lengths must be positive"),
        (lambda: sched.CosineAnnealingLR(_sgd(), T_total=10, warmup_steps=-1), "warmup_steps must be a finite"),
        (lambda: sched.CosineAnnealingLR(_sgd(), T_total=10, warmup="step"), "warmup must be one of"),
        (lambda: sched.CosineAnnealingLR(_sgd(), T_total=10, T_mult=0.5), "T_mult must be >= 1"),
        (lambda: sched.LinearLR(_sgd(), start_factor=-1.0), "start_factor and end_factor must be >= 0"),
        (lambda: sched.ConstantLR(_sgd(), factor=NAN), r"factor must be in \[0, 1\], got nan"),
        (lambda: sched.get_scheduler("cosine", _sgd(), num_warmup_steps=-1, num_training_steps=10), "warmup_steps"),
        (lambda: sched.get_scheduler("cosine_annealing", _sgd()), "unknown scheduler 'cosine_annealing'"),
    ],
    ids=["T_total_0", "T_max_negative", "warmup_negative", "warmup_kind", "T_mult", "linear", "constant_nan",
         "get_scheduler_warmup", "get_scheduler_name"],
)  # fmt: skip
def test_scheduler_refuses_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sched.CosineAnnealingLR(_sgd(), T_total=NAN), "T_total"),
        (lambda: sched.CosineAnnealingLR(_sgd(), T_total=10, eta_min=NAN), "eta_min"),
        (lambda: sched.CosineAnnealingLR(_sgd(), T_total=10, warmup_steps=NAN), "warmup_steps"),
        (lambda: sched.CosineAnnealingLR(_sgd(), T_total=10, warmup_steps=3, warmup_start_factor=INF),
         "warmup_start_factor"),
        (lambda: sched.ExponentialLR(_sgd(), gamma=NAN), "gamma"),
        (lambda: sched.LinearLR(_sgd(), start_factor=INF), "start_factor"),
        (lambda: sched.InverseSqrtLR(_sgd(), timescale=0), "timescale"),
        (lambda: sched.WarmupStableDecayLR(_sgd(), 2, 5, min_lr_ratio=-1.0), "min_lr_ratio"),
    ],
    ids=["T_total_nan", "eta_min_nan", "warmup_steps_nan", "warmup_start_factor_inf", "gamma_nan",
         "start_factor_inf", "timescale_0", "wsd_min_lr_ratio"],
)  # fmt: skip
def test_scheduler_refuses_non_finite_arguments_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("bandwidth", [-1.0, NAN], ids=["negative", "nan"])
def test_profile_step_refuses_a_bad_bandwidth(bandwidth):
    model = torch.nn.Linear(3, 2)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with warnings.catch_warnings(), pytest.raises(ValueError, match="bandwidth_gbps"):
        warnings.simplefilter("ignore")
        fused_optim.profile_step(
            fused_optim.AdamW(model.parameters()), steps=1, warmup=0, profiler_steps=0, bandwidth_gbps=bandwidth,
            progress=False,
        )  # fmt: skip
