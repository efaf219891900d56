"""Mixed precision: bf16 parameters with fp32 masters in one fused pass, against torch's usual recipe, side by side.

    python benchmarks/bench_mixed.py                         # AdamW, CPU (and CUDA when a GPU is present)
    python benchmarks/bench_mixed.py --optimizers all --workloads large25m --rounds 10

Contenders (bf16 model parameters, bf16 gradients), for each optimizer:
  torch recipe        fp32 master copies of the parameters: upcast the gradients into the masters' .grad, torch's
                      fastest path for the optimizer on the masters (fused where it has one, see
                      fused_optim/benchmark.py), copy the masters back into the bf16 parameters
  fused master        master_weights=True: master, state and bf16 parameter in one pass
  fused split         master_weights="split": the bf16 parameter is the high half of the master
  fused split+bf16    split master and bf16 state (moments, buffers)
  torch bf16 / fused bf16   no master at all (everything bf16), for reference

The table gives the median step time, the ratio of the torch recipe's time to each, and the bytes per parameter
that parameters plus optimizer state occupy (not counting gradients). Targets: fused master at least 1.3x the torch
recipe on the CPU, all-bf16 AdamW at least 1.5x torch's fused bf16; the split master 12 bytes per parameter for
AdamW with fp32 moments.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Callable

import torch

from fused_optim import __version__
from fused_optim.benchmark import FUSED, Maker, shapes, sync, time_steps, torch_paths


class TorchMasterRecipe:
    """The common hand-written recipe: fp32 masters stepped by a torch optimizer, copied back to the model."""

    def __init__(self, params: list[torch.Tensor], make: Maker) -> None:
        self.params = params
        self.masters = [p.detach().float().requires_grad_() for p in params]
        self.opt = make(self.masters)

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
            per += [t.numel() * t.element_size() for k, t in s.items() if isinstance(t, torch.Tensor) and k != "step"]
        return sum(per)


def contenders(optimizer: str, device: str) -> dict[str, Callable[[list[torch.Tensor]], object]]:
    cls, kw = FUSED[optimizer]
    torch_best = next(iter(torch_paths(optimizer, device).values()))
    return {
        "torch recipe": lambda ps: TorchMasterRecipe(ps, torch_best),
        "fused master": lambda ps: cls(ps, **kw, master_weights=True),
        "fused split": lambda ps: cls(ps, **kw, master_weights="split"),
        "fused split+bf16": lambda ps: cls(ps, **kw, master_weights="split", state_dtype=torch.bfloat16),
        "torch bf16": torch_best,
        "fused bf16": lambda ps: cls(ps, **kw),
    }


def state_bytes(opt: object) -> int:
    if isinstance(opt, TorchMasterRecipe):
        return opt.state_bytes()
    total = 0
    for s in opt.state.values():  # type: ignore[attr-defined]
        total += sum(t.numel() * t.element_size() for k, t in s.items() if isinstance(t, torch.Tensor) and k != "step")
    return total


def make_params(workload: str, device: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = []
    for s in shapes(workload):
        p = torch.nn.Parameter(torch.randn(s, device=device, dtype=torch.bfloat16))
        p.grad = (torch.randn(s, device=device) * 1e-2).bfloat16()
        params.append(p)
    return params


def bench(optimizer: str, workload: str, device: str, rounds: int, steps: int) -> list[dict]:
    makers = contenders(optimizer, device)
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
                optimizer=optimizer,
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
    ap.add_argument("--optimizers", default="adamw", help=f"comma-separated, or all ({','.join(FUSED)})")
    ap.add_argument("--workloads", default="small1000,large25m")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            raise SystemExit("--device cuda: no CUDA GPU is visible")
        devices.remove("cuda")
    optimizers = list(FUSED) if args.optimizers == "all" else args.optimizers.split(",")
    print(f"torch {torch.__version__}, fused_optim {__version__}, {torch.get_num_threads()} threads")
    header = (
        f"{'optimizer':<10}{'workload':<12}{'dev':<5}{'contender':<19}{'median ms':>10}{'vs recipe':>11}"
        f"{'bytes/param':>13}"
    )
    print(header)
    print("-" * len(header))
    for device in devices:
        for optimizer in optimizers:
            for w in args.workloads.split(","):
                for r in bench(optimizer, w, device, args.rounds, args.steps):
                    print(
                        f"{r['optimizer']:<10}{r['workload']:<12}{r['device']:<5}{r['contender']:<19}{r['ms']:>10.3f}"
                        f"{r['vs_recipe']:>10.2f}x{r['bytes_per_param']:>13.1f}",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
