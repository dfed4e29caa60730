"""Exponentially weighted average (EWA), as in the source text ([S1])::

    V_0 = 0
    V_t = β·V_{t−1} + (1 − β)·θ_t
    V̂_t = V_t / (1 − βᵗ)          (bias correction, optional)

V_t averages roughly the last 1/(1 − β) values (β = 0.9: about 10, β = 0.98: about 50); a larger β
is smoother but lags. Starting from V_0 = 0 biases the first values towards 0 -- V_1 = (1 − β)θ_1 --
and dividing by 1 − βᵗ removes exactly that start-up bias (a constant input c gives V̂_t = c from
t = 1); for large t the correction tends to 1. This is the m_t and v_t of momentum, RMSProp and Adam.

>>> import nnlab as nl
>>> avg = nl.ewa.EWA(beta=0.9)
>>> [round(avg.update(10.0), 6) for _ in range(3)]          # biased towards V_0 = 0
[1.0, 1.9, 2.71]
>>> avg = nl.ewa.EWA(beta=0.9, bias_correction=True)
>>> [round(avg.update(10.0), 6) for _ in range(3)]
[10.0, 10.0, 10.0]
>>> nl.ewa.ewa([10.0, 10.0, 0.0], beta=0.5).tolist()
[5.0, 7.5, 3.75]
"""

import numpy as np

from . import _validate
from .errors import HyperparameterError, ShapeError
from .kernels import optim_cpu as K

__all__ = ["EWA", "ewa"]


def _beta(beta):
    b = _validate.real_scalar(beta, "beta")
    if not 0.0 <= b < 1.0:
        raise HyperparameterError(f"beta must be in [0, 1); got {b}")
    return b


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise HyperparameterError(f"{name} must be True or False; got {value!r}")
    return bool(value)


class EWA:
    """A running exponentially weighted average of scalars or of same-shape arrays.

    ``update(x)`` adds θ_t = x and returns the current average (V̂_t with ``bias_correction``,
    else V_t; a float for scalar input, a new array otherwise). ``value`` is that average,
    ``raw`` the uncorrected V_t, ``t`` the number of updates.
    """

    def __init__(self, beta=0.9, bias_correction=False):
        self.beta = _beta(beta)
        self.bias_correction = _flag(bias_correction, "bias_correction")
        self.t = 0
        self.raw = None
        self._scalar = None

    def __repr__(self):
        return f"EWA(beta={self.beta!r}, bias_correction={self.bias_correction!r}, t={self.t})"

    def update(self, x):
        """Add one observation (finite; same shape as the previous ones) and return the average."""
        scalar = np.ndim(x) == 0
        x = _validate.as_float_array(x, "x", dtype=np.float64)
        if scalar:
            x = x.reshape(())
        if self.raw is not None and x.shape != self.raw.shape:
            raise ShapeError(f"x has shape {x.shape} but the average has shape {self.raw.shape}")
        v0 = np.zeros(x.size) if self.raw is None else self.raw.reshape(-1)
        out = np.empty((1, x.size))
        raw = K.ewa_series(x.reshape(1, -1), self.beta, v0, self.t, self.bias_correction, out)
        self._scalar = scalar
        self.raw = raw.reshape(x.shape)
        self.t += 1
        return self.value

    @property
    def value(self):
        """The current average (None before the first update)."""
        if self.raw is None:
            return None
        v = self.raw / (1.0 - self.beta ** self.t) if self.bias_correction else self.raw.copy()
        return float(v) if self._scalar else v

    def reset(self):
        """Back to V_0 = 0, t = 0."""
        self.t = 0
        self.raw = None


def ewa(x, beta=0.9, bias_correction=False):
    """The whole series V_1..V_T of a sequence ``x`` (shape (T,) or (T, ...)), one compiled pass;
    bias-corrected with ``bias_correction``. Returns a float64 array of ``x``'s shape."""
    beta = _beta(beta)
    bias_correction = _flag(bias_correction, "bias_correction")
    if np.ndim(x) == 0:
        raise ShapeError("x must be a sequence (shape (T,) or (T, ...)); got a scalar")
    x = _validate.as_float_array(x, "x", dtype=np.float64)
    x2 = x.reshape(x.shape[0], -1)
    out = np.empty_like(x2)
    K.ewa_series(x2, beta, np.zeros(x2.shape[1]), 0, bias_correction, out)
    return out.reshape(x.shape)
