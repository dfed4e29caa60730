"""nnlab: a from-scratch neural-network lab compiled with Numba, built around vanishing and
exploding gradients -- how they arise, how to see them, how to fix them, and how to be sure every
gradient is right.

>>> import nnlab as nl
>>> "swish" in nl.activations.names()
True
"""

from . import _config

__version__ = "0.1.0"

_kernel_stamp = _config.guard_kernel_cache(__version__)  # before any cached kernel is loaded

from . import (  # noqa: E402
    activations,
    backend,
    charts,
    clip,
    datasets,
    demos,
    diagnostics,
    errors,
    ewa,
    gradcheck,
    init,
    layers,
    losses,
    optim,
    sweep,
    warmup,
)
from .checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from .diagnostics import GradientMonitor  # noqa: E402
from .errors import NnlabError  # noqa: E402
from .layers import (  # noqa: E402
    LSTM,
    RBF,
    RNN,
    Activation,
    AlphaDropout,
    BatchNorm,
    Dense,
    Dropout,
    Highway,
    Layer,
    LayerNorm,
    Maxout,
    Residual,
)
from .network import Sequential, load, model_from_json  # noqa: E402
from .trainer import History, Trainer  # noqa: E402

__all__ = [
    "activations", "backend", "charts", "clip", "datasets", "demos", "diagnostics", "errors", "ewa", "gradcheck",
    "init", "layers", "losses", "optim", "sweep", "warmup", "Sequential", "load", "model_from_json", "Trainer", "History",
    "GradientMonitor", "NnlabError", "__version__", "save_checkpoint", "load_checkpoint",
    "Layer",
    "Activation",
    "AlphaDropout",
    "BatchNorm",
    "Dense",
    "Dropout",
    "Highway",
    "LSTM",
    "LayerNorm",
    "Maxout",
    "RBF",
    "RNN",
    "Residual",
]
