"""The vectorisable math of nnlab.kernels.fastmath and the dense layer's specialised loops.

exp is checked against math.exp over a dense grid of the whole float64 range (subnormal results
included) and its float32 variant against the correctly rounded float32 value; σ and tanh (values
and derivatives) against the registry's reference math, in ulps; the specialised loops against the
general per-element dispatch they replace, edge values (±0, ±inf, NaN, huge) included.
"""

import math

import numpy as np
import pytest
from numba import njit

import nnlab as nl
from nnlab.kernels import dense as C
from nnlab.kernels import fastmath as FM


@njit
def _apply(x, out, which):
    for i in range(x.size):
        if which == 0:
            out[i] = FM.exp(x[i])
        elif which == 1:
            out[i] = FM.sigmoid_d(x[i])[0]
        elif which == 2:
            out[i] = FM.sigmoid_d(x[i])[1]
        elif which == 3:
            out[i] = FM.tanh_d(x[i])[0]
        elif which == 4:
            out[i] = FM.tanh_d(x[i])[1]


@njit
def _apply32(x, out, which):
    for i in range(x.size):
        if which == 0:
            out[i] = FM.exp32(x[i])
        elif which == 1:
            out[i] = FM.sigmoid32_d(x[i])[0]
        elif which == 2:
            out[i] = FM.sigmoid32_d(x[i])[1]
        elif which == 3:
            out[i] = FM.tanh32_d(x[i])[0]
        elif which == 4:
            out[i] = FM.tanh32_d(x[i])[1]


@njit
def _libm_exp(x, out):
    for i in range(x.size):
        out[i] = math.exp(x[i])


def run(x, which):
    out = np.empty_like(x)
    (_apply32 if x.dtype == np.float32 else _apply)(x, out, which)
    return out


def ulps(a, b):
    """|a − b| in units in the last place (same dtype; ±0 are 0 apart; NaN must match NaN)."""
    assert a.dtype == b.dtype
    nan = np.isnan(a) | np.isnan(b)
    assert (np.isnan(a) == np.isnan(b)).all(), "NaN where the reference is not (or the reverse)"
    it = np.int64 if a.dtype == np.float64 else np.int32
    lo = np.iinfo(it).min
    ia = a[~nan].view(it).astype(np.int64)
    ib = b[~nan].view(it).astype(np.int64)
    ia = np.where(ia < 0, lo - ia, ia)
    ib = np.where(ib < 0, lo - ib, ib)
    return np.abs(ia - ib)


EDGES = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 5e-324, -5e-324, 1e300, -1e300,
         709.78, 709.782712893384, 709.7827128933841, 710.0, -745.1332191019411, -745.1332191019412,
         -745.2, -708.4, -708.3964185322641, 0.625, -0.625, np.nextafter(0.625, 0.0), 18.0, 19.1, -40.0]


@pytest.fixture(scope="module")
def grid64():
    rng = np.random.default_rng(0)
    return np.concatenate([np.linspace(-750.0, 712.0, 2_000_001), rng.uniform(-1.0, 1.0, 500_000),
                           rng.uniform(-745.2, -708.0, 200_000), rng.normal(0.0, 4.0, 500_000),
                           10.0 ** rng.uniform(-320, 2, 200_000) * rng.choice([-1, 1], 200_000), EDGES])


@pytest.fixture(scope="module")
def grid32():
    """Every 541st float32 bit pattern with |x| < 120 (both signs), plus edge values."""
    pos = np.arange(0, 0x42F00000, 541, dtype=np.int64).astype(np.int32).view(np.float32)
    edges = np.array(EDGES[:5] + [88.72, 88.7228, 88.73, -87.33, -103.97, -103.98, 1e-45, 3e38, -3e38,
                                  0.625, -0.625], np.float32)
    return np.concatenate([pos, -pos, edges])


def test_exp_within_one_ulp_of_libm(grid64):
    ref = np.empty_like(grid64)
    _libm_exp(grid64, ref)
    got = run(grid64, 0)
    assert ulps(got, ref).max() <= 1


