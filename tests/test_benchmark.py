"""The benchmark engine (fused_optim/benchmark.py) behind ``python -m fused_optim bench`` and benchmarks/: its
numbers follow from the timings by the formulas in the docstring, and the commands run on tiny sizes."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fused_optim import benchmark
from fused_optim.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def test_workload_shapes():
    assert benchmark.shapes("tiny1000") == [(256,)] * 1000
    small = benchmark.shapes("small1000")
    assert len(small) == 1000 and all(64 <= s[0] <= 65536 for s in small)
    assert benchmark.shapes("flat:small1000") == [(sum(s[0] for s in small),)]
    assert sum(math.prod(s) for s in benchmark.shapes("large25m")) == 3 * 4096 * 2048 + 48 * 2048 + 48 * 512
    with pytest.raises(ValueError, match="unknown workload 'huge'"):
        benchmark.shapes("huge")


@pytest.mark.parametrize("optimizer", list(benchmark.BYTES_PER_PARAM))
def test_rows_follow_from_the_timings(optimizer):
    rows = benchmark.bench(optimizer, "tiny1000", "cpu", rounds=1, steps=2, warmup=0, probe_bytes=1 << 20)
    assert rows[0]["contender"].startswith("fused_optim.")
    assert rows[1]["vs_baseline"] == 1.0  # the second contender is the baseline
    for r in rows:
        assert r["nparams"] == 256_000 and r["ntensors"] == 1000
        seconds = r["ms"] / 1e3
        assert r["gbs"] == pytest.approx(256_000 * benchmark.BYTES_PER_PARAM[optimizer] / seconds / 1e9)
        assert r["vs_baseline"] == pytest.approx(rows[1]["ms"] / r["ms"])
        assert 0 < r["min_ms"] <= r["ms"]


def test_bench_command(capsys, tmp_path):
    png = tmp_path / "bench.png"
    args = ["bench", "--workloads", "tiny", "--optimizers", "sgd,lion", "--rounds", "1", "--steps", "1"]
    assert main([*args, "--warmup", "0", "--png", str(png)]) == 0
    captured = capsys.readouterr()
    row = r"^tiny1000\s+cpu\s+(.+?)\s{2,}([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)x$"
    rows = re.findall(row, captured.out, re.M)
    assert [r[0] for r in rows] == [
        "fused_optim.SGD",
        "torch SGD fused",
        "torch SGD foreach",
        "fused_optim.Lion",
        "foreach Lion",
    ]
    assert rows[1][5] == "1.00" and rows[4][5] == "1.00"
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "bench [" in captured.err  # the progress bar


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workloads", "huge"], "unknown workload 'huge'"),
        (["--optimizers", "adamw,nadam"], "unknown optimizer 'nadam'"),
    ],
)
def test_bench_refuses_unknown_names(args, message):
    with pytest.raises(SystemExit, match=message):
        main(["bench", *args])


def test_bench_refuses_zero_rounds(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--rounds", "0"])
    assert "--rounds: must be at least 1, got 0" in capsys.readouterr().err


def test_benchmark_scripts_run():
    """benchmarks/bench_step.py is the same engine with longer defaults; the other scripts import from it."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import bench_step, bench_mixed, bench_flat_ratio; "
        "sys.exit(bench_step.main(['--device', 'cpu', '--workloads', 'tiny1000', '--optimizers', 'adagrad', "
        "'--rounds', '1', '--steps', '1', '--warmup', '0', '--quiet']))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "fused_optim.Adagrad" in out.stdout and "torch Adagrad fused" in out.stdout


