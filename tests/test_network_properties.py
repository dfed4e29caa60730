"""Property tests of whole-network gradients (backprop, gradient checking, robustness).

Random Dense MLPs (depth 1-6, widths 1-8, activations drawn from the registry with random and
learnable hyperparameters, every loss, with and without bias, training mode with a fixed noise seed
and eval mode) are checked three independent ways:

* ``nnlab.gradcheck.check_network`` (float64 central differences, nnlab's own checker);
* this file's own central-difference loop over ``net.params()`` using only ``net.loss``;
* ``tests/reference.py``, a plain-NumPy forward/backward written from docs/backprop.md, which must
  agree with the compiled executor to ~1e-10 on the loss, every gradient and every layer error E_l.

float32 networks must give gradients close to those of their float64 copy.
"""


import numpy as np
import pytest
import reference as ref  # tests/ is on sys.path (conftest.py)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import nnlab as nl
from nnlab import activations

# Built-in activations only: a user registration leaked by another test module must not change
# (or slow down, by compiling a custom kernel set) what these tests draw.
BUILTIN = [n for n in activations.names() if n != "scaled" and not activations.entry(n).custom]
NOISY = ("rrelu", "noisy_relu")
LOSSES = ("mse", "softmax_cross_entropy", "bce")
INITS = ("xavier_uniform", "xavier_normal", "he_normal", "lecun_normal", "orthogonal")

PROPS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])


def _hyper(draw, name):
    """Random (valid, moderate) hyperparameter values for activation ``name``."""
    f = lambda lo, hi: draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
    if draw(st.booleans()):
        return {}  # the registry defaults
    return {
        "sigmoid": lambda: {"alpha": f(0.5, 2.0)},
        "leaky_relu": lambda: {"alpha": f(0.0, 0.3)},
        "prelu": lambda: {"alpha": f(-0.5, 0.5)},
        "rrelu": lambda: {"lower": f(0.0, 0.2), "upper": f(0.2, 0.5)},
        "noisy_relu": lambda: {"sigma": f(0.0, 0.5)},
        "elu": lambda: {"alpha": f(0.2, 2.0)},
        "celu": lambda: {"alpha": f(0.3, 2.0)},
        "softplus": lambda: {"beta": f(0.5, 3.0)},
        "swish": lambda: {"beta": f(-1.0, 3.0)},
        "acon_c": lambda: {"p1": f(0.0, 1.5), "p2": f(-0.5, 0.5), "beta": f(0.2, 2.0)},
    }.get(name, dict)()


@st.composite
def activation_objects(draw):
    """An Activation: any built-in, sometimes with all its hyperparameters learnable, or 'scaled'."""
    name = draw(st.sampled_from(BUILTIN + ["scaled"]))
    if name == "scaled":
        base = draw(st.sampled_from(BUILTIN))
        params = _hyper(draw, base)
        if base == "gelu":
            params["approximate"] = draw(st.sampled_from(["none", "tanh"]))
        a = draw(st.floats(0.5, 1.5))
        return activations.get("scaled", base=base, a=a, learnable=draw(st.booleans()), **params)
    params = _hyper(draw, name)
    if name == "gelu":
        params["approximate"] = draw(st.sampled_from(["none", "tanh"]))
    entry = activations.entry(name)
    # None: the registry default (prelu, swish, acon_c learnable); True: every hyperparameter learnable
    learnable = draw(st.sampled_from([None, True])) if entry.params else None
    return activations.get(name, learnable=learnable, **params)


@st.composite
def problems(draw, dtype="float64"):
    """(net, X, y): a random Sequential with data for its loss, in training or eval mode."""
    depth = draw(st.integers(1, 6))
    widths = draw(st.lists(st.integers(1, 8), min_size=depth + 1, max_size=depth + 1))
    loss = draw(st.sampled_from(LOSSES))
    layers = []
    for i in range(depth):
        act = draw(activation_objects()) if i < depth - 1 or draw(st.booleans()) else "identity"
        layers.append(nl.Dense(widths[i], widths[i + 1], activation=act, init=draw(st.sampled_from(INITS)),
                               bias=draw(st.booleans()), bias_init=draw(st.sampled_from([0.0, 0.1, -0.2]))))
    seed = draw(st.integers(0, 2**16))
    net = nl.Sequential(layers, loss=loss, seed=seed, dtype=dtype)
    if draw(st.booleans()):
        net.train()
        net.fixed_noise_seed = draw(st.integers(0, 2**20))
    else:
        net.eval()
    n = draw(st.integers(1, 6))
    rng = np.random.default_rng(seed + 1)
    X = rng.normal(size=(n, widths[0]))
    k = widths[-1]
    if loss == "mse":
        y = rng.normal(size=(n, k))
    elif loss == "bce":
        y = rng.uniform(0.0, 1.0, size=(n, k)) if draw(st.booleans()) else rng.integers(0, 2, (n, k)).astype(float)
    else:
        y = rng.integers(0, k, n)
    return net, X, y


