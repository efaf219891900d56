"""The source article's examples with fused_optim's classes: minimize f(x) = (x - 2)^2 over a scalar tensor.

Each example runs the article's loop (loss.backward(), optimizer.step(), optimizer.zero_grad()), must reach the
optimum 2.0, and must follow torch.optim's class with the same arguments step for step.
"""

from __future__ import annotations

import pytest
import torch

import fused_optim

EXAMPLES = {
    "gradient_descent": ("SGD", {"lr": 0.01}),
    "momentum": ("SGD", {"lr": 0.01, "momentum": 0.9}),
    "rmsprop": ("RMSprop", {"lr": 0.01, "alpha": 0.9, "eps": 1e-08}),
    "adam": ("Adam", {"lr": 0.01, "betas": (0.9, 0.999)}),
}


def minimize(opt_cls, kwargs, start, steps, device="cpu"):
    """The article's loop; returns theta after every step."""
    theta = torch.tensor(start, requires_grad=True, device=device)
    optimizer = opt_cls([theta], **kwargs)
    trajectory = []
    for _ in range(steps):
        loss = (theta - 2) ** 2
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        trajectory.append(theta.item())
    return trajectory


@pytest.mark.parametrize("start", [0.0, 5.0])
@pytest.mark.parametrize("example", EXAMPLES)
def test_reaches_the_optimum_and_follows_torch(example, start, device):
    name, kwargs = EXAMPLES[example]
    ours = minimize(getattr(fused_optim, name), kwargs, start, 2000, device)
    ref = minimize(getattr(torch.optim, name), kwargs, start, 2000, device)
    assert abs(ours[-1] - 2.0) < 1e-4, ours[-1]
    assert ours[0] != start  # it moved from the first step on
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert abs(a - b) <= 1e-6, f"step {i + 1}: fused_optim {a}, torch.optim {b}"


@pytest.mark.parametrize("start", [0.0, 5.0])
def test_gradient_descent_contracts_in_closed_form(start, device):
    """Plain gradient descent on (x - 2)^2: x_n - 2 = (1 - 2 lr)^n (x_0 - 2)."""
    lr = 0.01
    trajectory = minimize(fused_optim.SGD, {"lr": lr}, start, 300, device)
    for n, x in enumerate(trajectory, start=1):
        expected = 2.0 + (1 - 2 * lr) ** n * (start - 2.0)
        assert abs(x - expected) <= 2e-6, f"step {n}: {x} vs {expected}"


def test_momentum_first_steps_by_hand():
    """Heavy ball from 0: v1 = g0 = -4, x1 = 0.04; v2 = 0.9 * v1 + g1 with g1 = 2 (x1 - 2) = -3.92; x2 = x1 - lr v2."""
    x = minimize(fused_optim.SGD, {"lr": 0.01, "momentum": 0.9}, 0.0, 2)
    assert x[0] == pytest.approx(0.04, abs=1e-7)
    assert x[1] == pytest.approx(0.04 + 0.01 * (0.9 * 4 + 3.92), abs=1e-7)


def test_rmsprop_and_adam_first_step_by_hand():
    """From 0 the gradient is -4. RMSprop: E[g^2] = 0.1 * 16, x1 = lr * 4 / (sqrt(1.6) + eps).
    Adam: bias-corrected m/sqrt(v) is exactly g/|g| on the first step, x1 = lr * 4 / (4 + eps)."""
    x = minimize(fused_optim.RMSprop, EXAMPLES["rmsprop"][1], 0.0, 1)
    assert x[0] == pytest.approx(0.01 * 4 / (1.6**0.5 + 1e-8), abs=1e-7)
    x = minimize(fused_optim.Adam, EXAMPLES["adam"][1], 0.0, 1)
    assert x[0] == pytest.approx(0.01 * 4 / (4 + 1e-8), abs=1e-7)
