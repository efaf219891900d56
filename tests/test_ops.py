"""The registered operators: schemas, opcheck (fake kernels, mutation annotations) and argument checks."""

from __future__ import annotations

import pytest
import torch

import fused_optim

OP = torch.ops.fused_optim.adam_


def adam_args(n=3, dtype=torch.float32, device="cpu", amsgrad=False, numel=(5, 17, 64)):
    params = [torch.randn(numel[i % len(numel)], dtype=dtype, device=device) for i in range(n)]
    lists = [
        params,
        [torch.randn_like(p) for p in params],
        [torch.rand_like(p) for p in params],
        [torch.rand_like(p) for p in params],
        [torch.rand_like(p) for p in params] if amsgrad else [],
        [torch.tensor(float(i), device=device) for i in range(n)],
    ]
    kwargs = dict(
        lr=torch.tensor(0.01),
        beta1=0.9,
        beta2=0.999,
        weight_decay=0.01,
        eps=1e-8,
        amsgrad=amsgrad,
        maximize=False,
        decoupled_weight_decay=True,
    )
    return lists, kwargs


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scaler", [False, True])
def test_opcheck(amsgrad, dtype, scaler, device):
    lists, kwargs = adam_args(dtype=dtype, device=device, amsgrad=amsgrad)
    if scaler:
        kwargs.update(grad_scale=torch.tensor(4.0, device=device), found_inf=torch.tensor(0.0, device=device))
    torch.library.opcheck(OP, tuple(lists), kwargs)


@pytest.mark.parametrize("scalar_dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("skipped", [False, True])
def test_scalar_tensors_of_any_float_dtype(scalar_dtype, skipped, device):
    """lr, grad_scale and found_inf on the params' device in any float dtype act as the same float32 values (all
    three are exact in 16 bits), so a bf16 lr that works on the CPU works on the GPU too."""
    lists, kwargs = adam_args(device=device)
    same = [[t.clone() for t in lst] for lst in lists]

    def scalars(dtype):
        return dict(
            lr=torch.tensor(2.0**-6, dtype=dtype, device=device),
            grad_scale=torch.tensor(4.0, dtype=dtype, device=device),
            found_inf=torch.tensor(float(skipped), dtype=dtype, device=device),
        )

    before = [p.clone() for p in lists[0]]
    OP(*lists, **{**kwargs, **scalars(scalar_dtype)})
    OP(*same, **{**kwargs, **scalars(torch.float32)})
    for a, b in zip(lists, same):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert all(torch.equal(p, q) for p, q in zip(lists[0], before)) == skipped


def test_cuda_kernels_registered_when_built():
    has_cuda_kernel = torch._C._dispatch_has_kernel_for_dispatch_key("fused_optim::adam_", "CUDA")
    assert has_cuda_kernel == fused_optim.build_info()["cuda_compiled"]
    assert torch._C._dispatch_has_kernel_for_dispatch_key("fused_optim::adam_", "CPU")
    if torch.version.cuda and fused_optim.build_info()["cuda_compiled"]:
        assert fused_optim.build_info()["cuda_version"] == ".".join(torch.version.cuda.split(".")[:2])


def test_build_info():
    info = fused_optim.build_info()
    assert info["torch_version"] == torch.__version__.split("+")[0]
    assert info["cpu_isa"] in info["cpu_supported_isas"]
    assert info["cpu_supported_isas"][0] == "DEFAULT"


def test_unknown_isa_is_rejected():
    with pytest.raises(RuntimeError, match="unknown CPU instruction set"):
        fused_optim._C.set_cpu_isa("sse9")


def test_empty_lists_are_a_no_op():
    OP([], [], [], [], [], [], **adam_args()[1])


def _mutate(lists, kwargs, which):
    """Apply one corruption to a valid call; returns the expected message."""
    params, grads, m, v, vmax, steps = lists
    if which == "short_grads":
        lists[1] = grads[:-1]
        return "grads has 2 tensors but params has 3"
    if which == "dtype":
        m[1] = m[1].double()
        return r"exp_avgs\[1\] has dtype Double"
    if which == "shape":
        v[2] = torch.zeros(3)
        return r"exp_avg_sqs\[2\] has shape \[3\]"
    if which == "step_dtype":
        steps[0] = steps[0].half()
        return r"state_steps\[0\] must be a one-element float32 or float64 tensor"
    if which == "step_dtypes_differ":
        steps[0] = steps[0].double()
        return r"state_steps\[1\] is Float but state_steps\[0\] is Double"
    if which == "lr_shape":
        kwargs["lr"] = torch.tensor([0.1, 0.2])
        return "lr must have one element"
    if which == "negative_lr":
        kwargs["lr"] = torch.tensor(-0.1)
        return "invalid lr"
    if which == "beta":
        kwargs["beta1"] = 1.5
        return "invalid beta1"
    if which == "beta_one":
        kwargs["beta2"] = 1.0
        return "invalid beta2"
    if which == "nan_eps":
        kwargs["eps"] = float("nan")
        return "invalid eps"
    if which == "amsgrad_list":
        lists[4] = [torch.zeros_like(p) for p in params]
        return "max_exp_avg_sqs given but amsgrad is false"
    if which == "found_inf_shape":
        kwargs["found_inf"] = torch.zeros(2)
        return "found_inf must have one element"
    if which == "int_params":
        for lst in lists[:4]:
            lst[:] = [t.int() for t in lst]
        return "supported dtypes are float32"
    if which == "complex":
        for lst in lists[:4]:
            lst[:] = [torch.complex(t, t) for t in lst]
        return "dtype ComplexFloat"
    raise AssertionError(which)


@pytest.mark.parametrize(
    "which",
    [
        "short_grads",
        "dtype",
        "shape",
        "step_dtype",
        "step_dtypes_differ",
        "lr_shape",
        "negative_lr",
        "beta",
        "beta_one",
        "nan_eps",
        "amsgrad_list",
        "found_inf_shape",
        "int_params",
        "complex",
    ],
)
def test_bad_arguments_name_the_problem(which):
    lists, kwargs = adam_args()
    before = [p.clone() for p in lists[0]]
    message = _mutate(lists, kwargs, which)
    with pytest.raises(RuntimeError, match=message):
        OP(*lists, **kwargs)
    if which not in ("int_params", "complex"):
        for p, q in zip(lists[0], before):  # rejected before anything was written
            assert torch.equal(p, q)


@pytest.mark.cuda
def test_mixed_devices_are_rejected():
    lists, kwargs = adam_args(device="cuda")
    lists[1][1] = lists[1][1].cpu()
    with pytest.raises(RuntimeError, match=r"grads\[1\] is on cpu"):
        OP(*lists, **kwargs)


@pytest.mark.cuda
def test_cuda_matches_cpu_bitwise_close():
    """The same rule on both devices: results agree to fp32 rounding."""
    for amsgrad in (False, True):
        lists, kwargs = adam_args(n=40, amsgrad=amsgrad, numel=(1, 3, 4, 1000, 65537, 70000))
        cuda_lists = [[t.cuda() for t in lst] for lst in lists]
        OP(*lists, **kwargs)
        OP(*cuda_lists, **kwargs)
        for a, b in zip(lists, cuda_lists):
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y.cpu(), rtol=1e-6, atol=1e-7)


