"""Step-time benchmark of fused_optim against torch.optim, side by side (``python -m fused_optim bench``, and
``benchmarks/bench_step.py`` with longer defaults).

Optimizers, with the bytes an fp32 step must move per parameter: adamw (28: reads p, g, m, v, writes p, m, v),
sgd with momentum 0.9, rmsprop, adagrad and lion (20: read p, g and one state tensor, write p and the state), lamb
(44: two passes, see csrc/rules/lamb.h).

Workloads:
  tiny1000        1000 tensors of 256 elements: the step is almost all per-tensor overhead
  scalar1000      1000 one-element tensors: the step's fixed and per-tensor overhead alone (Python and C++)
  small1000       1000 tensors, log-uniform 64..65536 elements (about 9.5 M parameters)
  large25m        three 4096x2048 matrices plus 96 vectors (about 25 M parameters)
  flat:<name>     one tensor with as many elements as <name> (the cost of the bytes alone)

Each round runs every contender of one optimizer for a few steps, then measures the machine's memory bandwidth
(fused_optim/bandwidth.py); the table reports per contender the median step time over all rounds, the effective
bandwidth (bytes the step must move / time), its share of the bandwidth measured in the same rounds (%bw), and
the speed-up over the baseline:
torch's fastest path for the optimizer on the device (fused where torch has a fused kernel, else foreach; for Lion
and LAMB, which torch.optim lacks, foreach implementations in fused_optim/_baselines.py). Interleaving the rounds
makes a noisy machine slow every contender alike, so the ratios hold even when the absolute times drift.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import fused_optim
from fused_optim._baselines import ForeachLAMB, ForeachLion
from fused_optim.bandwidth import measure_bandwidth
from fused_optim.progress import Progress

from ._cli import int_at_least, output_file, positive_int

BYTES_PER_PARAM = {"adamw": 28, "sgd": 20, "rmsprop": 20, "adagrad": 20, "lion": 20, "lamb": 44}
Maker = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


def shapes(workload: str) -> list[tuple[int, ...]]:
    """The parameter shapes of a workload (see the module docstring)."""
    if workload == "small1000":
        g = torch.Generator().manual_seed(1234)
        u = torch.rand(1000, generator=g, dtype=torch.float64)
        sizes = torch.exp(math.log(64) + u * (math.log(65536) - math.log(64)))
        return [(int(s),) for s in sizes.round().long().tolist()]
    if workload == "tiny1000":
        return [(256,)] * 1000
    if workload == "scalar1000":
        return [(1,)] * 1000
    if workload == "large25m":
        return [(4096, 2048)] * 3 + [(2048,)] * 48 + [(512,)] * 48
    if workload.startswith("flat:"):
        return [(sum(math.prod(s) for s in shapes(workload[5:])),)]
    raise ValueError(f"unknown workload {workload!r}: tiny1000, scalar1000, small1000, large25m or flat:<workload>")


def make_params(workload: str, device: str, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Parameters of the workload's shapes with small random gradients."""
    torch.manual_seed(0)
    params = []
    for s in shapes(workload):
        p = torch.nn.Parameter(torch.randn(s, device=device, dtype=dtype))
        p.grad = torch.randn(s, device=device, dtype=dtype) * 1e-2
        params.append(p)
    return params


#: fused_optim's optimizer for each benchmark name, with the hyperparameters every benchmark uses for it.
FUSED: dict[str, tuple[type[torch.optim.Optimizer], dict[str, Any]]] = {
    "adamw": (fused_optim.AdamW, dict(lr=1e-3)),
    "sgd": (fused_optim.SGD, dict(lr=1e-3, momentum=0.9)),
    "rmsprop": (fused_optim.RMSprop, dict(lr=1e-3)),
    "adagrad": (fused_optim.Adagrad, dict(lr=1e-3)),
    "lion": (fused_optim.Lion, dict(lr=1e-4, weight_decay=0.1)),
    "lamb": (fused_optim.LAMB, dict(lr=1e-3)),
}


