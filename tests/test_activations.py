"""Registry-wide tests of every activation, parametrised over ``nnlab.activations.names()``.

A new registry entry is tested the moment it exists: its derivative and every parameter derivative
against float64 central differences (at the defaults and at Hypothesis-drawn hyperparameters), its
forward and derivative against the textbook formula in ``naive.py``, every documented fact of its
``Facts`` record, extreme and non-finite inputs, float32, and bad input. The 'scaled' wrapper is
tested around every other activation. Identities that concern one activation live in
``test_activation_facts.py``; user-registered activations in ``test_custom_activation.py``.
"""

import math
import warnings

import naive  # tests/ is on sys.path (conftest.py)
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import optimize

import nnlab.activations as A
from nnlab.errors import DTypeError, HyperparameterError, ShapeError, UnknownNameError

SETTINGS = settings(deadline=None, max_examples=50,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
#: the finite-difference checks keep this far from kinks (the 5-point stencil reaches 2h = 2e-3)
MARGIN = 0.05

# every registry entry; user registrations (tested in test_custom_activation.py) are left out so that
# one leaked by another module cannot change what is collected here
NAMES = [n for n in A.names() if n != "scaled" and not A.entry(n).custom]


def _variants():
    """(name, variant options): every entry at its default, plus each non-default variant."""
    out = []
    for n in NAMES:
        ent = A.entry(n)
        out.append(pytest.param(n, {}, id=n))
        for opt, choices in (ent.variants or {}).items():
            for key, code in choices.items():
                if code != ent.code:
                    out.append(pytest.param(n, {opt: key}, id=f"{n}-{opt}={key}"))
    return out


VARIANTS = _variants()


def _with_fact(fact):
    return [pytest.param(n, id=n) for n in NAMES if getattr(A.entry(n).facts, fact) is not None]


# ---------------------------------------------------------------- strategies and helpers
_MODERATE = [0.05, 0.5, 1.0, 3.0]
_ANY_REAL = [float(v) for v in np.arange(-2.0, 2.01, 0.25)]  # 0 included, differences 0 or >= 0.25


def param_values(ent, *, fd=True, extreme=False):
    """Valid hyperparameter values of ``ent``.

    ``fd``: floats kept clear of the constraint boundaries, so that a finite-difference step stays
    valid. Otherwise values from a grid that includes the degenerate ones (0 where allowed), and
    with ``extreme`` also 1e-10 and 1e10 for constrained (positive, nonnegative, nonzero) values.
    """
    big = [1e-10, 1e10] if extreme else []
    parts = {}
    for p in ent.params:
        if p.positive:
            s = st.floats(0.2, 4.0) if fd else st.sampled_from(_MODERATE + big)
        elif p.nonnegative:
            s = st.floats(0.05, 4.0) if fd else st.sampled_from([0.0] + _MODERATE + big)
        elif p.nonzero:
            mags = st.floats(0.2, 4.0) if fd else st.sampled_from(_MODERATE + big)
            s = st.tuples(mags, st.sampled_from([1.0, -1.0])).map(lambda t: t[0] * t[1])
        else:
            s = st.floats(-2.0, 2.0) if fd else st.sampled_from(_ANY_REAL)
        parts[p.name] = s
    return st.fixed_dictionaries(parts).map(_fix_constraints)


def _fix_constraints(values):
    """rrelu needs lower <= upper (kept 0.01 apart so that a finite-difference step stays valid)."""
    if "lower" in values and "upper" in values:
        lo, hi = sorted((values["lower"], values["upper"]))
        values = dict(values, lower=lo, upper=max(hi, lo + 0.01))
    return values


def noise_values(ent, n):
    """Explicit noise samples u for a randomised activation: U(0,1) or N(0,1)-like draws."""
    elements = st.floats(0.0, 1.0) if ent.noise == "uniform" else st.floats(-3.0, 3.0)
    return st.lists(elements, min_size=n, max_size=n).map(np.array)


def smooth_mask(act, z, noise=None):
    """Points of ``z`` where every derivative of ``act`` is smooth on the stencil: away from the
    documented kinks and from 0 (where elu/celu/selu switch pieces at any α), and for noisy_relu
    away from its kink z + σu = 0."""
    keep = naive.away_from(z, set(act.entry.facts.kinks) | {0.0}, MARGIN)
    if act.entry.name == "noisy_relu" and noise is not None:
        keep &= np.abs(z + act.values["sigma"] * np.asarray(noise)) > MARGIN
    return keep


def all_outputs(act, z, **kw):
    """{quantity: array}: forward, derivative and every parameter derivative of ``act`` at ``z``."""
    out = {"f": act.forward(z, **kw), "f'": act.derivative(z, **kw)}
    for p in naive.all_param_names(act):
        out[f"d/d{p}"] = act.param_derivative(z, p, **kw)
    return out


GRID = np.linspace(-8.0, 8.0, 801)


# ---------------------------------------------------------------- derivatives vs finite differences
@pytest.mark.parametrize("name, variant", VARIANTS)
def test_derivatives_match_fd_on_grid_at_defaults(name, variant):
    act = A.get(name, **variant)
    z = GRID[smooth_mask(act, GRID)]
    naive.check_activation_derivatives(act, z)
    if act.entry.noise is not None:  # training-mode math, with an explicit noise sample
        rng = np.random.default_rng(0)
        u = rng.random(z.size) if act.entry.noise == "uniform" else rng.standard_normal(z.size)
        keep = smooth_mask(act, z, u)
        naive.check_activation_derivatives(act, z[keep], u[keep])


@pytest.mark.parametrize("name, variant", VARIANTS)
@SETTINGS
@given(data=st.data())
def test_derivatives_match_fd(name, variant, data):
    ent = A.entry(name)
    values = data.draw(param_values(ent), label="params")
    act = A.get(name, **variant, **values)
    z = np.array(data.draw(st.lists(st.floats(-8.0, 8.0), min_size=1, max_size=12), label="z"))
    noise = None
    if ent.noise is not None and data.draw(st.booleans(), label="training noise"):
        noise = data.draw(noise_values(ent, z.size), label="u")
    keep = smooth_mask(act, z, noise)
    assume(keep.any())
    naive.check_activation_derivatives(act, z[keep], None if noise is None else noise[keep])


@pytest.mark.parametrize("name, variant", VARIANTS)
@SETTINGS
@given(data=st.data())
def test_matches_textbook_formula(name, variant, data):
    """Forward and derivative agree with the plain formula, kinks included (same one-sided value)."""
    ent = A.entry(name)
    key = naive.formula_key(name, variant)
    if key not in naive.FORMULAS:
        pytest.skip(f"no textbook formula for {name!r} in naive.py")
    values = data.draw(param_values(ent), label="params")
    act = A.get(name, **variant, **values)
    special = [0.0, -0.0] + list(ent.facts.kinks)
    z = np.array(data.draw(st.lists(st.floats(-8.0, 8.0) | st.sampled_from(special), min_size=1,
                                    max_size=12), label="z"))
    kw, nkw = {}, {}
    if ent.noise is not None:
        u = data.draw(noise_values(ent, z.size), label="u")
        kw, nkw = {"noise": u}, {"u": u}
    np.testing.assert_allclose(act.forward(z, **kw), naive.naive_forward(key, z, **values, **nkw),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(act.derivative(z, **kw), naive.naive_derivative(key, z, **values, **nkw),
                               rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- the 'scaled' wrapper
@pytest.mark.parametrize("name, variant", VARIANTS)
@SETTINGS
@given(a=st.floats(-3.0, 3.0).filter(lambda v: abs(v) > 0.05),
       z=st.lists(st.floats(-8.0, 8.0), min_size=1, max_size=12).map(np.array))
def test_scaled_wraps_every_activation(name, variant, a, z):
    base = A.get(name, **variant)
    act = A.get("scaled", base=name, a=a, learnable=True, **variant)
    assert act.param_names == base.param_names + ("a",)
    assert act.hyperparams["a"] == a
    np.testing.assert_allclose(act.forward(z), a * base.forward(z), rtol=1e-15, atol=0)
    np.testing.assert_allclose(act.derivative(z), a * base.derivative(z), rtol=1e-15, atol=0)
    np.testing.assert_array_equal(act.param_derivative(z, "a"), base.forward(z))
    for p in base.entry.param_names:
        np.testing.assert_allclose(act.param_derivative(z, p), a * base.param_derivative(z, p),
                                   rtol=1e-15, atol=0)
    keep = smooth_mask(act, z)
    assume(keep.any())
    naive.check_activation_derivatives(act, z[keep])  # 'a' and the base's parameters


def test_scaled_defaults_and_errors():
    act = A.get("scaled", base="tanh", a=1.7159)
    assert act.param_names == ()  # a fixed scale unless learnable=True
    assert act.hyperparams == {"a": 1.7159}
    assert A.get("scaled").param_names == ()  # base tanh, a = 1
    with pytest.raises(UnknownNameError):
        A.get("scaled", base="nope")
    for bad in (math.nan, math.inf, "2", None):
        with pytest.raises(HyperparameterError):
            A.get("scaled", base="tanh", a=bad)
    with pytest.raises(HyperparameterError):
        A.get("scaled", base="tanh", a=2.0, learnable=("a",))


# ---------------------------------------------------------------- documented facts
FAR = np.array([-1e30, -1e4, 1e4, 1e30])
FINE = np.linspace(-10.0, 10.0, 20001)


def _special_points(ent):
    f = ent.facts
    pts = [0.0, *f.kinks]
    if f.minimum is not None:
        pts.append(f.minimum[0])
    if f.max_abs_deriv_at is not None:
        pts.extend(f.max_abs_deriv_at)
    return np.array(pts, dtype=np.float64)


def _check_interval(values, inner, lo, hi, closed, what):
    """``values`` (at the fine grid, the documented points and far points; ``inner``: |z| <= 10)
    lie in the documented interval: within rounding everywhere, strictly inside open ends where
    rounding cannot reach them, attaining closed ends and approaching open ones."""
    for bound, is_closed, sign in ((lo, closed[0], 1.0), (hi, closed[1], -1.0)):
        if math.isinf(bound):
            assert not is_closed, f"{what}: an infinite end cannot be closed"
            continue
        tol = 1e-14 * max(1.0, abs(bound))
        gap = sign * (values - bound)  # >= 0 inside
        assert gap.min() >= -tol, f"{what}: value {values[np.argmin(gap)]!r} beyond the end {bound!r}"
        if not is_closed:
            assert gap[inner].min() > 0, f"{what}: open end {bound!r} reached at |z| <= 10"
        reach = 1e-6 if is_closed else 1e-3  # attained (grid resolution) / approached (|z| up to 1e30)
        assert gap.min() <= reach * (1 + abs(bound)), (
            f"{what}: the end {bound!r} is not {'attained' if is_closed else 'approached'}: "
            f"closest value {values[np.argmin(gap)]!r}")


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in NAMES])
def test_documented_range(name):
    ent = A.entry(name)
    act = A.get(name)
    z = np.concatenate([FINE, _special_points(ent), FAR])
    inner = np.abs(z) <= 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_interval(act.forward(z), inner, *ent.facts.range, ent.facts.range_closed, f"{name} range")


def _within(values, lo, hi):
    return (np.all(values >= lo - 1e-14 * max(1.0, abs(lo)))
            and np.all(values <= hi + 1e-14 * max(1.0, abs(hi))))


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in NAMES])
@SETTINGS
@given(z=st.lists(st.floats(allow_nan=False), min_size=1, max_size=20).map(np.array))
def test_documented_ranges_hold_for_any_input(name, z):
    """Any float at all, infinities included, maps into the documented (closure of the) ranges, and
    no quantity is NaN."""
    ent = A.entry(name)
    act = A.get(name)
    for what, v in all_outputs(act, z).items():
        assert not np.isnan(v).any(), f"{name}: {what} is NaN at z={z[np.isnan(v)]}"
    f, d = act.forward(z), act.derivative(z)
    assert _within(f, *ent.facts.range), f"{name}: f({z}) = {f} outside {ent.facts.range}"
    if ent.facts.deriv_range is not None:
        assert _within(d, *ent.facts.deriv_range), f"{name}: f'({z}) = {d} outside {ent.facts.deriv_range}"


