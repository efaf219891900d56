"""Build configuration: where the CUDA toolkit is found, and which architectures a GPU-less build compiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from fused_optim import _build


def test_default_arch_lists_end_with_ptx():
    for version in ("12.1", "12.8", "13.0"):
        archs = _build.default_arch_list(version)
        assert archs.endswith("+PTX")
        assert "9.0" in archs
    assert "7.0" not in _build.default_arch_list("13.0")  # CUDA 13 dropped Volta
    assert "10.0" not in _build.default_arch_list("12.1")  # Blackwell needs 12.8


def _fake_toolkit(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (root / "bin" / "nvcc").chmod(0o755)
    return root


def test_cuda_home_prefers_the_environment(monkeypatch, tmp_path: Path):
    kit = _fake_toolkit(tmp_path / "cuda-x")
    monkeypatch.setenv("CUDA_HOME", str(kit))
    assert _build.cuda_home() == str(kit)


def test_cuda_home_falls_back_to_nvcc_on_path(monkeypatch, tmp_path: Path):
    kit = _fake_toolkit(tmp_path / "cuda-y")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(kit / "bin"))
    real_exists = Path.exists
    monkeypatch.setattr(Path, "exists", lambda p: False if str(p).startswith("/usr/local/cuda") else real_exists(p))
    assert _build.cuda_home() == str(kit)


@pytest.mark.parametrize("value, expected", [("1", True), ("0", False), ("", False)])
def test_cpu_only_switch(monkeypatch, value, expected):
    monkeypatch.setenv("FUSED_OPTIM_CPU_ONLY", value)
    assert _build.cpu_only() is expected
    if expected:
        assert _build.with_cuda() is False


def test_sources_exist():
    for path in _build.all_source_files():
        assert path.exists(), path
    assert all(s.startswith("csrc/") for s in _build.CPU_SOURCES)
    assert all(s.startswith("cuda/") for s in _build.CUDA_SOURCES)
