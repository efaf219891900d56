import pytest
import torch

import fused_optim

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=fused_optim._C.cpu_supported_isas())
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
