"""Optimizer-in-backward: one optimizer per parameter, stepped from a gradient hook as each gradient is ready
(torch.distributed.optim._apply_optimizer_in_backward). Every parameter pays a whole ``step()`` call, so the fixed
cost of a call decides the speed; this measures it against torch.optim's AdamW paths, side by side.

    python benchmarks/bench_in_backward.py
    python benchmarks/bench_in_backward.py --layers 64 --width 128 --rounds 15

Two tables: ``steps`` times one step of every per-parameter optimizer in a loop (what the hooks do, without the
backward pass around it), and ``train`` a whole forward + backward with the optimizers in backward, beside the
same forward + backward with no optimizer at all. Ratios are the baseline's time over each contender's (above 1:
faster than torch's fused AdamW).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch.distributed.optim import _apply_optimizer_in_backward

import fused_optim

CONTENDERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "torch fused": lambda ps, **kw: torch.optim.AdamW(ps, fused=True, **kw),
    "torch foreach": lambda ps, **kw: torch.optim.AdamW(ps, foreach=True, **kw),
    "torch for-loop": lambda ps, **kw: torch.optim.AdamW(ps, foreach=False, **kw),
    "fused_optim": lambda ps, **kw: fused_optim.AdamW(ps, **kw),
}
BASELINE = "torch fused"


def model(layers: int, width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*(torch.nn.Linear(width, width) for _ in range(layers)))


def median_us(fn: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=64, help="Linear layers (two parameters each)")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(32, args.width)

    step_times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    train_times: dict[str, list[float]] = {name: [] for name in [*CONTENDERS, "no optimizer"]}
    setups = {}
    for name, make in CONTENDERS.items():
        m = model(args.layers, args.width)
        _apply_optimizer_in_backward(make, m.parameters(), {"lr": 1e-3, "weight_decay": 0.01})
        # the same optimizers, stepped in a loop with gradients in place (what the hooks do, minus the backward)
        ps = list(model(args.layers, args.width).parameters())
        for p in ps:
            p.grad = torch.randn_like(p)
        opts = [make([p], lr=1e-3, weight_decay=0.01) for p in ps]
        setups[name] = (m, opts)
    bare = model(args.layers, args.width)

    def train(m: torch.nn.Module, release: bool = False) -> Callable[[], None]:
        def run() -> None:
            m(x).square().mean().backward()
            if release:  # as the in-backward hooks do after each step
                m.zero_grad(set_to_none=True)

        return run

    for _ in range(2):  # warm-up: state creation, allocator
        for m, opts in setups.values():
            train(m)()
            for o in opts:
                o.step()
    for _ in range(args.rounds):  # interleaved rounds: a noisy machine slows every contender alike
        for name, (m, opts) in setups.items():
            step_times[name].append(median_us(lambda opts=opts: [o.step() for o in opts], 3))
            train_times[name].append(median_us(train(m), 3))
        train_times["no optimizer"].append(median_us(train(bare, release=True), 3))

    n = 2 * args.layers
    print(
        f"AdamW in backward: {n} parameters ({args.layers} x Linear({args.width}, {args.width})), "
        f"{args.threads} threads, median of {args.rounds} rounds\n"
    )
    print(f"{'steps':<16}{'us / iteration':>16}{'us / param':>12}{'vs ' + BASELINE:>18}")
    base = statistics.median(step_times[BASELINE])
    for name, times in step_times.items():
        t = statistics.median(times)
        print(f"{name:<16}{t:>16.0f}{t / n:>12.2f}{base / t:>17.2f}x")
    print(f"\n{'train':<16}{'us / iteration':>16}{'optimizer us':>14}{'vs ' + BASELINE:>16}")
    base = statistics.median(train_times[BASELINE])
    bare_t = statistics.median(train_times["no optimizer"])
    for name, times in train_times.items():
        t = statistics.median(times)
        print(f"{name:<16}{t:>16.0f}{t - bare_t:>14.0f}{base / t:>15.2f}x")


if __name__ == "__main__":
    main()
