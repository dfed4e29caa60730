"""Stacks mixing Dropout, AlphaDropout, Highway, Maxout and RBF with Dense, Activation and Residual:
gradients of every parameter and the input in both modes on Hypothesis-drawn stacks and shapes
(2-D and sequences), the fused Trainer bit for bit against the per-step path, save/load (the
examples of docs/layers.md run in tests/test_docs.py)."""


import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_grad_checks import assert_gradients_both_modes, data, targets

import nnlab as nl

KINDS = ["dense", "activation", "dropout", "alpha", "highway", "maxout", "rbf", "residual"]


def _layer(kind, w, inner=None):
    """A layer of ``kind`` mapping w features to w (a maxout with k = 2)."""
    if kind == "dense":
        return nl.Dense(w, w, activation="tanh")
    if kind == "activation":
        return nl.Activation("softplus")
    if kind == "dropout":
        return nl.Dropout(0.3)
    if kind == "alpha":
        return nl.AlphaDropout(0.2)
    if kind == "highway":
        return nl.Highway(w, activation="tanh", gate_bias=-1.0)
    if kind == "maxout":  # distinct biases: a dropped (zero) input must not tie the pieces (a kink)
        return nl.Maxout(w, w, k=2, bias_init=nl.init.get("normal", std=0.5))
    if kind == "rbf":
        return nl.RBF(w, w, learnable_gamma=True)
    return nl.Residual([_layer(inner, w), nl.Dense(w, w, activation="tanh")])


@settings(deadline=None, max_examples=15)
@given(kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
       inner=st.sampled_from(["dropout", "highway", "maxout", "rbf", "alpha"]),
       w=st.integers(1, 4), n=st.integers(1, 4), steps=st.one_of(st.none(), st.integers(1, 3)),
       seed=st.integers(0, 10**6))
def test_mixed_stacks_gradients_in_both_modes(kinds, inner, w, n, steps, seed):
    layers = [nl.Dense(3, w, activation="tanh")] + [_layer(k, w, inner) for k in kinds] + [nl.Dense(w, 2)]
    net = nl.Sequential(layers, seed=seed % 1000)
    X = data(n, 3, steps, seed=seed)
    assert_gradients_both_modes(net, X, targets(net, n, steps, seed=seed + 1))


def _all_kinds(dtype, seed=3):
    return nl.Sequential([nl.Dense(4, 6, activation="selu", init="lecun_normal"), nl.AlphaDropout(0.1),
                          nl.Highway(6, activation="relu"), nl.Dropout(0.3), nl.Maxout(6, 5, k=3),
                          nl.Residual([nl.RBF(5, 5), nl.Dense(5, 5, activation="tanh")]), nl.Dense(5, 3)],
                         loss="softmax_cross_entropy", seed=seed, dtype=dtype)


def test_compiled_fit_equals_the_per_step_path_bit_for_bit():
    X = data(40, 4, seed=1)
    y = np.random.default_rng(2).integers(0, 3, 40)
    for dtype in ("float64", "float32"):
        a, b = _all_kinds(dtype), _all_kinds(dtype)
        ta = nl.Trainer(a, nl.optim.SGD(lr=0.05, momentum=0.9), clip=("global_norm", 1.0))
        tb = nl.Trainer(b, nl.optim.SGD(lr=0.05, momentum=0.9), clip=("global_norm", 1.0))
        tb.compiled_epochs = False
        ha = ta.fit(X, y, epochs=3, batch_size=7, seed=4)
        hb = tb.fit(X, y, epochs=3, batch_size=7, seed=4)
        assert ha.loss == hb.loss and ha.epoch_loss == hb.epoch_loss
        np.testing.assert_array_equal(a._flat, b._flat)
        assert ha.loss[0] != ha.loss[-1]


def test_sequences_save_load_and_monitor(tmp_path):
    net = _all_kinds("float64")
    X = data(3, 4, steps=5, seed=5)
    out = net.eval().forward(X)
    assert out.shape == (3, 5, 3)
    np.testing.assert_allclose(out.reshape(-1, 3), net.forward(X.reshape(-1, 4)), rtol=1e-13, atol=1e-15)
    net.save(tmp_path / "all.npz")
    net2 = nl.load(tmp_path / "all.npz")
    np.testing.assert_array_equal(net2._store, net._store)
    np.testing.assert_array_equal(net2.eval().forward(X), out)
    mon = nl.GradientMonitor(net.train())
    assert [layer.kind for layer in mon.layers] == ["Dense", "Dense", "Dense", "Maxout", "RBF", "Dense", "Dense"]
    nl.Trainer(net, nl.optim.Adam(lr=0.01), monitor=mon).fit(data(16, 4), np.zeros(16, int), epochs=2, batch_size=8)
    assert mon.steps == 4
    g = mon.series("grad_norm")
    assert g.shape == (4, 7) and np.isfinite(g).all() and (g > 0).all()  # every watched op gets a gradient


def test_with_a_user_activation_in_the_highway():
    """A registered activation (its own kernel set, compiled in this process) beside these layers;
    unregistered afterwards, as in tests/test_layers_core.py (the registry is process-wide)."""
    import math

    name = "layers_mixed_sin"
    nl.activations.register(name, lambda z: math.sin(z), lambda z: math.cos(z))
    try:
        net = nl.Sequential([nl.Highway(3, activation=name), nl.Dropout(0.3),
                             nl.Maxout(3, 3, k=2, bias_init=nl.init.get("normal", std=0.5)),
                             nl.RBF(3, 2, learnable_gamma=True), nl.AlphaDropout(0.1), nl.Dense(2, 1)], seed=0)
        assert net._kernels is not nl.kernels.cpu
        X = data(5, 3, seed=3)
        assert_gradients_both_modes(net, X, X[:, :1])
    finally:
        nl.activations.unregister(name)
