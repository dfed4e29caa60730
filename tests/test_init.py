"""Initializers: shapes, seeding, and the documented statistics.

Weights are (n_in, n_out): fan_in = shape[0], fan_out = shape[1]. The expected standard deviations
are the documented formulas in nnlab/init.py (the same as torch.nn.init / Keras)."""

import math

import numpy as np
import pytest

import nnlab as nl
from nnlab import init
from nnlab.errors import HyperparameterError, ShapeError, UnknownNameError

SHAPES = [(1, 1), (3, 7), (7, 3), (64, 64)]


def draw(name, shape, seed=0, **kw):
    return init.get(name, **kw)(shape, np.random.default_rng(seed))


@pytest.mark.parametrize("name", init.names())
@pytest.mark.parametrize("shape", SHAPES)
def test_shape_dtype_and_seeding(name, shape):
    w = draw(name, shape)
    assert w.shape == shape and w.dtype == np.float64
    assert np.isfinite(w).all()
    np.testing.assert_array_equal(w, draw(name, shape))  # same seed, same weights
    if name not in ("zeros", "ones", "constant") and shape != (1, 1):
        assert not np.array_equal(w, draw(name, shape, seed=1))  # another seed, other weights


def test_aliases_are_the_same_initializer():
    for alias, canonical in init.ALIASES.items():
        np.testing.assert_array_equal(draw(alias, (20, 30), seed=3), draw(canonical, (20, 30), seed=3))
        assert init.get(alias).name == canonical


def test_every_name_is_usable_in_a_network():
    for name in init.names():
        net = nl.Sequential([nl.Dense(5, 4, init=name), nl.Dense(4, 2, init=name)], seed=0)
        assert np.isfinite(net.forward(np.ones((2, 5)))).all()


# ---------------------------------------------------------------- statistics
FAN_IN, FAN_OUT = 400, 600  # 240,000 draws: the sample std is within ~0.3% of the true one


def _std_ok(w, expected):
    assert abs(w.mean()) < 0.02 * expected
    assert w.std() == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("shape", [(FAN_IN, FAN_OUT), (FAN_OUT, FAN_IN)])
def test_documented_standard_deviations(shape):
    fi, fo = shape
    cases = {
        "xavier_normal": math.sqrt(2 / (fi + fo)),
        "xavier_uniform": math.sqrt(6 / (fi + fo)) / math.sqrt(3),
        "he_normal": math.sqrt(2 / fi),
        "he_uniform": math.sqrt(6 / fi) / math.sqrt(3),
        "lecun_normal": math.sqrt(1 / fi),
        "lecun_uniform": math.sqrt(3 / fi) / math.sqrt(3),
        "normal": 0.05,
        "uniform": 0.05 / math.sqrt(3),
    }
    for name, std in cases.items():
        _std_ok(draw(name, shape), std)
    _std_ok(draw("xavier_normal", shape, gain=2.0), 2 * math.sqrt(2 / (fi + fo)))
    _std_ok(draw("he_normal", shape, mode="fan_out"), math.sqrt(2 / fo))
    _std_ok(draw("he_uniform", shape, mode="fan_out"), math.sqrt(2 / fo))
    _std_ok(draw("normal", shape, std=0.3), 0.3)
    assert draw("normal", shape, mean=2.0, std=0.1).mean() == pytest.approx(2.0, abs=0.002)


@pytest.mark.parametrize("name,bound", [
    ("xavier_uniform", math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ("he_uniform", math.sqrt(6 / FAN_IN)),
    ("lecun_uniform", math.sqrt(3 / FAN_IN)),
    ("uniform", 0.05),
])
def test_uniform_bounds(name, bound):
    w = draw(name, (FAN_IN, FAN_OUT))
    assert w.min() >= -bound and w.max() <= bound
    assert w.min() < -0.99 * bound and w.max() > 0.99 * bound  # the whole interval is used
    w = draw("uniform", (50, 50), low=0.2, high=0.7)
    assert w.min() >= 0.2 and w.max() <= 0.7


def test_constants():
    np.testing.assert_array_equal(draw("zeros", (3, 4)), np.zeros((3, 4)))
    np.testing.assert_array_equal(draw("ones", (3, 4)), np.ones((3, 4)))
    np.testing.assert_array_equal(draw("constant", (2, 2), value=0.1), np.full((2, 2), 0.1))
    np.testing.assert_array_equal(init.get(0.1)((3,), None), np.full(3, 0.1))  # a float means constant


@pytest.mark.parametrize("shape", [(50, 20), (20, 50), (30, 30), (1, 5), (5, 1)])
@pytest.mark.parametrize("gain", [1.0, 1.7])
def test_orthogonal(shape, gain):
    w = draw("orthogonal", shape, seed=4, gain=gain)
    rows, cols = shape
    gram = w.T @ w if rows >= cols else w @ w.T
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(min(rows, cols)), atol=1e-12)


def test_bias_init_in_dense():
    net = nl.Sequential([nl.Dense(3, 5, bias_init=0.1), nl.Dense(5, 2, bias_init="normal")], seed=0)
    np.testing.assert_array_equal(net.params()[1], np.full(5, 0.1))
    assert net.params()[3].std() > 0
    with pytest.raises(HyperparameterError, match="bias_init"):
        nl.Dense(3, 5, bias_init="he_normal")


# ---------------------------------------------------------------- networks are seeded
def _net(seed):
    return nl.Sequential([nl.Dense(6, 9, activation="tanh", init="orthogonal"),
                          nl.Dense(9, 9, activation="relu", init="he_uniform", bias_init="uniform"),
                          nl.Dense(9, 2, init="lecun_normal")], seed=seed)


def test_sequential_seed_reproducible():
    a, b, c = _net(0), _net(0), _net(1)
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_array_equal(p, q)
    diffs = [not np.array_equal(p, q) for p, q in zip(a.params(), c.params())]
    assert diffs == [True, False, True, True, True, False]  # biases "0.b" and "2.b" are zeros either way


def test_sequential_without_seed_differs():
    a, b = _net(None), _net(None)
    assert not np.array_equal(a.params()[0], b.params()[0])


# ---------------------------------------------------------------- errors
def test_unknown_names_and_kwargs():
    with pytest.raises(UnknownNameError, match="unknown initializer 'glorot'.*xavier_normal"):
        init.get("glorot")
    with pytest.raises(UnknownNameError):
        nl.Dense(2, 2, init="nope")
    with pytest.raises(UnknownNameError):
        init.get(["xavier_normal"])
    with pytest.raises(HyperparameterError, match="unknown.*'sigma'"):
        init.get("normal", sigma=1.0)
    with pytest.raises(HyperparameterError, match="std"):
        init.get("normal", std=-1.0)
    with pytest.raises(HyperparameterError, match="low <= high"):
        init.get("uniform", low=1.0, high=0.0)
    with pytest.raises(HyperparameterError, match="mode"):
        init.get("he_normal", mode="fan_avg")
    with pytest.raises(HyperparameterError):
        init.get("xavier_normal", gain=float("nan"))
    with pytest.raises(ShapeError, match="2-D"):
        draw("xavier_normal", (3, 4, 5))


def test_config_round_trip():
    for name, kw in [("he_normal", {"mode": "fan_out"}), ("normal", {"std": 0.2}), ("orthogonal", {"gain": 2.0})]:
        i = init.get(name, **kw)
        j = init.get(i.config())
        np.testing.assert_array_equal(i((7, 5), np.random.default_rng(2)), j((7, 5), np.random.default_rng(2)))