@pytest.mark.parametrize("name", _with_fact("deriv_range"))
def test_documented_derivative_range(name):
    ent = A.entry(name)
    act = A.get(name)
    z = np.concatenate([FINE, _special_points(ent), FAR])
    inner = np.abs(z) <= 10
    _check_interval(act.derivative(z), inner, *ent.facts.deriv_range, ent.facts.deriv_closed,
                    f"{name} derivative range")


@pytest.mark.parametrize("name", _with_fact("deriv_values"))
def test_documented_derivative_values(name):
    ent = A.entry(name)
    act = A.get(name)
    z = np.concatenate([FINE, _special_points(ent), FAR, [-math.inf, math.inf]])
    d = act.derivative(z)
    allowed = np.array(ent.facts.deriv_values)
    dist = np.abs(d[:, None] - allowed[None, :]).min(axis=1)
    assert dist.max() <= 1e-14, f"{name}: f'({z[np.argmax(dist)]}) = {d[np.argmax(dist)]!r} not in {allowed}"
    for v in allowed:
        assert np.any(np.abs(d - v) <= 1e-14), f"{name}: documented derivative value {v} never taken"


@pytest.mark.parametrize("name", _with_fact("at_zero"))
def test_documented_value_at_zero(name):
    act = A.get(name)
    f0, d0 = A.entry(name).facts.at_zero
    for zero in (0.0, -0.0):
        z = np.array([zero])
        assert act.forward(z)[0] == pytest.approx(f0, rel=1e-14, abs=1e-300)
        assert act.derivative(z)[0] == pytest.approx(d0, rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("name", _with_fact("limits"))
def test_documented_limits(name):
    act = A.get(name)
    (f_lo, d_lo), (f_hi, d_hi) = A.entry(name).facts.limits
    z = np.array([-math.inf, math.inf])
    for got, want, what in ((act.forward(z), (f_lo, f_hi), "f"), (act.derivative(z), (d_lo, d_hi), "f'")):
        for side in (0, 1):
            assert got[side] == want[side] or abs(got[side] - want[side]) <= 1e-12, (
                f"{name}: {what}({z[side]}) = {got[side]!r}, documented {want[side]!r}")
    # ... and the function really tends there: at ±1e30 it is already (numerically) at the limit
    far = np.array([-1e30, 1e30])
    for got, want, what in ((act.forward(far), (f_lo, f_hi), "f"), (act.derivative(far), (d_lo, d_hi), "f'")):
        for side in (0, 1):
            if math.isinf(want[side]):
                assert np.sign(got[side]) == np.sign(want[side]) and abs(got[side]) >= 1e20, (
                    f"{name}: {what}({far[side]}) = {got[side]!r} does not tend to {want[side]}")
            else:
                assert abs(got[side] - want[side]) <= 1e-9, (
                    f"{name}: {what}({far[side]}) = {got[side]!r} does not tend to {want[side]}")


@pytest.mark.parametrize("name", _with_fact("minimum"))
def test_documented_minimum(name):
    ent = A.entry(name)
    act = A.get(name)
    argmin, fmin = ent.facts.minimum
    f = lambda x: float(act.forward(np.array([x]))[0])  # noqa: E731
    res = optimize.minimize_scalar(f, bounds=(argmin - 0.5, argmin + 0.5), method="bounded",
                                   options={"xatol": 1e-10})
    assert abs(res.x - argmin) <= 1e-6, f"{name}: argmin {res.x!r}, documented {argmin!r}"
    assert abs(res.fun - fmin) <= 1e-12
    assert abs(f(argmin) - fmin) <= 1e-14
    # the global minimum: nothing lower anywhere, the far field included
    z = np.concatenate([FINE, FAR, [-math.inf, math.inf]])
    assert act.forward(z).min() >= fmin - 1e-15
    assert ent.facts.range[0] == fmin and ent.facts.range_closed[0], "range must start at the minimum"


@pytest.mark.parametrize("name", _with_fact("max_abs_deriv_at"))
def test_documented_peak_of_derivative(name):
    act = A.get(name)
    peaks = A.entry(name).facts.max_abs_deriv_at
    g = lambda x: -abs(float(act.derivative(np.array([x]))[0]))  # noqa: E731
    top = np.abs(act.derivative(np.concatenate([FINE, FAR]))).max()
    for p in peaks:
        res = optimize.minimize_scalar(g, bounds=(p - 0.5, p + 0.5), method="bounded",
                                       options={"xatol": 1e-10})
        assert abs(res.x - p) <= 1e-5, f"{name}: |f'| peaks at {res.x!r}, documented {p!r}"
        assert -g(p) >= top - 1e-12, f"{name}: |f'({p})| = {-g(p)!r} is not the global maximum {top!r}"


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in NAMES])
def test_facts_are_consistent(name):
    """The facts record agrees with itself (a typo in one field shows up against the others)."""
    f = A.entry(name).facts
    lo, hi = f.range
    assert lo <= hi
    if f.at_zero is not None:
        assert lo <= f.at_zero[0] <= hi
        if f.deriv_range is not None:
            assert f.deriv_range[0] <= f.at_zero[1] <= f.deriv_range[1]
    if f.limits is not None:
        for fl, dl in f.limits:
            assert lo <= fl <= hi
            if f.deriv_range is not None:
                assert f.deriv_range[0] <= dl <= f.deriv_range[1]
    if f.deriv_values is not None:
        assert min(f.deriv_values) == f.deriv_range[0] and max(f.deriv_values) == f.deriv_range[1]
    assert all(isinstance(k, float) for k in f.kinks)


