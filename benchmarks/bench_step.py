"""Time one optimizer step of fused_optim against torch.optim, side by side, in interleaved rounds.

    python benchmarks/bench_step.py                    # CPU (and CUDA when a GPU is present)
    python benchmarks/bench_step.py --device cpu --rounds 15 --workloads small1000,large25m

Optimizers (bytes an fp32 step must move per parameter): adamw (28), sgd with momentum 0.9 (20), rmsprop (20),
adagrad (20), lion (20), lamb (44: two passes, see csrc/rules/lamb.h).

Workloads:
  small1000       1000 tensors, log-uniform 64..65536 elements (about 9.5 M parameters)
  large25m        three 4096x2048 matrices plus 96 vectors (about 25 M parameters)
  tiny1000        1000 tensors of 256 elements: the step is almost all per-tensor overhead
  flat:<name>     one tensor with as many elements as <name> (the cost of the bytes alone)

Each round runs every contender of one optimizer for --steps steps; the table reports the median per-step time
over all rounds, the effective bandwidth, and the ratio of the baseline's step time to each contender's (above 1
is faster than the baseline). The baseline is torch's fastest path for the optimizer on the device: fused where
torch has a fused kernel, else foreach; for Lion and LAMB, which torch.optim lacks, the foreach implementations
in baselines.py. Targets (held here, not by timed tests): see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch

import fused_optim
from baselines import ForeachLAMB, ForeachLion

# Bytes an fp32 step must move per parameter: AdamW reads p, g, m, v and writes p, m, v; SGD with momentum,
# RMSprop, Adagrad and Lion read p, g and one state tensor and write p and the state; LAMB's first pass reads p, g,
# m, v and writes m, v, its second reads p, m, v and writes p.
BYTES_PER_PARAM = {"adamw": 28, "sgd": 20, "rmsprop": 20, "adagrad": 20, "lion": 20, "lamb": 44}


def shapes(workload: str) -> list[tuple[int, ...]]:
    if workload == "small1000":
        g = torch.Generator().manual_seed(1234)
        u = torch.rand(1000, generator=g, dtype=torch.float64)
        sizes = torch.exp(math.log(64) + u * (math.log(65536) - math.log(64)))
        return [(int(s),) for s in sizes.round().long().tolist()]
    if workload == "tiny1000":
        return [(256,)] * 1000
    if workload == "large25m":
        return [(4096, 2048)] * 3 + [(2048,)] * 48 + [(512,)] * 48
    if workload.startswith("flat:"):
        return [(sum(math.prod(s) for s in shapes(workload[5:])),)]
    raise SystemExit(f"unknown workload {workload!r}")


def make_params(workload: str, device: str, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = []
    for s in shapes(workload):
        p = torch.nn.Parameter(torch.randn(s, device=device, dtype=dtype))
        p.grad = torch.randn(s, device=device, dtype=dtype) * 1e-2
        params.append(p)
    return params


def contenders(optimizer: str, device: str) -> dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]]:
    """fused_optim's optimizer first, then the baseline of the ratios (torch's fastest path), then others."""
    if optimizer == "adamw":
        return {
            "fused_optim.AdamW": lambda ps: fused_optim.AdamW(ps, lr=1e-3),
            "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
            "torch AdamW foreach": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
        }
    if optimizer == "sgd":
        return {
            "fused_optim.SGD": lambda ps: fused_optim.SGD(ps, lr=1e-3, momentum=0.9),
            "torch SGD fused": lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, fused=True),
            "torch SGD foreach": lambda ps: torch.optim.SGD(ps, lr=1e-3, momentum=0.9, foreach=True),
        }
    if optimizer == "rmsprop":  # torch has no fused RMSprop
        return {
            "fused_optim.RMSprop": lambda ps: fused_optim.RMSprop(ps, lr=1e-3),
            "torch RMSprop foreach": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, foreach=True),
            "torch RMSprop forloop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3, foreach=False),
        }
    if optimizer == "adagrad":  # torch's fused Adagrad is CPU-only
        torch_fused = {"torch Adagrad fused": lambda ps: torch.optim.Adagrad(ps, lr=1e-3, fused=True)}
        return {
            "fused_optim.Adagrad": lambda ps: fused_optim.Adagrad(ps, lr=1e-3),
            **(torch_fused if device == "cpu" else {}),
            "torch Adagrad foreach": lambda ps: torch.optim.Adagrad(ps, lr=1e-3, foreach=True),
        }
    if optimizer == "lion":
        return {
            "fused_optim.Lion": lambda ps: fused_optim.Lion(ps, lr=1e-4, weight_decay=0.1),
            "foreach Lion": lambda ps: ForeachLion(ps, lr=1e-4, weight_decay=0.1),
        }
    if optimizer == "lamb":
        return {
            "fused_optim.LAMB": lambda ps: fused_optim.LAMB(ps, lr=1e-3),
            "foreach LAMB": lambda ps: ForeachLAMB(ps, lr=1e-3),
        }
    raise SystemExit(f"unknown optimizer {optimizer!r}")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(opt: torch.optim.Optimizer, steps: int, device: str) -> list[float]:
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def copy_bandwidth(device: str, numel: int = 1 << 26) -> float:
    """GB/s of a large tensor copy (read + write), the practical roofline of a streaming kernel."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = []
    for _ in range(5):
        sync(device)
        t0 = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best.append(time.perf_counter() - t0)
    return 2 * src.numel() * src.element_size() / statistics.median(best) / 1e9


