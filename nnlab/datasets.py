"""Small built-in datasets that need no network access, all seeded.

| name | task | X | y |
|---|---|---|---|
| ``xor`` | 2 classes | (n, 2): the four XOR corners plus Gaussian noise | int labels |
| ``spirals`` | 2 classes | (n, 2): two interleaved spirals | int labels |
| ``moons`` | 2 classes | (n, 2): two interleaving half circles | int labels |
| ``sine`` | regression | (n, 1) uniform on [-π, π] | (n, 1) sin x + noise |
| ``digits`` | 10 classes | (1797, 64) 8×8 images scaled to [0, 1] | int labels |
| ``adding`` | regression | (n, T, 2) sequences: values and two markers | (n,) the sum of the marked values |

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


def adding(n=1000, T=50, seed=0):
    """The adding problem (Hochreiter & Schmidhuber, 1997), a test of long-range memory.

    X (n, T, 2): channel 0 holds values uniform on [0, 1), channel 1 a marker that is 1 at exactly
    two steps -- one in the first half (steps 0 .. T//2 − 1), one in the second (T//2 .. T − 1) --
    and 0 elsewhere. y (n,): the sum of the two marked values. Always predicting 1.0 (the mean of
    y) has a plain mean squared error of Var(y) = 2/12 = 1/6 ≈ 0.167, which nnlab's ``mse`` loss
    (with its factor 1/2) reports as 1/12 ≈ 0.083; a model below that has learned something.
    """
    n = _validate.positive_int(n, "n")
    T = _validate.positive_int(T, "T", minimum=2)
    rng = _rng(seed)
    values = rng.uniform(0.0, 1.0, (n, T))
    half = T // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, T, n)
    rows = np.arange(n)
    marks = np.zeros((n, T))
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    return np.stack([values, marks], axis=2), values[rows, first] + values[rows, second]


_LOADERS = {"xor": xor, "spirals": spirals, "moons": moons, "sine": sine, "digits": digits, "adding": adding}
TASKS = {"xor": "classification", "spirals": "classification", "moons": "classification",
         "sine": "regression", "digits": "classification", "adding": "regression"}


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