# ---------------------------------------------------------------- extreme and non-finite inputs
EXTREME = np.array([-math.inf, -1e300, -1e30, -1e4, -1e-300, -5e-324, -0.0, 0.0, 5e-324, 1e-300,
                    1e4, 1e30, 1e300, math.inf])


def _check_extremes(act, **kw):
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        out = all_outputs(act, EXTREME, **kw)
    moderate = np.abs(EXTREME) <= 1e30
    for what, v in out.items():
        assert v.shape == EXTREME.shape and v.dtype == np.float64
        assert not np.isnan(v).any(), f"{act!r}: {what} is NaN at z={EXTREME[np.isnan(v)]}"
        assert np.isfinite(v[moderate]).all(), (
            f"{act!r}: {what} not finite at z={EXTREME[moderate][~np.isfinite(v[moderate])]}")
    deriv = out["f'"]
    assert np.isfinite(deriv).all(), f"{act!r}: f' not finite at z={EXTREME[~np.isfinite(deriv)]}"


@pytest.mark.parametrize("name, variant", VARIANTS)
def test_extreme_inputs_at_defaults(name, variant):
    act = A.get(name, **variant)
    _check_extremes(act)
    if act.entry.noise is not None:
        _check_extremes(act, training=True, seed=3)


@pytest.mark.parametrize("name, variant", VARIANTS)
@SETTINGS
@given(data=st.data())
def test_extreme_inputs_any_parameters(name, variant, data):
    """Also at degenerate and extreme values (0, 1e-10, 1e10 where allowed): no NaN, and ±inf gives
    the limit of ±1e300."""
    ent = A.entry(name)
    values = data.draw(param_values(ent, fd=False, extreme=True), label="params")
    act = A.get(name, **variant, **values)
    _check_extremes(act)
    at_inf = all_outputs(act, np.array([-math.inf, math.inf]))
    at_big = all_outputs(act, np.array([-1e300, 1e300]))
    for what in at_inf:
        for side in (0, 1):
            q_inf, q_big = at_inf[what][side], at_big[what][side]
            if math.isinf(q_inf):
                assert np.sign(q_big) == np.sign(q_inf) and abs(q_big) >= 1e100, (
                    f"{act!r}: {what}(±inf) = {q_inf}, but {q_big!r} at ±1e300")
            else:
                assert abs(q_big - q_inf) <= 1e-6 * (1 + abs(q_inf)), (
                    f"{act!r}: {what}(±inf) = {q_inf!r}, but {q_big!r} at ±1e300")


