"""CMakeLists.txt builds the operators as a plain C++ library against libtorch, from the same source list."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fused_optim import _build

ROOT = Path(__file__).resolve().parents[1]

SMOKE = """
import sys, torch
torch.ops.load_library(sys.argv[1])
p, g = torch.randn(1000, dtype=torch.float64), torch.randn(1000, dtype=torch.float64)
q = p.clone().requires_grad_()
torch.ops.fused_optim.adam_([p], [g], [torch.zeros_like(p)], [torch.zeros_like(p)], [], [torch.tensor(0.0)],
    lr=torch.tensor(0.1), beta1=0.9, beta2=0.999, weight_decay=0.1, eps=1e-8, amsgrad=False, maximize=False,
    decoupled_weight_decay=True)
q.grad = g
torch.optim.AdamW([q], lr=0.1, weight_decay=0.1, foreach=False).step()
torch.testing.assert_close(p, q.detach())
print("cuda kernels:", torch._C._dispatch_has_kernel_for_dispatch_key("fused_optim::adam_", "CUDA"))
"""


def cmake_args(cuda: bool) -> list[str]:
    args = [
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        f"-DFUSED_OPTIM_WITH_CUDA={'ON' if cuda else 'OFF'}",
    ]
    if torch.version.cuda:  # torch's CMake config looks for the toolkit even when we build no CUDA code
        home = _build.cuda_home()
        args += [f"-DCUDA_TOOLKIT_ROOT_DIR={home}", f"-DCMAKE_CUDA_COMPILER={home}/bin/nvcc"]
        nvrtc = list(Path(site.getsitepackages()[0], "nvidia").glob("cu*/lib/libnvrtc.so.*"))
        if nvrtc and not Path(home, "lib64", "libnvrtc.so").exists():  # a toolkit without nvrtc: use torch's
            args.append(f"-DCUDA_nvrtc_LIBRARY={nvrtc[0]}")
    return args


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed")
def test_cmake_build_and_load(tmp_path: Path):
    cuda = _build.with_cuda()
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=os.environ.get("TORCH_CUDA_ARCH_LIST") or "9.0")
    configure = subprocess.run(
        ["cmake", "-S", str(ROOT), "-B", str(tmp_path), *cmake_args(cuda)], env=env, capture_output=True, text=True
    )
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    build = subprocess.run(
        ["cmake", "--build", str(tmp_path), "-j", os.environ.get("MAX_JOBS", "2")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    lib = tmp_path / "libfused_optim.so"
    smoke = subprocess.run([sys.executable, "-c", SMOKE, str(lib)], capture_output=True, text=True)
    assert smoke.returncode == 0, smoke.stderr[-3000:]
    assert f"cuda kernels: {cuda}" in smoke.stdout
