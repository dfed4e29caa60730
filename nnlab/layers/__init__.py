"""Layers: each family one module of layer classes; the kernels of each kind live in
:mod:`nnlab.kernels` (one module per family). See docs/layers.md for every layer's equations.

| layer | module | what it is for |
|---|---|---|
| ``Dense``, ``Activation`` | :mod:`.dense` | affine map + activation; an activation alone |
| ``Residual`` | :mod:`.residual` | y = x + F(x): the skip against vanishing gradients in deep stacks |
| ``BatchNorm``, ``LayerNorm`` | :mod:`.norm` | normalise per feature over the batch / per row over the features, then γ·x̂ + β: pre-activations kept out of saturation, gradients independent of the weights' scale |
"""

from ._base import LAYER_TYPES, Layer, from_config, register
from .dense import Activation, Dense
from .norm import BatchNorm, LayerNorm
from .residual import Residual

LAYER_CLASSES = (
    "Activation",
    "BatchNorm",
    "Dense",
    "LayerNorm",
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
    "BatchNorm",
    "Dense",
    "LayerNorm",
    "Residual",
]
