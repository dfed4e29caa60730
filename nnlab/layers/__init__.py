"""Layers: each family one module of layer classes; the kernels of each kind live in
:mod:`nnlab.kernels` (one module per family). See docs/layers.md for every layer's equations.

| layer | module | what it is for |
|---|---|---|
| ``Dense``, ``Activation`` | :mod:`.dense` | affine map + activation; an activation alone |
| ``Residual`` | :mod:`.residual` | y = x + F(x): the skip against vanishing gradients in deep stacks |
| ``BatchNorm``, ``LayerNorm`` | :mod:`.norm` | normalise per feature over the batch / per row over the features, then γ·x̂ + β: pre-activations kept out of saturation, gradients independent of the weights' scale |
| ``Dropout``, ``AlphaDropout`` | :mod:`.dropout` | random masks in training (AlphaDropout: for SELU nets), identity in eval |
| ``Highway`` | :mod:`.highway` | y = T·H(x) + (1 − T)·x: a learned gate that carries the input (and its gradient) |
| ``Maxout`` | :mod:`.maxout` | the largest of k affine pieces per unit: derivative 1 on the winning piece |
| ``RBF`` | :mod:`.rbf` | Gaussian radial basis units exp(−γ‖x − c‖²) with learnable centres |
| ``RNN``, ``LSTM`` | :mod:`.recurrent` | sequences (N, T, F): recurrence over time, full or truncated BPTT; the LSTM's cell carries the gradient across many steps |
"""

from ._base import LAYER_TYPES, Layer, from_config, register
from .dense import Activation, Dense
from .dropout import AlphaDropout, Dropout
from .highway import Highway
from .maxout import Maxout
from .norm import BatchNorm, LayerNorm
from .rbf import RBF
from .recurrent import LSTM, RNN
from .residual import Residual

LAYER_CLASSES = (
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
)
"""The public layer classes (exported by ``nnlab`` too)."""

__all__ = [
    "LAYER_TYPES",
    "LAYER_CLASSES",
    "Layer",
    "from_config",
    "register",
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
