"""nnlab.ewa: V_t = βV_{t−1} + (1−β)θ_t with optional bias correction V_t/(1−βᵗ) ([S1])."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnlab as nl
from nnlab.errors import HyperparameterError, NonFiniteError, ShapeError

betas = st.floats(0.0, 0.999)
values = st.floats(-1e6, 1e6, allow_nan=False)


def naive_ewa(xs, beta, correct):
    v, out = 0.0, []
    for t, x in enumerate(xs, start=1):
        v = beta * v + (1 - beta) * x
        out.append(v / (1 - beta ** t) if correct else v)
    return out


@settings(deadline=None, max_examples=100)
@given(beta=betas, c=values, n=st.integers(1, 50))
def test_bias_correction_removes_the_start_up_bias(beta, c, n):
    """A constant input c: the corrected average is c from step 1; the raw one is c(1 − βᵗ)."""
    avg = nl.ewa.EWA(beta, bias_correction=True)
    for t in range(1, n + 1):
        assert avg.update(c) == pytest.approx(c, rel=1e-12, abs=1e-300)
        assert float(avg.raw) == pytest.approx(c * (1 - beta ** t), rel=1e-12, abs=1e-300)
    np.testing.assert_allclose(nl.ewa.ewa(np.full(n, c), beta, bias_correction=True), c, rtol=1e-12, atol=1e-300)


@settings(deadline=None, max_examples=60)
@given(beta=betas, xs=st.lists(values, min_size=1, max_size=40), correct=st.booleans())
def test_matches_the_formula(beta, xs, correct):
    ref = naive_ewa(xs, beta, correct)
    np.testing.assert_allclose(nl.ewa.ewa(xs, beta, bias_correction=correct), ref, rtol=1e-12, atol=1e-9)
    avg = nl.ewa.EWA(beta, bias_correction=correct)
    got = [avg.update(x) for x in xs]
    assert all(isinstance(v, float) for v in got)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)


def test_arrays_and_series_shapes():
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(30, 2, 3))
    series = nl.ewa.ewa(xs, 0.9, bias_correction=True)
    assert series.shape == xs.shape
    avg = nl.ewa.EWA(0.9, bias_correction=True)
    for k, x in enumerate(xs):
        np.testing.assert_allclose(avg.update(x), series[k], rtol=1e-13)
    assert avg.t == 30
    with pytest.raises(ShapeError):
        avg.update(np.zeros(6))


def test_larger_beta_is_smoother_but_lags():
    """[S1]: β = 0.98 averages ~50 values (smooth, shifted right), β = 0.5 follows quickly."""
    t = np.arange(365)
    temp = 15 + 10 * np.sin(2 * np.pi * t / 365) + np.random.default_rng(0).normal(0, 3, size=t.size)
    smooth, quick = nl.ewa.ewa(temp, 0.98, True), nl.ewa.ewa(temp, 0.5, True)
    assert np.std(np.diff(smooth)) < np.std(np.diff(quick))
    assert np.argmax(smooth) > np.argmax(15 + 10 * np.sin(2 * np.pi * t / 365))


@pytest.mark.parametrize("beta", [1.0, -0.1, float("nan"), "0.9"])
def test_bad_beta(beta):
    with pytest.raises(HyperparameterError):
        nl.ewa.EWA(beta)
    with pytest.raises(HyperparameterError):
        nl.ewa.ewa([1.0], beta)


def test_bad_values():
    avg = nl.ewa.EWA(0.9)
    with pytest.raises(NonFiniteError):
        avg.update(float("nan"))
    assert avg.t == 0 and avg.value is None
    with pytest.raises(ShapeError):
        nl.ewa.ewa(3.0)
    avg.update(2.0)
    avg.reset()
    assert avg.t == 0 and avg.value is None
