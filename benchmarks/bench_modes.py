"""AdamW with the extras of mixed-precision training, fp32 params, side by side with torch's way of doing each:

    python benchmarks/bench_modes.py
    python benchmarks/bench_modes.py --workloads small1000 --rounds 10

Modes (each a pair: torch's best path, then ours; the ratio is torch's time over ours):
  plain       torch's fused AdamW                          | fused_optim.AdamW
  scaler      torch fused with GradScaler's grad_scale and  | the same attributes, unscaled in our kernel
              found_inf (what GradScaler.step hands it)
  clip        clip_grad_norm_(foreach) then torch fused     | max_grad_norm=1.0 folded into the kernel's scale
  amp+clip    GradScaler.unscale_ (foreach), clip, torch     | grad_scale and max_grad_norm, one norm pass plus
              fused step (the standard fp16 AMP recipe)    | the update

Gradients are rescaled before each timed step so that clipping always clips (a realistic worst case: the norm
pass and the scaling both run). See fused_optim/benchmark.py for the workloads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch

import fused_optim
from fused_optim.benchmark import make_params, sync

MAX_NORM = 1.0
SCALE = 1024.0


def torch_step(mode: str, params: list[torch.Tensor]) -> Callable[[], None]:
    opt = torch.optim.AdamW(params, lr=1e-3, fused=True)
    grads = [p.grad for p in params]
    scale, found_inf = torch.tensor(SCALE), torch.tensor(0.0)
    if mode == "scaler":
        opt.grad_scale, opt.found_inf = scale, found_inf
    if mode in ("plain", "scaler"):
        return opt.step

    def step() -> None:
        if mode == "amp+clip":  # GradScaler.unscale_: a foreach multiply plus an inf check, then the clip
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, 1.0 / scale)
        torch.nn.utils.clip_grad_norm_(params, MAX_NORM, foreach=True)
        opt.step()

    return step


def our_step(mode: str, params: list[torch.Tensor]) -> Callable[[], None]:
    opt = fused_optim.AdamW(params, lr=1e-3, max_grad_norm=MAX_NORM if "clip" in mode else None)
    if mode in ("scaler", "amp+clip"):
        opt.grad_scale, opt.found_inf = torch.tensor(SCALE), torch.tensor(0.0)
    return opt.step


def bench(workload: str, device: str, rounds: int, steps: int) -> list[tuple[str, float, float, float]]:
    modes = ["plain", "scaler", "clip", "amp+clip"]
    runs: dict[tuple[str, str], tuple[Callable[[], None], list[torch.Tensor]]] = {}
    for mode in modes:
        for who, make in (("torch", torch_step), ("ours", our_step)):
            params = make_params(workload, device)
            runs[(mode, who)] = (make(mode, params), [p.grad for p in params])
    times: dict[tuple[str, str], list[float]] = {k: [] for k in runs}
    for _ in range(rounds + 1):  # the first round warms up
        for key, (step, grads) in runs.items():
            for _ in range(steps):
                # the torch recipes unscale and clip the gradients in place: restore their size every step
                torch._foreach_zero_(grads)
                torch._foreach_add_(grads, 0.05)
                sync(device)
                start = time.perf_counter()
                step()
                sync(device)
                times[key].append(time.perf_counter() - start)
    rows = []
    for mode in modes:
        t_torch = statistics.median(times[(mode, "torch")][steps:])
        t_ours = statistics.median(times[(mode, "ours")][steps:])
        rows.append((mode, t_torch * 1e3, t_ours * 1e3, t_torch / t_ours))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--workloads", default="small1000,large25m")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, fused_optim {fused_optim.__version__}, {torch.get_num_threads()} threads")
    print(f"{'workload':<12}{'mode':<10}{'torch ms':>10}{'ours ms':>10}{'vs torch':>10}")
    for w in args.workloads.split(","):
        for mode, t_torch, t_ours, ratio in bench(w, args.device, args.rounds, args.steps):
            print(f"{w:<12}{mode:<10}{t_torch:>10.3f}{t_ours:>10.3f}{ratio:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
