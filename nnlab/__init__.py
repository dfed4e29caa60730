"""nnlab: a from-scratch neural-network lab compiled with Numba, built around vanishing and
exploding gradients -- how they arise, how to see them, how to fix them, and how to be sure every
gradient is right.

>>> import nnlab as nl
>>> "swish" in nl.activations.names()
True
"""

from . import activations, errors, gradcheck, init, losses
from .errors import NnlabError
from .network import Dense, Layer, Sequential, load

__version__ = "0.1.0"

__all__ = ["activations", "errors", "gradcheck", "init", "losses", "Dense", "Layer", "Sequential",
           "load", "NnlabError", "__version__"]
