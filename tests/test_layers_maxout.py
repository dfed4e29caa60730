"""Maxout: Z = X W + b with piece m of unit j at column j·k + m, A_j = max over the k pieces; the
error goes to the winning piece (the first on a tie), memoized as E = ∂L/∂Z."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_grad_checks import assert_gradients, assert_gradients_both_modes, data, targets

import nnlab as nl
from nnlab.errors import HyperparameterError, ShapeError


def _reference(W, b, X, n_out, k):
    Z = X @ W + b
    return Z.reshape(X.shape[0], n_out, k).max(axis=2)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_forward_and_the_column_layout(k):
    net = nl.Sequential([nl.Maxout(3, 5, k=k, bias_init=nl.init.get("normal", std=0.5))], seed=k)
    W, b = net.params()
    assert W.shape == (3, 5 * k) and b.shape == (5 * k,)
    X = data(11, 3, seed=1)
    np.testing.assert_allclose(net.forward(X), _reference(W, b, X, 5, k), rtol=1e-14, atol=1e-15)
    # unit j reads columns j·k .. j·k + k − 1: raising column 2·k + (k − 1) by a lot makes unit 2 that piece
    W[:, 2 * k + k - 1] = 0.0
    b[2 * k + k - 1] = 100.0
    out = net.forward(X)
    np.testing.assert_array_equal(out[:, 2], 100.0)
    assert (out[:, [0, 1, 3, 4]] < 100.0).all()
    Xs = data(2, 3, steps=4, seed=2)
    np.testing.assert_allclose(net.forward(Xs).reshape(-1, 5), _reference(W, b, Xs.reshape(-1, 3), 5, k),
                               rtol=1e-14, atol=1e-15)


def test_k1_is_an_affine_layer():
    m = nl.Sequential([nl.Maxout(4, 3, k=1)], seed=0)
    d = nl.Sequential([nl.Dense(4, 3)], seed=0)
    d.set_params(m.params())
    X = data(6, 4, seed=3)
    np.testing.assert_array_equal(m.forward(X), d.forward(X))
    y = targets(m, 6)
    lm, gm, xm = m.loss_and_grads(X, y, wrt_input=True)
    ld, gd, xd = d.loss_and_grads(X, y, wrt_input=True)
    assert lm == ld
    for a, b in zip(gm + [xm], gd + [xd]):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=1e-16)


def test_the_error_goes_to_the_winning_piece_and_the_first_on_a_tie():
    net = nl.Sequential([nl.Maxout(2, 2, k=3)], seed=0)
    W, b = net.params()
    W[:, 0] = W[:, 1] = [1.0, -1.0]  # unit 0: pieces 0 and 1 tie everywhere; piece 2 loses below
    W[:, 2] = 0.0
    b[:3] = [0.0, 0.0, -50.0]
    X = data(5, 2, seed=4)
    y = np.zeros((5, 2))
    _, grads = net.loss_and_grads(X, y)
    E = net.layer_errors[0]
    out = net.forward(X)
    dA = out / 5  # mse: dL/dA = (A − 0)/N
    assert E.shape == (5, 6)
    np.testing.assert_array_equal(E[:, 0], dA[:, 0])   # the tie goes to the first piece
    np.testing.assert_array_equal(E[:, 1:3], 0.0)
    win = (X @ W + b)[:, 3:6].argmax(axis=1)
    for r in range(5):                                  # unit 1: exactly one piece gets dA
        np.testing.assert_array_equal(E[r, 3:6], np.where(np.arange(3) == win[r], dA[r, 1], 0.0))
    np.testing.assert_array_equal(grads[0][:, 1], 0.0)  # the tied second piece learns nothing
    np.testing.assert_allclose(grads[0], X.T @ E, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(grads[1], E.sum(axis=0), rtol=1e-14, atol=1e-16)


def test_matches_torch():
    torch = pytest.importorskip("torch")
    net = nl.Sequential([nl.Dense(3, 6, activation="tanh"), nl.Maxout(6, 4, k=3), nl.Dense(4, 2)], seed=5)
    X = data(9, 3, seed=5)
    y = targets(net, 9, seed=6)
    loss, grads, dX = net.loss_and_grads(X, y, wrt_input=True)
    t = [torch.tensor(p.copy(), requires_grad=True) for p in net.params()]
    x = torch.tensor(X, requires_grad=True)
    h = torch.tanh(x @ t[0] + t[1])
    m = (h @ t[2] + t[3]).reshape(9, 4, 3).amax(dim=2)
    out = m @ t[4] + t[5]
    tl = 0.5 * ((out - torch.tensor(y)) ** 2).sum() / 9
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-13)
    np.testing.assert_allclose(net.forward(X), out.detach().numpy(), rtol=1e-12, atol=1e-14)
    for g, p in zip(grads, t):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dX, x.grad.numpy(), rtol=1e-10, atol=1e-14)


@settings(deadline=None, max_examples=12)
@given(n=st.integers(1, 5), n_in=st.integers(1, 4), n_out=st.integers(1, 4), k=st.integers(1, 3),
       steps=st.one_of(st.none(), st.integers(1, 3)), first=st.booleans(), seed=st.integers(0, 10**6))
def test_gradients_in_both_modes(n, n_in, n_out, k, steps, first, seed):
    mo = nl.Maxout(n_in, n_out, k=k)
    layers = ([mo] if first else [nl.Dense(2, n_in, activation="tanh"), mo]) + [nl.Dropout(0.25), nl.Dense(n_out, 2)]
    net = nl.Sequential(layers, seed=seed % 1000)
    X = data(n, n_in if first else 2, steps, seed=seed)
    assert_gradients_both_modes(net, X, targets(net, n, steps, seed=seed + 1))


def test_inside_residual_blocks_and_beside_highways():
    # x of the residual block is read by the maxout and the skip: written once, added once
    net = nl.Sequential([nl.Maxout(3, 4, k=2), nl.Residual([nl.Maxout(4, 4, k=3), nl.Dense(4, 4, activation="tanh")]),
                         nl.Highway(4, activation="tanh"), nl.Residual([nl.Maxout(4, 2, k=2)], projection=True),
                         nl.Dense(2, 2)], seed=6)
    X = data(6, 3, seed=7)
    assert_gradients(net, X, targets(net, 6))
    Xs = data(2, 3, steps=3, seed=8)
    assert_gradients(net, Xs, targets(net, 2, steps=3))
    net.loss_and_grads(Xs, targets(net, 2, steps=3))
    assert net.layer_errors[0].shape == (6, 8)  # one row per (row, step): 2·3 rows, n_out·k columns


def test_save_load_round_trip(tmp_path):
    net = nl.Sequential([nl.Maxout(3, 4, k=3, init="he_normal"), nl.Dense(4, 2)], seed=7)
    net.save(tmp_path / "m.npz")
    net2 = nl.load(tmp_path / "m.npz")
    assert net2.layers[0].k == 3 and net2.param_names() == net.param_names()
    np.testing.assert_array_equal(net2._store, net._store)
    X = data(5, 3, seed=9)
    np.testing.assert_array_equal(net2.forward(X), net.forward(X))


def test_float32_runs_and_trains():
    net = nl.Sequential([nl.Maxout(4, 6, k=2), nl.Maxout(6, 3, k=3), nl.Dense(3, 1)], seed=0, dtype="float32")
    X = data(20, 4, seed=10)
    y = np.sin(X.sum(axis=1))
    loss, grads = net.loss_and_grads(X, y)
    loss64, grads64 = net.copy(dtype="float64").loss_and_grads(X, y)
    assert loss == pytest.approx(loss64, rel=1e-5)
    for g, g64 in zip(grads, grads64):
        np.testing.assert_allclose(g, g64, rtol=1e-3, atol=1e-5)
    hist = nl.Trainer(net, nl.optim.Adam(lr=0.02)).fit(X, y, epochs=30, batch_size=10)
    assert hist.epoch_loss[-1] < 0.5 * hist.epoch_loss[0]


def test_no_stale_gradient_slots():
    net = nl.Sequential([nl.Maxout(4, 3, k=2), nl.Dense(3, 2)], seed=0)
    X, Y = net._prepare(data(7, 4), np.zeros((7, 2)))
    ws, dws = net._workspace(7)
    clean, dirty = np.zeros_like(net._flat), np.full_like(net._flat, 123.0)
    for g in (clean, dirty):
        net._kernels.loss_and_grad(net._ops, net._hp, net._tens, net._flat, g, ws, dws, X, Y, net._loss_code, True, -1)
    np.testing.assert_array_equal(clean, dirty)


@pytest.mark.parametrize("k", [0, -1, 1.5, "2", True])
def test_bad_k(k):
    with pytest.raises(HyperparameterError, match="k"):
        nl.Maxout(3, 2, k=k)


def test_bad_widths():
    with pytest.raises(HyperparameterError):
        nl.Maxout(0, 2)
    with pytest.raises(HyperparameterError):
        nl.Maxout(2, 0)
    with pytest.raises(ShapeError, match="expects 3 inputs"):
        nl.Sequential([nl.Dense(2, 4), nl.Maxout(3, 2)])
    with pytest.raises(HyperparameterError, match="bias_init"):
        nl.Maxout(2, 2, bias_init="he_normal")
