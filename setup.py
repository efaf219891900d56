"""Builds fused_optim and its compiled core fused_optim._C.

    pip install --no-build-isolation .        # or -e . for an editable install

The CPU kernels are always built; the CUDA kernels too when torch is a CUDA build and a CUDA toolkit is found
(CUDA_HOME, else /usr/local/cuda, else the folder of nvcc). FUSED_OPTIM_CPU_ONLY=1 skips them. With no GPU visible
and TORCH_CUDA_ARCH_LIST unset, a default list of architectures is used (see _build.default_arch_list).
"""

import importlib.util
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_build", ROOT / "python" / "fused_optim" / "_build.py")
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)

cuda = _build.with_cuda()
if cuda:
    _build.prepare_cuda_env()
# Imported only now: cpp_extension reads CUDA_HOME once, at import.
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

Extension = CUDAExtension if cuda else CppExtension
defines = [f"-D{name}={value}" for name, value in _build.macros(cuda)]
sanitize_compile, sanitize_link = _build.sanitizer_flags()

ext = Extension(
    name="fused_optim._C",
    sources=[str(Path(s).relative_to(ROOT)) for s in _build.sources(cuda, ROOT)],
    include_dirs=[str(ROOT / "csrc")],
    extra_compile_args={"cxx": _build.CXX_FLAGS + defines + sanitize_compile, "nvcc": _build.NVCC_FLAGS + defines},
    extra_link_args=_build.LINK_FLAGS + sanitize_link,
)

setup(
    name="fused_optim",
    version="0.1.0",
    description="Fused, mixed-precision-safe PyTorch optimizers (CPU and CUDA multi-tensor kernels)",
    package_dir={"": "python"},
    packages=find_packages("python"),
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    install_requires=["torch>=2.11"],  # the oldest tested (README)
    extras_require={"plot": ["matplotlib"], "test": ["pytest", "hypothesis", "numpy"]},
)