FAR_FIELD = np.array([1e8, 1e12, 1e20, 1e30, 1e100, 1e300])


@pytest.mark.parametrize("name, variant", VARIANTS)
@SETTINGS
@given(data=st.data())
def test_far_field_settles(name, variant, data):
    """Far from 0 every activation is (numerically) at its asymptote: f(z)/z and f'(z) no longer
    change between |z| = 1e8 and 1e300, and f'(±inf) is that value (no cut-over to a different
    branch at some large |z|)."""
    ent = A.entry(name)
    values = data.draw(st.just({}) | param_values(ent, fd=False), label="params")
    act = A.get(name, **variant, **values)
    for sign in (1.0, -1.0):
        z = sign * FAR_FIELD
        ratio, d = act.forward(z) / z, act.derivative(z)
        np.testing.assert_allclose(ratio, ratio[-1], rtol=0, atol=1e-6, err_msg=f"{act!r}: f(z)/z")
        np.testing.assert_allclose(d, d[-1], rtol=0, atol=1e-6, err_msg=f"{act!r}: f'(z)")
        d_inf = act.derivative(np.array([sign * math.inf]))[0]
        assert abs(d_inf - d[-1]) <= 1e-6, f"{act!r}: f'({sign * math.inf}) = {d_inf!r}, {d[-1]!r} at {z[-1]}"