def run_script(*code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, 'benchmarks'); " + "; ".join(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_mixed_precision_benchmark_covers_every_optimizer():
    out = run_script(
        "import bench_mixed",
        "sys.exit(bench_mixed.main(['--device', 'cpu', '--optimizers', 'sgd,lamb', '--workloads', 'tiny1000', "
        "'--rounds', '1', '--steps', '1']))",
    )
    rows = re.findall(r"^(\w+)\s+tiny1000\s+cpu\s+(.+?)\s{2,}([\d.]+)\s+([\d.]+)x\s+([\d.]+)$", out, re.M)
    names = ["torch recipe", "fused master", "fused split", "fused split+bf16", "torch bf16", "fused bf16"]
    assert [(r[0], r[1]) for r in rows] == [(o, n) for o in ("sgd", "lamb") for n in names]
    by = {(r[0], r[1]): r for r in rows}
    for opt in ("sgd", "lamb"):
        assert by[(opt, "torch recipe")][3] == "1.00"
        # bf16 params (2 bytes) + state: the fp32 master (4) or its low half (2), and the moments
        moments = 4 if opt == "sgd" else 8
        assert float(by[(opt, "fused master")][4]) == 2 + 4 + moments
        assert float(by[(opt, "fused split")][4]) == 2 + 2 + moments
        assert float(by[(opt, "fused split+bf16")][4]) == 2 + 2 + moments / 2


def test_modes_benchmark_covers_every_optimizer():
    out = run_script(
        "import bench_modes",
        "sys.exit(bench_modes.main(['--device', 'cpu', '--optimizers', 'rmsprop,adamw', "
        "'--workloads', 'tiny1000', '--rounds', '1', '--steps', '1']))",
    )
    rows = re.findall(r"^(\w+)\s+tiny1000\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x$", out, re.M)
    assert [(r[0], r[1]) for r in rows] == [
        (o, m) for o in ("rmsprop", "adamw") for m in ("plain", "scaler", "clip", "amp+clip")
    ]
    for r in rows:
        assert float(r[4]) == pytest.approx(float(r[2]) / float(r[3]), rel=0.02, abs=0.01)


def test_run_all_reads_the_targets_from_the_tables():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import run_all

    table = (
        "small1000       cpu  fused_optim.SGD              2.873    2.612    66.5     84        1.90x\n"
        "small1000       cpu  torch SGD fused              7.441    6.972    25.7     33        1.00x\n"
        "large25m        cpu  fused_optim.RMSprop          8.011    7.351    63.1    148        6.14x\n"
    )
    mixed = (
        "adamw     large25m    cpu  torch recipe           19.198      1.00x         14.0\n"
        "adamw     large25m    cpu  fused master           11.793      1.63x         14.0\n"
        "adamw     large25m    cpu  torch bf16              7.838      2.45x          6.0\n"
        "adamw     large25m    cpu  fused bf16              5.424      3.54x          6.0\n"
    )
    lines = run_all.targets({"Every optimizer, fp32": table, "Mixed precision": mixed})
    assert lines == [
        "- sgd small1000: 1.90x torch's fastest path (target 2.0x): MISSED",
        "- rmsprop large25m: 6.14x torch's fastest path (target 4.0x): met",
        "- adamw large25m bf16 params + fp32 master: 1.63x torch's fp32-master recipe (target 1.3x): met",
        "- adamw large25m all-bf16: 1.45x torch's bf16 step (target 1.5x): MISSED",
    ]


def test_run_all_adds_its_section_above_the_older_ones(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\nIntro.\n\n## 2000-01-01: an old run\n\nold table\n")
    out = run_script(
        "import run_all",
        f"sys.exit(run_all.main(['--quick', '--only', 'in-backward', '--out', {str(results)!r}]))",
    )
    assert "wrote a section" in out
    text = results.read_text()
    assert text.startswith("# Benchmark results\n\nIntro.\n\n## ")
    new, old = text.index("### Optimizer-in-backward"), text.index("## 2000-01-01: an old run")
    assert new < old and "fused_optim" in text[new:old] and text.endswith("old table\n")
    assert re.search(r"## \d{4}-\d\d-\d\d: CPU, .+, torch \S+, fused_optim \S+ \(commit ", text)
