"""RBF: A_j = exp(−γ‖x − c_j‖²) with centres c (n_in, n_centers), column j = centre j; distances from
the differences themselves; γ fixed or learnable; an initialisation that does not start
saturated (γ = 'auto' = 1/(2·n_in) with N(0, 1) centres); init_centers from data rows."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_grad_checks import assert_gradients, assert_gradients_both_modes, data, targets

import nnlab as nl
from nnlab.errors import HyperparameterError, NonFiniteError, ShapeError


def _reference(C, gamma, X):
    Z = ((X[:, :, None] - C[None, :, :]) ** 2).sum(axis=1)
    return Z, np.exp(-gamma * Z)


def test_forward_memoized_error_and_the_centre_layout():
    net = nl.Sequential([nl.RBF(3, 4, gamma=0.7)], seed=0)
    (C,) = net.params()
    assert net.param_names() == ["0.c"] and C.shape == (3, 4)
    X = data(9, 3, seed=1)
    Z, A = _reference(C, 0.7, X)
    np.testing.assert_allclose(net.forward(X), A, rtol=1e-14, atol=1e-300)
    C[:, 2] = X[4]  # centre 2 on row 4: unit 2 gives exactly 1 there
    assert net.forward(X)[4, 2] == 1.0
    y = targets(net, 9)
    _, (dC,) = net.loss_and_grads(X, y)
    _, A = _reference(C, 0.7, X)
    dA = (A - y) / 9
    E = dA * -0.7 * A                        # dZ = dA·(−γ)·A, the memoized error
    np.testing.assert_allclose(net.layer_errors[0], E, rtol=1e-13, atol=1e-300)
    diff = X[:, :, None] - C[None, :, :]     # (rows, n_in, n_centers)
    np.testing.assert_allclose(dC, -2 * (E[:, None, :] * diff).sum(axis=0), rtol=1e-12, atol=1e-16)
    Xs = data(2, 3, steps=4, seed=2)
    np.testing.assert_allclose(net.forward(Xs).reshape(-1, 4), _reference(C, 0.7, Xs.reshape(-1, 3))[1],
                               rtol=1e-14, atol=1e-300)


def test_distances_are_exact_far_from_the_origin():
    """x = c + δ with |c| = 1e8: Z = δ² exactly from the differences (the expansion ‖x‖² − 2x·c + ‖c‖²
    would lose everything to rounding at 1e16), and dx = 2·dZ·δ."""
    net = nl.Sequential([nl.RBF(2, 1, gamma=2.0)], seed=0)
    net.params()[0][:, 0] = [1e8, -3e8]
    X = np.array([[1e8 + 0.5, -3e8 - 0.25]])
    z = 0.5 ** 2 + 0.25 ** 2
    assert net.forward(X)[0, 0] == math.exp(-2.0 * z)
    expanded = (X ** 2).sum() - 2 * X @ net.params()[0] + (net.params()[0] ** 2).sum()
    assert abs(expanded[0, 0] - z) > 0.25 * z  # what the product form gives: nothing right
    _, _, dX = net.loss_and_grads(X, np.zeros((1, 1)), wrt_input=True)
    a = math.exp(-2.0 * z)
    dz = a * -2.0 * a
    np.testing.assert_allclose(dX, [[2 * dz * 0.5, 2 * dz * -0.25]], rtol=1e-14)


def test_matches_torch_autograd_of_the_formula():
    torch = pytest.importorskip("torch")
    net = nl.Sequential([nl.Dense(3, 4, activation="tanh"), nl.RBF(4, 5, learnable_gamma=True), nl.Dense(5, 2)],
                        seed=3)
    net.params()[3][...] = 0.4  # γ
    X = data(8, 3, seed=4)
    y = targets(net, 8, seed=5)
    loss, grads, dX = net.loss_and_grads(X, y, wrt_input=True)
    assert net.param_names() == ["0.W", "0.b", "1.c", "1.gamma", "2.W", "2.b"]
    t = [torch.tensor(p.copy(), requires_grad=True) for p in net.params()]
    x = torch.tensor(X, requires_grad=True)
    h = torch.tanh(x @ t[0] + t[1])
    Z = ((h[:, :, None] - t[2][None, :, :]) ** 2).sum(dim=1)
    out = torch.exp(-t[3] * Z) @ t[4] + t[5]
    tl = 0.5 * ((out - torch.tensor(y)) ** 2).sum() / 8
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-13)
    for g, p in zip(grads, t):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dX, x.grad.numpy(), rtol=1e-10, atol=1e-14)


@settings(deadline=None, max_examples=12)
@given(n=st.integers(1, 5), n_in=st.integers(1, 4), n_centers=st.integers(1, 4),
       gamma=st.sampled_from(["auto", 0.3, 1.5]), learnable=st.booleans(),
       steps=st.one_of(st.none(), st.integers(1, 3)), first=st.booleans(), seed=st.integers(0, 10**6))
def test_gradients_in_both_modes(n, n_in, n_centers, gamma, learnable, steps, first, seed):
    rbf = nl.RBF(n_in, n_centers, gamma=gamma, learnable_gamma=learnable)
    layers = ([rbf] if first else [nl.Dense(2, n_in, activation="tanh"), rbf]) + [nl.Dropout(0.2), nl.Dense(n_centers, 2)]
    net = nl.Sequential(layers, seed=seed % 1000)
    X = data(n, n_in if first else 2, steps, seed=seed)
    assert_gradients_both_modes(net, X, targets(net, n, steps, seed=seed + 1))


def test_in_stacks_with_residual_blocks_maxout_and_highway():
    net = nl.Sequential([nl.Maxout(3, 4, k=2), nl.RBF(4, 4, learnable_gamma=True),
                         nl.Residual([nl.RBF(4, 4), nl.Dense(4, 4, activation="tanh")]), nl.Highway(4, activation="tanh"),
                         nl.Dense(4, 3)], loss="softmax_cross_entropy", seed=4)
    X = data(6, 3, seed=6)
    assert_gradients(net, X, np.random.default_rng(0).integers(0, 3, 6))
    Xs = data(2, 3, steps=3, seed=7)
    labels = np.random.default_rng(1).integers(0, 3, (2, 3))
    assert_gradients(net, Xs, labels)
    net.loss_and_grads(Xs, labels)
    assert net.layer_errors[1].shape == (6, 4)  # the RBF's dZ: one row per (row, step)


# ---------------------------------------------------------------- initialisation
@pytest.mark.parametrize("n_in", [1, 2, 8, 32, 128])
def test_default_initialisation_does_not_start_saturated(n_in):
    """Standard-normal inputs, default centres N(0, 1) and γ = 1/(2·n_in): the mean activation is
    (1 + 2/n_in)^(−n_in/2) in expectation, in [e^(−1), 3^(−1/2)] = [0.368, 0.577]; the test allows
    the sampling error of 256 centres (band [0.3, 0.65]). Every centre gets a gradient."""
    layer = nl.RBF(n_in, 256)
    assert layer.gamma == 1.0 / (2 * n_in)
    net = nl.Sequential([layer], seed=0)
    X = data(2000, n_in, seed=8)
    A = net.forward(X)
    expect = (1 + 2 / n_in) ** (-n_in / 2)
    assert math.exp(-1) - 1e-12 <= expect <= 3 ** -0.5 + 1e-12
    assert 0.3 < A.mean() < 0.65 and abs(A.mean() - expect) < 0.05
    assert A.std() > 0.02  # the units respond to their inputs
    _, (dC,) = net.loss_and_grads(X, np.zeros_like(A))
    assert (np.abs(dC).max(axis=0) > 0).all() and np.abs(dC).mean() > 1e-5
    # gamma = 1 beyond a few features: every output ~0 -- what "auto" avoids
    if n_in >= 32:
        assert nl.Sequential([nl.RBF(n_in, 256, gamma=1.0)], seed=0).forward(X).max() < 1e-6


def test_init_centers_from_data_rows():
    layer = nl.RBF(3, 4)
    with pytest.raises(HyperparameterError, match="in a network"):
        layer.init_centers(np.ones((5, 3)))
    net = nl.Sequential([layer], seed=0)
    X = data(50, 3, seed=9)
    idx = layer.init_centers(X, seed=3)
    assert len(set(idx.tolist())) == 4  # without replacement
    np.testing.assert_array_equal(net.params()[0], X[idx].T)
    np.testing.assert_array_equal(np.diag(net.forward(X[idx])), 1.0)  # each centre on its row
    np.testing.assert_array_equal(layer.init_centers(X, seed=3), idx)  # seeded
    assert not np.array_equal(layer.init_centers(X, seed=4), idx)
    # sequences: their N·T rows; fewer rows than centres: drawn with replacement
    Xs = data(1, 3, steps=2, seed=10)
    idx = layer.init_centers(Xs, seed=0)
    np.testing.assert_array_equal(net.params()[0], Xs.reshape(-1, 3)[idx].T)
    with pytest.raises(ShapeError, match=r"\(N, 3\)"):
        layer.init_centers(np.ones((5, 2)))
    with pytest.raises(NonFiniteError):
        layer.init_centers(np.full((5, 3), np.nan))
    # a float32 network gets the rows rounded to float32
    net32 = nl.Sequential([nl.RBF(3, 2)], seed=0, dtype="float32")
    idx = net32.layers[0].init_centers(X, seed=1)
    np.testing.assert_array_equal(net32.params()[0], X[idx].T.astype(np.float32))


# ---------------------------------------------------------------- files, dtypes, errors
def test_save_load_round_trip(tmp_path):
    net = nl.Sequential([nl.RBF(3, 4, gamma=0.25, learnable_gamma=True), nl.Dense(4, 2)], seed=2)
    net.params()[1][...] = 0.6  # a learned γ
    net.save(tmp_path / "r.npz")
    net2 = nl.load(tmp_path / "r.npz")
    assert net2.param_names() == net.param_names() and net2.params()[1][0] == 0.6
    np.testing.assert_array_equal(net2._store, net._store)
    X = data(5, 3, seed=11)
    np.testing.assert_array_equal(net2.forward(X), net.forward(X))
    fixed = nl.Sequential([nl.RBF(3, 2, gamma=0.3)], seed=0)
    fixed.save(tmp_path / "f.npz")
    assert nl.load(tmp_path / "f.npz").layers[0].gamma == 0.3


def test_learnable_gamma_is_used_and_trained():
    net = nl.Sequential([nl.RBF(2, 3, gamma=0.5, learnable_gamma=True)], seed=0)
    X = data(4, 2, seed=12)
    a = net.forward(X)
    net.params()[1][...] = 1.0
    np.testing.assert_allclose(net.forward(X), a ** 2, rtol=1e-13)  # exp(−1·Z) = exp(−0.5·Z)²
    before = float(net.params()[1][0])
    nl.Trainer(net, nl.optim.SGD(lr=0.5)).fit(X, np.ones((4, 3)), epochs=5, batch_size=4)
    assert float(net.params()[1][0]) < before  # targets 1: the width grows (γ falls)


def test_float32_runs_and_no_stale_gradient_slots():
    net = nl.Sequential([nl.Dense(3, 4), nl.RBF(4, 5, learnable_gamma=True), nl.Dense(5, 1)], seed=0,
                        dtype="float32")
    X = data(12, 3, seed=13)
    y = X.sum(axis=1)
    loss, grads = net.loss_and_grads(X, y)
    loss64, grads64 = net.copy(dtype="float64").loss_and_grads(X, y)
    assert grads[1].dtype == np.float32 and loss == pytest.approx(loss64, rel=1e-5)
    for g, g64 in zip(grads, grads64):
        np.testing.assert_allclose(g, g64, rtol=1e-3, atol=1e-5)
    Xp, Y = net._prepare(X, y)
    ws, dws = net._workspace(12)
    clean, dirty = np.zeros_like(net._flat), np.full_like(net._flat, 123.0)
    for g in (clean, dirty):
        net._kernels.loss_and_grad(net._ops, net._hp, net._tens, net._flat, g, ws, dws, Xp, Y, net._loss_code,
                                   True, -1)
    np.testing.assert_array_equal(clean, dirty)


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), float("inf"), "wide", None, True])
def test_bad_gamma(gamma):
    with pytest.raises(HyperparameterError, match="gamma"):
        nl.RBF(3, 2, gamma=gamma)


def test_bad_widths():
    with pytest.raises(HyperparameterError):
        nl.RBF(0, 2)
    with pytest.raises(HyperparameterError):
        nl.RBF(2, 0)
    with pytest.raises(ShapeError, match="expects 3 inputs"):
        nl.Sequential([nl.Dense(2, 4), nl.RBF(3, 2)])
    net = nl.Sequential([nl.RBF(3, 2)], seed=0)
    with pytest.raises(ShapeError):
        net.forward(np.ones((2, 4)))