@pytest.mark.parametrize("name, variant", VARIANTS)
def test_nan_in_nan_out(name, variant):
    act = A.get(name, **variant)
    z = np.array([np.nan, 0.5, -np.nan, -2.0, np.nan])
    for kw in ({}, {"training": True, "seed": 1}) if act.entry.noise else ({},):
        for what, v in all_outputs(act, z, **kw).items():
            assert np.isnan(v[[0, 2, 4]]).all(), f"{act!r}: {what} of NaN is {v[[0, 2, 4]]}"
            assert not np.isnan(v[[1, 3]]).any(), f"{act!r}: {what} NaN leaks into its neighbours"


@pytest.mark.parametrize("name, variant", VARIANTS)
def test_float32_in_float32_out(name, variant):
    act = A.get(name, **variant)
    z32 = np.concatenate([GRID, [-1e4, -3.0, 0.0, 3.0, 1e4, 1e30, -1e30]]).astype(np.float32)
    z64 = z32.astype(np.float64)  # the same inputs, so only the arithmetic differs
    for (what, v32), v64 in zip(all_outputs(act, z32).items(), all_outputs(act, z64).values()):
        assert v32.dtype == np.float32, f"{act!r}: {what} of float32 is {v32.dtype}"
        np.testing.assert_allclose(v32, v64, rtol=1e-5, atol=1e-6, err_msg=f"{act!r}: {what}")


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in NAMES])
def test_shapes_and_input_kinds(name):
    act = A.get(name)
    z = np.linspace(-3, 3, 12).reshape(3, 4)
    for fn in (act.forward, act.derivative):
        out = fn(z)
        assert out.shape == (3, 4) and out.dtype == np.float64
        np.testing.assert_array_equal(fn(z.T), out.T)  # non-contiguous input
        np.testing.assert_array_equal(fn(z.tolist()), out)  # nested lists
        np.testing.assert_array_equal(fn(np.arange(-3, 3)), fn(np.arange(-3.0, 3.0)))  # ints
        assert fn(np.zeros(0)).shape == (0,)
        scalar = fn(0.5)
        assert np.shape(scalar) == () and float(scalar) == fn(np.array([0.5]))[0]
    np.testing.assert_array_equal(act.forward(z), act(z))
    for p in act.entry.param_names:
        assert act.param_derivative(z, p).shape == (3, 4)
    z_before = z.copy()
    act.forward(z)
    np.testing.assert_array_equal(z, z_before)  # input untouched


