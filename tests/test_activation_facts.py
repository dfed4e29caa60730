"""One test per identity stated for a single activation (the activation table and the registry's
``Facts.identities``), the SELU self-normalising fixed point, and the vanishing-gradient bound of
the seed text (seeds/000: a chain of sigmoid units).
"""

import math

import naive  # tests/ is on sys.path (conftest.py)
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

import nnlab.activations as A

SETTINGS = settings(deadline=None, max_examples=60)
Z = np.linspace(-10.0, 10.0, 4001)  # contains 0 exactly (index 2000)


def _argmin_scalar(f, lo, hi):
    res = optimize.minimize_scalar(lambda x: float(f(np.array([x]))[0]), bounds=(lo, hi), method="bounded",
                                   options={"xatol": 1e-10})
    return res.x, res.fun


# ---------------------------------------------------------------- sigmoid and tanh
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0, -2.0])
def test_sigmoid_derivative_bounded_by_alpha_over_4(alpha):
    act = A.get("sigmoid", alpha=alpha)
    z = Z[np.abs(alpha * Z) <= 30]  # where σ'(αz) is still far from underflow
    d = act.derivative(z)
    s = act.forward(z)
    assert np.all(np.sign(d) == np.sign(alpha)) and np.all(d != 0)  # 0 < f' for α > 0
    assert np.abs(d).max() <= abs(alpha) / 4
    assert act.derivative(np.array([0.0]))[0] == alpha / 4  # the maximum, at z = 0 ...
    assert z[np.argmax(np.abs(d))] == 0.0  # ... and only there on the grid
    np.testing.assert_allclose(d, alpha * s * (1 - s), rtol=1e-12, atol=1e-15)  # f' = ασ(1-σ), 1-σ rounds
    if alpha == 2.0:
        assert np.abs(d).max() == 0.5


def test_tanh_derivative_in_0_1_and_tanh_is_a_shifted_sigmoid():
    act = A.get("tanh")
    d = act.derivative(Z)
    assert np.all(d > 0) and np.all(d <= 1) and d[Z == 0.0][0] == 1.0
    t = act.forward(Z)
    np.testing.assert_allclose(d, 1 - t * t, rtol=1e-9, atol=1e-15)  # f' = 1 - tanh²
    s2 = A.get("sigmoid").forward(2 * Z)
    np.testing.assert_allclose(t, 2 * s2 - 1, rtol=1e-13, atol=1e-15)  # tanh z = 2σ(2z) - 1


# ---------------------------------------------------------------- softplus
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0, 5.0])
def test_softplus_identities(beta):
    act = A.get("softplus", beta=beta)
    np.testing.assert_allclose(act.derivative(Z), A.get("sigmoid", alpha=beta).forward(Z), rtol=1e-15,
                               atol=0)  # f' = σ(βz)
    z = Z[np.abs(beta * Z) <= 30]  # beyond, f - max(0, z) drops below the spacing of doubles
    assert np.all(act.forward(z) > np.maximum(0.0, z))  # f > max(0, z)
    assert act.forward(np.array([0.0]))[0] == pytest.approx(math.log(2.0) / beta, rel=1e-15)
    # softplus tends to relu as β grows: the gap is at most log 2 / β, reached at 0
    assert np.max(act.forward(Z) - np.maximum(0.0, Z)) == pytest.approx(math.log(2.0) / beta, rel=1e-12)


# ---------------------------------------------------------------- the ELU family
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_elu_derivative_is_f_plus_alpha_below_zero(alpha):
    act = A.get("elu", alpha=alpha)
    neg = Z[Z < 0]
    np.testing.assert_allclose(act.derivative(neg), act.forward(neg) + alpha, rtol=1e-12, atol=1e-15)
    far = np.array([-1e30, -1e4, -50.0])
    assert np.all(act.forward(np.concatenate([Z, far])) >= -alpha)  # f >= -α, the saturation value
    assert np.all(act.forward(far) == -alpha)


