"""Small built-in datasets that need no network access, all seeded.

| name | task | X | y |
|---|---|---|---|
| ``xor`` | 2 classes | (n, 2): the four XOR corners plus Gaussian noise | int labels |
| ``spirals`` | 2 classes | (n, 2): two interleaved spirals | int labels |
| ``moons`` | 2 classes | (n, 2): two interleaving half circles | int labels |
| ``sine`` | regression | (n, 1) uniform on [-π, π] | (n, 1) sin x + noise |
| ``digits`` | 10 classes | (1797, 64) 8×8 images scaled to [0, 1] | int labels |

``digits`` is shipped with nnlab (nnlab/data/digits.npz, the UCI test set that scikit-learn also
bundles), so it needs no extra package.

>>> import nnlab as nl
>>> X, y = nl.datasets.load("moons", n=100, seed=0)
>>> X.shape, sorted(set(y.tolist()))
((100, 2), [0, 1])
"""

import os

import numpy as np

from . import _validate
from .errors import HyperparameterError, ShapeError, UnknownNameError


def _rng(seed):
    """np.random.default_rng(seed) for an int seed >= 0 (None: fresh entropy), else HyperparameterError."""
    if seed is not None:
        seed = _validate.positive_int(seed, "seed", minimum=0)
    return np.random.default_rng(seed)


def xor(n=200, noise=0.1, seed=0):
    """Noisy XOR: corners (±1, ±1), label 1 when the signs differ."""
    n = _validate.positive_int(n, "n")
    noise = _validate.real_scalar(noise, "noise", nonnegative=True)
    rng = _rng(seed)
    corners = rng.integers(0, 2, size=(n, 2))
    X = (2.0 * corners - 1.0) + noise * rng.standard_normal((n, 2))
    return X, (corners[:, 0] ^ corners[:, 1]).astype(np.int64)


def spirals(n=400, noise=0.1, turns=1.5, seed=0):
    """Two interleaved spirals (a classic hard case for plain MLPs)."""
    n = _validate.positive_int(n, "n", minimum=2)
    noise = _validate.real_scalar(noise, "noise", nonnegative=True)
    turns = _validate.real_scalar(turns, "turns", positive=True)
    rng = _rng(seed)
    y = np.arange(n) % 2
    t = rng.uniform(0.05, 1.0, n)
    angle = 2 * np.pi * turns * t + np.pi * y
    X = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1) * 2.0
    return X + noise * rng.standard_normal((n, 2)) * 0.2, y.astype(np.int64)


def moons(n=400, noise=0.1, seed=0):
    """Two interleaving half circles (as scikit-learn's make_moons)."""
    n = _validate.positive_int(n, "n", minimum=2)
    noise = _validate.real_scalar(noise, "noise", nonnegative=True)
    rng = _rng(seed)
    y = np.arange(n) % 2
    t = rng.uniform(0.0, np.pi, n)
    X = np.where(y[:, None] == 0, np.stack([np.cos(t), np.sin(t)], 1),
                 np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], 1))
    return X + noise * rng.standard_normal((n, 2)), y.astype(np.int64)


def sine(n=256, noise=0.05, seed=0):
    """Regression: y = sin(x) + noise, x uniform on [-π, π]."""
    n = _validate.positive_int(n, "n")
    noise = _validate.real_scalar(noise, "noise", nonnegative=True)
    rng = _rng(seed)
    X = rng.uniform(-np.pi, np.pi, (n, 1))
    return X, np.sin(X) + noise * rng.standard_normal((n, 1))


def digits():
    """The 1797 8×8 handwritten digits, pixels scaled to [0, 1], labels 0..9."""
    path = os.path.join(os.path.dirname(__file__), "data", "digits.npz")
    with np.load(path, allow_pickle=False) as data:
        return data["images"].astype(np.float64) / 16.0, data["labels"].astype(np.int64)


_LOADERS = {"xor": xor, "spirals": spirals, "moons": moons, "sine": sine, "digits": digits}
TASKS = {"xor": "classification", "spirals": "classification", "moons": "classification",
         "sine": "regression", "digits": "classification"}


def names():
    return list(_LOADERS)


def load(name, **kwargs):
    """(X, y) of dataset ``name`` (case-insensitive; keyword arguments go to its loader, e.g. ``n``,
    ``noise``, ``seed``)."""
    if not isinstance(name, str) or name.lower() not in _LOADERS:
        raise UnknownNameError(f"unknown dataset {name!r}; known: {', '.join(_LOADERS)}")
    fn = _LOADERS[name.lower()]
    allowed = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    unknown = set(kwargs) - set(allowed)
    if unknown:
        raise HyperparameterError(f"dataset {name!r} takes {list(allowed)}; unknown: {sorted(unknown)}")
    return fn(**kwargs)


def train_test_split(X, y, test_fraction=0.2, seed=0):
    """Shuffle (seeded) and split into (X_train, y_train, X_test, y_test)."""
    test_fraction = _validate.real_scalar(test_fraction, "test_fraction")
    if not 0.0 < test_fraction < 1.0:
        raise HyperparameterError(f"test_fraction must be in (0, 1); got {test_fraction}")
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ShapeError("X and y must be arrays with one row per sample")
    if len(X) != len(y):
        raise ShapeError(f"X has {len(X)} rows but y has {len(y)}")
    idx = _rng(seed).permutation(len(X))
    n_test = max(1, int(round(test_fraction * len(X))))
    if n_test >= len(X):
        raise ShapeError(f"test_fraction={test_fraction} of {len(X)} samples leaves no training data")
    te, tr = idx[:n_test], idx[n_test:]
    return X[tr], y[tr], X[te], y[te]