def bench(optimizer: str, workload: str, device: str, rounds: int, steps: int, warmup: int) -> list[dict]:
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
        probes.append(copy_bandwidth(device))
    nparams = sum(math.prod(s) for s in shapes(workload))
    probe = statistics.median(probes)
    baseline = statistics.median(samples[list(makers)[1]])
    rows = []
    for name, ts in samples.items():
        med = statistics.median(ts)
        gbs = nparams * BYTES_PER_PARAM[optimizer] / med / 1e9
        rows.append(
            dict(
                workload=workload,
                device=device,
                contender=name,
                ms=med * 1e3,
                min_ms=min(ts) * 1e3,
                gbs=gbs,
                pct_copy=100 * gbs / probe,
                vs_baseline=baseline / med,
                nparams=nparams,
                ntensors=len(shapes(workload)),
            )
        )
    return rows


def print_table(rows: list[dict]) -> None:
    header = (
        f"{'workload':<16}{'dev':<5}{'contender':<24}{'median ms':>10}{'min ms':>9}{'GB/s':>8}{'%copy':>7}"
        f"{'vs baseline':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['workload']:<16}{r['device']:<5}{r['contender']:<24}{r['ms']:>10.3f}{r['min_ms']:>9.3f}"
            f"{r['gbs']:>8.1f}{r['pct_copy']:>7.0f}{r['vs_baseline']:>12.2f}x"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--workloads", default="small1000,flat:small1000,large25m")
    ap.add_argument(
        "--optimizers",
        default=",".join(BYTES_PER_PARAM),
        help="comma-separated: " + ", ".join(BYTES_PER_PARAM),
    )
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=5, help="steps per contender per round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA GPU is visible")
        devices.remove("cuda")
    info = fused_optim.build_info()
    print(
        f"torch {torch.__version__}, fused_optim {fused_optim.__version__}, CPU ISA {info['cpu_isa']}, "
        f"{torch.get_num_threads()} threads" + (f", GPU {torch.cuda.get_device_name()}" if "cuda" in devices else "")
    )
    rows = []
    for device in devices:
        for optimizer in args.optimizers.split(","):
            for w in args.workloads.split(","):
                rows += bench(optimizer, w, device, args.rounds, args.steps, args.warmup)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
