"""How fused_optim._C is built: one source list and one set of flags for setup.py and the JIT loader.

Imported by ``setup.py`` (by file path, before the package is installed) and by ``_loader.py``; needs only the
standard library and torch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: The repository root when running from a source tree (setup.py, JIT builds).
ROOT = Path(__file__).resolve().parents[2]

CPU_SOURCES = [
    "csrc/ops.cpp",
    "csrc/python_module.cpp",
    "csrc/common/tensor_lists.cpp",
    "csrc/cpu/isa.cpp",
    "csrc/cpu/adam.cpp",
    "csrc/cpu/sgd.cpp",
    "csrc/cpu/rmsprop.cpp",
    "csrc/cpu/adagrad.cpp",
    "csrc/cpu/lion.cpp",
    "csrc/cpu/lamb.cpp",
    "csrc/cpu/norm.cpp",
    # The same kernels, compiled once per instruction set (csrc/cpu/isa_target.h).
    "csrc/cpu/kernels_default.cpp",
    "csrc/cpu/kernels_avx2.cpp",
    "csrc/cpu/kernels_avx512.cpp",
]
CUDA_SOURCES = [
    "cuda/adam.cu",
    "cuda/sgd.cu",
    "cuda/rmsprop.cu",
    "cuda/adagrad.cu",
    "cuda/lion.cu",
    "cuda/lamb.cu",
    "cuda/norm.cu",
]
#: Python-facing sources, left out of the plain C++ library that CMakeLists.txt builds.
PYTHON_SOURCES = ["csrc/python_module.cpp"]
HEADER_DIRS = ["csrc", "csrc/rules", "csrc/cpu", "csrc/common", "cuda"]

# -fopenmp: at::parallel_for is a header template whose OpenMP pragma is compiled into our code; without it the
# CPU engine runs on one thread. The OpenMP runtime resolves to the libgomp.so.1 torch has already loaded.
# -ffp-contract=off: GCC would otherwise fuse a*b+c into an FMA where it sees fit, differently in each template
# instantiation, so the same fp32 math would round differently with a float32 or a split master, or with bf16
# instead of fp32 gradients; split masters promise bit-identical fp32 trajectories. nvcc's --fmad=false is the same
# promise on the GPU (and brings its results closer to the CPU's); the kernels are bound by memory, not by flops.
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-Wno-psabi", "-Wno-unknown-pragmas"]
LINK_FLAGS = ["-fopenmp"]
NVCC_FLAGS = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "--fmad=false"]


def sanitizer_flags() -> tuple[list[str], list[str]]:
    """(compile, link) flags for FUSED_OPTIM_SANITIZE=address,undefined (.ci/sanitize): the sanitizers named, a
    debuggable build, and every report fatal so a test run cannot pass over one. vptr is left out: it checks the
    dynamic types of torch's classes, whose type info lives in libraries built without it."""
    kinds = os.environ.get("FUSED_OPTIM_SANITIZE", "")
    if not kinds:
        return [], []
    compile_flags = [f"-fsanitize={kinds}", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g", "-O1"]
    if "undefined" in kinds:
        compile_flags.append("-fno-sanitize=vptr")
    return compile_flags, [f"-fsanitize={kinds}"]


def cpu_only() -> bool:
    """True when FUSED_OPTIM_CPU_ONLY=1 asks for a build without the CUDA kernels."""
    return os.environ.get("FUSED_OPTIM_CPU_ONLY", "0") not in ("", "0")


def cuda_home() -> str | None:
    """The CUDA toolkit to build with: $CUDA_HOME, else /usr/local/cuda, else the folder above nvcc."""
    env = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if env and Path(env, "bin", "nvcc").exists():
        return env
    if Path("/usr/local/cuda/bin/nvcc").exists():
        return "/usr/local/cuda"
    nvcc = shutil.which("nvcc")
    if nvcc:
        return str(Path(nvcc).resolve().parent.parent)
    return None


def with_cuda() -> bool:
    """Build the CUDA kernels when torch is a CUDA build and a toolkit is found (a GPU need not be visible)."""
    import torch

    return not cpu_only() and torch.version.cuda is not None and cuda_home() is not None


def default_arch_list(cuda_version: str) -> str:
    """Architectures to compile for when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset.

    One cubin per major family that current toolkits support (a cubin runs on later minor versions of its
    major), plus PTX of the newest so future GPUs can JIT it.
    """
    major, minor = (int(x) for x in cuda_version.split(".")[:2])
    if major >= 13:
        return "7.5;8.0;8.6;9.0;10.0;12.0+PTX"
    if (major, minor) >= (12, 8):
        return "7.0;7.5;8.0;8.6;9.0;10.0;12.0+PTX"
    return "7.0;7.5;8.0;8.6;9.0+PTX"


def prepare_cuda_env() -> None:
    """Set CUDA_HOME and a default TORCH_CUDA_ARCH_LIST for torch.utils.cpp_extension.

    cpp_extension resolves its CUDA_HOME once, when imported, and without the variable it takes the folder above
    the first nvcc on PATH, which on some machines is a symlink in /usr/local/bin (it then fails to link
    -lcudart). So set the variable, and correct the module if it was imported already.
    """
    import sys

    import torch

    home = cuda_home()
    if home:
        os.environ.setdefault("CUDA_HOME", home)
        loaded = sys.modules.get("torch.utils.cpp_extension")
        if loaded is not None:
            loaded.CUDA_HOME = os.environ["CUDA_HOME"]
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # torch's own default needs a visible GPU (without one it raises IndexError).
        os.environ["TORCH_CUDA_ARCH_LIST"] = default_arch_list(torch.version.cuda)


def macros(cuda: bool) -> list[tuple[str, str]]:
    """Preprocessor definitions, as (name, value) pairs."""
    if not cuda:
        return []
    import torch

    major, minor = torch.version.cuda.split(".")[:2]
    return [("FUSED_OPTIM_WITH_CUDA", "1"), ("FUSED_OPTIM_CUDA_MAJOR", major), ("FUSED_OPTIM_CUDA_MINOR", minor)]


def sources(cuda: bool, root: Path = ROOT) -> list[str]:
    """Absolute paths of the sources to compile."""
    return [str(root / s) for s in CPU_SOURCES + (CUDA_SOURCES if cuda else [])]


def all_source_files(root: Path = ROOT) -> list[Path]:
    """Every file whose change must trigger a rebuild (sources and headers)."""
    files = [root / s for s in CPU_SOURCES + CUDA_SOURCES]
    for d in HEADER_DIRS:
        files += sorted(p for p in (root / d).iterdir() if p.suffix in (".h", ".cuh"))
    return files