def kink_margin(net, X):
    """The smallest distance of any pre-activation Z_l to a kink of its activation: the documented
    ones and z = 0 where f' jumps there at these hyperparameters (``gradcheck.kinks``). Z = 0 exactly
    is common: a dead ReLU unit feeding a layer with zero bias, and elu with α ≠ 1 has a kink at 0."""
    margin = np.inf
    for layer, (_, Z, _) in zip(net.layers, net.layer_inputs(X, training=net.training)):
        kinks = np.asarray(nl.gradcheck.kinks(layer.activation), dtype=np.float64)
        if kinks.size:
            margin = min(margin, float(np.min(np.abs(Z.reshape(-1, 1) - kinks[None, :]))))
    return margin


def own_numeric_grads(net, X, y, eps=1e-6):
    """Central differences of ``net.loss`` over every parameter element, written independently."""
    out = []
    for p in net.params():
        g = np.zeros(p.shape)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            fp = net.loss(X, y)
            p[idx] = old - eps
            fm = net.loss(X, y)
            p[idx] = old
            g[idx] = (fp - fm) / (2 * eps)
        out.append(g)
    return out


# ---------------------------------------------------------------- 1. finite differences
@PROPS
@given(problems())
def test_check_network_passes_on_random_architectures(problem):
    net, X, y = problem
    assume(kink_margin(net, X) > 1e-4)
    res = nl.gradcheck.check_network(net, X, y)
    assert res.ok, str(res)
    assert res.n_checked == net.n_params


@PROPS
@given(problems())
def test_grads_match_own_central_differences(problem):
    net, X, y = problem
    assume(kink_margin(net, X) > 1e-4)
    before = [p.copy() for p in net.params()]
    loss, grads = net.loss_and_grads(X, y)
    assert np.isfinite(loss)
    assert loss == pytest.approx(net.loss(X, y), rel=1e-12, abs=1e-14)
    numeric = own_numeric_grads(net, X, y)
    for name, g, n, p0, p in zip(net.param_names(), grads, numeric, before, net.params()):
        assert g.shape == p.shape
        np.testing.assert_array_equal(p, p0)  # the loop restored every parameter
        np.testing.assert_allclose(g, n, rtol=1e-5, atol=1e-8, err_msg=name)


@PROPS
@given(problems(dtype="float32"))
def test_float32_grads_close_to_float64_copy(problem):
    net32, X, y = problem
    X = X.astype(np.float32)
    if net32.loss_name != "softmax_cross_entropy":
        y = y.astype(np.float32)  # both networks see the very same targets
    net64 = net32.copy(dtype="float64")
    net64.fixed_noise_seed = net32.fixed_noise_seed
    assert net64.dtype == np.float64 and net32.dtype == np.float32
    for p32, p64 in zip(net32.params(), net64.params()):
        np.testing.assert_array_equal(p32.astype(np.float64), p64)
    assume(kink_margin(net64, X) > 1e-3)
    l32, g32 = net32.loss_and_grads(X, y)
    l64, g64 = net64.loss_and_grads(X, y)
    assert l32 == pytest.approx(l64, rel=1e-4, abs=1e-5)
    scale = max(float(np.max(np.abs(g))) for g in g64)
    for name, a, b in zip(net32.param_names(), g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * max(scale, 1e-3), err_msg=name)
    # and the float32 network passes the (float64) checker, which runs on such a copy
    assert nl.gradcheck.check_network(net32, X, y).ok


# ---------------------------------------------------------------- 2. the NumPy reference
def _eval_problems():
    return problems().map(lambda p: (p[0].eval(), p[1], p[2]))


