"""The research-code route: python/ on sys.path, no installed _C, extension built just in time and cached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys, time
t = time.time()
import torch, fused_optim
p = torch.randn(10, requires_grad=True); p.grad = torch.ones(10)
fused_optim.Adam([p], lr=0.1).step()
print("module", fused_optim._C.__file__)
print("cuda", fused_optim.build_info()["cuda_compiled"])
"""


def _jit_env(cache: Path, **extra: str) -> dict[str, str]:
    """A process that must build from the source tree (CPU kernels only, to keep the test short)."""
    return dict(
        os.environ,
        FUSED_OPTIM_JIT="1",
        FUSED_OPTIM_JIT_DIR=str(cache),
        FUSED_OPTIM_CPU_ONLY="1",
        PYTHONPATH=str(ROOT / "python"),
        MAX_JOBS=os.environ.get("MAX_JOBS", "2"),
        **extra,
    )


def _run(tmp_path: Path) -> str:
    env = _jit_env(tmp_path)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_jit_build_then_cache_hit(tmp_path: Path):
    first = _run(tmp_path)
    module = next(line.split(" ", 1)[1] for line in first.splitlines() if line.startswith("module"))
    assert module.startswith(str(tmp_path)), "the JIT build must come from the cache folder, not an installed _C"
    assert "cuda False" in first
    built = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.suffix in (".so", ".o")}
    assert built, "no objects were built"
    second = _run(tmp_path)
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.suffix in (".so", ".o")} == built, (
        "the second import rebuilt"
    )
    assert len([d for d in tmp_path.iterdir() if d.is_dir()]) == 1


def test_cache_key_tracks_sources(tmp_path: Path):
    from fused_optim import _build, _loader

    key = _loader.cache_key()
    assert key == _loader.cache_key()
    # a copy of the tree with one header changed gets another key
    import shutil

    for d in ("csrc", "cuda"):
        shutil.copytree(ROOT / d, tmp_path / d)
    assert _loader.cache_key(tmp_path) == key
    (tmp_path / "csrc" / "rules" / "adam.h").write_text("// changed\n")
    assert _loader.cache_key(tmp_path) != key
    assert all(p.exists() for p in _build.all_source_files(ROOT))


def test_missing_sources_give_a_clear_error(monkeypatch, tmp_path: Path):
    from fused_optim import _build, _loader

    monkeypatch.setattr(_build, "ROOT", tmp_path)
    with pytest.raises(ImportError, match="cannot be built just in time"):
        _loader._jit_build()


def test_no_compiler_gives_an_error_that_says_what_to_do(tmp_path: Path):
    env = _jit_env(tmp_path, CXX=str(tmp_path / "no-such-compiler"))
    out = subprocess.run(
        [sys.executable, "-c", "import fused_optim"], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode != 0
    assert "building the C++/CUDA extension just in time failed" in out.stderr
    assert "C++17 compiler" in out.stderr
