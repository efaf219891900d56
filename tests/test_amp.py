"""fused_optim.amp: the article's ``with amp.grad() as scaler:`` loop, and MixedPrecision (autocast, GradScaler,
clipping, accumulation and the step) against the same recipe written with torch.amp and torch.optim by hand."""

from __future__ import annotations

import copy

import pytest
import torch

import fused_optim
from fused_optim import amp


def test_article_amp_grad_example():
    """The article's snippet with our classes: 100 SGD steps on (x - 2)^2 from 1.0 follow x_t - 2 = -(0.98)^t."""
    theta = torch.tensor([1.0], requires_grad=True)

    def loss_function(x):
        return (x - 2) ** 2

    with amp.grad(device_type="cpu") as scaler:
        assert isinstance(scaler, torch.amp.GradScaler)
        optimizer = fused_optim.SGD([theta], lr=0.01)
        for _ in range(1, 101):
            loss = loss_function(theta)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
    assert abs(theta.item() - (2 - 0.98**100)) < 1e-5


def test_grad_context_enables_autocast_and_fp16_scaling():
    with amp.grad(device_type="cpu", dtype=torch.float16) as scaler:
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.float16
        assert scaler.is_enabled()
        y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
        assert y.dtype == torch.float16
    assert not torch.is_autocast_enabled("cpu")
    with amp.grad(device_type="cpu") as scaler:  # bf16 needs no loss scaling
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert not scaler.is_enabled()


def make_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))


def batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(32, 16, generator=g)
        out.append((x, x.sum(1, keepdim=True)))
    return out


@pytest.mark.parametrize("accumulation_steps", [1, 3])
@pytest.mark.parametrize("max_grad_norm", [None, 0.5])
def test_mixed_precision_matches_the_torch_recipe(accumulation_steps, max_grad_norm):
    """fp16 autocast + GradScaler + (clipping) + fused AdamW equals autocast + GradScaler + unscale_ +
    clip_grad_norm_ + torch AdamW, micro-batch for micro-batch."""
    ours_model, ref_model = make_model(), make_model()
    opt = fused_optim.AdamW(ours_model.parameters(), lr=1e-2)
    ref_opt = torch.optim.AdamW(ref_model.parameters(), lr=1e-2, foreach=False)
    mp = amp.MixedPrecision(
        opt,
        device_type="cpu",
        dtype=torch.float16,
        max_grad_norm=max_grad_norm,
        accumulation_steps=accumulation_steps,
        init_scale=1024.0,  # low enough that no step overflows, so every step is compared
    )
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for i, (x, y) in enumerate(batches(12)):
        with mp.autocast():
            loss = torch.nn.functional.mse_loss(ours_model(x).float(), y)
        result = mp.backward(loss)
        with torch.autocast("cpu", dtype=torch.float16):
            ref_loss = torch.nn.functional.mse_loss(ref_model(x).float(), y)
        scaler.scale(ref_loss / accumulation_steps).backward()
        last = (i + 1) % accumulation_steps == 0
        assert result.stepped == last
        if last:
            ref_norm = None
            if max_grad_norm is not None:
                scaler.unscale_(ref_opt)
                ref_norm = torch.nn.utils.clip_grad_norm_(ref_model.parameters(), max_grad_norm)
            scaler.step(ref_opt)
            scaler.update()
            ref_opt.zero_grad(set_to_none=True)
            assert not result.skipped
            if ref_norm is not None:
                torch.testing.assert_close(result.grad_norm, ref_norm, rtol=1e-4, atol=0)
    for p, q in zip(ours_model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)
    assert mp.scaler.get_scale() == scaler.get_scale()


def test_inf_gradient_skips_the_step_fp16_params_with_masters():
    """fp16 params with fp32 masters: an inf loss skips the step on the device (params, masters, moments and step
    counts unchanged) and halves the scale; the next finite step trains."""
    model = make_model().half()
    opt = fused_optim.AdamW(model.parameters(), lr=1e-2, master_weights=True)
    mp = amp.MixedPrecision(opt, device_type="cpu", dtype=torch.float16, init_scale=256.0)
    (x, y), (x2, y2) = batches(2)
    with mp.autocast():
        loss = torch.nn.functional.mse_loss(model(x.half()).float(), y)
    assert not mp.backward(loss).skipped  # creates the state
    params = [p.clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict()["state"])
    scale = mp.scaler.get_scale()
    with mp.autocast():
        loss = torch.nn.functional.mse_loss(model(x2.half()).float(), y2) * float("inf")
    result = mp.backward(loss)
    assert result.stepped and result.skipped
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q)
    for i, s in state.items():
        for k, v in s.items():
            assert torch.equal(opt.state_dict()["state"][i][k], v), k
    assert mp.scaler.get_scale() == scale / 2
    with mp.autocast():
        loss = torch.nn.functional.mse_loss(model(x2.half()).float(), y2)
    assert not mp.backward(loss).skipped
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), params))


