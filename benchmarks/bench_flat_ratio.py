"""The per-tensor cost of each fused_optim optimizer: its step on 1000 small tensors against its step on one flat
tensor with the same number of elements, both timed in the same interleaved rounds (so a change in the machine's
memory bandwidth during the run moves both alike).

    python benchmarks/bench_flat_ratio.py                     # every optimizer, CPU
    python benchmarks/bench_flat_ratio.py --optimizers adamw,lion --rounds 30

The family issue's target is a ratio of at most 1.3 for every optimizer. The "packed" column times the same 1000
tensors as views into one buffer per list (as a flattened model would hold them): the difference between it and
"small" is the cost of the tensors' own separate allocations, which no optimizer can change.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys

import torch

import fused_optim
from bench_step import BYTES_PER_PARAM, shapes, sync, time_steps

MAKERS = {
    "adamw": lambda ps: fused_optim.AdamW(ps, lr=1e-3),
    "sgd": lambda ps: fused_optim.SGD(ps, lr=1e-3, momentum=0.9),
    "rmsprop": lambda ps: fused_optim.RMSprop(ps, lr=1e-3),
    "adagrad": lambda ps: fused_optim.Adagrad(ps, lr=1e-3),
    "lion": lambda ps: fused_optim.Lion(ps, lr=1e-4, weight_decay=0.1),
    "lamb": lambda ps: fused_optim.LAMB(ps, lr=1e-3),
}


def params(layout: str, device: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    sizes = [math.prod(s) for s in shapes("small1000")]
    if layout == "flat":
        sizes = [sum(sizes)]
    if layout == "packed":
        p_buf, g_buf = torch.randn(sum(sizes), device=device), torch.randn(sum(sizes), device=device) * 1e-2
        out, offset = [], 0
        for n in sizes:
            p = torch.nn.Parameter(p_buf[offset : offset + n])
            p.grad = g_buf[offset : offset + n]
            out.append(p)
            offset += n
        return out
    out = []
    for n in sizes:
        p = torch.nn.Parameter(torch.randn(n, device=device))
        p.grad = torch.randn(n, device=device) * 1e-2
        out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--optimizers", default=",".join(MAKERS))
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, small1000 workload")
    header = f"{'optimizer':<10}{'small ms':>10}{'packed ms':>11}{'flat ms':>9}{'flat GB/s':>11}{'small/flat':>12}"
    print(header)
    print("-" * len(header))
    nparams = sum(math.prod(s) for s in shapes("small1000"))
    for name in args.optimizers.split(","):
        opts = {layout: MAKERS[name](params(layout, args.device)) for layout in ("small", "packed", "flat")}
        for opt in opts.values():
            time_steps(opt, 3, args.device)
        samples: dict[str, list[float]] = {k: [] for k in opts}
        for _ in range(args.rounds):
            for layout, opt in opts.items():
                samples[layout] += time_steps(opt, args.steps, args.device)
        sync(args.device)
        med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
        gbs = nparams * BYTES_PER_PARAM[name] / (med["flat"] / 1e3) / 1e9
        print(
            f"{name:<10}{med['small']:>10.3f}{med['packed']:>11.3f}{med['flat']:>9.3f}{gbs:>11.1f}"
            f"{med['small'] / med['flat']:>11.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
