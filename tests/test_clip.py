"""Global-norm clipping: fused_optim.clip_grad_norm_ and the grad_norm op against torch.nn.utils.clip_grad_norm_ and
torch.linalg.vector_norm, and every optimizer's max_grad_norm against torch's clip followed by torch.optim's step."""

from __future__ import annotations

import math

import pytest
import torch

import fused_optim
from test_adam import make_params

SHAPES = [(1000,), (33,), (5, 7), (), (0,), (300_000,)]  # the last is split across threads


def with_grads(shapes, dtype, device, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(p) for p in make_params(shapes, dtype, device, seed=seed)]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g, dtype=torch.float64) * scale).to(dtype=dtype, device=device)
    return params


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_grad_norm_op_matches_vector_norm(norm_type, dtype, device):
    grads = [p.grad for p in with_grads(SHAPES, dtype, device)]
    norm = torch.ops.fused_optim.grad_norm(grads, norm_type)
    assert norm.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert norm.shape == () and norm.device == grads[0].device
    expected = torch.linalg.vector_norm(torch.cat([g.double().flatten().cpu() for g in grads]), norm_type)
    rtol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(norm.cpu().double(), expected, rtol=rtol, atol=0)


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_grad_norm_propagates_nan_and_inf(norm_type, device):
    grads = [p.grad for p in with_grads([(100,), (50_000,)], torch.float32, device)]
    grads[1][12345] = float("nan")
    assert torch.ops.fused_optim.grad_norm(grads, norm_type).isnan()
    grads[1][12345] = float("inf")
    assert torch.ops.fused_optim.grad_norm(grads, norm_type).isinf()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_grad_norm_propagates_a_nan_with_its_sign_bit_set(dtype, device):
    """A NaN that went through a negation in backward has its sign bit set; the inf-norm's max must still see it."""
    grads = [p.grad for p in with_grads([(100,), (50_000,)], dtype, device)]
    bits = {8: torch.int64, 4: torch.int32, 2: torch.int16}[grads[1].element_size()]
    negative_nan = torch.tensor(-1, dtype=bits).view(dtype)  # all bits set: a NaN with the sign bit
    assert negative_nan.isnan() and negative_nan.view(bits) < 0
    grads[1][777] = negative_nan.to(device)
    assert grads[1][777:778].view(bits).item() == -1, "the assignment lost the sign bit"
    for norm_type in (math.inf, 2.0):
        assert torch.ops.fused_optim.grad_norm(grads, norm_type).isnan(), norm_type


def test_grad_norm_op_checks():
    with pytest.raises(RuntimeError, match="norm_type must be 2 or inf"):
        torch.ops.fused_optim.grad_norm([torch.ones(3)], 1.0)
    with pytest.raises(RuntimeError, match=r"tensors\[1\] has dtype Half but must be Float"):
        torch.ops.fused_optim.grad_norm([torch.ones(3), torch.ones(3, dtype=torch.half)], 2.0)
    assert fused_optim.clip.total_norm([]).item() == 0.0  # (the op itself cannot dispatch without a tensor)
    torch.library.opcheck(torch.ops.fused_optim.grad_norm, ([torch.randn(3), torch.randn(40)], 2.0))


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0])
@pytest.mark.parametrize("max_norm", [1.0, 1e6])  # clipping, and a no-op
def test_clip_grad_norm_matches_torch(norm_type, max_norm, device):
    # torch's foreach inf-norm refuses empty tensors (ours takes them); torch sums fp32 squares in fp32, ours in
    # float64, hence the relative tolerance of the norm.
    shapes = [s for s in SHAPES if s != (0,)] if norm_type == math.inf else SHAPES
    ours = with_grads(shapes, torch.float32, device)
    ref = with_grads(shapes, torch.float32, device)
    n_ours = fused_optim.clip_grad_norm_(ours, max_norm, norm_type)
    n_ref = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type)
    torch.testing.assert_close(n_ours, n_ref, rtol=1e-5, atol=0)
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7)


def test_clip_grad_norm_mixed_dtypes_and_edge_cases():
    params = with_grads([(100,), (64,)], torch.float32, "cpu") + with_grads([(30,)], torch.bfloat16, "cpu", seed=3)
    grads = [p.grad.double() for p in params]
    norm = fused_optim.clip_grad_norm_(params, 1.0)
    torch.testing.assert_close(norm.double(), torch.linalg.vector_norm(torch.cat(grads)), rtol=1e-6, atol=0)
    assert fused_optim.clip_grad_norm_([torch.nn.Parameter(torch.ones(3))], 1.0).item() == 0.0  # no grads
    p = with_grads([(10,)], torch.float32, "cpu")
    p[0].grad[3] = float("inf")
    with pytest.raises(RuntimeError, match="non-finite"):
        fused_optim.clip_grad_norm_(p, 1.0, error_if_nonfinite=True)


