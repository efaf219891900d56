"""Command line: ``python -m fused_optim <command>``; each command lives in the module that does the work.

demo      a short training run with fused_optim.AdamW beside torch.optim.AdamW (fused_optim/demo.py)
bench     each optimizer's step time against torch.optim, side by side (fused_optim/benchmark.py)
profile   where an optimizer's step time goes, with advice (fused_optim/profiling.py)
find-lr   the learning-rate range test on the demo's task (fused_optim/lr_finder.py)
schedule  a learning-rate schedule as a table or a PNG (fused_optim/lr_scheduler.py)
info      how the compiled core was built
"""

from __future__ import annotations

import argparse
import ast
import sys

import torch

import fused_optim
from fused_optim import benchmark, demo, lr_finder, lr_scheduler, profiling
from fused_optim._cli import int_at_least, output_file, positive_float


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

    if args.name == "constant" and args.warmup:
        raise SystemExit("schedule constant: takes no warm-up (as HF's); use constant_with_warmup")
    try:
        print(f"{args.name}: {args.steps} steps, {args.warmup} warm-up, peak lr {args.lr:g}")
        print(lr_scheduler.table(make, args.steps, lr=args.lr, rows=args.rows))
    except (TypeError, ValueError, KeyError) as e:  # KeyError: torch's, for a last_epoch without initial_lr
        raise SystemExit(f"schedule {args.name}: {e}") from None
    if args.png:
        try:
            print("wrote", lr_scheduler.plot(make, args.steps, args.png, lr=args.lr, title=args.name))
        except ImportError as e:
            print(f"no picture: {e}")
        except OSError as e:  # a folder that does not exist, no permission
            raise SystemExit(f"schedule {args.name}: cannot write {args.png}: {e.strerror or e}") from None
    return 0


def info(_: argparse.Namespace) -> int:
    for k, v in fused_optim.build_info().items():
        print(f"{k}: {v}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fused_optim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)
    demo.add_cli(sub)
    benchmark.add_cli(sub)
    profiling.add_cli(sub)
    lr_finder.add_cli(sub)
    sc = sub.add_parser("schedule", help="print a learning-rate schedule's lr at evenly spaced steps")
    sc.add_argument("name", help="a get_scheduler name: linear, cosine, cosine_with_restarts, polynomial, ...")
    sc.add_argument("--steps", type=int, default=1000, help="num_training_steps")
    sc.add_argument("--warmup", type=int_at_least(0), default=0, help="num_warmup_steps")
    sc.add_argument("--lr", type=positive_float, default=1e-3, help="the peak lr")
    sc.add_argument("--rows", type=int_at_least(2), default=21, help="table rows (at least 2: the first and last step)")
    sc.add_argument("--kw", action="append", default=[], metavar="KEY=VALUE", help="scheduler_specific_kwargs")
    sc.add_argument("--png", type=output_file, help="also draw the schedule to this PNG (needs matplotlib)")
    sc.set_defaults(func=schedule)
    i = sub.add_parser("info", help="how the compiled core was built")
    i.set_defaults(func=info)
    args = ap.parse_args(argv)
    if getattr(args, "steps", 1) <= 0:
        ap.error("--steps must be positive")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
