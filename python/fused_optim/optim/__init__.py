"""fused_optim's optimizers: torch.optim.Optimizer subclasses on the fused kernels."""

from ._base import FusedOptimizer
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lamb import LAMB
from .lion import Lion
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "RMSprop", "Adagrad", "Adam", "AdamW", "Lion", "LAMB", "FusedOptimizer"]
