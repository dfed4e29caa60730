"""Property tests over stacks mixing every layer kind: the backward pass (every parameter and the
input) against float64 central differences, in training mode (fixed masks) and eval mode, on 2-D
data and on sequences; a float32 copy close to the float64 network.

``KINDS`` maps a layer kind to a Hypothesis builder ``(draw, width) -> (layer, out width)``; a new
layer kind adds one entry and is mixed into every stack drawn here.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnlab as nl

PROPS = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
SMOOTH = ("tanh", "sigmoid", "softplus", "elu", "gelu", "swish", "identity")


def _dense(draw, w):
    out = draw(st.integers(1, 5))
    return nl.Dense(w, out, activation=draw(st.sampled_from(SMOOTH)), bias=draw(st.booleans())), out


def _activation(draw, w):
    return nl.Activation(draw(st.sampled_from(SMOOTH + ("prelu",)))), w


def _residual(draw, w):
    depth = draw(st.integers(1, 2))
    layers, f = [], w
    for _ in range(depth):
        layer, f = _dense(draw, f)
        layers.append(layer)
    if f != w and not draw(st.booleans()):
        layers.append(nl.Dense(f, w, activation="tanh"))
        f = w
    return nl.Residual(layers, projection=f != w), f


def _batchnorm(draw, w):
    return nl.BatchNorm(w, momentum=draw(st.sampled_from([0.1, 0.5]))), w


def _layernorm(draw, w):
    if w == 1:  # one feature normalises to exactly 0 (the output is beta): a following prelu would sit on its kink
        return _dense(draw, w)
    return nl.LayerNorm(w), w


def _dropout(draw, w):
    return nl.Dropout(draw(st.sampled_from([0.0, 0.3]))), w


def _alpha_dropout(draw, w):
    return nl.AlphaDropout(0.2), w


def _highway(draw, w):
    return nl.Highway(w, activation=draw(st.sampled_from(SMOOTH)), gate_bias=draw(st.sampled_from([-2.0, 0.5]))), w


def _maxout(draw, w):
    out = draw(st.integers(1, 4))
    # random biases: a row that dropout zeroed entirely would tie zero-bias pieces (a kink)
    return nl.Maxout(w, out, k=draw(st.integers(1, 3)), bias_init=nl.init.get("normal", std=1.0)), out


def _rbf(draw, w):
    return nl.RBF(w, draw(st.integers(1, 4)), learnable_gamma=draw(st.booleans())), None


KINDS = {"Dense": _dense, "Activation": _activation, "Residual": _residual, "BatchNorm": _batchnorm,
         "LayerNorm": _layernorm, "Dropout": _dropout, "AlphaDropout": _alpha_dropout, "Highway": _highway,
         "Maxout": _maxout, "RBF": _rbf}
"""Layer kind -> builder; stacks draw from all of them."""


@st.composite
def stacks(draw, sequences=False):
    """(net, X, y): a random stack mixing the layer kinds, with data for its loss."""
    n_in = draw(st.integers(1, 4))
    w, layers = n_in, []
    for _ in range(draw(st.integers(1, 4))):
        layer, out = KINDS[draw(st.sampled_from(sorted(KINDS)))](draw, w)
        w = out if out is not None else layer.n_out
        layers.append(layer)
    if w != 2 or all(layer.n_in is None for layer in layers) or draw(st.booleans()):
        layers.append(nl.Dense(w, 2))
    loss = draw(st.sampled_from(["mse", "softmax_cross_entropy", "bce"]))
    net = nl.Sequential(layers, loss=loss, seed=draw(st.integers(0, 1000)))
    if not draw(st.booleans()):
        net.eval()
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    n = draw(st.integers(2, 5))
    shape = (n, draw(st.integers(1, 3)), n_in) if sequences else (n, n_in)
    X = rng.normal(size=shape)
    rows = shape[:-1]
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, 2, size=rows)
    elif loss == "bce":
        y = rng.uniform(0, 1, size=rows + (2,))
    else:
        y = rng.normal(size=rows + (2,))
    return net, X, y


def _check_all(net, X, y):
    res = nl.gradcheck.check_network(net, X, y, atol=1e-7, rtol=1e-5)
    assert res.ok, str(res)
    net.fixed_noise_seed = 7
    _, _, dX = net.loss_and_grads(X, y, wrt_input=True)
    num = nl.gradcheck.numeric_gradient(lambda x: net.loss(x, y), X)
    res = nl.gradcheck.compare("dL/dX", dX, num, atol=1e-7, rtol=1e-5)
    assert res.ok, str(res)


@PROPS
@given(stacks())
def test_mixed_stacks_match_central_differences(problem):
    _check_all(*problem)


@PROPS
@given(stacks(sequences=True))
def test_mixed_stacks_on_sequences_match_central_differences(problem):
    _check_all(*problem)


@PROPS
@given(stacks())
def test_float32_copy_is_close_to_float64(problem):
    net, X, y = problem
    net.fixed_noise_seed = 3
    net32 = net.copy(dtype="float32")
    net32.fixed_noise_seed = 3
    l64, g64 = net.loss_and_grads(X, y)
    l32, g32 = net32.loss_and_grads(X.astype(np.float32), y if y.dtype.kind == "i" else y.astype(np.float32))
    assert abs(l32 - l64) <= 1e-4 * (1 + abs(l64))
    for a, b in zip(g32, g64):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4 * (1 + np.abs(b).max()))