def test_exp_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 710.0, 709.7827128933841, -746.0, -745.1332191019412,
                  -745.1332191019411, 1e300, -1e300])
    got = run(x, 0)
    assert got[0] == 1.0 and got[1] == 1.0
    assert got[2] == np.inf and got[3] == 0.0 and np.isnan(got[4])
    assert got[5] == np.inf and got[6] == np.inf and got[7] == 0.0 and got[8] == 0.0
    assert got[9] == 5e-324  # the smallest subnormal
    assert got[10] == np.inf and got[11] == 0.0


def test_exp32_within_one_ulp_of_correctly_rounded(grid32):
    with np.errstate(over="ignore"):
        ref = np.exp(grid32.astype(np.float64)).astype(np.float32)
    got = run(grid32, 0)
    assert got.dtype == np.float32
    assert ulps(got, ref).max() <= 1
    x = np.array([np.inf, -np.inf, np.nan, 89.0, -104.0, -103.9], np.float32)
    got = run(x, 0)
    assert got[0] == np.inf and got[1] == 0.0 and np.isnan(got[2]) and got[3] == np.inf and got[4] == 0.0
    assert 0.0 < got[5] < np.finfo(np.float32).tiny  # a subnormal result, not flushed


def _reference(x64):
    """The registry's reference math (libm, per-element dispatch): σ, σ', tanh, tanh'."""
    sig, tanh = nl.activations.get("sigmoid"), nl.activations.get("tanh")
    return sig.forward(x64), sig.derivative(x64), tanh.forward(x64), tanh.derivative(x64)


# measured maxima: σ 3, σ' 4, tanh 2, tanh' 5 ulp (float64); bounds leave one ulp of slack
@pytest.mark.parametrize("which,bound", [(1, 4), (2, 6), (3, 3), (4, 6)])
def test_sigmoid_tanh_float64_match_reference(grid64, which, bound):
    x = grid64[np.abs(grid64) < 800]
    ref = _reference(x)[which - 1]
    got = run(x, which)
    assert ulps(got, ref).max() <= bound


@pytest.mark.parametrize("which,bound", [(1, 3), (2, 6), (3, 2), (4, 5)])
def test_sigmoid_tanh_float32_match_rounded_reference(grid32, which, bound):
    ref = _reference(grid32.astype(np.float64))[which - 1].astype(np.float32)
    got = run(grid32, which)
    assert got.dtype == np.float32
    assert ulps(got, ref).max() <= bound


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_limits_signed_zero_and_nan(dtype):
    x = np.array([np.inf, -np.inf, 0.0, -0.0, np.nan, 1e30, -1e30], dtype)
    s, ds, t, dt = (run(x, w) for w in (1, 2, 3, 4))
    np.testing.assert_array_equal(s[[0, 1, 5, 6]], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(ds[[0, 1, 5, 6]], 0.0)
    np.testing.assert_array_equal(t[[0, 1, 5, 6]], [1.0, -1.0, 1.0, -1.0])
    np.testing.assert_array_equal(dt[[0, 1, 5, 6]], 0.0)
    assert s[2] == 0.5 and ds[2] == 0.25 and dt[2] == 1.0
    assert t[2] == 0.0 and not np.signbit(t[2]) and t[3] == 0.0 and np.signbit(t[3])  # tanh(±0) = ±0
    assert all(np.isnan(v[4]) for v in (s, ds, t, dt))


def test_sigmoid_tails_keep_subnormals_float32():
    x = np.array([-90.0, -100.0, -103.0], np.float32)
    got = run(x, 1)
    ref = (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)
    assert (got > 0).all() and (got < np.finfo(np.float32).tiny).all()
    assert ulps(got, ref).max() <= 1


# ---------------------------------------------------------------- the dense layer's specialised loops
FAST = ["identity", "relu", "leaky_relu", "sigmoid", "tanh"]


def _general(act, z, what):
    """The general path: the registry's per-element dispatch (act_map)."""
    return act.forward(z) if what == 0 else act.derivative(z)


@pytest.mark.parametrize("name,kw", [(n, {}) for n in FAST] + [("sigmoid", {"alpha": 2.5}),
                                                            ("leaky_relu", {"alpha": 0.2}),
                                                            ("leaky_relu", {"alpha": 0.0})])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fast_forward_matches_general_dispatch(name, kw, dtype):
    act = nl.activations.get(name, **kw)
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(0, 3, 5000), [0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 40.0, -40.0,
                                                 100.0, -100.0, 1e-40, -1e-40]]).astype(dtype)
    p0 = act.slots()[0]
    for a in (1.0, 1.7):
        A = np.empty_like(z)
        D = np.empty_like(z)
        C.fast_forward(act.code, z, A, D, p0, a, True)
        z64 = z.astype(np.float64)
        for got, what in ((A, 0), (D, 1)):
            ref = (a * _general(act, z64, what)).astype(dtype)
            assert (np.isnan(got) == np.isnan(ref)).all(), (name, what)
            ok = ~np.isnan(ref)
            tol = 8 if dtype == np.float32 else 10  # ulps of the dtype (σ/tanh; the others are exact)
            assert ulps(got[ok], ref[ok]).max() <= tol, (name, what)
        A2 = np.empty_like(z)
        C.fast_forward(act.code, z, A2, D, p0, a, False)
        np.testing.assert_array_equal(A2, A)


