"""Layers: each family one module of layer classes; the kernels of each kind live in
:mod:`nnlab.kernels` (one module per family). See docs/layers.md for every layer's equations.

| layer | module | what it is for |
|---|---|---|
| ``Dense``, ``Activation`` | :mod:`.dense` | affine map + activation; an activation alone |
| ``Residual`` | :mod:`.residual` | y = x + F(x): the skip against vanishing gradients in deep stacks |
| ``RNN``, ``LSTM`` | :mod:`.recurrent` | sequences (N, T, F): recurrence over time, full or truncated BPTT; the LSTM's cell carries the gradient across many steps |
"""

from ._base import LAYER_TYPES, Layer, from_config, register
from .dense import Activation, Dense
from .recurrent import LSTM, RNN
from .residual import Residual

__all__ = ["LAYER_TYPES", "Layer", "from_config", "register", "Activation", "Dense", "Residual", "RNN", "LSTM"]
