"""The layer machinery every layer kind relies on: parameter naming, width checks, tensors read by
several ops (residual blocks), sequences through row-wise layers, input gradients, buffers."""

import math

import numpy as np
import pytest

import nnlab as nl
from nnlab.errors import HyperparameterError, ShapeError


def _data(n=6, f=4, seed=0, steps=None):
    rng = np.random.default_rng(seed)
    shape = (n, f) if steps is None else (n, steps, f)
    return rng.normal(size=shape)


def test_residual_names_and_gradcheck():
    net = nl.Sequential([nl.Dense(4, 6, activation="tanh"),
                         nl.Residual([nl.Dense(6, 6, activation="relu"), nl.Dense(6, 6)]),
                         nl.Activation("tanh"), nl.Dense(6, 1)], seed=0)
    assert net.param_names() == ["0.W", "0.b", "1.0.W", "1.0.b", "1.1.W", "1.1.b", "3.W", "3.b"]
    X = _data()
    assert nl.gradcheck.check_network(net, X, X.sum(axis=1)).ok


def test_residual_with_zero_block_is_the_identity():
    net = nl.Sequential([nl.Residual([nl.Dense(5, 5, activation="sigmoid"), nl.Dense(5, 5)])], seed=3)
    for p in net.params():
        p[...] = 0.0
    X = _data(f=5)
    np.testing.assert_array_equal(net.forward(X), X)
    _, _, dX = net.loss_and_grads(X, np.zeros_like(X), wrt_input=True)
    np.testing.assert_array_equal(dX, X / X.shape[0])  # mse: dL/dy = (y - 0)/N, passed through the skip


def test_residual_width_change_needs_projection():
    with pytest.raises(ShapeError, match=r"maps 4 features to 3.*projection=True"):
        nl.Sequential([nl.Residual([nl.Dense(4, 3)])])
    net = nl.Sequential([nl.Residual([nl.Dense(4, 3, activation="tanh")], projection=True), nl.Dense(3, 2)], seed=0)
    assert net.param_names()[0] == "0.W_proj" and net.params()[0].shape == (4, 3)
    X = _data()
    assert nl.gradcheck.check_network(net, X, np.ones((6, 2))).ok


def test_nested_residual_and_stacked_blocks_gradcheck():
    inner = nl.Residual([nl.Dense(3, 3, activation="softplus")])
    net = nl.Sequential([nl.Residual([inner, nl.Dense(3, 3, activation="tanh")]),
                         nl.Residual([nl.Activation("elu"), nl.Dense(3, 3)]), nl.Dense(3, 2)],
                        loss="softmax_cross_entropy", seed=1)
    assert "0.0.0.W" in net.param_names()
    X = _data(f=3)
    assert nl.gradcheck.check_network(net, X, np.array([0, 1, 1, 0, 1, 0])).ok


def test_width_mismatch_names_both_layers():
    with pytest.raises(ShapeError, match=r"layer 1 Dense\(5, 2.*expects 5 inputs but layer 0 Dense\(3, 4.*gives 4"):
        nl.Sequential([nl.Dense(3, 4), nl.Dense(5, 2)])
    with pytest.raises(ShapeError, match="input width"):
        nl.Sequential([nl.Activation("relu")])


def test_the_same_layer_object_twice_is_refused():
    d = nl.Dense(3, 3)
    with pytest.raises(HyperparameterError, match="appears twice"):
        nl.Sequential([d, d])


def test_width_agnostic_layers_take_the_previous_width():
    # (bias_init: a row the relu zeroes entirely would put prelu's input exactly on its kink)
    net = nl.Sequential([nl.Activation("relu"), nl.Dense(4, 2, bias_init=0.1), nl.Activation("prelu")], seed=0)
    assert net.n_in == 4 and net.n_out == 2
    assert net.param_names() == ["1.W", "1.b", "2.act.alpha"]
    X = _data()
    assert nl.gradcheck.check_network(net, X, np.ones((6, 2))).ok


def test_dense_on_sequences_acts_on_every_step():
    net = nl.Sequential([nl.Dense(3, 5, activation="tanh"), nl.Dense(5, 2)], seed=0)
    X = _data(n=4, f=3, steps=6)
    out = net.forward(X)
    assert out.shape == (4, 6, 2)
    np.testing.assert_allclose(out.reshape(-1, 2), net.forward(X.reshape(-1, 3)), rtol=1e-13, atol=1e-15)
    y = np.random.default_rng(1).normal(size=(4, 6, 2))
    # the loss over N·T rows equals the loss of the flattened batch
    assert net.loss(X, y) == pytest.approx(net.loss(X.reshape(-1, 3), y.reshape(-1, 2)), rel=1e-13)
    assert nl.gradcheck.check_network(net, X, y).ok