def test_celu_equals_elu_for_alpha_1():
    z = np.concatenate([Z, [-1e4, 1e4, -math.inf, math.inf]])
    elu, celu = A.get("elu", alpha=1.0), A.get("celu", alpha=1.0)
    np.testing.assert_array_equal(celu.forward(z), elu.forward(z))
    np.testing.assert_array_equal(celu.derivative(z), elu.derivative(z))
    assert not np.allclose(A.get("celu", alpha=2.0).forward(Z), A.get("elu", alpha=2.0).forward(Z))


# ---------------------------------------------------------------- swish, mish, acon_c
def test_swish_limits_in_beta():
    z = Z[np.abs(Z) <= 8]
    small = A.get("swish", beta=1e-8)
    np.testing.assert_allclose(small.forward(z), z / 2, rtol=1e-7, atol=0)  # β → 0: z/2
    np.testing.assert_allclose(small.derivative(z), 0.5, rtol=1e-7)
    big = A.get("swish", beta=1e4)
    away = z[np.abs(z) >= 0.01]  # β → ∞: relu, away from 0 where the switch sharpens
    np.testing.assert_allclose(big.forward(away), np.maximum(0.0, away), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(big.derivative(away), (away > 0).astype(float), rtol=1e-12, atol=1e-12)
    assert A.get("swish", beta=1.0).forward(np.array([1.0]))[0] == pytest.approx(1 / (1 + math.exp(-1)))


def test_swish_minimum():
    x, fmin = _argmin_scalar(A.get("swish").forward, -3, 0)
    assert fmin == pytest.approx(-0.2785, abs=5e-5)
    assert x == pytest.approx(-1.2785, abs=5e-5)


def test_mish_minimum():
    x, fmin = _argmin_scalar(A.get("mish").forward, -3, 0)
    assert fmin == pytest.approx(-0.3088, abs=5e-5)
    assert x == pytest.approx(-1.1924, abs=5e-5)


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.5, -1.0])
def test_acon_c_with_p1_1_p2_0_is_swish(beta):
    z = np.concatenate([Z, [-1e4, 1e4, -math.inf, math.inf]])
    acon, swish = A.get("acon_c", p1=1.0, p2=0.0, beta=beta), A.get("swish", beta=beta)
    np.testing.assert_allclose(acon.forward(z), swish.forward(z), rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(acon.derivative(z), swish.derivative(z), rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(acon.param_derivative(z, "beta"), swish.param_derivative(z, "beta"),
                               rtol=1e-13, atol=1e-300)


# ---------------------------------------------------------------- softsign, gaussian
def test_softsign_derivative_at_most_1():
    act = A.get("softsign")
    d = act.derivative(Z)
    assert np.all(d <= 1.0) and np.all(d > 0) and d[Z == 0.0][0] == 1.0
    np.testing.assert_allclose(d, 1 / (1 + np.abs(Z)) ** 2, rtol=1e-15)


def test_gaussian_derivative_peaks_at_plus_minus_inv_sqrt2():
    act = A.get("gaussian")
    for lo, hi, peak in ((0.1, 2.0, 1 / math.sqrt(2)), (-2.0, -0.1, -1 / math.sqrt(2))):
        x, neg_abs = _argmin_scalar(lambda z: -np.abs(act.derivative(z)), lo, hi)
        assert x == pytest.approx(peak, abs=1e-6)
        assert -neg_abs == pytest.approx(math.sqrt(2) * math.exp(-0.5), rel=1e-12)
    assert np.abs(act.derivative(Z)).max() <= math.sqrt(2) * math.exp(-0.5)


# ---------------------------------------------------------------- relu family
@pytest.mark.parametrize("alpha", [0.25, 0.01, 1.5, -0.5])
def test_prelu_parameter_derivative_is_min_z_0(alpha):
    act = A.get("prelu", alpha=alpha)
    assert act.param_names == ("alpha",)
    np.testing.assert_array_equal(act.param_derivative(Z, "alpha"), np.minimum(Z, 0.0))


@pytest.mark.parametrize("lower, upper", [(1 / 8, 1 / 3), (0.0, 0.5), (0.2, 0.2)])
def test_rrelu_eval_is_deterministic_midpoint(lower, upper):
    act = A.get("rrelu", lower=lower, upper=upper)
    mid = (lower + upper) / 2
    neg = Z[Z < 0]
    first = act.forward(Z)
    np.testing.assert_array_equal(act.forward(Z), first)
    np.testing.assert_allclose(act.forward(neg), mid * neg, rtol=1e-15)
    np.testing.assert_allclose(act.derivative(neg), mid, rtol=1e-15)
    np.testing.assert_array_equal(act.forward(Z[Z > 0]), Z[Z > 0])


def test_rrelu_training_is_seeded_and_within_bounds():
    lower, upper = 0.1, 0.4
    act = A.get("rrelu", lower=lower, upper=upper)
    z = -np.linspace(0.5, 5.0, 20000)
    a = act.forward(z, training=True, seed=7)
    np.testing.assert_array_equal(act.forward(z, training=True, seed=7), a)  # same seed, same draws
    assert not np.array_equal(act.forward(z, training=True, seed=8), a)  # another seed differs
    slopes = a / z
    assert slopes.min() >= lower and slopes.max() <= upper
    assert slopes.min() < lower + 0.01 and slopes.max() > upper - 0.01  # the whole interval is used
    assert abs(slopes.mean() - (lower + upper) / 2) < 0.005
    # the derivative in training uses the same slope as the forward pass
    np.testing.assert_allclose(act.derivative(z, training=True, seed=7), slopes, rtol=1e-12)
    pos = np.linspace(0.1, 3, 50)
    np.testing.assert_array_equal(act.forward(pos, training=True, seed=7), pos)
    unseeded = act.forward(z, training=True) / z
    assert unseeded.min() >= lower and unseeded.max() <= upper


def test_noisy_relu_eval_is_relu_and_training_is_seeded():
    sigma = 0.5
    act = A.get("noisy_relu", sigma=sigma)
    np.testing.assert_array_equal(act.forward(Z), np.maximum(0.0, Z))
    np.testing.assert_array_equal(act.derivative(Z), (Z > 0).astype(float))
    z = np.full(20000, 100.0)  # far above 0, so f = z + σε exactly recovers the noise
    a = act.forward(z, training=True, seed=3)
    np.testing.assert_array_equal(act.forward(z, training=True, seed=3), a)
    assert not np.array_equal(act.forward(z, training=True, seed=4), a)
    eps = (a - z) / sigma
    assert abs(eps.mean()) < 0.05 and abs(eps.std() - 1) < 0.05  # ε ~ N(0, σ²)
    assert np.all(act.forward(Z, training=True, seed=1) >= 0)


# ---------------------------------------------------------------- the scaled wrapper
def test_scaled_tanh():
    a = 1.7159
    act = A.get("scaled", base="tanh", a=a, learnable=True)
    t = A.get("tanh")
    np.testing.assert_allclose(act.forward(Z), a * np.tanh(Z), rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(act.derivative(Z), a * (1 - np.tanh(Z) ** 2), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(act.derivative(Z), a * t.derivative(Z))
    np.testing.assert_array_equal(act.param_derivative(Z, "a"), t.forward(Z))
    assert act.param_names == ("a",)
    numeric, err = naive.numeric_derivative(
        lambda v: A.get("scaled", base="tanh", a=v).forward(Z), a)
    naive.assert_close_to_numeric(act.param_derivative(Z, "a"), numeric, err, Z, what="d(a·tanh)/da")


# ---------------------------------------------------------------- SELU: the self-normalising fixed point
def _selu_stack(std_scale, seed=0, n=1000, width=256, depth=32):
    rng = np.random.default_rng(seed)
    selu = A.get("selu")
    x = rng.standard_normal((n, width))
    stats = []
    for _ in range(depth):
        W = rng.standard_normal((width, width)) * std_scale * math.sqrt(1.0 / width)  # LeCun normal
        x = selu.forward(x @ W)
        stats.append((x.mean(), x.var()))
    return np.array(stats)


def test_selu_keeps_mean_0_and_variance_1_through_lecun_normal_layers():
    stats = _selu_stack(1.0)
    assert np.all(np.abs(stats[:, 0]) < 0.1), stats[:, 0]
    assert np.all((stats[:, 1] > 0.8) & (stats[:, 1] < 1.2)), stats[:, 1]


def test_selu_fixed_point_needs_the_lecun_scale():
    """The same stack with twice the LeCun std drifts far from (0, 1): the fixed point is the
    initialisation's, not something any stack of SELUs does."""
    stats = _selu_stack(2.0, depth=12)
    assert stats[-1, 1] > 10.0 and stats[-1, 0] > 1.0


# ---------------------------------------------------------------- the seed text's bound for sigmoid chains
_sig = A.get("sigmoid")


def _sigma(x):
    return float(_sig.forward(np.array([x]))[0])


def _sigma_prime(x):
    return float(_sig.derivative(np.array([x]))[0])


@SETTINGS
@given(d=st.integers(1, 10), data=st.data())
def test_sigmoid_chain_gradient_obeys_the_quarter_power_bound(d, data):
    """seeds/000: for a_k = σ(w_k u_k) (here with a bias), L = (y - a_d)²/2,
        |∂L/∂u_d| = |y - a|·σ'·|w_d| <= |y - a|·(1/4)·|w_d| <= 2·(1/4)·|w_d|,
        |∂L/∂u_{d-1}| <= 2·(1/4)²·|w_d w_{d-1}|, ...
    i.e. |∂L/∂u_k| <= |y - a_d|·(1/4)^(d-k+1)·∏_{j=k..d}|w_j| for the input u_k of unit k, and
    |∂L/∂z_k| <= |y - a_d|·(1/4)^(d-k+1)·∏_{j=k+1..d}|w_j| for its pre-activation z_k = w_k u_k + b_k.
    The gradient is the chain rule with nnlab's sigmoid derivative, cross-checked by finite differences."""
    w = data.draw(st.lists(st.floats(-5.0, 5.0), min_size=d, max_size=d), label="w")
    b = data.draw(st.lists(st.floats(-2.0, 2.0), min_size=d, max_size=d), label="b")
    x = data.draw(st.floats(-3.0, 3.0), label="x")
    y = data.draw(st.floats(-1.0, 1.0), label="y")  # |y - a| < 2 since a ∈ (0, 1): the seed's factor 2
    loss, a_d, du, dz = naive.sigmoid_chain(x, w, b, y, _sigma, _sigma_prime)
    err = abs(y - a_d)
    assert err < 2 and loss == pytest.approx(err * err / 2)
    for k in range(d):
        quarter = 0.25 ** (d - k)
        tail = float(np.prod(np.abs(w[k + 1:])))
        assert abs(dz[k]) <= err * quarter * tail * (1 + 1e-12)
        assert abs(du[k]) <= err * quarter * tail * abs(w[k]) * (1 + 1e-12)
        assert abs(du[k]) <= 2 * quarter * tail * abs(w[k]) * (1 + 1e-12)  # the seed's form
    # the chain-rule gradient is the gradient: finite differences of L in each input u_k
    us = [x]
    for k in range(d - 1):
        us.append(_sigma(w[k] * us[k] + b[k]))
    for k in range(d):
        numeric, fd_err = naive.numeric_derivative(
            lambda t, k=k: naive.chain_loss_from(k, t, w, b, y, _sigma), us[k])
        naive.assert_close_to_numeric(du[k], numeric, fd_err, us[k], rtol=1e-6, atol=1e-12,
                                      what=f"∂L/∂u_{k + 1} of a depth-{d} sigmoid chain")


def test_sigmoid_chain_gradient_vanishes_geometrically():
    """With |w| <= 1 every unit divides the gradient by at least 4 (the seed's conclusion)."""
    d = 12
    rng = np.random.default_rng(0)
    w = rng.uniform(-1, 1, d)
    b = rng.uniform(-1, 1, d)
    _, _, du, _ = naive.sigmoid_chain(0.3, w, b, 1.0, _sigma, _sigma_prime)
    ratios = np.abs(du[:-1] / du[1:])
    assert np.all(ratios <= 0.25 * (1 + 1e-12))
    assert abs(du[0]) <= abs(du[-1]) * 0.25 ** (d - 1)
