"""Command line: ``python -m fused_optim demo`` (a short training run beside torch.optim) and ``info``."""

from __future__ import annotations

import argparse
import ast
import copy
import statistics
import sys
import time

import torch

import fused_optim
from fused_optim import lr_scheduler


def _data(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A classification task generated here (no download): labels from a fixed random teacher network."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    w1, w2 = torch.randn(dim, 64, generator=g), torch.randn(64, classes, generator=g)
    return x, (torch.tanh(x @ w1) @ w2).argmax(dim=1)


def _model(dim: int, classes: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(dim, 256),
        torch.nn.GELU(),
        torch.nn.LayerNorm(256),
        torch.nn.Linear(256, 256),
        torch.nn.GELU(),
        torch.nn.Linear(256, classes),
    )


def demo(args: argparse.Namespace) -> int:
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("demo: --device cuda was asked for but no CUDA GPU is visible")
    amp_dtype = torch.bfloat16
    x, y = _data(8192, 64, 10, seed=1)
    x, y = x.to(device), y.to(device)
    base = _model(64, 10).to(device)
    runs = {
        "fused_optim.AdamW": lambda ps: fused_optim.AdamW(ps, lr=args.lr, weight_decay=0.05),
        "torch.optim.AdamW": lambda ps: torch.optim.AdamW(ps, lr=args.lr, weight_decay=0.05),
    }
    print(
        f"fused_optim {fused_optim.__version__} on {device} (CPU kernels: {fused_optim.build_info()['cpu_isa']}); "
        f"{args.steps} steps of AdamW, warm-up + cosine schedule, autocast {amp_dtype}"
    )
    results = {}
    for name, make in runs.items():
        model = copy.deepcopy(base)
        opt = make(model.parameters())
        sched = lr_scheduler.get_cosine_schedule_with_warmup(opt, max(1, args.steps // 10), args.steps)
        g = torch.Generator(device="cpu").manual_seed(2)
        losses, step_times = [], []
        for step in range(args.steps):
            idx = torch.randint(0, x.shape[0], (256,), generator=g).to(device)
            with torch.autocast(device_type=device, dtype=amp_dtype):
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - t0)
            sched.step()
            losses.append(loss.item())
            if (step + 1) % max(1, args.steps // 5) == 0:
                print(
                    f"  {name:<18} step {step + 1:>4}  loss {statistics.fmean(losses[-20:]):.4f}  "
                    f"lr {sched.get_last_lr()[0]:.2e}"
                )
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean().item()
        results[name] = (statistics.fmean(losses[-20:]), acc, statistics.median(step_times) * 1e3, model)
    print(f"\n{'optimizer':<20}{'final loss':>12}{'accuracy':>10}{'step ms (median)':>18}")
    for name, (loss, acc, ms, _) in results.items():
        print(f"{name:<20}{loss:>12.4f}{acc:>10.3f}{ms:>18.3f}")
    ours, ref = results["fused_optim.AdamW"], results["torch.optim.AdamW"]
    diff = max((p - q).abs().max().item() for p, q in zip(ours[3].parameters(), ref[3].parameters()))
    print(
        f"\nlargest parameter difference after {args.steps} steps: {diff:.2e}; "
        f"optimizer step speed-up: {ref[2] / ours[2]:.2f}x"
    )
    return 0


def schedule(args: argparse.Namespace) -> int:
    kwargs = {}
    for item in args.kw:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--kw takes key=value, got {item!r}")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value  # a plain string, e.g. decay_type=cosine

    def make(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return lr_scheduler.get_scheduler(
            args.name,
            optimizer,
            num_warmup_steps=args.warmup,
            num_training_steps=args.steps,
            scheduler_specific_kwargs=kwargs,
        )

    try:
        print(f"{args.name}: {args.steps} steps, {args.warmup} warm-up, peak lr {args.lr:g}")
        print(lr_scheduler.table(make, args.steps, lr=args.lr, rows=args.rows))
    except (TypeError, ValueError) as e:
        raise SystemExit(f"schedule {args.name}: {e}") from None
    if args.png:
        try:
            print("wrote", lr_scheduler.plot(make, args.steps, args.png, lr=args.lr, title=args.name))
        except ImportError as e:
            print(f"no picture: {e}")
    return 0


def info(_: argparse.Namespace) -> int:
    for k, v in fused_optim.build_info().items():
        print(f"{k}: {v}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fused_optim", description="fused_optim command line")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train a small model with fused_optim.AdamW beside torch.optim.AdamW")
    d.add_argument("--steps", type=int, default=300)
    d.add_argument("--lr", type=float, default=3e-3)
    d.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    d.set_defaults(func=demo)
    sc = sub.add_parser("schedule", help="print a learning-rate schedule's lr at evenly spaced steps")
    sc.add_argument("name", help="a get_scheduler name: linear, cosine, cosine_with_restarts, polynomial, ...")
    sc.add_argument("--steps", type=int, default=1000, help="num_training_steps")
    sc.add_argument("--warmup", type=int, default=0, help="num_warmup_steps")
    sc.add_argument("--lr", type=float, default=1e-3, help="the peak lr")
    sc.add_argument("--rows", type=int, default=21, help="table rows")
    sc.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE", help="scheduler_specific_kwargs")
    sc.add_argument("--png", help="also draw the schedule to this PNG (needs matplotlib)")
    sc.set_defaults(func=schedule)
    i = sub.add_parser("info", help="how the compiled core was built")
    i.set_defaults(func=info)
    args = ap.parse_args(argv)
    if getattr(args, "steps", 1) <= 0:
        ap.error("--steps must be positive")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
