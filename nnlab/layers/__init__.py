"""Layers: each family one module of layer classes; the kernels of each kind live in
:mod:`nnlab.kernels` (one module per family). See docs/layers.md for every layer's equations.

| layer | module | what it is for |
|---|---|---|
| ``Dense``, ``Activation`` | :mod:`.dense` | affine map + activation; an activation alone |
| ``Residual`` | :mod:`.residual` | y = x + F(x): the skip against vanishing gradients in deep stacks |
"""

from ._base import LAYER_TYPES, Layer, from_config, register
from .dense import Activation, Dense
from .residual import Residual

__all__ = ["LAYER_TYPES", "Layer", "from_config", "register", "Activation", "Dense", "Residual"]
