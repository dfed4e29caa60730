"""Weight initialisers (seeded): one registry of name -> function, as for activations.

Weights are (n_in, n_out), so fan_in = shape[0] and fan_out = shape[1].

| name | distribution |
|---|---|
| zeros, ones, constant(value) | constant |
| normal(mean=0, std=0.05), uniform(low=-0.05, high=0.05) | as given (Keras' defaults) |
| xavier_normal(gain=1) / glorot_normal | N(0, gain²·2/(fan_in+fan_out)) |
| xavier_uniform(gain=1) / glorot_uniform | U(±gain·√(6/(fan_in+fan_out))) |
| he_normal(mode='fan_in') / kaiming_normal | N(0, 2/fan) |
| he_uniform(mode='fan_in') / kaiming_uniform | U(±√(6/fan)) |
| lecun_normal | N(0, 1/fan_in) -- the one for SELU |
| lecun_uniform | U(±√(3/fan_in)) |
| orthogonal(gain=1) | gain·Q of a QR decomposition, sign-corrected (as torch.nn.init.orthogonal_) |

>>> import numpy as np, nnlab as nl
>>> w = nl.init.get("he_normal")((1000, 10), np.random.default_rng(0))
>>> bool(0.85 < w.std() * np.sqrt(1000 / 2) < 1.15)
True
"""

import math

import numpy as np

from . import _validate
from .errors import HyperparameterError, ShapeError, UnknownNameError


def _fans(shape):
    if len(shape) != 2:
        raise ShapeError(f"this initializer needs a 2-D (n_in, n_out) shape; got {shape}")
    return shape[0], shape[1]


def _fan(shape, mode):
    fan_in, fan_out = _fans(shape)
    if mode == "fan_in":
        return fan_in
    if mode == "fan_out":
        return fan_out
    raise HyperparameterError(f"mode must be 'fan_in' or 'fan_out'; got {mode!r}")


def zeros(shape, rng):
    return np.zeros(shape)


def ones(shape, rng):
    return np.ones(shape)


def constant(shape, rng, value=0.0):
    return np.full(shape, value)


def normal(shape, rng, mean=0.0, std=0.05):
    return rng.normal(mean, std, shape)


def uniform(shape, rng, low=-0.05, high=0.05):
    return rng.uniform(low, high, shape)


def xavier_normal(shape, rng, gain=1.0):
    fan_in, fan_out = _fans(shape)
    return rng.normal(0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), shape)


def xavier_uniform(shape, rng, gain=1.0):
    fan_in, fan_out = _fans(shape)
    lim = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-lim, lim, shape)


def he_normal(shape, rng, mode="fan_in"):
    return rng.normal(0.0, math.sqrt(2.0 / _fan(shape, mode)), shape)


def he_uniform(shape, rng, mode="fan_in"):
    lim = math.sqrt(6.0 / _fan(shape, mode))
    return rng.uniform(-lim, lim, shape)


def lecun_normal(shape, rng):
    return rng.normal(0.0, math.sqrt(1.0 / _fans(shape)[0]), shape)


def lecun_uniform(shape, rng):
    lim = math.sqrt(3.0 / _fans(shape)[0])
    return rng.uniform(-lim, lim, shape)


def orthogonal(shape, rng, gain=1.0):
    rows, cols = _fans(shape)
    flat = rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q[:rows, :cols]


_REGISTRY = {
    "zeros": zeros, "ones": ones, "constant": constant, "normal": normal, "uniform": uniform,
    "xavier_normal": xavier_normal, "xavier_uniform": xavier_uniform,
    "he_normal": he_normal, "he_uniform": he_uniform,
    "lecun_normal": lecun_normal, "lecun_uniform": lecun_uniform, "orthogonal": orthogonal,
}
ALIASES = {"glorot_normal": "xavier_normal", "glorot_uniform": "xavier_uniform",
           "kaiming_normal": "he_normal", "kaiming_uniform": "he_uniform"}
_STRINGS = {"mode"}


def names():
    """Initializer names (aliases included)."""
    return list(_REGISTRY) + list(ALIASES)


class Initializer:
    """A named initializer with bound keyword arguments: ``init(shape, rng) -> float64 array``."""

    def __init__(self, name, **kwargs):
        if not isinstance(name, str):
            raise UnknownNameError(f"unknown initializer {name!r}; known: {', '.join(names())}")
        canonical = ALIASES.get(name, name)
        if canonical not in _REGISTRY:
            raise UnknownNameError(f"unknown initializer {name!r}; known: {', '.join(names())}")
        fn = _REGISTRY[canonical]
        allowed = fn.__code__.co_varnames[2:fn.__code__.co_argcount]
        unknown = set(kwargs) - set(allowed)
        if unknown:
            raise HyperparameterError(f"initializer {name!r} takes {list(allowed)}; unknown: {sorted(unknown)}")
        for k, v in kwargs.items():
            if k == "mode" and (not isinstance(v, str) or v not in ("fan_in", "fan_out")):
                raise HyperparameterError(f"initializer {name!r}: mode must be 'fan_in' or 'fan_out'; got {v!r}")
            if k not in _STRINGS:
                kwargs[k] = _validate.real_scalar(v, f"{name}.{k}", nonnegative=(k in ("std", "gain")))
        if canonical == "uniform" and kwargs.get("low", -0.05) > kwargs.get("high", 0.05):
            raise HyperparameterError("uniform needs low <= high")
        self.name = canonical
        self.kwargs = kwargs
        self._fn = fn

    def __call__(self, shape, rng):
        return np.asarray(self._fn(tuple(shape), rng, **self.kwargs), dtype=np.float64)

    def config(self):
        return {"name": self.name, **self.kwargs}

    def __repr__(self):
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"Initializer({self.name!r}{args})"


def get(name, **kwargs):
    """An :class:`Initializer` by name (an Initializer, or a float meaning 'constant', passes through)."""
    if isinstance(name, Initializer):
        return name
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        return Initializer("constant", value=float(name))
    if isinstance(name, dict):
        cfg = dict(name)
        return Initializer(cfg.pop("name"), **cfg)
    return Initializer(name, **kwargs)
