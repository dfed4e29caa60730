"""Highway: y = T·H(x) + (1 − T)·x lowered to two dense ops and a gate op. x is read by three ops, so
its gradient is written by the gate (the first to run backward) and added by the two dense ops;
every check below covers x as the network input (wrt_input) and as a hidden tensor."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_grad_checks import assert_gradients, assert_gradients_both_modes, data, targets

import nnlab as nl
from nnlab.errors import HyperparameterError, ShapeError, UnknownNameError
from nnlab.kernels.layout import DX_ADD, DX_WRITE, F_DX, F_DX2, F_DX3, F_KIND, F_X, KIND_DENSE, KIND_GATE


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _reference(layer_params, X, f):
    WH, bH, WT, bT = layer_params[:4]
    H = f(X @ WH + bH)
    T = _sigmoid(X @ WT + bT)
    return T * H + (1.0 - T) * X


def test_parameters_and_initial_values():
    net = nl.Sequential([nl.Highway(5, gate_bias=-3.0)], seed=0)
    assert net.param_names() == ["0.W_H", "0.b_H", "0.W_T", "0.b_T"]
    WH, bH, WT, bT = net.params()
    assert WH.shape == WT.shape == (5, 5) and bH.shape == bT.shape == (5,)
    np.testing.assert_array_equal(bT, -3.0)
    np.testing.assert_array_equal(bH, 0.0)
    assert not np.array_equal(WH, WT) and np.abs(WH).max() <= np.sqrt(6 / 10)  # xavier_uniform, drawn apart
    assert nl.Highway(3).gate_bias == -2.0 and nl.Highway(3).activation.name == "relu"
    net = nl.Sequential([nl.Highway(3, activation="prelu")], seed=0)
    assert net.param_names() == ["0.W_H", "0.b_H", "0.W_T", "0.b_T", "0.act.alpha"]


@pytest.mark.parametrize("activation,f", [("relu", lambda z: np.maximum(z, 0.0)), ("tanh", np.tanh)])
def test_forward_is_the_highway_formula(activation, f):
    net = nl.Sequential([nl.Highway(4, activation=activation, gate_bias=0.5)], seed=1)
    X = data(9, 4, seed=2)
    np.testing.assert_allclose(net.forward(X), _reference(net.params(), X, f), rtol=1e-13, atol=1e-14)
    # on a sequence: every step with the same weights
    Xs = data(3, 4, steps=5, seed=3)
    np.testing.assert_allclose(net.forward(Xs).reshape(-1, 4), _reference(net.params(), Xs.reshape(-1, 4), f),
                               rtol=1e-13, atol=1e-14)


def test_a_closed_gate_carries_the_input_and_its_gradient():
    """b_T = −40: T ≈ 4e-18, y = x and dL/dx = dL/dy to double precision -- however saturated H is."""
    net = nl.Sequential([nl.Highway(4, activation="sigmoid", gate_bias=-40.0, init=nl.init.get("normal", std=30.0))],
                        seed=0)
    net.params()[2][...] = 0.01 * net.params()[2]  # |x W_T| < 2: the bias closes the gate
    X = data(6, 4, seed=4)
    np.testing.assert_allclose(net.forward(X), X, rtol=1e-15, atol=1e-15)
    y = np.zeros((6, 4))
    _, grads, dX = net.loss_and_grads(X, y, wrt_input=True)
    np.testing.assert_allclose(dX, X / 6, rtol=1e-14, atol=1e-16)
    # the default gate bias −2 starts mostly carrying: T = σ(−2) ≈ 0.12 at W_T = 0
    net = nl.Sequential([nl.Highway(4)], seed=0)
    net.params()[2][...] = 0.0
    H = np.maximum(X @ net.params()[0], 0.0)
    t = _sigmoid(-2.0)
    np.testing.assert_allclose(net.forward(X), t * H + (1 - t) * X, rtol=1e-13)


def test_input_gradient_modes_of_the_three_readers():
    net = nl.Sequential([nl.Dense(3, 4), nl.Highway(4)], seed=0)
    ops = net._program(1).ops
    gate = int(np.flatnonzero(ops[:, F_KIND] == KIND_GATE)[0])
    readers = [i for i in range(len(ops)) if ops[i, F_X] == ops[gate, F_X]]
    assert readers == [1, 2, gate] and all(ops[i, F_KIND] == KIND_DENSE for i in readers[:2])
    assert ops[gate, F_DX] == DX_WRITE                        # runs first backward: writes
    assert ops[1, F_DX] == DX_ADD and ops[2, F_DX] == DX_ADD  # the dense ops H and T: add
    assert ops[gate, F_DX2] == DX_WRITE and ops[gate, F_DX3] == DX_WRITE  # H and T: one reader each


@settings(deadline=None, max_examples=12)
@given(n=st.integers(1, 5), width=st.integers(1, 5), steps=st.one_of(st.none(), st.integers(1, 3)),
       activation=st.sampled_from(["tanh", "relu", "softplus", "prelu", "swish"]),
       gate_bias=st.sampled_from([-2.0, 0.0, 1.0]), first=st.booleans(), seed=st.integers(0, 10**6))
def test_gradients_in_both_modes(n, width, steps, activation, gate_bias, first, seed):
    """Highway first (x = the network input) or after a Dense (x hidden), with a dropout after it."""
    hw = nl.Highway(width, activation=activation, gate_bias=gate_bias)
    layers = ([hw] if first else [nl.Dense(3, width, activation="tanh"), hw]) + [nl.Dropout(0.3), nl.Dense(width, 2)]
    net = nl.Sequential(layers, seed=seed % 1000)
    X = data(n, width if first else 3, steps, seed=seed)
    assert_gradients_both_modes(net, X, targets(net, n, steps, seed=seed + 1))


def test_stacked_highways_in_and_around_residual_blocks():
    net = nl.Sequential([nl.Highway(4, activation="tanh", gate_bias=0.0), nl.Highway(4, activation="elu"),
                         nl.Residual([nl.Highway(4, activation="tanh"), nl.Dense(4, 4, activation="tanh")]),
                         nl.Dense(4, 3)], loss="softmax_cross_entropy", seed=2)
    X = data(7, 4, seed=5)
    y = np.random.default_rng(0).integers(0, 3, 7)
    assert_gradients(net, X, y)
    Xs = data(3, 4, steps=2, seed=6)
    assert_gradients(net, Xs, np.random.default_rng(1).integers(0, 3, (3, 2)))


def test_matches_torch_forward_and_backward():
    torch = pytest.importorskip("torch")
    net = nl.Sequential([nl.Dense(3, 5, activation="tanh"), nl.Highway(5, activation="relu", gate_bias=-1.0),
                         nl.Dense(5, 2)], seed=3)
    X = data(8, 3, seed=7)
    y = targets(net, 8, seed=8)
    loss, grads, dX = net.loss_and_grads(X, y, wrt_input=True)
    t = [torch.tensor(p.copy(), requires_grad=True) for p in net.params()]
    x = torch.tensor(X, requires_grad=True)
    h0 = torch.tanh(x @ t[0] + t[1])
    H = torch.relu(h0 @ t[2] + t[3])
    T = torch.sigmoid(h0 @ t[4] + t[5])
    h1 = T * H + (1 - T) * h0
    out = h1 @ t[6] + t[7]
    tl = 0.5 * ((out - torch.tensor(y)) ** 2).sum() / 8
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-13)
    np.testing.assert_allclose(net.forward(X), out.detach().numpy(), rtol=1e-12, atol=1e-14)
    for g, p in zip(grads, t):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dX, x.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_monitor_watches_both_dense_ops():
    net = nl.Sequential([nl.Dense(3, 4), nl.Highway(4, activation="tanh")], seed=0)
    mon = nl.GradientMonitor(net)
    assert [layer.label for layer in mon.layers] == ["0 Dense (identity)", "1 Highway H (tanh)",
                                                    "1 Highway T (sigmoid)"]
    nl.Trainer(net, nl.optim.SGD(lr=0.1), monitor=mon).fit(data(8, 3), np.zeros((8, 4)), epochs=1, batch_size=4)
    assert len(mon.report()) > 0


def test_save_load_round_trip(tmp_path):
    net = nl.Sequential([nl.Highway(3, activation="prelu", gate_bias=-1.5), nl.Dense(3, 2)], seed=4)
    net.params()[4][...] = 0.3  # prelu α
    net.save(tmp_path / "h.npz")
    net2 = nl.load(tmp_path / "h.npz")
    assert net2.param_names() == net.param_names() and net2.layers[0].gate_bias == -1.5
    np.testing.assert_array_equal(net2._store, net._store)
    X = data(5, 3, seed=9)
    np.testing.assert_array_equal(net2.forward(X), net.forward(X))


def test_float32_runs():
    net = nl.Sequential([nl.Highway(4, activation="tanh"), nl.Highway(4), nl.Dense(4, 1)], seed=0, dtype="float32")
    X = data(10, 4, seed=10)
    loss, grads = net.loss_and_grads(X, X.sum(axis=1))
    loss64, grads64 = net.copy(dtype="float64").loss_and_grads(X, X.sum(axis=1))
    assert all(g.dtype == np.float32 for g in grads) and loss == pytest.approx(loss64, rel=1e-5)
    for g, g64 in zip(grads, grads64):
        np.testing.assert_allclose(g, g64, rtol=1e-3, atol=1e-5)
    nl.Trainer(net, nl.optim.Adam(lr=0.01)).fit(X, X.sum(axis=1), epochs=2, batch_size=5)
    assert np.isfinite(net._flat).all()


def test_bad_input():
    with pytest.raises(HyperparameterError):
        nl.Highway(0)
    with pytest.raises(HyperparameterError):
        nl.Highway(3, gate_bias=float("nan"))
    with pytest.raises(HyperparameterError):
        nl.Highway(3, gate_bias="open")
    with pytest.raises(UnknownNameError):
        nl.Highway(3, activation="no_such_activation")
    with pytest.raises(ShapeError, match="expects 5 inputs"):
        nl.Sequential([nl.Dense(3, 4), nl.Highway(5)])
