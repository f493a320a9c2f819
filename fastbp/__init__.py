"""fastbp: JIT-compiled backpropagation for fully-connected networks on the CPU."""

from . import datasets, reference
from ._config import threads
from .estimators import MLPClassifier, MLPRegressor
from .gradcheck import gradcheck
from .io import load
from .network import History, Network, TrainingDivergedError
from .plotting import plot_history

__version__ = "0.1.0"

__all__ = [
    "History",
    "MLPClassifier",
    "MLPRegressor",
    "Network",
    "TrainingDivergedError",
    "datasets",
    "gradcheck",
    "load",
    "plot_history",
    "reference",
    "threads",
]
