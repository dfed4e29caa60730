"""nnlab: a from-scratch neural-network lab compiled with Numba, built around vanishing and
exploding gradients -- how they arise, how to see them, how to fix them, and how to be sure every
gradient is right.

>>> import nnlab as nl
>>> "swish" in nl.activations.names()
True
"""

from . import activations, clip, datasets, demos, errors, ewa, gradcheck, init, losses, optim
from .errors import NnlabError
from .network import Dense, Layer, Sequential, load
from .trainer import History, Trainer

__version__ = "0.1.0"

__all__ = ["activations", "clip", "datasets", "demos", "errors", "ewa", "gradcheck", "init", "losses",
           "optim", "Dense", "Layer", "Sequential", "load", "Trainer", "History", "NnlabError",
           "__version__"]
