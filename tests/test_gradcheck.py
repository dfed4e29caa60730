"""nnlab.gradcheck: it passes correct gradients, and it must catch planted wrong ones
-- a 1% error, a sign error, a NaN -- reporting the worst element (where, analytic, numeric, error)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnlab as nl
from nnlab import activations, gradcheck
from nnlab.errors import ShapeError

RNG = np.random.default_rng(7)


# ---------------------------------------------------------------- check()
def f_cubic(x):
    return float((x ** 3).sum() + np.sin(x).prod())


def g_cubic(x):
    prod = np.sin(x).prod()
    return 3 * x ** 2 + np.array([prod / np.tan(v) for v in x.reshape(-1)]).reshape(x.shape)


def test_check_passes_on_a_correct_gradient():
    x = np.array([0.3, -1.2, 0.8, 2.0])
    res = gradcheck.check(f_cubic, g_cubic, x)
    assert res.ok and bool(res)
    assert res.n_checked == 4
    assert res.abs_error < 1e-7
    assert str(res).startswith("ok")
    assert (res.eps, res.atol, res.rtol) == (gradcheck.EPS, gradcheck.ATOL, gradcheck.RTOL)


@settings(deadline=None, max_examples=40)
@given(st.lists(st.floats(-3, 3), min_size=1, max_size=8), st.integers(0, 7))
def test_check_catches_one_percent_error_in_one_element(values, k):
    x = np.array(values)
    k = k % x.size
    if abs(x[k]) < 0.1:  # a 1% error of a derivative ~0 is below atol: not what this test is about
        x[k] = 0.5

    def bad(x):
        g = 3 * x ** 2
        g[k] *= 1.01
        return g

    assert gradcheck.check(lambda x: (x ** 3).sum(), lambda x: 3 * x ** 2, x).ok
    res = gradcheck.check(lambda x: (x ** 3).sum(), bad, x)
    assert not res.ok and not bool(res)
    assert res.index == (k,)
    assert res.analytic == pytest.approx(3.03 * x[k] ** 2)
    assert res.numeric == pytest.approx(3 * x[k] ** 2, rel=1e-6)
    assert res.rel_error == pytest.approx(0.01, rel=1e-3)


def test_check_reports_the_worst_element_of_a_matrix_with_a_sign_error():
    x = RNG.normal(size=(3, 4))

    def bad(x):
        g = np.cos(x)
        g[2, 1] = -g[2, 1]
        return g

    res = gradcheck.check(lambda x: np.sin(x).sum(), bad, x, name="sin")
    assert not res.ok
    assert res.index == (2, 1)
    assert res.analytic == pytest.approx(-math.cos(x[2, 1]))
    assert res.numeric == pytest.approx(math.cos(x[2, 1]), rel=1e-7)
    s = str(res)
    assert s.startswith("FAIL sin") and "[2, 1]" in s and "analytic" in s and "numeric" in s


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_analytic_gradient_is_a_failure(bad_value):
    x = np.array([0.5, 1.5, -0.5])

    def bad(x):
        g = 2 * x
        g[1] = bad_value
        return g

    res = gradcheck.check(lambda x: (x ** 2).sum(), bad, x)
    assert not res.ok
    assert res.index == (1,)
    assert "FAIL" in str(res)


def test_nan_everywhere_is_a_failure():
    res = gradcheck.check(lambda x: float("nan"), lambda x: np.zeros_like(x), np.ones(3))
    assert not res.ok


def test_check_shape_mismatch_raises():
    with pytest.raises(ShapeError, match="grad_f"):
        gradcheck.check(lambda x: x.sum(), lambda x: np.ones(5), np.ones(3))


def test_compare_tolerance_rule():
    # |a - n| <= atol + rtol |n| passes; just outside fails
    n = np.array([1.0])
    assert gradcheck.compare("t", n * (1 + 0.9e-5), n, atol=0.0).ok
    assert not gradcheck.compare("t", n * (1 + 1.1e-5), n, atol=0.0).ok
    assert gradcheck.compare("t", [5e-9], [0.0]).ok
    assert not gradcheck.compare("t", [2e-8], [0.0]).ok
    assert gradcheck.compare("t", np.zeros((0,)), np.zeros((0,))).ok


def test_numeric_gradient_does_not_modify_input():
    x = RNG.normal(size=(2, 3))
    x0 = x.copy()
    g = gradcheck.numeric_gradient(lambda v: (v ** 2).sum(), x)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_allclose(g, 2 * x, rtol=1e-8)


# ---------------------------------------------------------------- check_activation()
BUILTIN = [e.name for e in activations.entries() if not e.custom] + ["scaled"]


@pytest.mark.parametrize("name", BUILTIN)
def test_check_activation_passes_for_every_registry_name(name):
    results = gradcheck.check_activation(name)
    act = activations.get(name)
    assert len(results) == 1 + len(act.param_names)
    for r in results:
        assert r.ok, str(r)
        assert r.n_checked > 200


@pytest.mark.parametrize("name,params", [("swish", {"beta": 1.7}), ("acon_c", {"p1": 1.3, "p2": -0.2, "beta": 0.8}),
                                         ("prelu", {"alpha": 0.1}), ("scaled", {"base": "elu", "a": 1.5,
                                                                               "learnable": True})])
def test_check_activation_checks_learnable_parameters(name, params):
    results = gradcheck.check_activation(name, **params)
    names = [r.name for r in results]
    act = activations.get(name, **params)
    assert names[1:] == [f"{act.label} d/d{p}" for p in act.param_names]
    assert all(results), [str(r) for r in results]


def _softsign(z):
    return z / (1.0 + abs(z))


def _softsign_d(z):
    return 1.0 / ((1.0 + abs(z)) * (1.0 + abs(z)))


BAD = {
    "nnlab_test_gc_good": (_softsign, _softsign_d, {}),
    "nnlab_test_gc_1pct": (_softsign, lambda z: 1.01 / ((1.0 + abs(z)) * (1.0 + abs(z))), {}),
    "nnlab_test_gc_sign": (_softsign, lambda z: (1.0 if z < 2.0 else -1.0) / ((1.0 + abs(z)) * (1.0 + abs(z))), {}),
}


@pytest.fixture(scope="module")
def planted():
    """User activations: one right, one 1% too steep, one with a sign error for z >= 2, and one
    whose learnable parameter derivative is wrong. Unregistered afterwards."""
    for name, (f, d, _) in BAD.items():
        activations.register(name, f, d)
    # (user functions are compiled by Numba: they call no Python helpers)
    activations.register("nnlab_test_gc_param", lambda z, c: c * z / (1.0 + abs(z)),
                         lambda z, c: c / ((1.0 + abs(z)) * (1.0 + abs(z))),
                         params={"c": 1.5}, learnable=("c",),
                         param_derivatives={"c": lambda z, c: 1.02 * z / (1.0 + abs(z))})
    yield
    for name in [*BAD, "nnlab_test_gc_param"]:
        activations.unregister(name)


def test_check_activation_catches_planted_wrong_derivatives(planted):
    (good,) = gradcheck.check_activation("nnlab_test_gc_good")
    assert good.ok, str(good)
    (one,) = gradcheck.check_activation("nnlab_test_gc_1pct")
    assert not one.ok
    assert one.rel_error == pytest.approx(0.01, rel=1e-3)
    assert one.where == "z" and one.analytic == pytest.approx(1.01 * one.numeric, rel=1e-6)
    (sign,) = gradcheck.check_activation("nnlab_test_gc_sign")
    assert not sign.ok
    z = gradcheck.default_points(activations.get("nnlab_test_gc_sign"))[sign.index[0]]
    assert z >= 2.0 and sign.analytic == pytest.approx(-sign.numeric, rel=1e-6)
    assert "FAIL nnlab_test_gc_sign'" in str(sign)
    d, dc = gradcheck.check_activation("nnlab_test_gc_param")
    assert d.ok and not dc.ok
    assert dc.name == "nnlab_test_gc_param d/dc"
    # explicit points work too
    (one_at,) = gradcheck.check_activation("nnlab_test_gc_1pct", z=[0.5, -1.0])
    assert not one_at.ok and one_at.n_checked == 2


@pytest.mark.parametrize("name,params", [("elu", {"alpha": 2.0}), ("elu", {"alpha": 0.5}),
                                         ("leaky_relu", {"alpha": 0.3}), ("selu", {"alpha": 1.2}),
                                         ("scaled", {"base": "elu", "alpha": 3.0, "a": 2.0})])
def test_check_activation_at_non_default_hyperparameters(name, params):
    """elu's kink at 0 exists only for α ≠ 1 (its documented facts are for α = 1): the grid must
    still avoid it, or the checker reports a false failure at z = 0."""
    assert 0.0 in gradcheck.kinks(activations.get(name, **params))
    assert all(gradcheck.check_activation(name, **params))


def test_kinks_of_smooth_activations_are_none():
    for name in ("tanh", "gelu", "swish", "elu", "celu", "softplus", "mish", "gaussian", "sigmoid"):
        assert gradcheck.kinks(activations.get(name)) == ()
    assert gradcheck.kinks(activations.get("hard_swish")) == (-3.0, 3.0)


def test_default_points_avoid_kinks():
    z = gradcheck.default_points(activations.get("hard_swish"))
    assert np.min(np.abs(np.abs(z) - 3.0)) > 1e-3
    z = gradcheck.default_points(activations.get("relu"))
    assert np.min(np.abs(z)) > 1e-3


# ---------------------------------------------------------------- check_network()
def _net(dtype="float64"):
    return nl.Sequential([nl.Dense(3, 5, activation="tanh"), nl.Dense(5, 4, activation="prelu"),
                          nl.Dense(4, 2, activation="identity")], loss="mse", seed=1, dtype=dtype)


def _xy(n=6):
    rng = np.random.default_rng(3)
    return rng.normal(size=(n, 3)), rng.normal(size=(n, 2))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_network_passes_and_leaves_the_network_alone(dtype):
    net = _net(dtype)
    X, y = _xy()
    before = [p.copy() for p in net.params()]
    res = gradcheck.check_network(net, X, y)
    assert res.ok, str(res)
    assert res.n_checked == net.n_params
    assert res.where in net.param_names()
    for p, q in zip(before, net.params()):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("target,index,factor", [("1.W", (2, 3), 1.01), ("0.b", (4,), -1.0),
                                                  ("1.act.alpha", (0,), 1.02), ("2.W", (0, 1), float("nan"))])
def test_check_network_catches_a_planted_bug(monkeypatch, target, index, factor):
    """Wrap Sequential.loss_and_grads (check_network runs it on a float64 copy) so that one grad
    element is wrong; the report must point at exactly that parameter element."""
    net = _net()
    X, y = _xy()
    names = net.param_names()
    k = names.index(target)
    original = nl.Sequential.loss_and_grads

    def planted(self, X, y, training=None):
        loss, grads = original(self, X, y, training)
        grads[k][index] *= factor
        return loss, grads

    monkeypatch.setattr(nl.Sequential, "loss_and_grads", planted)
    res = gradcheck.check_network(net, X, y)
    assert not res.ok
    assert res.where == target and res.index == index
    if math.isnan(factor):
        assert math.isnan(res.analytic)
    else:
        assert res.analytic == pytest.approx(factor * res.numeric, rel=1e-5)
    assert f"FAIL network loss: worst at {target}{list(index)}" in str(res)


def test_check_network_rrelu_training_is_deterministic():
    net = nl.Sequential([nl.Dense(3, 6, activation="rrelu"), nl.Dense(6, 6, activation="noisy_relu"),
                         nl.Dense(6, 2)], seed=4)
    net.train()
    X, y = _xy(8)
    res = gradcheck.check_network(net, X, y)
    assert res.ok, str(res)
