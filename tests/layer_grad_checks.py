"""Checks the layer tests share: every parameter's gradient and the input gradient against float64
central differences, in the network's mode (in training mode with one fixed noise draw, so the
masks are the same in every evaluation)."""

import numpy as np

import nnlab as nl


def input_gradient(net, X, y):
    """CheckResult of ∂L/∂X (``wrt_input=True``) against central differences of ``net.loss``."""
    net64 = net.copy(dtype="float64")
    net64.fixed_noise_seed = 12345
    X = np.asarray(X, dtype=np.float64)
    _, _, dX = net64.loss_and_grads(X, y, wrt_input=True)
    num = nl.gradcheck.numeric_gradient(lambda x: net64.loss(x, y), X)
    return nl.gradcheck.compare("dX", dX, num)


def assert_gradients(net, X, y):
    """Every parameter and the input, in the network's current mode."""
    res = nl.gradcheck.check_network(net, X, y)
    assert res.ok, res
    res = input_gradient(net, X, y)
    assert res.ok, res


def assert_gradients_both_modes(net, X, y):
    """:func:`assert_gradients` in training mode (fixed masks) and in eval mode."""
    was = net.training
    try:
        net.train()
        assert_gradients(net, X, y)
        net.eval()
        assert_gradients(net, X, y)
    finally:
        net.training = was


def data(n, f, steps=None, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return scale * rng.normal(size=(n, f) if steps is None else (n, steps, f))


def targets(net, n, steps=None, seed=1):
    """Regression targets shaped like the network's output for n rows (and steps)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, net.n_out) if steps is None else (n, steps, net.n_out))