def test_sequence_classification_labels_per_step():
    net = nl.Sequential([nl.Dense(3, 4)], loss="softmax_cross_entropy", seed=0)
    X = _data(n=5, f=3, steps=2)
    labels = np.random.default_rng(2).integers(0, 4, size=(5, 2))
    assert net.loss(X, labels) == pytest.approx(net.loss(X.reshape(-1, 3), labels.reshape(-1)), rel=1e-13)
    with pytest.raises(ShapeError, match=r"y must have shape \(5, 2\)"):
        net.loss(X, labels[:, :1])
    tr = nl.Trainer(net, nl.optim.Adam(lr=0.05))
    hist = tr.fit(X, labels, epochs=3, batch_size=2)
    assert len(hist.accuracy) == 3 and 0.0 <= hist.accuracy[-1] <= 1.0


def test_input_gradient_matches_central_differences():
    net = nl.Sequential([nl.Dense(4, 5, activation="tanh"), nl.Residual([nl.Dense(5, 5, activation="sigmoid")]),
                         nl.Dense(5, 2)], loss="mse", seed=0)
    X = _data()
    y = np.ones((6, 2))
    _, _, dX = net.loss_and_grads(X, y, wrt_input=True)
    num = nl.gradcheck.numeric_gradient(lambda x: net.loss(x, y), X)
    assert nl.gradcheck.compare("dX", dX, num).ok


def test_fit_and_step_give_the_same_bits_with_a_residual_block():
    def make():
        return nl.Sequential([nl.Dense(4, 8, activation="relu"), nl.Residual([nl.Dense(8, 8, activation="tanh")]),
                              nl.Dense(8, 1)], seed=5)
    X = _data(n=20)
    y = np.sin(X.sum(axis=1))
    a, b = make(), make()
    ta, tb = nl.Trainer(a, nl.optim.SGD(lr=0.1, momentum=0.9)), nl.Trainer(b, nl.optim.SGD(lr=0.1, momentum=0.9))
    ta.fit(X, y, epochs=2, batch_size=8, seed=0)
    tb.compiled_epochs = False
    tb.fit(X, y, epochs=2, batch_size=8, seed=0)
    np.testing.assert_array_equal(a._flat, b._flat)


def test_save_load_round_trip_of_a_residual_net(tmp_path):
    net = nl.Sequential([nl.Dense(4, 6, activation="relu"), nl.Residual([nl.Dense(6, 3)], projection=True),
                         nl.Activation("prelu"), nl.Dense(3, 2)], seed=0)
    net.params()[-3][...] = 0.5  # the prelu alpha
    path = tmp_path / "r.npz"
    net.save(path)
    net2 = nl.load(path)
    assert net2.param_names() == net.param_names()
    np.testing.assert_array_equal(net2._flat, net._flat)
    X = _data()
    np.testing.assert_array_equal(net2.forward(X), net.forward(X))


def test_custom_activation_inside_a_residual_block():
    name = "layers_core_sin"
    nl.activations.register(name, lambda z: math.sin(z), lambda z: math.cos(z))
    try:
        net = nl.Sequential([nl.Residual([nl.Dense(3, 3, activation=name), nl.Activation(name)]), nl.Dense(3, 1)],
                            seed=0)
        X = _data(f=3)
        assert nl.gradcheck.check_network(net, X, X[:, 0]).ok
    finally:  # (the registry is process-wide: the docs' `nnlab activations` sample lists the built-in ones)
        nl.activations.unregister(name)


def test_gradcheck_refuses_truncated_backpropagation_through_time():
    net = nl.Sequential([nl.Residual([nl.LSTM(2, 2, return_sequences=True, truncate=2)]), nl.Dense(2, 1)], seed=0)
    X = _data(n=3, f=2, steps=4)
    with pytest.raises(HyperparameterError, match=r"layer 0\.0 LSTM.*truncates .* to 2 of 4 steps"):
        nl.gradcheck.check_network(net, X, np.zeros((3, 4, 1)))
    assert nl.gradcheck.check_network(net, X[:, :2], np.zeros((3, 2, 1))).ok  # k >= T: full BPTT
