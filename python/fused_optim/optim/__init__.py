"""fused_optim's optimizers: torch.optim.Optimizer subclasses on the fused kernels."""

from ._base import FusedOptimizer
from .adam import Adam, AdamW
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "FusedOptimizer"]