def _net(act, dtype, depth=3):
    layers = [nl.Dense(6, 9, activation=act)] + [nl.Dense(9, 9, activation=act) for _ in range(depth - 2)]
    return nl.Sequential(layers + [nl.Dense(9, 4)], loss="softmax_cross_entropy", seed=3, dtype=dtype)


def _generic_grads(net, X, Y):
    """loss and flat gradients through the general kernels (no stored derivative)."""
    n = X.shape[0]
    ws, dws = net._workspace(n)
    g = np.empty_like(net._flat)
    k = net._kernels
    out = k.run_forward(net._ops, net._hp, net._tens, net._flat, ws, X, True, -1)
    loss = k.loss_fwd_bwd(net._loss_code, net._tensor(ws, out, n), Y, net._tensor(dws, out, n), True)
    k.run_backward(net._ops, net._hp, net._tens, net._flat, g, ws, dws, n)
    return loss, g, net._errors(net._program(1), dws, n)


@pytest.mark.parametrize("act", FAST + ["elu", "swish"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_stored_derivative_backward_equals_recomputed(act, dtype):
    """loss_and_grad (derivative stored in the forward pass) = forward, loss, then the general
    backward that recomputes a·θ'(Z) from Z."""
    net = _net(act, dtype)
    rng = np.random.default_rng(2)
    X, Y = net._prepare(rng.normal(size=(11, 6)), rng.integers(0, 4, 11))
    loss, grads = net.loss_and_grads(X, Y[:, 0].astype(int))
    E = net.layer_errors
    loss2, g2, E2 = _generic_grads(net, X, Y)
    rtol = 1e-14 if dtype == "float64" else 2e-6
    assert loss == pytest.approx(loss2, rel=rtol)
    np.testing.assert_allclose(np.concatenate([g.ravel() for g in grads]), g2, rtol=rtol, atol=rtol * np.abs(g2).max())
    for e, e2 in zip(E, E2):
        np.testing.assert_allclose(e, e2, rtol=rtol, atol=rtol * max(np.abs(e2).max(), 1e-30))


def test_nan_propagates_through_fast_layers():
    net = _net("tanh", "float64")
    net.params()[0][0, 0] = np.nan
    X = np.ones((3, 6))
    loss, grads = net.loss_and_grads(X, [0, 1, 2])
    assert math.isnan(loss)
    assert np.isnan(net.layer_errors[0]).all()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_no_stale_gradient_slots(dtype):
    """Only the activation-parameter slots are zeroed before the backward pass: every other slot
    is overwritten, so garbage left in the buffer never leaks into a gradient."""
    net = nl.Sequential([nl.Dense(4, 5, activation=nl.activations.get("prelu")), nl.Dense(5, 3, activation="tanh"),
                         nl.Dense(3, 2, bias=False)], loss="mse", seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    X, Y = net._prepare(rng.normal(size=(7, 4)), rng.normal(size=(7, 2)))
    ws, dws = net._workspace(7)
    clean = np.zeros_like(net._flat)
    dirty = np.full_like(net._flat, 123.0)
    args = (net._ops, net._hp, net._tens, net._flat)
    net._kernels.loss_and_grad(*args, clean, ws, dws, X, Y, net._loss_code, True, -1)
    net._kernels.loss_and_grad(*args, dirty, ws, dws, X, Y, net._loss_code, True, -1)
    np.testing.assert_array_equal(clean, dirty)


# ---------------------------------------------------------------- subnormal layer errors: products in float64
def _torch_default_deep(depth=50, width=16, dtype="float32"):
    lim = 1.0 / np.sqrt(width)
    init = nl.init.get("uniform", low=-lim, high=lim)
    layers = [nl.Dense(width, width, activation="sigmoid", init=init, bias_init=init) for _ in range(depth)]
    return nl.Sequential(layers + [nl.Dense(width, 4, init=init, bias_init=init)], loss="softmax_cross_entropy",
                         seed=0, dtype=dtype)


def test_subnormal_layer_errors_take_the_float64_products():
    """A deep sigmoid net whose float32 layer errors go subnormal: the products of those layers run
    in float64 and are rounded once -- dW = XᵀE and dX = EWᵀ to within one float32 rounding of the
    float64 products of the same float32 operands (the float32 BLAS product would lose bits in
    gradual underflow), and the gradients still agree with the float64 network's where normal."""
    net = _torch_default_deep()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(8, 16)), rng.integers(0, 4, 8)
    with nl.backend.flush_denormals(False):
        loss, grads = net.loss_and_grads(X, y)
    E = net.layer_errors
    tiny = [int(C.n_tiny(e)) for e in E]
    assert sum(t > 0 for t in tiny) >= 5 and any(((np.abs(e) > 0) & (np.abs(e) < 1.18e-38)).any() for e in E)
    inputs = net.layer_inputs(X, training=True)
    for li in range(len(E)):
        if tiny[li] == 0:
            continue
        A_prev = inputs[li][0].astype(np.float64)
        ref = (A_prev.T @ E[li].astype(np.float64)).astype(np.float32)
        got = grads[2 * li]
        np.testing.assert_allclose(got, ref, rtol=2e-7, atol=1e-45)
        if li > 0:  # dL/dA_{l-1} = E_l W_lᵀ, then E_{l-1} = that ⊙ σ'(Z_{l-1})
            back = (E[li].astype(np.float64) @ net.params()[2 * li].astype(np.float64).T).astype(np.float32)
            d = nl.activations.get("sigmoid").derivative(inputs[li - 1][1].astype(np.float64))
            np.testing.assert_allclose(E[li - 1], (back * d).astype(np.float32), rtol=1e-6, atol=1e-45)
    ref64 = net.copy(dtype="float64")
    loss64, g64 = ref64.loss_and_grads(X, y)
    assert loss == pytest.approx(loss64, rel=1e-6)
    for g, h in zip(grads, g64):
        big = np.abs(h) > 1e-30
        np.testing.assert_allclose(g[big], h[big], rtol=1e-3)


def test_flush_to_zero_keeps_the_float32_products():
    net = _torch_default_deep()
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(8, 16)), rng.integers(0, 4, 8)
    with nl.backend.flush_denormals(True):
        assert C.flushing() == nl.backend.FTZ_SUPPORTED
        loss, grads = net.loss_and_grads(X, y)
    assert not C.flushing() or not nl.backend.FTZ_SUPPORTED
    assert all(not ((np.abs(e) > 0) & (np.abs(e) < 1.18e-38)).any() for e in net.layer_errors)
    assert np.isfinite(loss)
