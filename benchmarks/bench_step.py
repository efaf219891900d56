"""Time one optimizer step of fused_optim against torch.optim, side by side, in interleaved rounds: the full-length
form of ``python -m fused_optim bench`` (the engine is fused_optim/benchmark.py; its docstring lists the
optimizers, workloads and columns).

    python benchmarks/bench_step.py                    # CPU (and CUDA when a GPU is present)
    python benchmarks/bench_step.py --device cpu --rounds 15 --workloads small1000,large25m

Targets (held here, not by timed tests): see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys

from fused_optim.benchmark import BYTES_PER_PARAM, add_arguments, run, shapes, sync, time_steps

__all__ = ["BYTES_PER_PARAM", "main", "shapes", "sync", "time_steps"]  # also used by the other benchmarks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap, rounds=10, workloads="small1000,flat:small1000,large25m", device="all")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
