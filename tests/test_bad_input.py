"""Bad input: a clear nnlab error naming the problem, raised before any
kernel runs, and no state lost -- the parameters (and the last layer errors) are unchanged."""

import numpy as np
import pytest

import nnlab as nl
from nnlab import activations, init, losses
from nnlab.errors import (
    DTypeError,
    HyperparameterError,
    NnlabError,
    NonFiniteError,
    ShapeError,
    UnknownNameError,
)


def _net(loss="mse", n_out=3, dtype="float64"):
    return nl.Sequential([nl.Dense(4, 5, activation="prelu"), nl.Dense(5, n_out)], loss=loss, seed=0, dtype=dtype)


X = np.random.default_rng(0).normal(size=(6, 4))
Y = {"mse": np.zeros((6, 3)), "softmax_cross_entropy": np.array([0, 1, 2, 0, 1, 2]), "bce": np.full((6, 3), 0.5)}


def _snapshot(net):
    return [p.copy() for p in net.params()], [e.copy() for e in net.layer_errors]


def _assert_unchanged(net, snap):
    params, errors = snap
    for a, b in zip(params, net.params()):
        np.testing.assert_array_equal(a, b)
    assert len(errors) == len(net.layer_errors)
    for a, b in zip(errors, net.layer_errors):
        np.testing.assert_array_equal(a, b)


def _raises(net, exc, match, X, y):
    """Every entry point taking (X, y) must raise ``exc`` (an NnlabError) and change nothing."""
    snap = _snapshot(net)
    for call in (net.loss_and_grads, net.loss, lambda X, y: nl.gradcheck.check_network(net, X, y)):
        with pytest.raises(exc, match=match) as info:
            call(X, y)
        assert isinstance(info.value, NnlabError)
        _assert_unchanged(net, snap)


@pytest.fixture(params=["mse", "softmax_cross_entropy", "bce"])
def case(request):
    net = _net(request.param)
    net.loss_and_grads(X, Y[request.param])  # so that layer_errors exist and must survive
    return net, Y[request.param]


# ---------------------------------------------------------------- X
@pytest.mark.parametrize("bad", [np.zeros((6, 3)), np.zeros((6, 5)), np.zeros((6, 4, 1)), np.zeros(()),
                                 np.zeros(7), np.zeros((0, 4))])