def test_eager_binding_is_the_same_dispatcher_entry():
    """fused_optim._ops.adam_ (fused_optim._C's binding in eager mode) and torch.ops.fused_optim.adam_ give
    identical results, and the profiler sees the operator either way."""
    from fused_optim import _ops

    a, kwargs = adam_args(n=5, amsgrad=True)
    b = [[t.clone() for t in lst] for lst in a]
    with torch.profiler.profile() as prof:
        _ops.adam_(*a, **kwargs)
    OP(*b, **kwargs)
    for x, y in zip(a, b):
        for s, t in zip(x, y):
            assert torch.equal(s, t)
    assert any(e.name == "fused_optim::adam_" for e in prof.events())


def test_in_place_on_tensors_requiring_grad_needs_no_grad():
    lists, kwargs = adam_args()
    lists[0][0].requires_grad_(True)
    with pytest.raises(RuntimeError, match="under torch.no_grad"):
        OP(*lists, **kwargs)
    with torch.no_grad():
        OP(*lists, **kwargs)


def test_version_counters_are_bumped():
    """Autograd must notice that the op changed tensors saved for backward."""
    lists, kwargs = adam_args()
    versions = [t._version for t in lists[0] + lists[2] + lists[5]]
    grad_versions = [t._version for t in lists[1]]
    OP(*lists, **kwargs)
    assert all(t._version > v for t, v in zip(lists[0] + lists[2] + lists[5], versions))
    assert [t._version for t in lists[1]] == grad_versions
    w = torch.randn(3, requires_grad=True)
    x = w * 1.0
    y = (x * x).sum()  # saves x
    with torch.no_grad():
        OP([x], [torch.ones(3)], [torch.zeros(3)], [torch.zeros(3)], [], [torch.tensor(0.0)], **kwargs)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
