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
    assert "must be positive" in capsys.readouterr().err


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
