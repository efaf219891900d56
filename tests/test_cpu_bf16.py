"""bf16 storage in the CPU engine (csrc/cpu/simd.h). Where every array of a loop is bf16 (a split master counts),
AVX2 converts blocks in an even/odd layout of its own instead of at::vec's: these tests hold it to the scalar
definition of rounding and to the DEFAULT instruction set's results, bit for bit."""

from __future__ import annotations

import pytest
import torch

import fused_optim
from fused_optim import _C

# Block sizes differ between ISAs (16 floats for AVX2, 32 for AVX-512): these sizes give every tail length and
# several blocks; 100003 is large enough to be split across threads.
SIZES = list(range(0, 70)) + [1000, 100003]


def bf16_values(n: int, generator: torch.Generator) -> torch.Tensor:
    """bf16 values over many binades, with both signs, and every special value."""
    x = torch.randn(n, generator=generator) * torch.exp2(torch.randint(-30, 30, (n,), generator=generator).float())
    x = x.bfloat16()
    specials = torch.tensor(
        [0.0, -0.0, float("inf"), -float("inf"), float("nan"), 1e-40, -1e-40, 3.0e38, -3.0e38], dtype=torch.bfloat16
    )
    x[: min(n, len(specials))] = specials[: min(n, len(specials))]
    return x


def same_bits(ours: torch.Tensor, expected: torch.Tensor) -> bool:
    """Equal bit patterns everywhere, except that a NaN only has to be a NaN (payloads differ between the scalar
    and vector conversions, in torch as here)."""
    nan = expected.isnan()
    if not torch.equal(ours.isnan(), nan):
        return False
    return torch.equal(ours[~nan].view(torch.int16), expected[~nan].view(torch.int16))


@pytest.mark.parametrize("master_weights", [False, "split"], ids=["plain", "split_master"])
def test_bf16_stores_round_to_nearest_even(master_weights, cpu_isa):
    """SGD with lr=1 stores p - g, computed in fp32 and rounded to bf16. Half the gradients put the sum exactly
    halfway between two bf16 values, so ties must go to the even neighbour, as torch's own rounding does."""
    gen = torch.Generator().manual_seed(0)
    n = 16 * 64 + 13
    p = bf16_values(n, gen)
    # a gradient of half a bf16 ulp of p (a tie), or of random size
    ulp = torch.exp2(torch.frexp(p.float()).exponent.float() - 8)
    tie = torch.where(torch.rand(n, generator=gen) < 0.5, -ulp / 2, ulp / 2)
    g = torch.where(torch.arange(n) % 2 == 0, tie, bf16_values(n, gen).float()).bfloat16()
    g[~torch.isfinite(g)] = 0.25
    expected = (p.float() - g.float()).bfloat16()
    if master_weights == "split":
        expected = (p.float() - g.float()).view(torch.int32).bitwise_right_shift(16).short().view(torch.bfloat16)
    param = p.clone().requires_grad_()
    param.grad = g.clone()
    fused_optim.SGD([param], lr=1.0, master_weights=master_weights).step()
    assert same_bits(param.detach(), expected)


OPTIMIZERS = {
    "Adam": lambda ps, **kw: fused_optim.Adam(ps, lr=1e-2, weight_decay=0.1, amsgrad=True, **kw),
    "AdamW": lambda ps, **kw: fused_optim.AdamW(ps, lr=1e-2, **kw),
    "SGD": lambda ps, **kw: fused_optim.SGD(ps, lr=1e-2, momentum=0.9, nesterov=True, **kw),
    "RMSprop": lambda ps, **kw: fused_optim.RMSprop(ps, lr=1e-2, momentum=0.5, centered=True, **kw),
    "Adagrad": lambda ps, **kw: fused_optim.Adagrad(ps, lr=1e-2, **kw),
    "Lion": lambda ps, **kw: fused_optim.Lion(ps, lr=1e-2, weight_decay=0.1, **kw),
}

SETTINGS = {
    "all_bf16": {},
    "split_master_bf16_state": {"master_weights": "split", "state_dtype": torch.bfloat16},
}


def run_steps(name: str, setting: str, isa: str, steps: int = 3) -> list[tuple[torch.Tensor, dict]]:
    gen = torch.Generator().manual_seed(1)
    params = [torch.randn(n, generator=gen).bfloat16().requires_grad_() for n in SIZES]
    grads = [[torch.randn(n, generator=gen).bfloat16() for n in SIZES] for _ in range(steps)]
    grads[1][-1][7] = float("nan")  # NaNs must reach the state and the param the same way in every layout
    grads[2][40][3] = float("inf")
    before = _C.cpu_isa()
    _C.set_cpu_isa(isa)
    try:
        opt = OPTIMIZERS[name](params, **SETTINGS[setting])
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
    finally:
        _C.set_cpu_isa(before)
    return [(p.detach(), opt.state[p]) for p in params]


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_isa_matches_default_bit_for_bit(name, setting):
    """Elementwise rules give the same bits in every layout and ISA: the DEFAULT build's scalar-backed vectors
    are the reference. (LAMB is left out: its norms are sums, added in an order that depends on the layout.)"""
    expected = run_steps(name, setting, "DEFAULT")
    for isa in _C.cpu_supported_isas():
        for i, ((p, state), (p_ref, state_ref)) in enumerate(zip(run_steps(name, setting, isa), expected)):
            assert same_bits(p, p_ref), f"{isa}: param of size {SIZES[i]}"
            assert state.keys() == state_ref.keys()
            for key, value in state.items():
                if value.dtype == torch.int16:
                    assert torch.equal(value, state_ref[key]), f"{isa}: {key} of size {SIZES[i]}"
                elif value.is_floating_point() and value.numel() == p.numel():
                    assert same_bits(value, state_ref[key]), f"{isa}: {key} of size {SIZES[i]}"