def torch_paths(optimizer: str, device: str) -> dict[str, Maker]:
    """torch's ways to run the optimizer, the fastest first (the baseline of the ratios): fused where torch has a
    fused kernel, else foreach; for Lion and LAMB, which torch.optim lacks, foreach implementations."""
    kw = FUSED[optimizer][1] if optimizer in FUSED else {}
    if optimizer == "adamw":
        return {
            "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, **kw, fused=True),
            "torch AdamW foreach": lambda ps: torch.optim.AdamW(ps, **kw, foreach=True),
        }
    if optimizer == "sgd":
        return {
            "torch SGD fused": lambda ps: torch.optim.SGD(ps, **kw, fused=True),
            "torch SGD foreach": lambda ps: torch.optim.SGD(ps, **kw, foreach=True),
        }
    if optimizer == "rmsprop":  # torch has no fused RMSprop
        return {
            "torch RMSprop foreach": lambda ps: torch.optim.RMSprop(ps, **kw, foreach=True),
            "torch RMSprop forloop": lambda ps: torch.optim.RMSprop(ps, **kw, foreach=False),
        }
    if optimizer == "adagrad":  # torch's fused Adagrad is CPU-only
        torch_fused = {"torch Adagrad fused": lambda ps: torch.optim.Adagrad(ps, **kw, fused=True)}
        return {
            **(torch_fused if device == "cpu" else {}),
            "torch Adagrad foreach": lambda ps: torch.optim.Adagrad(ps, **kw, foreach=True),
        }
    if optimizer == "lion":
        return {"foreach Lion": lambda ps: ForeachLion(ps, **kw)}
    if optimizer == "lamb":
        return {"foreach LAMB": lambda ps: ForeachLAMB(ps, **kw)}
    raise ValueError(f"unknown optimizer {optimizer!r}: {', '.join(BYTES_PER_PARAM)}")