CASES = {
    "SGD": (fused_optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    "RMSprop": (fused_optim.RMSprop, torch.optim.RMSprop, dict(lr=0.01, centered=True)),
    "Adagrad": (fused_optim.Adagrad, torch.optim.Adagrad, dict(lr=0.05)),
    "Adam": (fused_optim.Adam, torch.optim.Adam, dict(lr=0.01, amsgrad=True)),
    "AdamW": (fused_optim.AdamW, torch.optim.AdamW, dict(lr=0.01)),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("scaled", [False, True], ids=["unscaled", "grad_scale"])
def test_max_grad_norm_equals_clip_then_step(name, scaled, device):
    """opt(max_grad_norm=c).step() == unscale, clip_grad_norm_(c), torch.optim step; with a GradScaler's scale the
    kernel unscales and clips in one multiplication."""
    ours_cls, ref_cls, kwargs = CASES[name]
    shapes = [(200,), (17,), (3, 4)]
    ours = with_grads(shapes, torch.float32, device)
    ref = with_grads(shapes, torch.float32, device)
    opt = ours_cls(ours, max_grad_norm=0.5, **kwargs)
    ref_opt = ref_cls(ref, foreach=False, **kwargs)
    scale = 1024.0
    for step in range(6):
        fresh = with_grads(shapes, torch.float32, device, scale=1.0 + step, seed=10 + step)
        for p, q, f in zip(ours, ref, fresh):
            p.grad = f.grad * scale if scaled else f.grad.clone()
            q.grad = f.grad.clone()
        if scaled:
            opt.grad_scale = torch.tensor(scale, device=device)
        opt.step()
        expected_norm = torch.nn.utils.clip_grad_norm_(ref, 0.5)
        ref_opt.step()
        torch.testing.assert_close(opt.grad_norm, expected_norm, rtol=1e-5, atol=0)
        for p, q in zip(ours, ref):
            torch.testing.assert_close(p, q, rtol=2e-5, atol=2e-6)
        if scaled:
            del opt.grad_scale


@pytest.mark.parametrize("name", ["Lion", "LAMB"])
def test_max_grad_norm_for_optimizers_torch_lacks(name):
    """Lion and LAMB: max_grad_norm equals clipping the gradients first, then the same optimizer's step."""
    cls = getattr(fused_optim, name)
    shapes = [(200,), (17,)]
    ours, ref = with_grads(shapes, torch.float32, "cpu"), with_grads(shapes, torch.float32, "cpu")
    opt, ref_opt = cls(ours, lr=1e-2, max_grad_norm=0.3), cls(ref, lr=1e-2)
    for _ in range(4):
        torch.nn.utils.clip_grad_norm_(ref, 0.3)
        opt.step()
        ref_opt.step()
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_max_grad_norm_validation():
    with pytest.raises(ValueError, match="max_grad_norm must be positive"):
        fused_optim.AdamW([torch.nn.Parameter(torch.ones(2))], max_grad_norm=0.0)


def test_a_step_without_gradients_reports_a_zero_norm():
    """opt.grad_norm is the last step's: a step where no param has a gradient reports 0 (as clip_grad_norm_ of no
    gradients does), not the norm of an earlier step."""
    p = torch.ones(5, requires_grad=True)
    opt = fused_optim.AdamW([p], max_grad_norm=1.0)
    p.grad = torch.full((5,), 2.0)
    opt.step()
    assert opt.grad_norm.item() == pytest.approx(2.0 * 5**0.5)
    p.grad = None
    opt.step()
    assert opt.grad_norm.item() == 0.0
    assert float(torch.nn.utils.clip_grad_norm_([torch.zeros(1, requires_grad=True)], 1.0)) == 0.0


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_complex_gradients_norm_like_torch(norm_type, device):
    """The norms of complex gradients are those of their moduli (the max norm is max |z|, not max(|re|, |im|))."""
    torch.manual_seed(0)
    ours = [torch.randn(17, dtype=torch.complex64, device=device, requires_grad=True), torch.randn(5, device=device)]
    ours[1].requires_grad_()
    for p in ours:
        p.grad = torch.randn_like(p)
    ref = [p.detach().clone().requires_grad_() for p in ours]
    for p, q in zip(ours, ref):
        q.grad = p.grad.clone()
    norm = fused_optim.clip_grad_norm_(ours, 0.1, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(ref, 0.1, norm_type)
    torch.testing.assert_close(norm, expected)
    for p, q in zip(ours, ref):
        torch.testing.assert_close(p.grad, q.grad)
