"""The CUDA kernels of ``cuda/``, run on the CPU (see emulation.h): a test session on a machine without a GPU can
put them in place of the CPU kernels and run the optimizer tests against torch.optim through them.

    FUSED_OPTIM_CUDA_EMULATION=1 python -m pytest tests/test_adam.py     # or: bash .ci/cuda_emulation

tests/conftest.py calls :func:`load` when ``FUSED_OPTIM_CUDA_EMULATION`` is set. Built like a CUDA 13 build (32 KB
kernel arguments), with the project's CPU flags; ``FUSED_OPTIM_SANITIZE`` adds the sanitizers as for ``_C``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _build_module():
    spec = importlib.util.spec_from_file_location("_fused_optim_build", ROOT / "python" / "fused_optim" / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(verbose: bool = False) -> None:
    """Builds (once; cached by torch.utils.cpp_extension) and loads the emulated kernels, which from then on serve
    every fused_optim op called with CPU tensors. fused_optim must be imported first: its CPU kernels are the ones
    replaced."""
    from torch.utils.cpp_extension import load as load_extension

    import fused_optim  # noqa: F401  (registers the op schemas the emulated kernels implement)

    build = _build_module()
    sanitize_compile, sanitize_link = build.sanitizer_flags()
    out = Path(os.environ.get("FUSED_OPTIM_EMULATION_BUILD_DIR", ROOT / "build" / "cuda_emulation"))
    name = "fused_optim_cuda_emulation" + ("_sanitized" if sanitize_compile else "")
    out = out / name
    out.mkdir(parents=True, exist_ok=True)
    # One translation unit per kernel file (their file-local names would clash in one), the emulation first.
    sources = []
    for source in build.CUDA_SOURCES:
        wrapper = out / (Path(source).stem + "_emulated.cpp")
        text = f'#include "emulation.h"\n#include "{ROOT / source}"\n'
        if not wrapper.exists() or wrapper.read_text() != text:
            wrapper.write_text(text)
        sources.append(str(wrapper))
    sources += [str(ROOT / "csrc" / "common" / "tensor_lists.cpp")]
    sources += [str(HERE / name) for name in ("runtime.cpp", "selftest.cpp")]
    # The project's CPU flags, at -O2 (the sanitizers bring their own -O1 -g).
    flags = [f for f in build.CXX_FLAGS if f != "-O3"] + ([] if sanitize_compile else ["-O2"])
    flags += [
        "-DFUSED_OPTIM_CUDA_EMULATION",
        "-DCUDART_VERSION=13000",  # as a CUDA 13 build: 32 KB of kernel arguments
        # Its own copies of shared code (tensor_lists.cpp) must not resolve to _C's, nor _C's to these.
        "-fvisibility=hidden",
        # The fibers' first switch returns to an address no call pushed, which a CET shadow stack would refuse.
        "-fcf-protection=none",
    ]
    load_extension(
        name=name,
        sources=sources,
        extra_include_paths=[str(HERE), str(ROOT / "csrc")],  # HERE first: the c10/cuda stand-ins
        extra_cflags=flags + sanitize_compile,
        extra_ldflags=build.LINK_FLAGS + sanitize_link,
        build_directory=str(out),
        is_python_module=False,
        verbose=verbose,
    )
    assert torch.ops.fused_optim_emulation.launches() == 0, "the emulated kernels were loaded twice"
