"""Mixed precision: bf16 parameters with fp32 masters in one fused pass, against torch's usual recipe, side by side.

    python benchmarks/bench_mixed.py                         # CPU (and CUDA when a GPU is present)
    python benchmarks/bench_mixed.py --workloads large25m --rounds 10

Contenders (AdamW, bf16 model parameters, bf16 gradients):
  torch recipe        fp32 master copies of the parameters: upcast the gradients into the masters' .grad, torch's
                      fused AdamW on the masters, copy the masters back into the bf16 parameters
  fused master        fused_optim.AdamW(master_weights=True): master, moments and bf16 parameter in one pass
  fused split         master_weights="split": the bf16 parameter is the high half of the master
  fused split+bf16    split master and bf16 moments
  torch bf16 / fused bf16   no master at all (everything bf16), for reference

The table gives the median step time, the ratio of the torch recipe's time to each, and the bytes per parameter
that parameters plus optimizer state occupy (not counting gradients). Targets: fused master at least 1.3x the torch
recipe on the CPU; the split master 12 bytes per parameter with fp32 moments.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable

import torch

import fused_optim
from bench_step import shapes, sync, time_steps


class TorchMasterRecipe:
    """The common hand-written recipe: fp32 masters stepped by torch's fused AdamW, copied back to the model."""

    def __init__(self, params: list[torch.Tensor], lr: float) -> None:
        self.params = params
        self.masters = [p.detach().float().requires_grad_() for p in params]
        self.opt = torch.optim.AdamW(self.masters, lr=lr, fused=True)

    @torch.no_grad()
    def step(self) -> None:
        for p, m in zip(self.params, self.masters):
            if m.grad is None:
                m.grad = torch.empty_like(m)
            m.grad.copy_(p.grad)
        self.opt.step()
        torch._foreach_copy_(self.params, self.masters)

    def state_bytes(self) -> int:
        per = [m.numel() * 4 for m in self.masters]  # the masters
        for s in self.opt.state.values():
            per += [t.numel() * t.element_size() for k, t in s.items() if k != "step"]
        return sum(per)


def contenders(lr: float) -> dict[str, Callable[[list[torch.Tensor]], object]]:
    return {
        "torch recipe": lambda ps: TorchMasterRecipe(ps, lr),
        "fused master": lambda ps: fused_optim.AdamW(ps, lr=lr, master_weights=True),
        "fused split": lambda ps: fused_optim.AdamW(ps, lr=lr, master_weights="split"),
        "fused split+bf16": lambda ps: fused_optim.AdamW(ps, lr=lr, master_weights="split", state_dtype=torch.bfloat16),
        "torch bf16": lambda ps: torch.optim.AdamW(ps, lr=lr, fused=True),
        "fused bf16": lambda ps: fused_optim.AdamW(ps, lr=lr),
    }


def state_bytes(opt: object) -> int:
    if isinstance(opt, TorchMasterRecipe):
        return opt.state_bytes()
    total = 0
    for s in opt.state.values():  # type: ignore[attr-defined]
        total += sum(t.numel() * t.element_size() for k, t in s.items() if k != "step")
    return total


def make_params(workload: str, device: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = []
    for s in shapes(workload):
        p = torch.nn.Parameter(torch.randn(s, device=device, dtype=torch.bfloat16))
        p.grad = (torch.randn(s, device=device) * 1e-2).bfloat16()
        params.append(p)
    return params


def bench(workload: str, device: str, rounds: int, steps: int) -> list[dict]:
    makers = contenders(1e-3)
    opts = {name: make(make_params(workload, device)) for name, make in makers.items()}
    for opt in opts.values():
        time_steps(opt, 2, device)
    samples: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(rounds):
        for name, opt in opts.items():
            samples[name] += time_steps(opt, steps, device)
    sync(device)
    nparams = sum(math.prod(s) for s in shapes(workload))
    base = statistics.median(samples["torch recipe"])
    rows = []
    for name, ts in samples.items():
        med = statistics.median(ts)
        rows.append(
            dict(
                workload=workload,
                device=device,
                contender=name,
                ms=med * 1e3,
                vs_recipe=base / med,
                bytes_per_param=(nparams * 2 + state_bytes(opts[name])) / nparams,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    ap.add_argument("--workloads", default="small1000,large25m")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA GPU is visible")
        devices.remove("cuda")
    print(f"torch {torch.__version__}, fused_optim {fused_optim.__version__}, {torch.get_num_threads()} threads")
    header = f"{'workload':<12}{'dev':<5}{'contender':<19}{'median ms':>10}{'vs recipe':>11}{'bytes/param':>13}"
    print(header)
    print("-" * len(header))
    for device in devices:
        for w in args.workloads.split(","):
            for r in bench(w, device, args.rounds, args.steps):
                print(
                    f"{r['workload']:<12}{r['device']:<5}{r['contender']:<19}{r['ms']:>10.3f}{r['vs_recipe']:>10.2f}x"
                    f"{r['bytes_per_param']:>13.1f}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
