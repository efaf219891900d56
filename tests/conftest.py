import os

import pytest
import torch

import fused_optim

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

#: FUSED_OPTIM_CUDA_EMULATION=1: the CUDA kernels, run on the CPU, serve every op called with CPU tensors
#: (tests/cuda_emulation), so the CPU tests check them against torch.optim.
CUDA_EMULATION = os.environ.get("FUSED_OPTIM_CUDA_EMULATION", "0") not in ("", "0")
if CUDA_EMULATION:
    from cuda_emulation import load as _load_cuda_emulation

    _load_cuda_emulation()


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


# Under the CUDA emulation the CPU kernels do not run, so one instruction set is enough.
@pytest.fixture(params=[fused_optim._C.cpu_isa()] if CUDA_EMULATION else fused_optim._C.cpu_supported_isas())
def cpu_isa(request: pytest.FixtureRequest):
    """Runs a test once per CPU instruction set this machine supports (DEFAULT, AVX2, AVX512)."""
    before = fused_optim._C.cpu_isa()
    fused_optim._C.set_cpu_isa(request.param)
    yield request.param
    fused_optim._C.set_cpu_isa(before)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter) -> None:
    if CUDA_EMULATION:
        launches = torch.ops.fused_optim_emulation.launches()
        where = "in the kernels" if torch.ops.fused_optim_emulation.scalars_on_device() else "on the host"
        terminalreporter.write_line(
            f"CUDA emulation: {launches} launches of the emulated CUDA kernels, lr/grad_scale/found_inf read {where}"
        )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Tests that passed without ever reaching the emulated kernels checked the CPU kernels instead.
    if CUDA_EMULATION and exitstatus == 0 and session.testscollected and not torch.ops.fused_optim_emulation.launches():
        session.exitstatus = 1
        print("\nCUDA emulation: the tests launched no emulated kernel")
