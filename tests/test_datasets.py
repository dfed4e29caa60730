"""nl.datasets: shapes, labels, seeding, the bundled digits, train_test_split, bad input."""

import numpy as np
import pytest

import nnlab as nl
from nnlab.errors import HyperparameterError, NnlabError, ShapeError, UnknownNameError

SYNTHETIC = ["xor", "spirals", "moons", "sine"]


def test_names_and_tasks():
    assert nl.datasets.names() == ["xor", "spirals", "moons", "sine", "digits", "adding"]
    assert nl.datasets.TASKS == {"xor": "classification", "spirals": "classification",
                                 "moons": "classification", "sine": "regression", "digits": "classification",
                                 "adding": "regression"}


@pytest.mark.parametrize("name", ["xor", "spirals", "moons"])
def test_two_class_sets(name):
    X, y = nl.datasets.load(name, n=101, seed=0)
    assert X.shape == (101, 2) and X.dtype == np.float64 and np.isfinite(X).all()
    assert y.shape == (101,) and y.dtype == np.int64 and set(y.tolist()) == {0, 1}
    counts = np.bincount(y)
    assert counts.min() >= 30  # both classes well represented (spirals/moons alternate exactly)
    if name != "xor":
        assert abs(int(counts[0]) - int(counts[1])) <= 1


def test_default_sizes():
    assert nl.datasets.load("xor")[0].shape == (200, 2)
    assert nl.datasets.load("spirals")[0].shape == (400, 2)
    assert nl.datasets.load("moons")[0].shape == (400, 2)
    assert nl.datasets.load("sine")[0].shape == (256, 1)


def test_xor_labels_are_the_xor_of_the_corner_signs():
    X, y = nl.datasets.xor(n=500, noise=0.0, seed=3)
    assert set(np.abs(X).ravel().tolist()) == {1.0}
    assert np.array_equal(y, ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(np.int64))


def test_moons_without_noise_lie_on_their_half_circles():
    X, y = nl.datasets.moons(n=200, noise=0.0, seed=0)
    upper, lower = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0)
    assert (upper[:, 1] >= 0).all() and (lower[:, 1] <= 0.5).all()


def test_sine_regression():
    X, y = nl.datasets.sine(n=300, noise=0.0, seed=0)
    assert X.shape == y.shape == (300, 1)
    assert X.min() >= -np.pi and X.max() <= np.pi
    np.testing.assert_allclose(y, np.sin(X))
    Xn, yn = nl.datasets.sine(n=300, noise=0.05, seed=0)
    assert 0.03 < np.std(yn - np.sin(Xn)) < 0.07


@pytest.mark.parametrize("name", SYNTHETIC)
def test_seeded_reproducibility(name):
    X1, y1 = nl.datasets.load(name, seed=7)
    X2, y2 = nl.datasets.load(name, seed=7)
    X3, _ = nl.datasets.load(name, seed=8)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


def test_digits():
    X, y = nl.datasets.load("digits")
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.array_equal(X * 16, np.round(X * 16))  # the 0..16 pixel counts, scaled
    assert y.shape == (1797,) and y.dtype == np.int64
    counts = np.bincount(y)
    assert len(counts) == 10 and counts.min() >= 170 and counts.max() <= 190  # balanced
    X2, y2 = nl.datasets.digits()
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    X2[0, 0] = 5.0  # a fresh copy every call
    assert nl.datasets.digits()[0][0, 0] == X[0, 0]


def test_load_is_case_insensitive():
    assert np.array_equal(nl.datasets.load("Moons", n=10)[0], nl.datasets.load("moons", n=10)[0])


@pytest.mark.parametrize("size", [0.2, 0.25, 0.5])
def test_train_test_split_sizes_and_disjointness(size):
    X, y = nl.datasets.load("moons", n=101, seed=0)
    Xtr, ytr, Xte, yte = nl.datasets.train_test_split(X, y, test_fraction=size, seed=0)
    n_test = round(size * 101)
    assert len(Xte) == len(yte) == n_test and len(Xtr) == len(ytr) == 101 - n_test
    rows = {tuple(r) for r in X}
    train_rows, test_rows = {tuple(r) for r in Xtr}, {tuple(r) for r in Xte}
    assert not train_rows & test_rows and train_rows | test_rows == rows
    lookup = {tuple(r): lab for r, lab in zip(X, y)}  # rows keep their labels
    assert all(lookup[tuple(r)] == lab for r, lab in zip(Xte, yte))
    same = nl.datasets.train_test_split(X, y, test_fraction=size, seed=0)
    other = nl.datasets.train_test_split(X, y, test_fraction=size, seed=1)
    assert np.array_equal(same[2], Xte) and not np.array_equal(other[2], Xte)


def test_train_test_split_keeps_at_least_one_row_each_side():
    X, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    assert len(nl.datasets.train_test_split(X, y, 0.01)[2]) == 1
    with pytest.raises(ShapeError):
        nl.datasets.train_test_split(X[:2], y[:2], 0.9)


@pytest.mark.parametrize(("call", "err"), [
    (lambda: nl.datasets.load("mnist"), UnknownNameError),
    (lambda: nl.datasets.load(None), UnknownNameError),
    (lambda: nl.datasets.load(["xor"]), UnknownNameError),
    (lambda: nl.datasets.load("xor", samples=10), HyperparameterError),
    (lambda: nl.datasets.load("digits", n=10), HyperparameterError),
    (lambda: nl.datasets.load("xor", n=0), HyperparameterError),
    (lambda: nl.datasets.load("xor", n=2.5), HyperparameterError),
    (lambda: nl.datasets.load("moons", noise=-0.1), HyperparameterError),
    (lambda: nl.datasets.load("spirals", turns=0), HyperparameterError),
    (lambda: nl.datasets.load("sine", noise=float("nan")), HyperparameterError),
    (lambda: nl.datasets.load("xor", seed=-1), HyperparameterError),
    (lambda: nl.datasets.load("xor", seed="a"), HyperparameterError),
    (lambda: nl.datasets.load("moons", seed=1.5), HyperparameterError),
    (lambda: nl.datasets.train_test_split(np.zeros((4, 2)), np.zeros(3)), ShapeError),
    (lambda: nl.datasets.train_test_split(np.zeros((4, 2)), np.zeros(4), test_fraction=0.0), HyperparameterError),
    (lambda: nl.datasets.train_test_split(np.zeros((4, 2)), np.zeros(4), test_fraction=1.0), HyperparameterError),
    (lambda: nl.datasets.train_test_split(np.zeros((4, 2)), np.zeros(4), seed=-3), HyperparameterError),
    (lambda: nl.datasets.train_test_split(1.0, 2.0), ShapeError),
])
def test_bad_input(call, err):
    with pytest.raises(err) as info:
        call()
    assert isinstance(info.value, NnlabError)


def test_unknown_name_message_lists_the_datasets():
    with pytest.raises(UnknownNameError, match="xor, spirals, moons, sine, digits"):
        nl.datasets.load("mnist")