# ---------------------------------------------------------------- bad input
def test_unknown_name_lists_known_names():
    with pytest.raises(UnknownNameError) as exc:
        A.get("nope")
    assert "nope" in str(exc.value)
    for n in A.names():
        assert n in str(exc.value)
    assert isinstance(exc.value, ValueError)
    with pytest.raises(UnknownNameError):
        A.get(["tanh"])
    with pytest.raises(UnknownNameError):
        A.get("tanh").param_derivative([0.0], "nope")


@pytest.mark.parametrize("name, kwargs", [
    ("softplus", {"beta": 0.0}), ("softplus", {"beta": -1.0}), ("celu", {"alpha": 0.0}),
    ("celu", {"alpha": -1.0}), ("rrelu", {"lower": 0.5, "upper": 0.1}), ("rrelu", {"lower": -0.1}),
    ("sigmoid", {"alpha": 0.0}), ("elu", {"alpha": -1.0}), ("noisy_relu", {"sigma": -0.1}),
    ("tanh", {"alpha": 1.0}), ("swish", {"bet": 1.0}), ("gelu", {"approximate": "bogus"}),
    ("gelu", {"approximate": ["tanh"]}), ("gelu", {"approximate": None}), ("swish", {"beta": "1"}),
    ("swish", {"beta": True}), ("swish", {"beta": 1 + 2j}), ("swish", {"learnable": ["nope"]}),
])
def test_invalid_hyperparameters(name, kwargs):
    with pytest.raises(HyperparameterError) as exc:
        A.get(name, **kwargs)
    assert name in str(exc.value) or any(k in str(exc.value) for k in kwargs)


