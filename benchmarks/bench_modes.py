"""The extras of mixed-precision training (GradScaler, clipping), fp32 params, side by side with torch's way of
doing each, for every optimizer:

    python benchmarks/bench_modes.py                                  # AdamW
    python benchmarks/bench_modes.py --optimizers all --workloads small1000 --rounds 10

Modes (each a pair: torch's best path for the optimizer, then ours; the ratio is torch's time over ours). torch's
best path is fused where torch has a fused kernel, else foreach (see fused_optim/benchmark.py):
  plain       torch's best path                            | fused_optim
  scaler      fused: GradScaler's grad_scale and found_inf  | the same attributes, unscaled in our kernel
              (what GradScaler.step hands it); foreach:
              GradScaler.unscale_ (foreach), the inf check
              on the host, the step
  clip        clip_grad_norm_(foreach) then the step        | max_grad_norm=1.0 folded into the kernel's scale
  amp+clip    GradScaler.unscale_ (foreach), clip, the step | grad_scale and max_grad_norm, one norm pass plus
              (the standard fp16 AMP recipe)               | the update

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

from fused_optim import __version__
from fused_optim.benchmark import FUSED, make_params, sync, torch_paths

MAX_NORM = 1.0
SCALE = 1024.0
MODES = ["plain", "scaler", "clip", "amp+clip"]


def torch_step(optimizer: str, mode: str, params: list[torch.Tensor], device: str) -> Callable[[], None]:
    opt = next(iter(torch_paths(optimizer, device).values()))(params)
    takes_scaler = bool(getattr(opt, "defaults", {}).get("fused"))  # torch's fused kernels unscale in-kernel
    grads = [p.grad for p in params]
    scale, found_inf = torch.tensor(SCALE, device=device), torch.tensor(0.0, device=device)
    if mode == "plain":
        return opt.step
    if mode == "scaler" and takes_scaler:
        opt.grad_scale, opt.found_inf = scale, found_inf  # type: ignore[attr-defined]
        return opt.step

    def step() -> None:
        if mode in ("scaler", "amp+clip"):  # GradScaler.unscale_: a foreach multiply plus an inf check
            torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, 1.0 / scale)
        if "clip" in mode:
            torch.nn.utils.clip_grad_norm_(params, MAX_NORM, foreach=True)
        if mode == "clip" or not found_inf.item():  # GradScaler.step reads found_inf on the host
            opt.step()

    return step


def our_step(optimizer: str, mode: str, params: list[torch.Tensor], device: str) -> Callable[[], None]:
    cls, kw = FUSED[optimizer]
    opt = cls(params, **kw, max_grad_norm=MAX_NORM if "clip" in mode else None)
    if mode in ("scaler", "amp+clip"):
        opt.grad_scale, opt.found_inf = torch.tensor(SCALE, device=device), torch.tensor(0.0, device=device)
    return opt.step


def bench(optimizer: str, workload: str, device: str, rounds: int, steps: int) -> list[tuple[str, float, float]]:
    runs: dict[tuple[str, str], tuple[Callable[[], None], list[torch.Tensor]]] = {}
    for mode in MODES:
        for who, make in (("torch", torch_step), ("ours", our_step)):
            params = make_params(workload, device)
            runs[(mode, who)] = (make(optimizer, mode, params, device), [p.grad for p in params])
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
    for mode in MODES:
        t_torch = statistics.median(times[(mode, "torch")][steps:])
        t_ours = statistics.median(times[(mode, "ours")][steps:])
        rows.append((mode, t_torch * 1e3, t_ours * 1e3))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--optimizers", default="adamw", help=f"comma-separated, or all ({','.join(FUSED)})")
    ap.add_argument("--workloads", default="small1000,large25m")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    optimizers = list(FUSED) if args.optimizers == "all" else args.optimizers.split(",")
    print(f"torch {torch.__version__}, fused_optim {__version__}, {torch.get_num_threads()} threads")
    print(f"{'optimizer':<10}{'workload':<12}{'mode':<10}{'torch ms':>10}{'ours ms':>10}{'vs torch':>10}")
    for optimizer in optimizers:
        for w in args.workloads.split(","):
            for mode, t_torch, t_ours in bench(optimizer, w, args.device, args.rounds, args.steps):
                print(f"{optimizer:<10}{w:<12}{mode:<10}{t_torch:>10.3f}{t_ours:>10.3f}{t_torch / t_ours:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