@settings(deadline=None, max_examples=50)
@given(_eval_problems())
def test_executor_matches_numpy_reference(problem):
    net, X, y = problem
    loss, grads = net.loss_and_grads(X, y)
    r_loss, r_grads, r_errors, r_cache = ref.loss_and_grads(net, X, y)
    assert loss == pytest.approx(r_loss, rel=1e-10, abs=1e-12)
    scale = max([1.0] + [float(np.max(np.abs(g))) for g in r_grads])
    for name, g, r in zip(net.param_names(), grads, r_grads):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12 * scale, err_msg=name)
    assert len(net.layer_errors) == len(net.layers)
    for li, (E, R) in enumerate(zip(net.layer_errors, r_errors)):
        assert E.shape == (X.shape[0], net.layers[li].n_out)
        np.testing.assert_allclose(E, R, rtol=1e-10, atol=1e-14 * scale, err_msg=f"E_{li}")
    np.testing.assert_allclose(net.forward(X), r_cache[-1][2], rtol=1e-12, atol=1e-12)
    for (A_prev, Z, A), (rA_prev, rZ, rA) in zip(net.layer_inputs(X), r_cache):
        np.testing.assert_allclose(A_prev, rA_prev, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(Z, rZ, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(A, rA, rtol=1e-12, atol=1e-12)


@settings(deadline=None, max_examples=50)
@given(problems())
def test_memoized_layer_errors_obey_the_backprop_recurrences(problem):
    """docs/backprop.md: E_l = (E_{l+1} W_{l+1}^T) * f_l'(Z_l), dW_l = A_{l-1}^T E_l, db_l = sum_rows E_l,
    and E_L = dL/dZ_L -- read off the public API only (layer_errors, layer_inputs, params)."""
    net, X, y = problem
    _, grads = net.loss_and_grads(X, y)
    E = net.layer_errors
    cache = net.layer_inputs(X, training=net.training)  # same fixed noise seed in training mode
    named = dict(zip(net.param_names(), grads))
    params = dict(zip(net.param_names(), net.params()))
    acts = ref.layer_activations(net)
    L = len(net.layers)
    # output error: derivative of the loss w.r.t. the output, times f_L'(Z_L)
    _, dout = ref.loss_and_dout(net.loss_name, cache[-1][2], y)
    noisy = [layer.activation.entry.noise is not None and net.training for layer in net.layers]
    if not noisy[-1]:
        np.testing.assert_allclose(E[-1], dout * acts[-1].derivative(cache[-1][1]), rtol=1e-10, atol=1e-14)
    for li in range(L):
        A_prev, Z, _ = cache[li]
        tol = 1e-12 * max(1.0, float(np.abs(E[li]).max()) * max(1.0, float(np.abs(A_prev).max())))
        np.testing.assert_allclose(named[f"{li}.W"], A_prev.T @ E[li], rtol=1e-10, atol=tol)
        if net.layers[li].bias:
            np.testing.assert_allclose(named[f"{li}.b"], E[li].sum(axis=0), rtol=1e-10, atol=tol)
        if li + 1 < L and not noisy[li]:  # training noise u is not public: f'(Z, u) unknown
            back = E[li + 1] @ params[f"{li + 1}.W"].T
            np.testing.assert_allclose(E[li], back * acts[li].derivative(Z), rtol=1e-10,
                                       atol=1e-14 * max(1.0, float(np.abs(back).max())))


# ---------------------------------------------------------------- 10. determinism
@settings(deadline=None, max_examples=20)
@given(problems())
def test_same_seed_same_network_same_results(problem):
    net, X, y = problem
    twin = nl.Sequential([nl.Dense.from_config(layer.config()) for layer in net.layers],
                         loss=net.loss_name, seed=net.seed, dtype=net.dtype.name)
    twin.training = net.training
    twin.fixed_noise_seed = net.fixed_noise_seed
    for a, b in zip(net.params(), twin.params()):
        np.testing.assert_array_equal(a, b)
    l1, g1 = net.loss_and_grads(X, y)
    l2, g2 = twin.loss_and_grads(X, y)
    assert l1 == l2
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(net.layer_errors, twin.layer_errors):
        np.testing.assert_array_equal(a, b)
