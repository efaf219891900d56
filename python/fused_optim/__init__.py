"""fused_optim: fused, mixed-precision-safe optimizers for PyTorch, on CPU and CUDA.

    import fused_optim
    opt = fused_optim.AdamW(model.parameters(), lr=3e-4)

The optimizers are drop-in torch.optim.Optimizer subclasses (same arguments, defaults, state keys and
state_dict). Their kernels are the operators in ``torch.ops.fused_optim``, registered by the compiled core.
"""

from __future__ import annotations

from . import _loader

_C = _loader.load()  # registers torch.ops.fused_optim.* (CPU and, when built, CUDA kernels)

# _meta's fake kernels need the operators registered first.
from . import _meta, amp, lr_scheduler  # noqa: E402, F401
from .clip import clip_grad_norm_  # noqa: E402
from .factory import create_optimizer, list_optimizers  # noqa: E402
from .lr_finder import LRFinderResult, find_lr  # noqa: E402
from .optim import LAMB, SGD, Adagrad, Adam, AdamW, FusedOptimizer, Lion, RMSprop  # noqa: E402
from .profiling import StepProfile, profile_step  # noqa: E402

__version__ = "0.1.0"


def build_info() -> dict[str, object]:
    """How the loaded core was built: CUDA kernels or not, CUDA and torch versions, CPU instruction sets."""
    return {
        "cuda_compiled": bool(_C.cuda_compiled),
        "cuda_version": _C.cuda_version,
        "torch_version": _C.torch_version,
        "cpu_isa": _C.cpu_isa(),
        "cpu_supported_isas": list(_C.cpu_supported_isas()),
        "module": _C.__file__,
    }


__all__ = [
    "SGD",
    "RMSprop",
    "Adagrad",
    "Adam",
    "AdamW",
    "Lion",
    "LAMB",
    "FusedOptimizer",
    "clip_grad_norm_",
    "create_optimizer",
    "list_optimizers",
    "profile_step",
    "find_lr",
    "LRFinderResult",
    "StepProfile",
    "amp",
    "lr_scheduler",
    "build_info",
    "__version__",
]