@pytest.mark.parametrize("name, param", [pytest.param(n, p, id=f"{n}.{p}") for n in NAMES
                                         for p in A.entry(n).param_names])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_hyperparameters(name, param, value):
    with pytest.raises(HyperparameterError):
        A.get(name, **{param: value})


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([1 + 2j, 0.5]), np.array([True, False]),
                                 np.array([1.0, None], dtype=object), "0.5"])
@pytest.mark.parametrize("method", ["forward", "derivative", "param_derivative"])
def test_bad_dtype_raises(bad, method):
    act = A.get("swish")
    call = getattr(act, method)
    with pytest.raises(DTypeError):
        call(bad, "beta") if method == "param_derivative" else call(bad)


def test_noise_of_wrong_size_raises():
    act = A.get("rrelu")
    with pytest.raises(ShapeError):
        act.forward(np.zeros(5), noise=np.full(3, 0.5))
    np.testing.assert_array_equal(act.forward(-np.ones(4), noise=[0.0]), -np.full(4, 1 / 8))


# ---------------------------------------------------------------- PyTorch as an optional oracle
def _torch_kernels(torch):
    """name -> PyTorch's own kernel, hyperparameters as floats (forward and autograd dθ/dz)."""
    F = torch.nn.functional
    return {
        "identity": lambda x: x * 1.0,
        "sigmoid": lambda x, alpha: torch.sigmoid(alpha * x),
        "tanh": torch.tanh,
        "relu": F.relu,
        "leaky_relu": lambda x, alpha: F.leaky_relu(x, alpha),
        "prelu": lambda x, alpha: F.prelu(x, torch.tensor([alpha], dtype=x.dtype)),
        "rrelu": lambda x, lower, upper: F.rrelu(x, lower, upper, training=False),
        "noisy_relu": lambda x, sigma: F.relu(x),
        "elu": lambda x, alpha: F.elu(x, alpha),
        "selu": lambda x, alpha, **kw: F.selu(x),
        "celu": lambda x, alpha: F.celu(x, alpha),
        "gelu": lambda x: F.gelu(x),
        "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
        "softplus": lambda x, beta: F.softplus(x, beta=beta),
        "swish": lambda x, beta: F.silu(x) if beta == 1.0 else x * torch.sigmoid(beta * x),
        "mish": F.mish,
        "softsign": F.softsign,
        "hard_sigmoid": F.hardsigmoid,
        "hard_swish": F.hardswish,
        "gaussian": lambda x: torch.exp(-x * x),
    }


