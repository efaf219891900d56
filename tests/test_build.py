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


def test_prepare_cuda_env_corrects_an_imported_cpp_extension(monkeypatch, tmp_path: Path):
    """cpp_extension fixes CUDA_HOME at import (to the folder above the first nvcc on PATH, which can be
    /usr/local and then fails to link -lcudart); preparing the build must point it at the real toolkit."""
    from torch.utils import cpp_extension

    kit = _fake_toolkit(tmp_path / "cuda-z")
    monkeypatch.setenv("CUDA_HOME", str(kit))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", "/usr/local")
    _build.prepare_cuda_env()
    assert str(kit) == cpp_extension.CUDA_HOME


def test_prepare_cuda_env_picks_an_arch_list_without_a_gpu(monkeypatch):
    import torch

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "")  # empty counts as unset; monkeypatch restores it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    _build.prepare_cuda_env()
    import os

    assert os.environ["TORCH_CUDA_ARCH_LIST"] == _build.default_arch_list("13.0")
