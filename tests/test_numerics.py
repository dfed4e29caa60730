"""Numerical reliability: scaled norms and clipping at 1e±300, eps > 0, optimizer state after a huge
gradient, overflowing casts, malformed state dicts and gradcheck arguments, stable parameter
derivatives, the float32 tanh fast path and the monitor's saturation statistic for learned slopes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnlab as nl
from nnlab.activations import _math as M
from nnlab.errors import DTypeError, HyperparameterError, NnlabError, NonFiniteError, ShapeError
from nnlab.kernels import dense as KD
from nnlab.kernels import fastmath as FM
from nnlab.kernels import optim_cpu as K


def ref_norm(*arrays):
    """float64 2-norm scaled by the largest |x| (no overflow or underflow)."""
    flat = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    m = float(np.max(np.abs(flat))) if flat.size else 0.0
    if m == 0.0:
        return 0.0
    if not math.isfinite(m):
        return math.inf
    # scale by a power of two (exact) so that subnormal data keeps its digits
    e = math.frexp(m)[1]
    scaled = np.ldexp(flat, -e) if e <= 1000 else np.ldexp(np.ldexp(flat, -1000), 1000 - e)
    return math.ldexp(float(np.sqrt(np.sum(scaled * scaled))), e)


# ---------------------------------------------------------------- scaled norms
@settings(deadline=None, max_examples=40)
@given(exp=st.sampled_from([-320, -310, -300, -200, -160, 0, 150, 155, 200, 300, 307]),
       sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4), seed=st.integers(0, 2 ** 16))
def test_norms_at_extreme_scales_match_a_scaled_float64_reference(exp, sizes, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(n) * 10.0 ** exp for n in sizes]
    ref = ref_norm(*arrays)
    assert math.isfinite(ref) and ref > 0
    tol = 1e-12 if exp > -300 else 1e-9  # subnormal data itself holds fewer digits
    assert nl.clip.global_norm(arrays) == pytest.approx(ref, rel=tol)
    for a in arrays:
        assert K.norm2(a) == pytest.approx(ref_norm(a), rel=tol)
    flat = np.concatenate(arrays)
    offsets = np.cumsum([0] + sizes).astype(np.int64)
    for kind in (K.CLIP_NONE, K.CLIP_VALUE, K.CLIP_NORM, K.CLIP_GLOBAL_NORM):
        g = flat.copy()
        assert K.clip_flat(kind, 1e308, g, offsets) == pytest.approx(ref, rel=tol)


@pytest.mark.parametrize("exp", [-300, 200, 300])
def test_clipping_at_extreme_scales_uses_the_true_norm(exp):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal((3, 4)) * 10.0 ** exp, rng.standard_normal(5) * 10.0 ** exp]
    before = [g.copy() for g in grads]
    n = ref_norm(*before)
    assert nl.clip.by_global_norm(grads, 1.0) == pytest.approx(n, rel=1e-12)
    coef = 1.0 / (n + K.CLIP_EPS)
    if coef < 1.0:  # 1e200, 1e300: clipped to norm 1, the direction kept
        assert ref_norm(*grads) == pytest.approx(1.0, rel=1e-9)
        for a, b in zip(grads, before):
            np.testing.assert_allclose(a, b * coef, rtol=1e-12)
    else:  # 1e-300: far below the threshold, unchanged (not divided by a zero norm)
        for a, b in zip(grads, before):
            np.testing.assert_array_equal(a, b)
    per = [g.copy() for g in before]
    norms = nl.clip.by_norm(per, 1.0)
    assert norms == pytest.approx([ref_norm(b) for b in before], rel=1e-12)
    assert all(math.isfinite(x) and x > 0 for x in norms)
    t = nl.clip.ClipByNorm(1.0)
    t([g.copy() for g in before])
    assert t.last_norm == pytest.approx(n, rel=1e-12)


def test_norms_of_zeros_infs_and_nans_keep_their_meaning():
    assert K.norm2(np.zeros(7)) == 0.0
    assert K.norm2(np.array([1e300, np.inf])) == math.inf
    assert math.isnan(K.norm2(np.array([1e300, 1e300, np.nan])))
    assert math.isnan(nl.clip.global_norm([np.array([1e-300]), np.array([np.nan])]))
    assert nl.clip.global_norm([np.array([5e-324]), np.array([0.0])]) == 5e-324
    assert K.norm2(np.array([np.finfo(np.float64).max] * 2)) == math.inf  # the true norm overflows
    big = np.array([np.finfo(np.float64).max / 2] * 2)
    assert K.norm2(big) == pytest.approx(np.finfo(np.float64).max / math.sqrt(2), rel=1e-15)


def _mse_net(dtype="float64", n_in=2):
    return nl.Sequential([nl.Dense(n_in, 1)], loss="mse", seed=0, dtype=dtype)


def test_fused_step_clips_a_gradient_whose_squares_overflow():
    """y = 1e154: the loss (1e308) is finite, the gradient entries (2e154) too, but their squares
    overflow float64: the step must clip by the true norm, not skip the step as non-finite."""
    net = _mse_net()
    X = np.ones((1, 2))
    y = np.full((1, 1), 1e154)
    _, grads = net.loss_and_grads(X, y)
    n = ref_norm(*grads)
    assert math.isfinite(n) and n > 1e154
    before = [p.copy() for p in net.params()]
    tr = nl.Trainer(net, nl.optim.SGD(lr=0.1), clip=("global_norm", 1.0))
    tr.step(X, y)
    assert tr.last.applied and tr.last.grad_norm == pytest.approx(n, rel=1e-12)
    step = [b - p for b, p in zip(before, net.params())]
    assert ref_norm(*step) == pytest.approx(0.1, rel=1e-6)
    for s, g in zip(step, grads):
        np.testing.assert_allclose(s, 0.1 * g / n, rtol=1e-9)


def test_fused_step_reports_the_norm_of_tiny_gradients():
    net = _mse_net()
    X = np.ones((4, 2))
    net.set_params([np.zeros((2, 1)), np.zeros(1)])
    y = np.full((4, 1), 3e-160)  # residuals 3e-160: squares of the gradient underflow
    _, grads = net.loss_and_grads(X, y)
    n = ref_norm(*grads)
    assert 0 < n < 1e-150
    tr = nl.Trainer(net, nl.optim.SGD(lr=0.1), clip=("norm", 1.0))
    tr.step(X, y)
    assert tr.last.applied and tr.last.grad_norm == pytest.approx(n, rel=1e-9)
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    assert mon.grad_norm_total[-1] == pytest.approx(n, rel=1e-9)
    assert mon.series("grad_norm")[-1, 0] == pytest.approx(ref_norm(grads[0]), rel=1e-9)


# ---------------------------------------------------------------- eps
EPS_OPTIMIZERS = ["adagrad", "adadelta", "rmsprop", "adam", "adamw", "nadam", "adamax", "smorms3"]


@pytest.mark.parametrize("name", EPS_OPTIMIZERS)
@pytest.mark.parametrize("eps", [0.0, -1e-8, math.nan, math.inf])
def test_eps_must_be_positive(name, eps):
    with pytest.raises(HyperparameterError, match="eps"):
        nl.optim.get(name, eps=eps)
    opt = nl.optim.get(name)
    p, g = np.ones(3), np.zeros(3)
    opt.step([p], [g])
    sd = opt.state_dict()
    opt.eps = eps  # set later: refused at the next step, nothing changed
    with pytest.raises(HyperparameterError, match="eps"):
        opt.step([p], [g])
    np.testing.assert_array_equal(p, np.ones(3) - (np.ones(3) - p))
    assert opt.t == sd["step"]
    np.testing.assert_array_equal(opt.state_dict()["state"][0], sd["state"][0])


@pytest.mark.parametrize("name", EPS_OPTIMIZERS)
def test_zero_gradient_with_tiny_eps_stays_finite(name):
    opt = nl.optim.get(name, eps=1e-300)
    p = np.ones(4)
    for _ in range(3):
        opt.step([p], [np.zeros(4)])
    assert np.isfinite(p).all() and np.isfinite(opt.state_dict()["state"][0]).all()


def test_eps_zero_is_refused_through_the_trainer():
    net = _mse_net()
    before = [p.copy() for p in net.params()]
    tr = nl.Trainer(net, nl.optim.Adam())
    tr.optimizer.eps = 0.0
    with pytest.raises(HyperparameterError, match="eps"):
        tr.step(np.ones((2, 2)), np.ones((2, 1)))
    for a, b in zip(before, net.params()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- optimizer state after a huge gradient
STATEFUL = ["adagrad", "adadelta", "rmsprop", "adam", "adamw", "nadam", "smorms3"]


@pytest.mark.parametrize("name", STATEFUL)
@pytest.mark.parametrize(("dtype", "huge"), [(np.float64, 1e200), (np.float32, 1e30)])
def test_a_huge_finite_gradient_never_leaves_inf_in_the_state(name, dtype, huge):
    opt = nl.optim.get(name)
    p = np.ones(5, dtype)
    opt.step([p], [np.full(5, 0.5, dtype)])
    sd, p0 = opt.state_dict(), p.copy()
    g = np.array([huge, 1.0, -huge, 0.0, 2.0], dtype)
    with pytest.raises(NonFiniteError, match="non-finite"):
        opt.step([p], [g])
    np.testing.assert_array_equal(p, p0)
    after = opt.state_dict()
    assert after["step"] == sd["step"]
    np.testing.assert_array_equal(after["state"][0], sd["state"][0])
    flat_p = p.copy()
    with pytest.raises(NonFiniteError, match="non-finite"):
        opt.step_flat(flat_p, g)
    np.testing.assert_array_equal(flat_p, p0)
    # the optimizer still works: a normal gradient moves every parameter
    opt.step([p], [np.full(5, 0.5, dtype)])
    assert np.all(p != p0) and np.isfinite(opt.state_dict()["state"][0]).all()


@pytest.mark.parametrize("on_nonfinite", ["stop", "raise"])
def test_trainer_skips_an_update_that_would_overflow_the_state(on_nonfinite):
    net = _mse_net()
    X, y = np.ones((1, 2)), np.full((1, 1), 1.5e154)  # loss 1.1e308, gradient 1.5e154: g² overflows
    mon = nl.GradientMonitor(net)
    tr = nl.Trainer(net, nl.optim.Adam(lr=1e-3), on_nonfinite=on_nonfinite, monitor=mon)
    tr.step(X, np.zeros((1, 1)))
    params, sd = [p.copy() for p in net.params()], tr.optimizer.state_dict()
    if on_nonfinite == "raise":
        with pytest.raises(NonFiniteError, match="optimizer update"):
            tr.step(X, y)
    else:
        tr.step(X, y)
    assert not tr.last.applied and math.isfinite(tr.last.loss) and math.isfinite(tr.last.grad_norm)
    for a, b in zip(params, net.params()):
        np.testing.assert_array_equal(a, b)
    after = tr.optimizer.state_dict()
    assert after["step"] == sd["step"] == 1
    np.testing.assert_array_equal(after["state"][0], sd["state"][0])
    v = next(v for v in mon.verdicts() if v.name == "gradient_nan")
    assert v.fired and v.step == 2 and "optimizer" in v.evidence
    if on_nonfinite == "stop":
        hist = tr.fit(X, y, epochs=2, batch_size=1)
        assert "optimizer update" in hist.stopped and len(hist.loss) == 1


def test_float32_trainer_state_overflow_is_skipped_in_fit():
    net = _mse_net("float32")
    X, y = np.ones((4, 2), np.float32), np.full((4, 1), 1e21, np.float32)  # 0.01·g² = 1e40 > float32 max
    tr = nl.Trainer(net, nl.optim.RMSprop())
    params = [p.copy() for p in net.params()]
    hist = tr.fit(X, y, epochs=1, batch_size=4)
    assert hist.stopped and "optimizer update" in hist.stopped
    for a, b in zip(params, net.params()):
        np.testing.assert_array_equal(a, b)
    assert tr.optimizer.state_dict()["state"] is None  # no step was ever committed


def test_a_nan_gradient_with_a_finite_loss_fires_a_verdict():
    net = _mse_net()
    mon = nl.GradientMonitor(net)
    mon.observe(np.ones((2, 2)), np.ones((2, 1)))
    assert not next(v for v in mon.verdicts() if v.name == "gradient_nan").fired
    mon.commit(0.5, math.nan, True, 2)  # a step whose loss was finite and gradient NaN
    v = next(v for v in mon.verdicts() if v.name == "gradient_nan")
    assert v.fired and v.step == 2 and "nan" in v.evidence
    assert not next(v for v in mon.verdicts() if v.name == "loss_nan").fired


def test_a_float32_backward_overflow_with_a_finite_loss_fires_the_verdict():
    """float32: the loss ½(2e19)² = 2e38 is finite, dL/dW = 2e19·2e19 = 4e38 overflows."""
    net = nl.Sequential([nl.Dense(1, 1, bias=False)], loss="mse", seed=0, dtype="float32")
    net.set_params([np.ones((1, 1))])
    X, y = np.full((1, 1), 2e19, np.float32), np.zeros((1, 1), np.float32)
    mon = nl.GradientMonitor(net)
    loss = mon.observe(X, y)
    if not math.isfinite(loss):
        pytest.fail(f"the loss should be finite here; got {loss}")
    v = next(v for v in mon.verdicts() if v.name == "gradient_nan")
    assert v.fired and "while the loss was finite" in v.evidence


# ---------------------------------------------------------------- casts that overflow
def test_float64_values_that_overflow_float32_are_refused_naming_the_value():
    net = _mse_net("float32")
    before = [p.copy() for p in net.params()]
    W = np.array([[1e39], [0.5]])
    with pytest.raises(NonFiniteError, match=r"1e\+39.*overflows float32 when cast"):
        net.set_params([W, np.zeros(1)])
    for a, b in zip(before, net.params()):
        np.testing.assert_array_equal(a, b)
    X = np.array([[1.0, 2.0], [3.0, -5e38]])
    for call in (lambda: net.forward(X), lambda: net.loss_and_grads(X, np.ones((2, 1))),
                 lambda: nl.Trainer(net, "sgd").step(X, np.ones((2, 1))),
                 lambda: net.loss_and_grads(np.ones((2, 2)), np.array([[1.0], [7e38]]))):
        with pytest.raises(NonFiniteError, match="overflows float32 when cast") as info:
            call()
        assert "contains" not in str(info.value)
    for a, b in zip(before, net.params()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(NonFiniteError, match="contains a non-finite value"):  # a real inf is still named so
        net.forward(np.array([[1.0, np.inf]]))
    opt, p = nl.optim.SGD(lr=0.1), np.ones(2, np.float32)
    with pytest.raises(NonFiniteError, match="overflows float32 when cast"):
        opt.step([p], [np.array([1.0, 1e300])])
    np.testing.assert_array_equal(p, np.ones(2, np.float32))


# ---------------------------------------------------------------- state dicts
@pytest.mark.parametrize(("mutate", "error", "match"), [
    (lambda sd: sd["state"][0].__setitem__((0, 1), np.nan), NonFiniteError, r"state\[0\]"),
    (lambda sd: sd["state"][0].__setitem__((1, 0), np.inf), NonFiniteError, r"state\[0\]"),
    (lambda sd: sd.pop("hyperparams"), HyperparameterError, "hyperparams"),
    (lambda sd: sd.pop("step"), HyperparameterError, "step"),
    (lambda sd: sd.__setitem__("hyperparams", [1, 2]), HyperparameterError, "hyperparams"),
    (lambda sd: sd.__setitem__("shapes", [("x", "float64")]), ShapeError, "shapes"),
    (lambda sd: sd.__setitem__("shapes", [([3], "int8")]), DTypeError, "shapes"),
    (lambda sd: sd.__setitem__("shapes", 5), ShapeError, "shapes"),
    (lambda sd: sd.__setitem__("state", 5), ShapeError, "state"),
    (lambda sd: sd.__setitem__("state", [["a", "b"]]), DTypeError, r"state\[0\]"),
    (lambda sd: sd.__setitem__("scalars", {"mu_product": "x"}), HyperparameterError, "scalars"),
    (lambda sd: sd.__setitem__("step", -1), HyperparameterError, "step"),
])
def test_load_state_dict_refuses_malformed_or_non_finite_state(mutate, error, match):
    opt = nl.optim.Adam(lr=0.01)
    p = np.ones(3)
    opt.step([p], [np.array([0.1, -0.2, 0.3])])
    sd = opt.state_dict()
    other = nl.optim.Adam(lr=0.5)
    other.step([np.ones(3)], [np.ones(3)])
    before = other.state_dict()
    mutate(sd)
    with pytest.raises(error, match=match):
        other.load_state_dict(sd)
    after = other.state_dict()
    assert after["step"] == before["step"] and after["hyperparams"] == before["hyperparams"]
    np.testing.assert_array_equal(after["state"][0], before["state"][0])


# ---------------------------------------------------------------- gradcheck arguments
def _f(x):
    return float(np.sum(x ** 2))


def _df(x):
    return 2 * x


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(eps=0.0), "eps"), (dict(eps=-1e-6), "eps"), (dict(eps=math.nan), "eps"),
    (dict(atol=-1.0), "atol"), (dict(rtol=math.nan), "rtol"), (dict(rtol=-1e-5), "rtol"),
    (dict(atol=0.0, rtol=0.0), "atol and rtol"),
])
def test_gradcheck_refuses_bad_tolerances(kwargs, match):
    with pytest.raises(HyperparameterError, match=match):
        nl.gradcheck.check(_f, _df, np.ones(3), **kwargs)
    with pytest.raises(HyperparameterError, match=match):
        nl.gradcheck.check_activation("tanh", **kwargs)
    with pytest.raises(HyperparameterError, match=match):
        nl.gradcheck.check_network(_mse_net(), np.ones((2, 2)), np.ones((2, 1)), **kwargs)


def test_a_wrong_gradient_never_passes_with_legal_tolerances():
    assert not nl.gradcheck.check(_f, lambda x: 2 * x + 1e-3, np.ones(3))
    assert nl.gradcheck.check(_f, _df, np.ones(3))


def test_gradcheck_refuses_bad_functions_and_non_networks():
    with pytest.raises(ShapeError, match="f must return a scalar"):
        nl.gradcheck.check(lambda x: x * 2, _df, np.ones(3))
    with pytest.raises(DTypeError, match="f must return a real number"):
        nl.gradcheck.check(lambda x: "loss", _df, np.ones(3))
    with pytest.raises(DTypeError, match="f must return a real number"):
        nl.gradcheck.check(lambda x: None, _df, np.ones(3))
    with pytest.raises(HyperparameterError, match="callable"):
        nl.gradcheck.check(3.0, _df, np.ones(3))
    with pytest.raises(DTypeError, match="grad_f"):
        nl.gradcheck.check(_f, lambda x: "g", np.ones(3))
    for bad in (None, "net", nl.Dense(2, 1), object()):
        with pytest.raises(HyperparameterError, match="nnlab.Sequential"):
            nl.gradcheck.check_network(bad, np.ones((2, 2)), np.ones((2, 1)))


# ---------------------------------------------------------------- seeds and validation_data
@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_bad_seeds_are_refused(seed):
    act = nl.activations.get("rrelu")
    with pytest.raises(HyperparameterError, match="seed"):
        act.forward(np.ones(3), training=True, seed=seed)
    with pytest.raises(HyperparameterError, match="seed"):
        nl.Sequential([nl.Dense(2, 1)], seed=seed)
    with pytest.raises(HyperparameterError, match="seed"):
        nl.Trainer(_mse_net(), "sgd").fit(np.ones((4, 2)), np.ones((4, 1)), seed=seed)


@pytest.mark.parametrize(("vd", "match"), [
    (np.ones((3, 2)), "validation_data must be a pair"),
    ((np.ones((3, 2)),), "validation_data must be a pair"),
    ((np.ones((3, 2)), np.ones((3, 1)), np.ones(3)), "validation_data must be a pair"),
    ((np.ones((3, 5)), np.ones((3, 1))), "validation_data"),
    ((np.ones((3, 2)), np.ones((4, 1))), "validation_data"),
    ((np.ones((3, 2)), "abc"), "validation_data"),
])
def test_malformed_validation_data_is_refused_before_training(vd, match):
    net = _mse_net()
    before = [p.copy() for p in net.params()]
    with pytest.raises(NnlabError, match=match):
        nl.Trainer(net, "sgd").fit(np.ones((4, 2)), np.ones((4, 1)), validation_data=vd)
    for a, b in zip(before, net.params()):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- parameter derivatives at extreme z
def _mp_softplus_dbeta(z, beta):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 400  # the derivative is e^{-βz} below f itself: 330 digits for z = 700
    f = lambda b: mpmath.log1p(mpmath.exp(b * z)) / b  # noqa: E731
    return float(mpmath.diff(f, mpmath.mpf(beta)))


def _mp_acon(z, p1, p2, beta, k):
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 400  # the derivative is e^{-βz} below f itself: 330 digits for z = 700

    def f(a, b, c):
        d = a - b
        return d * z / (1 + mpmath.exp(-c * d * z)) + b * z

    args = [mpmath.mpf(p1), mpmath.mpf(p2), mpmath.mpf(beta)]
    order = [0, 0, 0]
    order[k] = 1
    return float(mpmath.diff(f, args, tuple(order)))


@pytest.mark.parametrize("z", [-700.0, -300.0, -30.0, -3.0, 0.5, 3.0, 30.0, 100.0, 300.0, 700.0])
@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_softplus_dbeta_is_accurate_at_large_z(z, beta):
    act = nl.activations.get("softplus", beta=beta)
    got = float(act.param_derivative(np.array([z]), "beta")[0])
    want = _mp_softplus_dbeta(z, beta)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("z", [-300.0, -30.0, -1.0, 0.7, 30.0, 100.0, 300.0])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_acon_c_parameter_derivatives_are_accurate_at_large_z(z, k):
    p1, p2, beta = 1.0, 0.25, 1.0
    act = nl.activations.get("acon_c", p1=p1, p2=p2, beta=beta)
    got = float(act.param_derivative(np.array([z]), ["p1", "p2", "beta"][k])[0])
    want = _mp_acon(z, p1, p2, beta, k)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-300)


def test_softplus_dbeta_far_tail_matches_its_asymptote_without_mpmath():
    """For βz = x ≫ 1: ∂f/∂β = −(x·e^{−x} + e^{−x})/β² (to relative e^{−x}); the old form gave 0."""
    for z in (30.0, 100.0, 700.0):
        x = z
        want = -(x * math.exp(-x) + math.exp(-x))
        got = float(nl.activations.get("softplus").param_derivative(np.array([z]), "beta")[0])
        assert got == pytest.approx(want, rel=1e-12) and got < 0
        d2 = float(nl.activations.get("acon_c", p1=1.0, p2=0.0).param_derivative(np.array([z]), "p2")[0])
        assert d2 == pytest.approx(z * math.exp(-x) * (1 - x), rel=1e-12)  # z·σ(−x)(1 − xσ(x))


# ---------------------------------------------------------------- the three survivors
def test_float32_tanh_fast_path_runs_and_agrees_with_the_float64_path():
    z = np.linspace(-12, 12, 4001).astype(np.float32)
    A, D = np.empty_like(z), np.empty_like(z)
    KD.fast_forward(M.TANH, z, A, D, 0.0, 1.0, True)  # tanh's p0 slot is 0
    A_ref = np.array([FM.tanh32_d(v)[0] for v in z], np.float32)
    D_ref = np.array([FM.tanh32_d(v)[1] for v in z], np.float32)
    np.testing.assert_array_equal(A, A_ref)  # the float32 loop ran
    np.testing.assert_array_equal(D, D_ref)
    A64, D64 = np.empty_like(z), np.empty_like(z)
    KD.fast_forward(M.TANH, z, A64, D64, 0.0, 2.0, True)  # a ≠ 1: the float64 loop
    np.testing.assert_allclose(A, np.tanh(z.astype(np.float64)), rtol=4e-7, atol=1e-7)
    np.testing.assert_allclose(A64 / 2, np.tanh(z.astype(np.float64)), rtol=4e-7, atol=1e-7)
    np.testing.assert_allclose(D, 1 - np.tanh(z.astype(np.float64)) ** 2, rtol=2e-6, atol=1e-7)
    net = nl.Sequential([nl.Dense(3, 5, activation="tanh")], seed=0, dtype="float32")
    X = np.random.default_rng(0).standard_normal((7, 3)).astype(np.float32)
    out = net.forward(X)
    Z = X @ net.params()[0] + net.params()[1]
    np.testing.assert_array_equal(out, np.array([[FM.tanh32_d(v)[0] for v in row] for row in Z.astype(np.float32)]))


def test_learned_sigmoid_alpha_zero_is_refused_when_written_and_differentiated_when_loaded():
    net = nl.Sequential([nl.Dense(2, 3, activation=nl.activations.get("sigmoid", learnable=True))], seed=0)
    params = net.params()
    names = net.param_names()
    k = next(i for i, n in enumerate(names) if n.endswith("alpha"))
    before = [p.copy() for p in params]
    params[k] = np.zeros_like(params[k])
    with pytest.raises(HyperparameterError, match="alpha must be nonzero"):
        net.set_params(params)
    for a, b in zip(before, net.params()):
        np.testing.assert_array_equal(a, b)
    net.set_params(before)  # writing back the current values is always accepted
    act = nl.activations.get("sigmoid", learnable=True)
    with pytest.raises(HyperparameterError, match="alpha must be nonzero"):
        act.set_value("alpha", 0.0)
    assert act.hyperparams["alpha"] == 1.0
    with pytest.raises(HyperparameterError, match="softplus.beta must be > 0"):
        nl.activations.get("softplus", learnable=True).set_value("beta", -1.0)
    # a learned α of 0 (saved by a run that drove it there) loads; ∂f/∂α is then z·σ'(0) = z/4
    loaded = nl.activations.from_config({**act.config(), "values": {"alpha": 0.0}})
    z = np.array([-3.0, -0.5, 0.0, 2.0, 40.0])
    np.testing.assert_allclose(loaded.param_derivative(z, "alpha"), z / 4, rtol=1e-15)
    near = nl.activations.from_config({**act.config(), "values": {"alpha": 1e-9}})
    np.testing.assert_allclose(near.param_derivative(z, "alpha"), z / 4, rtol=1e-8)


def test_saturation_statistic_of_a_learnable_alpha_sigmoid_follows_alpha():
    rng = np.random.default_rng(0)
    net = nl.Sequential([nl.Dense(2, 16, activation=nl.activations.get("sigmoid", learnable=True)), nl.Dense(16, 1)],
                        seed=0)
    X = rng.standard_normal((64, 2)) * 20
    y = rng.standard_normal((64, 1))
    mon = nl.GradientMonitor(net, saturation_ratio=0.1)
    names = net.param_names()
    k = next(i for i, n in enumerate(names) if n.endswith("alpha"))
    for alpha in (1.0, 3.0, -0.5):
        params = net.params()
        params[k] = np.full_like(params[k], alpha)
        net.set_params(params)
        mon.observe(X, y)
        W, b = net.params()[0], net.params()[1]
        Z = X @ W + b
        s = 1 / (1 + np.exp(-alpha * Z))
        d = np.abs(alpha * s * (1 - s))
        want = float(np.mean(d < 0.1 * abs(alpha) / 4))
        assert 0 < want < 1
        assert mon.series("saturated_fraction")[-1, 0] == pytest.approx(want, abs=1e-12)
