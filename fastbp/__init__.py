"""fastbp: JIT-compiled backpropagation for fully-connected networks on the CPU."""

from . import reference
from ._config import threads
from .gradcheck import gradcheck
from .io import load
from .network import History, Network, TrainingDivergedError

__version__ = "0.1.0"

__all__ = [
    "History",
    "Network",
    "TrainingDivergedError",
    "gradcheck",
    "load",
    "reference",
    "threads",
]