def test_mixed_precision_with_a_torch_optimizer_and_bf16():
    """Any torch optimizer works (clipping through GradScaler.unscale_ and clip_grad_norm_), and bf16 autocast
    uses no scaler."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    mp = amp.MixedPrecision(opt, device_type="cpu", max_grad_norm=1.0)
    assert mp.dtype == torch.bfloat16 and not mp.scaler.is_enabled()
    losses = []
    for x, y in batches(1) * 40:  # fit one batch
        with mp.autocast():
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        result = mp.backward(loss)
        assert result.stepped and result.grad_norm is not None and not result.skipped
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_state_dict_and_validation():
    opt = fused_optim.AdamW(make_model().parameters())
    mp = amp.MixedPrecision(opt, device_type="cpu", dtype=torch.float16, accumulation_steps=2, init_scale=128.0)
    state = mp.state_dict()
    other = amp.MixedPrecision(opt, device_type="cpu", dtype=torch.float16, accumulation_steps=2)
    other.load_state_dict(state)
    assert other.scaler.get_scale() == 128.0
    with pytest.raises(ValueError, match="accumulation_steps"):
        amp.MixedPrecision(opt, accumulation_steps=0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        amp.MixedPrecision(opt, max_grad_norm=-1.0)


def test_reported_scale_is_the_one_the_step_used():
    model = make_model()
    opt = fused_optim.SGD(model.parameters(), lr=0.01)
    mp = amp.MixedPrecision(opt, device_type="cpu", dtype=torch.float16, init_scale=1024.0)
    mp.scaler._growth_interval = 1  # the scale doubles after every finite step
    (x, y), (x2, y2) = batches(2)
    for inputs, target, used in ((x, y, 1024.0), (x2, y2, 2048.0)):
        with mp.autocast():
            loss = torch.nn.functional.mse_loss(model(inputs).float(), target)
        result = mp.backward(loss)
        assert result.scale.item() == used
    assert mp.scaler.get_scale() == 4096.0


def test_an_early_step_flushes_the_accumulation():
    """step() after 2 of 4 micro-batches (an epoch's end) steps on them and starts the next accumulation afresh;
    a step() with nothing accumulated does nothing."""
    model = make_model()
    opt = fused_optim.SGD(model.parameters(), lr=0.01)
    mp = amp.MixedPrecision(opt, device_type="cpu", dtype=torch.float16, accumulation_steps=4)
    (x, y), *_ = batches(1)

    def micro():
        with mp.autocast():
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        return mp.backward(loss).stepped

    assert [micro(), micro()] == [False, False]
    before = [p.clone() for p in model.parameters()]
    assert mp.step().stepped
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert mp.state_dict()["micro_step"] == 0
    assert [micro() for _ in range(4)] == [False, False, False, True]
    assert not mp.step().stepped  # nothing pending: no error from the scaler, no step


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_flushed_partial_accumulation_steps_on_the_mean_of_its_losses(dtype):
    """Each loss was divided by accumulation_steps = 4; after 2 micro-batches the step must see the mean of the 2
    (as a step with accumulation_steps = 2 would), not half of it."""
    model = make_model()
    twin = copy.deepcopy(model)
    (x1, y1), (x2, y2) = batches(2)
    mp = amp.MixedPrecision(fused_optim.SGD(model.parameters(), lr=0.1), device_type="cpu", dtype=dtype,
                            accumulation_steps=4)  # fmt: skip
    ref = amp.MixedPrecision(fused_optim.SGD(twin.parameters(), lr=0.1), device_type="cpu", dtype=dtype,
                             accumulation_steps=2)  # fmt: skip
    for m, run in ((model, mp), (twin, ref)):
        stepped = []
        for x, y in ((x1, y1), (x2, y2)):
            with run.autocast():
                loss = torch.nn.functional.mse_loss(m(x).float(), y)
            stepped.append(run.backward(loss).stepped)
        assert stepped == [False, run is ref]
    assert mp.step().stepped
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
