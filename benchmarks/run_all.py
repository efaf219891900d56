"""Run the whole benchmark suite on one device and write its tables into benchmarks/RESULTS.md, newest first:

    python benchmarks/run_all.py                     # CPU: about 30 minutes on 2 cores
    python benchmarks/run_all.py --device cuda       # the same on a GPU
    python benchmarks/run_all.py --quick             # a few rounds of each, to check that everything runs

Each benchmark runs as its own process (a fresh allocator and thread pool each) and prints its table; the section
added to RESULTS.md has the date, the machine, the torch version and the git commit, then every table verbatim,
then the targets of the speed issue checked against the tables. Charts go to RESULTS_*_<device>.png beside it.
Nothing is written when a benchmark fails. ``--out`` writes elsewhere (CI-style dry runs, tests).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def suite(device: str, quick: bool, charts: Path) -> list[tuple[str, list[str]]]:
    """(title, command) of each benchmark, with the run lengths of a full or a quick run; charts go to ``charts``."""
    rounds = ["--rounds", "2" if quick else "10"]
    steps = ["--steps", "2" if quick else "5"]
    # the two standard workloads and a flat control, every optimizer
    every = ["--optimizers", "all", "--workloads", "small1000,flat:small1000,large25m", *rounds, "--steps", "3"]
    png = str(charts / f"RESULTS_speedups_{device}.png")
    scaling_png = str(charts / f"RESULTS_scaling_{device}.png")
    runs = [
        (
            "Every optimizer, fp32: small1000, large25m, their flat controls and tiny1000",
            [
                "-m", "fused_optim", "bench", "--device", device, "--quiet",
                "--workloads", "small1000,flat:small1000,large25m,flat:large25m,tiny1000",
                *rounds, *steps, "--png", png,
            ],
        ),
        (
            "Mixed precision: bf16 params with masters, split masters, bf16 state, all-bf16",
            ["benchmarks/bench_mixed.py", "--device", device, *every],
        ),
        (
            "GradScaler and clipping, fp32 params",
            ["benchmarks/bench_modes.py", "--device", device, *every],
        ),
        (
            "Scaling: step time against tensor count and total size (AdamW)",
            [
                "benchmarks/bench_scaling.py", "--device", device, "--rounds", "2" if quick else "5",
                "--png", scaling_png, *(["--sizes", "1e6,1e7", "--counts", "10,100,1000"] if quick else []),
            ],
        ),
        (
            "Per-tensor cost: small1000 against one flat tensor",
            ["benchmarks/bench_flat_ratio.py", "--device", device, "--rounds", "3" if quick else "15"],
        ),
    ]  # fmt: skip
    if device == "cpu":  # one optimizer per parameter: a CPU-overhead benchmark
        runs.append(
            (
                "Optimizer-in-backward: the fixed cost of a step() call",
                ["benchmarks/bench_in_backward.py", "--rounds", "3" if quick else "15"],
            )
        )
    return runs


def machine(device: str) -> str:
    """A line naming the machine: CPU model and cores, or the GPU."""
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()  # type: ignore[union-attr]
    except (OSError, AttributeError):
        pass
    return f"{model}, {torch.get_num_threads()} threads"


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.strip() else "")
    except OSError:
        return "unknown"


def targets(outputs: dict[str, str]) -> list[str]:
    """The speed issue's CPU targets, read back from the tables (a line each, met or not)."""
    bench = next((o for t, o in outputs.items() if t.startswith("Every optimizer")), "")
    ratio: dict[tuple[str, str], float] = {}
    for line in bench.splitlines():
        m = re.match(r"(\S+)\s+\S+\s+fused_optim\.(\w+).*?([\d.]+)x\s*$", line)
        if m:
            ratio[(m.group(2).lower(), m.group(1))] = float(m.group(3))
    both = ("small1000", "large25m")
    goals = [
        *((o, w, 2.0 if w == "small1000" else 0.95) for o in ("adamw", "sgd", "adagrad") for w in both),
        *(("rmsprop", w, 4.0) for w in both),
        *((o, w, 3.0) for o in ("lion", "lamb") for w in both),
    ]
    lines = []
    for opt, workload, goal in goals:
        got = ratio.get((opt, workload))
        if got is None:
            continue
        verdict = "met" if got >= goal else "MISSED"
        lines.append(f"- {opt} {workload}: {got:.2f}x torch's fastest path (target {goal}x): {verdict}")
    mixed = next((o for t, o in outputs.items() if t.startswith("Mixed")), "")
    ms: dict[tuple[str, str, str], float] = {}
    for line in mixed.splitlines():
        m = re.match(r"(\w+)\s+(\S+)\s+\S+\s+(.+?)\s{2,}([\d.]+)\s+[\d.]+x", line)
        if m:
            ms[(m.group(1), m.group(2), m.group(3))] = float(m.group(4))
    for workload in both:
        pairs = [
            ("bf16 params + fp32 master", "torch recipe", "fused master", 1.3, "torch's fp32-master recipe"),
            ("all-bf16", "torch bf16", "fused bf16", 1.5, "torch's bf16 step"),
        ]
        for what, theirs, ours, goal, against in pairs:
            if ("adamw", workload, theirs) in ms and ("adamw", workload, ours) in ms:
                got = ms[("adamw", workload, theirs)] / ms[("adamw", workload, ours)]
                verdict = "met" if got >= goal else "MISSED"
                lines.append(f"- adamw {workload} {what}: {got:.2f}x {against} (target {goal}x): {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--quick", action="store_true", help="a few rounds of each (checks that the suite runs)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="the results file to add the section to")
    ap.add_argument("--only", default="", help="run only the benchmarks whose title contains this text")
    args = ap.parse_args(argv)

    import torch

    import fused_optim

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("run_all: --device cuda, but no CUDA GPU is visible")
    source = commit()  # before the suite writes its charts, which would read as uncommitted changes
    outputs: dict[str, str] = {}
    env_path = os.pathsep.join(filter(None, [str(ROOT / "python"), os.environ.get("PYTHONPATH")]))
    out = Path(args.out).resolve()
    for title, cmd in suite(args.device, args.quick, out.parent):
        if args.only and args.only.lower() not in title.lower():
            continue
        print(f"== {title}\n   python {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, *cmd],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": env_path},
        )
        print(proc.stdout, end="", flush=True)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            raise SystemExit(f"run_all: {title!r} failed (exit {proc.returncode}); {args.out} left unchanged")
        outputs[title] = proc.stdout.strip()
        print(f"   ({time.perf_counter() - start:.0f} s)", flush=True)

    today = datetime.date.today().isoformat()
    head = (
        f"## {today}: {args.device.upper()}, {machine(args.device)}, torch {torch.__version__}, "
        f"fused_optim {fused_optim.__version__} (commit {source})"
    )
    parts = [
        head,
        "",
        f"Written by `python benchmarks/run_all.py --device {args.device}{' --quick' if args.quick else ''}`.",
    ]
    checked = targets(outputs)
    if checked:
        parts += ["", "Targets of the speed issue, read from the tables below:", "", *checked]
    for title, text in outputs.items():
        parts += ["", f"### {title}", "", "```", text, "```"]
    section = "\n".join(parts) + "\n"

    old = out.read_text() if out.exists() else "# Benchmark results\n"
    first = old.find("\n## ")
    new = old.rstrip("\n") + "\n\n" + section if first < 0 else old[: first + 1] + section + "\n" + old[first + 1 :]
    out.write_text(new)
    print(f"wrote a section to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
