"""The shell scripts under .ci/: they parse, and the GPU script (which only runs on a GPU machine) refuses an
unknown stage instead of skipping it silently."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["run", "sanitize", "cuda_emulation", "gpu"])
def test_ci_script_parses(script):
    out = subprocess.run(["bash", "-n", str(ROOT / ".ci" / script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_gpu_script_refuses_an_unknown_stage(tmp_path):
    out = subprocess.run(
        ["bash", str(ROOT / ".ci" / "gpu"), "benchmark"],
        capture_output=True,
        text=True,
        env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode == 1
    assert "unknown stage benchmark (build test test-all sanitize bench-quick bench)" in out.stdout