def _torch_formulas(torch):
    """name -> formula with tensor hyperparameters, for autograd dθ/dp (clamped so that the branch
    torch.where discards cannot overflow and poison the gradient with inf·0)."""
    F = torch.nn.functional
    return {
        "sigmoid": lambda x, alpha: torch.sigmoid(alpha * x),
        "leaky_relu": lambda x, alpha: torch.where(x > 0, x, alpha * x),
        "prelu": lambda x, alpha: F.prelu(x, alpha.reshape(1)),
        "rrelu": lambda x, lower, upper: torch.where(x > 0, x, (lower + upper) / 2 * x),
        "elu": lambda x, alpha: torch.where(x > 0, x, alpha * torch.expm1(x.clamp(max=0))),
        "selu": lambda x, alpha, **kw: kw["lambda"] * torch.where(x > 0, x,
                                                                  alpha * torch.expm1(x.clamp(max=0))),
        "celu": lambda x, alpha: torch.where(x > 0, x, alpha * torch.expm1(x.clamp(max=0) / alpha)),
        "softplus": lambda x, beta: torch.logaddexp(beta * x, torch.zeros_like(x)) / beta,
        "swish": lambda x, beta: x * torch.sigmoid(beta * x),
        "acon_c": lambda x, p1, p2, beta: (p1 - p2) * x * torch.sigmoid(beta * (p1 - p2) * x) + p2 * x,
    }


#: PyTorch computes hardsigmoid's derivative with the float32 constant 1/6, even in float64
_TORCH_RTOL = {"hard_sigmoid": 1e-7}


@pytest.mark.parametrize("name, variant", VARIANTS)
def test_agrees_with_pytorch(name, variant):
    """Forward and autograd derivative against PyTorch's kernels, kinks included ('the value
    PyTorch uses'); parameter derivatives against autograd of the formula."""
    torch = pytest.importorskip("torch")
    kernels, formulas = _torch_kernels(torch), _torch_formulas(torch)
    key = naive.formula_key(name, variant)
    if key not in kernels and name not in formulas:
        pytest.skip(f"no PyTorch counterpart for {name!r}")
    act = A.get(name, **variant)
    z = np.concatenate([GRID, [-3.0, -0.0, 0.0, 3.0, -1e4, 1e4]])
    if key in kernels:
        x = torch.tensor(z, dtype=torch.float64, requires_grad=True)
        y = kernels[key](x, **act.values)
        y.sum().backward()
        np.testing.assert_allclose(act.forward(z), y.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(act.derivative(z), x.grad.numpy(), rtol=_TORCH_RTOL.get(name, 1e-12),
                                   atol=1e-14)
    if name in formulas:
        x = torch.tensor(z, dtype=torch.float64)
        values = {k: torch.tensor(v, dtype=torch.float64) for k, v in act.values.items()}
        np.testing.assert_allclose(act.forward(z), formulas[name](x, **values).numpy(), rtol=1e-12,
                                   atol=1e-14)
        for p in act.entry.param_names:
            # the elementwise dθ(z_i)/dp: the Jacobian of the outputs w.r.t. the scalar p
            jac = torch.autograd.functional.jacobian(
                lambda t, p=p: formulas[name](x, **{**values, p: t}), values[p])
            np.testing.assert_allclose(act.param_derivative(z, p), jac.numpy(), rtol=1e-12, atol=1e-14,
                                       err_msg=f"{name} d/d{p}")