def contenders(optimizer: str, device: str) -> dict[str, Maker]:
    """fused_optim's optimizer first, then the baseline of the ratios (torch's fastest path), then others."""
    paths = torch_paths(optimizer, device)
    cls, kw = FUSED[optimizer]
    return {f"fused_optim.{cls.__name__}": lambda ps: cls(ps, **kw), **paths}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(opt: torch.optim.Optimizer, steps: int, device: str) -> list[float]:
    """Seconds of each of ``steps`` steps (synchronized on CUDA)."""
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def bench(
    optimizer: str,
    workload: str,
    device: str,
    *,
    rounds: int,
    steps: int,
    warmup: int,
    probe_bytes: int = 256 << 20,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Rows of the table for one optimizer on one workload: one per contender."""
    makers = contenders(optimizer, device)
    # Separate parameters per contender, so no one inherits another's cache state by construction.
    opts = {name: make(make_params(workload, device)) for name, make in makers.items()}
    for opt in opts.values():
        time_steps(opt, warmup, device)
    samples: dict[str, list[float]] = {name: [] for name in opts}
    probes = []
    for _ in range(rounds):
        for name, opt in opts.items():  # interleaved: every round runs everyone
            samples[name] += time_steps(opt, steps, device)
        probes.append(measure_bandwidth(device, probe_bytes, refresh=True))
        if progress is not None:
            progress.update(note=f"{optimizer} {workload}")
    nparams = sum(math.prod(s) for s in shapes(workload))
    probe = statistics.median(probes)
    baseline = statistics.median(samples[list(makers)[1]])
    rows = []
    for name, ts in samples.items():
        med = statistics.median(ts)
        gbs = nparams * BYTES_PER_PARAM[optimizer] / med / 1e9
        rows.append(
            dict(
                optimizer=optimizer,
                workload=workload,
                device=device,
                contender=name,
                ms=med * 1e3,
                min_ms=min(ts) * 1e3,
                gbs=gbs,
                pct_bw=100 * gbs / probe,
                vs_baseline=baseline / med,
                nparams=nparams,
                ntensors=len(shapes(workload)),
            )
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a text table."""
    header = (
        f"{'workload':<16}{'dev':<5}{'contender':<24}{'median ms':>10}{'min ms':>9}{'GB/s':>8}{'%bw':>7}"
        f"{'vs baseline':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['workload']:<16}{r['device']:<5}{r['contender']:<24}{r['ms']:>10.3f}{r['min_ms']:>9.3f}"
            f"{r['gbs']:>8.1f}{r['pct_bw']:>7.0f}{r['vs_baseline']:>12.2f}x"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str) -> str:
    """Bar charts of each contender's speed-up over the baseline: one panel per optimizer (and device), one group of
    bars per workload. Needs matplotlib."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("the benchmark's chart needs matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["optimizer"], r["device"]) for r in rows))
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.6 * nrows), squeeze=False)
    for ax, (optimizer, device) in zip(axes.flat, panels):
        mine = [r for r in rows if (r["optimizer"], r["device"]) == (optimizer, device)]
        workloads = list(dict.fromkeys(r["workload"] for r in mine))
        names = list(dict.fromkeys(r["contender"] for r in mine))
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            xs, ys = [], []
            for i, w in enumerate(workloads):
                r = next((r for r in mine if r["workload"] == w and r["contender"] == name), None)
                if r is not None:
                    xs.append(i + (j - (len(names) - 1) / 2) * width)
                    ys.append(r["vs_baseline"])
            ours = name.startswith("fused_optim")
            color = "tab:blue" if ours else ("tab:gray" if j == 1 else "silver")
            ax.bar(xs, ys, width * 0.9, color=color, label=name)
            if ours:
                for x, y in zip(xs, ys):
                    ax.annotate(f"{y:.2f}x", (x, y), ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(workloads)), [w.replace("flat:", "flat\n") for w in workloads], fontsize=7)
        ax.set_title(f"{optimizer} ({device})", fontsize=9)
        ax.set_ylabel("speed-up over torch's fastest path", fontsize=7)
        ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("fused_optim (blue) against torch's fastest path (gray) and torch's other paths (light)")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
    return path


SIZES = {"tiny": "tiny1000", "small": "small1000", "large": "large25m"}


def add_arguments(ap: argparse.ArgumentParser, *, rounds: int, workloads: str, device: str) -> None:
    """The benchmark's options (shared by ``python -m fused_optim bench`` and benchmarks/bench_step.py, which
    differ only in their defaults)."""
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default=device)
    ap.add_argument(
        "--workloads",
        default=workloads,
        help=f"comma-separated workloads, or sizes {', '.join(f'{k}={v}' for k, v in SIZES.items())} "
        f"(default {workloads})",
    )
    ap.add_argument("--optimizers", default=",".join(BYTES_PER_PARAM), help="comma-separated (default: all)")
    ap.add_argument("--rounds", type=positive_int, default=rounds, help=f"interleaved rounds (default {rounds})")
    ap.add_argument("--steps", type=positive_int, default=5, help="steps per contender per round (default 5)")
    ap.add_argument("--warmup", type=int_at_least(0), default=3, help="untimed steps first (default 3)")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--png", type=output_file, default="", help="also draw the speed-ups as a bar chart to this PNG")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed arguments describe and print the table."""
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("bench: --device cuda was asked for but no CUDA GPU is visible")
        devices.remove("cuda")
    workloads = [SIZES.get(w, w) for w in args.workloads.split(",")]
    optimizers = args.optimizers.split(",")
    try:  # check names before spending minutes
        for w in workloads:
            shapes(w)
        for o in optimizers:
            contenders(o, "cpu")
    except ValueError as e:
        raise SystemExit(f"bench: {e}") from None
    info = fused_optim.build_info()
    print(
        f"torch {torch.__version__}, fused_optim {fused_optim.__version__}, CPU ISA {info['cpu_isa']}, "
        f"{torch.get_num_threads()} threads" + (f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else "")
    )
    rows: list[dict[str, Any]] = []
    total = len(devices) * len(optimizers) * len(workloads) * args.rounds
    with Progress(total=total, desc="bench", enabled=not args.quiet) as bar:
        for device in devices:
            for optimizer in optimizers:
                for w in workloads:
                    rows += bench(
                        optimizer,
                        w,
                        device,
                        rounds=args.rounds,
                        steps=args.steps,
                        warmup=args.warmup,
                        progress=bar,
                    )
    print(table(rows))
    if args.png:
        try:
            print("wrote", plot(rows, args.png))
        except ImportError as e:
            print(f"no chart: {e}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """The ``bench`` subcommand: a short run by default (small workload, 3 rounds)."""
    b = subparsers.add_parser(
        "bench",
        help="time each optimizer's step against torch.optim (a short benchmark)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(b, rounds=3, workloads="small", device="cuda" if torch.cuda.is_available() else "cpu")
    b.set_defaults(func=run)
