"""Loads the compiled core: the installed ``fused_optim._C``, or a just-in-time build from the source tree.

Research code can put ``python/`` on ``sys.path`` and import fused_optim without installing it: when no compiled
``_C`` is importable (or FUSED_OPTIM_JIT=1), the extension is built with ``torch.utils.cpp_extension.load`` from
``csrc/`` and ``cuda/`` into a cache keyed by the torch version, the CUDA version and a hash of the sources, so the
second import does not rebuild. Only one copy of the library may load in a process (the operator namespace can be
registered once), so this module loads at most one.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from types import ModuleType

import torch

_module: ModuleType | None = None


def load() -> ModuleType:
    """Return the compiled module, importing or building it on first use."""
    global _module
    if _module is None:
        _module = _jit_build() if os.environ.get("FUSED_OPTIM_JIT") == "1" else _import_or_build()
    return _module


def _import_or_build() -> ModuleType:
    try:
        module = importlib.import_module("fused_optim._C")
    except ModuleNotFoundError:
        return _jit_build()
    except ImportError as e:
        raise ImportError(
            f"fused_optim._C is installed but failed to load ({e}). It was probably built for another torch "
            f"(you have {torch.__version__}); rebuild it with `pip install --no-build-isolation .`, or set "
            "FUSED_OPTIM_JIT=1 to build from the source tree."
        ) from e
    if module.torch_version != torch.__version__.split("+")[0]:
        raise ImportError(
            f"fused_optim._C was built for torch {module.torch_version} but torch {torch.__version__} is "
            "installed; rebuild it with `pip install --no-build-isolation .`."
        )
    return module


def cache_key(root: Path | None = None) -> str:
    """Identifies a JIT build: torch version, CUDA version, CPU-only flag and a hash of every source file."""
    from . import _build

    root = root or _build.ROOT
    digest = hashlib.sha256()
    for path in _build.all_source_files(root):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    cuda = torch.version.cuda if _build.with_cuda() else "cpu"
    return f"torch{torch.__version__}-cuda{cuda}-{digest.hexdigest()[:16]}".replace("+", "_").replace(".", "_")


def _jit_build() -> ModuleType:
    from torch.utils import cpp_extension

    from . import _build

    if not (_build.ROOT / "csrc" / "ops.cpp").exists():
        raise ImportError(
            "fused_optim._C is not installed and the C++ sources are not beside this package, so it cannot be "
            "built just in time. Install fused_optim with `pip install --no-build-isolation .` from a checkout."
        )
    cuda = _build.with_cuda()
    if cuda:
        _build.prepare_cuda_env()
    key = cache_key()
    cache = Path(os.environ.get("FUSED_OPTIM_JIT_DIR", Path.home() / ".cache" / "fused_optim" / "jit")) / key
    cache.mkdir(parents=True, exist_ok=True)
    defines = [f"-D{name}={value}" for name, value in _build.macros(cuda)]
    try:
        return cpp_extension.load(
            name="fused_optim_C",
            sources=_build.sources(cuda),
            extra_cflags=_build.CXX_FLAGS + defines,
            extra_cuda_cflags=_build.NVCC_FLAGS + defines,
            extra_ldflags=_build.LINK_FLAGS,
            extra_include_paths=[str(_build.ROOT / "csrc")],
            build_directory=str(cache),
            with_cuda=cuda,
            verbose=os.environ.get("FUSED_OPTIM_JIT_VERBOSE") == "1",
        )
    except Exception as e:  # compiler missing, compile error, ninja missing...
        raise ImportError(
            f"fused_optim: building the C++/CUDA extension just in time failed: {e}\n"
            "It needs a C++17 compiler (g++ or clang++) and ninja (`pip install ninja`); for CUDA kernels also a "
            "CUDA toolkit matching torch.version.cuda (set CUDA_HOME), or FUSED_OPTIM_CPU_ONLY=1 to skip them. "
            "FUSED_OPTIM_JIT_VERBOSE=1 shows the compiler's output; or install the package with "
            "`pip install --no-build-isolation .`."
        ) from e
