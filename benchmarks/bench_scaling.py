"""How AdamW's step time scales, ours against torch's fused AdamW, side by side:

  tensors   the same total size (--total parameters) split into 10 ... 10,000 tensors: a fused multi-tensor
            step should stay flat, a per-tensor one grows with the count
  size      1 M ... 200 M parameters in 100 tensors: both should grow linearly (bandwidth-bound)

    python benchmarks/bench_scaling.py                      # both sweeps, table + benchmarks/scaling.png
    python benchmarks/bench_scaling.py --sweeps tensors --total 4000000 --rounds 5

Each point is the median over interleaved rounds of both contenders.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import fused_optim
from fused_optim.benchmark import sync

CONTENDERS: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
    "fused_optim.AdamW": lambda ps: fused_optim.AdamW(ps, lr=1e-3),
    "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
}


def params_of(sizes: list[int], device: str) -> list[torch.Tensor]:
    out = []
    for n in sizes:
        p = torch.nn.Parameter(torch.randn(n, device=device))
        p.grad = torch.randn(n, device=device) * 1e-2
        out.append(p)
    return out


def point(sizes: list[int], device: str, rounds: int, steps: int) -> dict[str, float]:
    """Median ms per step of each contender on tensors of these sizes."""
    opts = {name: make(params_of(sizes, device)) for name, make in CONTENDERS.items()}
    times: dict[str, list[float]] = {name: [] for name in opts}
    for r in range(rounds + 1):  # round 0 warms up (state, allocator, caches)
        for name, opt in opts.items():
            for _ in range(steps):
                sync(device)
                start = time.perf_counter()
                opt.step()
                sync(device)
                if r:
                    times[name].append(time.perf_counter() - start)
    del opts
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def plot(results: dict[str, list[tuple[int, dict[str, float]]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"tensors": "number of tensors (same total size)", "size": "parameters (100 tensors)"}
    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, (sweep, rows) in zip(axes[0], results.items()):
        for name in CONTENDERS:
            ax.plot([x for x, _ in rows], [t[name] for _, t in rows], "o-", label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(labels[sweep])
        ax.set_ylabel("ms per AdamW step")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"AdamW step time, fp32, {torch.get_num_threads()} CPU threads" if "cpu" in path else "")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sweeps", default="tensors,size")
    ap.add_argument("--total", type=int, default=8_000_000, help="parameters of the tensor-count sweep")
    ap.add_argument("--counts", default="10,30,100,300,1000,3000,10000")
    ap.add_argument("--sizes", default="1e6,3e6,1e7,3e7,1e8,2e8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--png", default=str(Path(__file__).with_name(f"scaling_{'{device}'}.png")))
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, fused_optim {fused_optim.__version__}, {torch.get_num_threads()} threads")
    results: dict[str, list[tuple[int, dict[str, float]]]] = {}
    names = list(CONTENDERS)
    header = f"{'sweep':<9}{'x':>12}" + "".join(f"{n + ' ms':>22}" for n in names) + f"{'vs torch':>10}"
    print(header)
    for sweep in args.sweeps.split(","):
        rows = []
        xs = (
            [int(c) for c in args.counts.split(",")]
            if sweep == "tensors"
            else [int(float(s)) for s in args.sizes.split(",")]
        )
        for x in xs:
            sizes = [args.total // x] * x if sweep == "tensors" else [x // 100] * 100
            t = point(sizes, args.device, args.rounds, args.steps)
            rows.append((x, t))
            print(
                f"{sweep:<9}{x:>12,}" + "".join(f"{t[n]:>22.3f}" for n in names) + f"{t[names[1]] / t[names[0]]:>9.2f}x"
            )
        results[sweep] = rows
    if args.png:
        try:
            path = args.png.replace("{device}", args.device)
            plot(results, path)
            print("wrote", path)
        except ImportError:
            print("no picture: pip install matplotlib")
    return 0


if __name__ == "__main__":
    sys.exit(main())
