"""The demo (``python -m fused_optim demo``): the same short training run with fused_optim.AdamW and with
torch.optim.AdamW, side by side, on a task generated here (no download).

Both runs use a warm-up + cosine schedule and autocast, start from the same weights and see the same batches, so
their loss curves should lie on top of each other while the optimizer step times differ. The summary prints the
curves at a few steps, the accuracy, the median step time of each and the largest parameter difference at the
end; a PNG shows loss and lr against the step (with matplotlib installed).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import fused_optim
from fused_optim import lr_scheduler
from fused_optim._cli import output_file, positive_float, positive_int
from fused_optim.progress import Progress

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "fused_optim.AdamW": fused_optim.AdamW,
    "torch.optim.AdamW": torch.optim.AdamW,
}


def make_data(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A classification task generated here (no download): labels from a fixed random teacher network."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w1, w2 = torch.randn(dim, 64, generator=g), torch.randn(64, classes, generator=g)
    return x, (torch.tanh(x @ w1) @ w2).argmax(dim=1)


def make_model(dim: int, classes: int) -> torch.nn.Module:
    """The demo's MLP (about 85 K parameters: weights, biases and a LayerNorm, so weight decay groups matter)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(dim, 256),
        torch.nn.GELU(),
        torch.nn.LayerNorm(256),
        torch.nn.Linear(256, 256),
        torch.nn.GELU(),
        torch.nn.Linear(256, classes),
    )


@dataclass
class Run:
    """One optimizer's training run."""

    name: str
    model: torch.nn.Module
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    accuracy: float = 0.0

    def final_loss(self, window: int = 20) -> float:
        return statistics.fmean(self.losses[-window:])

    def step_ms(self) -> float:
        return statistics.median(self.step_seconds) * 1e3


def train(
    names: list[str],
    base: torch.nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    steps: int,
    lr: float,
    device: str,
    batch: int = 256,
    progress: bool = True,
) -> list[Run]:
    """Train a copy of ``base`` with each optimizer of ``names`` (keys of OPTIMIZERS): AdamW, 10 % linear warm-up
    then cosine, autocast to bf16, the same batches for every run. The runs advance in lockstep, one step each in
    turn, so a machine that slows down mid-way slows all of them alike and the step times stay comparable."""
    x, y = data
    runs, opts, scheds = [], [], []
    for name in names:
        model = copy.deepcopy(base)
        opt = OPTIMIZERS[name](model.parameters(), lr=lr, weight_decay=0.05)
        runs.append(Run(name, model))
        opts.append(opt)
        scheds.append(lr_scheduler.get_cosine_schedule_with_warmup(opt, max(1, steps // 10), steps))
    g = torch.Generator().manual_seed(2)
    with Progress(total=steps, desc="training", enabled=progress) as bar:
        for _ in range(steps):
            idx = torch.randint(0, x.shape[0], (batch,), generator=g).to(device)
            for run, opt, sched in zip(runs, opts, scheds):
                with torch.autocast(device_type=device, dtype=torch.bfloat16):
                    loss = torch.nn.functional.cross_entropy(run.model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                _sync(device)
                start = time.perf_counter()
                opt.step()
                _sync(device)
                run.step_seconds.append(time.perf_counter() - start)
                run.lrs.append(sched.get_last_lr()[0])
                sched.step()
                run.losses.append(loss.item())
            bar.update(note=f"loss {statistics.fmean(runs[0].losses[-20:]):.4f}")
    with torch.no_grad():
        for run in runs:
            run.accuracy = (run.model(x).argmax(1) == y).float().mean().item()
    return runs


def summary(runs: list[Run], points: int = 6) -> str:
    """The loss curves at ``points`` steps side by side, then one row per run."""
    steps = len(runs[0].losses)
    at = sorted({round(i * (steps - 1) / (points - 1)) for i in range(points)})
    lines = [f"{'step':>6}{'lr':>10}" + "".join(f"{r.name + ' loss':>26}" for r in runs)]
    for s in at:  # a 10-step running mean: single-batch losses are noisy
        lines.append(
            f"{s + 1:>6}{runs[0].lrs[s]:>10.2e}"
            + "".join(f"{statistics.fmean(r.losses[max(0, s - 9) : s + 1]):>26.4f}" for r in runs)
        )
    lines.append("")
    lines.append(f"{'optimizer':<20}{'final loss':>12}{'accuracy':>10}{'step ms (median)':>18}")
    for r in runs:
        lines.append(f"{r.name:<20}{r.final_loss():>12.4f}{r.accuracy:>10.3f}{r.step_ms():>18.3f}")
    return "\n".join(lines)


def plot(runs: list[Run], path: str) -> str:
    """Loss (10-step running mean) and lr against the step, to the PNG ``path``. Needs matplotlib."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("the demo's picture needs matplotlib: pip install matplotlib") from e
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 5), sharex=True, height_ratios=[2, 1])
    for r, style in zip(runs, ["-", "--"]):
        smooth = [statistics.fmean(r.losses[max(0, i - 9) : i + 1]) for i in range(len(r.losses))]
        ax_loss.plot(range(1, len(smooth) + 1), smooth, style, label=f"{r.name} ({r.step_ms():.2f} ms/step)")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(range(1, len(runs[0].lrs) + 1), runs[0].lrs)
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("lr")
    ax_lr.grid(alpha=0.3)
    fig.suptitle("fused_optim demo: AdamW, warm-up + cosine, bf16 autocast")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def run_demo(args: argparse.Namespace) -> int:
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("demo: --device cuda was asked for but no CUDA GPU is visible")
    x, y = make_data(8192, 64, 10, seed=1)
    data = (x.to(device), y.to(device))
    base = make_model(64, 10).to(device)
    print(
        f"fused_optim {fused_optim.__version__} on {device} (CPU kernels: {fused_optim.build_info()['cpu_isa']}); "
        f"{args.steps} steps of AdamW, warm-up + cosine schedule, autocast bfloat16"
    )
    runs = train(list(OPTIMIZERS), base, data, steps=args.steps, lr=args.lr, device=device, progress=not args.quiet)
    print()
    print(summary(runs))
    ours, ref = runs
    diff = max((p - q).abs().max().item() for p, q in zip(ours.model.parameters(), ref.model.parameters()))
    print(
        f"\nlargest parameter difference after {args.steps} steps: {diff:.2e}; "
        f"optimizer step speed-up: {ref.step_ms() / ours.step_ms():.2f}x"
    )
    if args.png:
        try:
            print("wrote", plot(runs, args.png))
        except ImportError as e:
            print(f"no picture: {e}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """The ``demo`` subcommand."""
    d = subparsers.add_parser(
        "demo",
        help="train a small model with fused_optim.AdamW beside torch.optim.AdamW",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--steps", type=positive_int, default=300, help="training steps per run (default 300)")
    d.add_argument("--lr", type=positive_float, default=3e-3, help="peak learning rate (default 3e-3)")
    d.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    d.add_argument("--png", type=output_file, default="fused_optim_demo.png", help="picture of loss and lr ('': none)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=run_demo)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