def test_wrong_X_shape(case, bad):
    net, y = case
    _raises(net, ShapeError, r"X (must have shape \(N, (T, )?4\)|has no rows)", bad, y)
    with pytest.raises(ShapeError):
        net.forward(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_X(case, value):
    net, y = case
    bad = X.copy()
    bad[2, 3] = value
    _raises(net, NonFiniteError, r"X contains a non-finite value .* at index \(2, 3\)", bad, y)
    with pytest.raises(NonFiniteError, match="X"):
        net.forward(bad)


@pytest.mark.parametrize("bad", [np.full((6, 4), "a"), X.astype(complex), X.astype(object),
                                 np.ones((6, 4), dtype=bool)])
def test_X_of_wrong_dtype(case, bad):
    net, y = case
    _raises(net, DTypeError, "X must hold real numbers", bad, y)
    with pytest.raises(DTypeError):
        net.forward(bad)


def test_ragged_X(case):
    net, y = case
    _raises(net, ShapeError, "X could not be read", [[1.0, 2.0, 3.0, 4.0], [1.0]] * 3, y)


def test_integer_X_is_accepted():
    net = _net()
    np.testing.assert_array_equal(net.forward(np.ones((2, 4), dtype=np.int32)), net.forward(np.ones((2, 4))))


# ---------------------------------------------------------------- y
@pytest.mark.parametrize("loss,bad", [
    ("mse", np.zeros((6, 2))), ("mse", np.zeros((5, 3))), ("mse", np.zeros(6)), ("mse", np.zeros((6, 3, 1))),
    ("bce", np.zeros((6, 2))), ("bce", np.zeros(18)),
    ("softmax_cross_entropy", np.zeros(5, dtype=int)), ("softmax_cross_entropy", np.zeros((6, 3), dtype=int)),
])
def test_wrong_y_shape(loss, bad):
    net = _net(loss)
    _raises(net, ShapeError, "y|labels", X, bad)


@pytest.mark.parametrize("loss", ["mse", "bce", "softmax_cross_entropy"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_y(loss, value):
    net = _net(loss)
    bad = Y[loss].astype(float)
    bad[4] = value
    _raises(net, NonFiniteError, r"y.*non-finite", X, bad)


@pytest.mark.parametrize("loss", ["mse", "bce", "softmax_cross_entropy"])
@pytest.mark.parametrize("dtype", [complex, object, str, bool])
def test_y_of_wrong_dtype(loss, dtype):
    net = _net(loss)
    _raises(net, DTypeError, "y|labels", X, Y[loss].astype(dtype))


@pytest.mark.parametrize("bad,match", [
    ([0, 1, 3, 0, 1, 2], r"labels must lie in \[0, 3\)"),
    ([0, 1, -1, 0, 1, 2], r"labels must lie in \[0, 3\)"),
    ([0, 1, 1.5, 0, 1, 2], "integer"),
])
def test_bad_class_labels(bad, match):
    net = _net("softmax_cross_entropy")
    _raises(net, (ShapeError, DTypeError), match, X, np.array(bad))


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_bce_targets_outside_unit_interval(value):
    net = _net("bce")
    bad = Y["bce"].copy()
    bad[1, 1] = value
    _raises(net, ShapeError, r"bce targets must lie in \[0, 1\]", X, bad)


def test_ragged_labels():
    net = _net("softmax_cross_entropy")
    _raises(net, ShapeError, "y could not be read", X, [[0, 1], [1]] * 3)


# ---------------------------------------------------------------- names and construction
def test_unknown_names():
    with pytest.raises(UnknownNameError, match="unknown activation 'relu7'.*relu"):
        nl.Dense(2, 2, activation="relu7")
    with pytest.raises(UnknownNameError, match="unknown initializer 'xavier'"):
        nl.Dense(2, 2, init="xavier")
    with pytest.raises(UnknownNameError, match="unknown loss 'l2'.*mse"):
        nl.Sequential([nl.Dense(2, 2)], loss="l2")
    with pytest.raises(UnknownNameError):
        activations.get("scaled", base="nope")
    with pytest.raises(UnknownNameError):
        losses.canonical(3)
    with pytest.raises(UnknownNameError):
        init.get(None)
    with pytest.raises(HyperparameterError, match="takes.*unknown"):
        activations.get("elu", beta=2.0)


def test_mismatched_layer_widths():
    with pytest.raises(ShapeError, match=r"layer 2 Dense\(6, .*\) expects 6 inputs but layer 1 Dense\(4, 5, .*\) gives 5"):
        nl.Sequential([nl.Dense(3, 4), nl.Dense(4, 5), nl.Dense(6, 1)])
    with pytest.raises(ShapeError, match="at least one layer"):
        nl.Sequential([])


@pytest.mark.parametrize("dtype", ["float16", "int32", "complex128", "nonsense", np.float16, int])
def test_invalid_dtype(dtype):
    with pytest.raises(DTypeError, match="dtype must be 'float32' or 'float64'"):
        nl.Sequential([nl.Dense(2, 2)], dtype=dtype)


@pytest.mark.parametrize("kwargs", [{"n_in": 0}, {"n_in": 2.5}, {"n_out": -1}, {"n_out": True}])
def test_invalid_layer_sizes(kwargs):
    args = {"n_in": 2, "n_out": 2, **kwargs}
    with pytest.raises(HyperparameterError, match="Dense n_"):
        nl.Dense(args["n_in"], args["n_out"])


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_invalid_seed(seed):
    with pytest.raises(HyperparameterError, match="seed"):
        nl.Sequential([nl.Dense(2, 2)], seed=seed)


def test_non_layer_in_sequential():
    with pytest.raises(HyperparameterError, match="layer 1 is not an nnlab layer"):
        nl.Sequential([nl.Dense(2, 2), "relu"])


# ---------------------------------------------------------------- set_params
def test_set_params_wrong_count_or_shape_changes_nothing():
    net = _net()
    net.loss_and_grads(X, Y["mse"])
    snap = _snapshot(net)
    good = [p + 1.0 for p in net.params()]
    with pytest.raises(ShapeError, match="set_params needs 5 arrays; got 4"):
        net.set_params(good[:-1])
    _assert_unchanged(net, snap)
    with pytest.raises(ShapeError, match="set_params needs 5 arrays; got 6"):
        net.set_params(good + [np.zeros(1)])
    _assert_unchanged(net, snap)
    for k in range(len(good)):
        bad = list(good)
        bad[k] = np.zeros(good[k].shape + (1,))  # all others valid: nothing may be written at all
        with pytest.raises(ShapeError, match=f"parameter {net.param_names()[k]} must have shape"):
            net.set_params(bad)
        _assert_unchanged(net, snap)
    bad = list(good)
    bad[3] = np.full(good[3].shape, np.nan)
    with pytest.raises(NonFiniteError, match="parameter 1.W"):
        net.set_params(bad)
    _assert_unchanged(net, snap)
    bad[3] = good[3].astype(complex)
    with pytest.raises(DTypeError, match="parameter 1.W"):
        net.set_params(bad)
    _assert_unchanged(net, snap)
    assert net.layers[0].activation.hyperparams["alpha"] == 0.25  # the activation was not synced either
    net.set_params(good)  # and a valid call still works
    for a, b in zip(good, net.params()):
        np.testing.assert_array_equal(a, b)


def test_failed_call_then_good_call_gives_the_same_result():
    net = _net("softmax_cross_entropy")
    y = Y["softmax_cross_entropy"]
    l1, g1 = net.loss_and_grads(X, y)
    with pytest.raises(ShapeError):
        net.loss_and_grads(X, np.array([0, 1, 5, 0, 1, 2]))
    l2, g2 = net.loss_and_grads(X, y)
    assert l1 == l2
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)


def test_errors_are_also_builtin_exception_types():
    net = _net()
    with pytest.raises(ValueError):
        net.forward(np.zeros((2, 3)))
    with pytest.raises(TypeError):
        net.forward(np.zeros((2, 4), dtype=complex))
