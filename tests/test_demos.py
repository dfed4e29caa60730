"""The vanishing-gradient demo: the claim holds with the documented thresholds, and its numbers are real."""

import json
import math

import numpy as np
import pytest

import nnlab as nl
from nnlab.demos import vanishing
from nnlab.errors import DTypeError, HyperparameterError, NnlabError, ResourceError, UnknownNameError


@pytest.fixture(scope="module")
def default_result():
    return vanishing.run()


def test_documented_thresholds():
    assert vanishing.VANISHING_BELOW == 1e-3
    assert vanishing.EXPLODING_ABOVE == 1e3
    assert vanishing.RELU_HE_BAND == (0.1, 10.0)
    assert vanishing.verdict(1e-4) == "vanishing"
    assert vanishing.verdict(1e4) == "exploding"
    assert vanishing.verdict(1.0) == "healthy"
    assert vanishing.verdict(math.nan) == "undefined"
    assert "sigmoid" in vanishing.CLAIM and "factor of 10" in vanishing.CLAIM


def test_claim_holds_at_default_depth(default_result):
    r = default_result
    assert (r.depth, r.width, r.batch, r.seed, r.dtype) == (20, 32, 128, 0, "float64")
    assert [(c.activation, c.init) for c in r.rows] == list(vanishing.DEFAULT_CONFIGS)
    sig = r.row("sigmoid")
    relu = r.row("relu", "he_normal")
    assert sig.ratio < 1e-3
    assert 0.1 <= relu.ratio <= 10
    assert r.held is True
    assert r.sigmoid_ratio == sig.ratio and r.relu_he_ratio == relu.ratio
    assert sig.verdict == "vanishing" and relu.verdict == "healthy"
    for c in r.rows:
        assert len(c.grad_norms) == len(c.error_norms) == 21
        assert c.ratio == pytest.approx(c.grad_norms[0] / c.grad_norms[-1], rel=1e-15)
        assert all(np.isfinite(c.grad_norms)) and all(v > 0 for v in c.grad_norms)


@pytest.mark.parametrize("seed", range(5))
def test_claim_holds_for_seeds_0_to_4(seed):
    r = vanishing.run(seed=seed)
    assert r.row("sigmoid").ratio < 1e-3
    assert 0.1 <= r.row("relu", "he_normal").ratio <= 10
    assert r.held


def test_sigmoid_gradient_decays_monotonically_towards_the_input(default_result):
    g = default_result.row("sigmoid").grad_norms
    # every sigmoid layer shrinks the error (f' <= 1/4): the norms grow layer by layer to the output
    assert all(a < b for a, b in zip(g[:-1], g[1:]))


@pytest.mark.parametrize("seed", range(5))
def test_claim_holds_at_small_size(seed):
    r = vanishing.run(depth=8, width=16, batch=64, seed=seed)
    assert r.row("sigmoid").ratio < 1e-3
    assert 0.1 <= r.row("relu", "he_normal").ratio <= 10
    assert r.held
    assert all(len(c.grad_norms) == 9 for c in r.rows)


def _independent(activation, init, depth, width, batch, seed, dtype="float64"):
    """The documented setup, built here from the public API only."""
    rng = np.random.default_rng([seed, 1])
    X = rng.standard_normal((batch, width))
    y = X @ (rng.standard_normal((width, 1)) / math.sqrt(width))
    layers = [nl.Dense(width, width, activation=activation, init=init) for _ in range(depth)]
    layers.append(nl.Dense(width, 1, activation="identity", init=init))
    net = nl.Sequential(layers, loss="mse", seed=seed, dtype=dtype)
    return net, X, y


@pytest.mark.parametrize("depth,width,batch,seed", [(20, 32, 128, 0), (6, 8, 16, 3)])
def test_norms_agree_with_an_independently_built_network(depth, width, batch, seed):
    res = vanishing.run(depth=depth, width=width, batch=batch, seed=seed)
    for row in res.rows:
        net, X, y = _independent(row.activation, row.init, depth, width, batch, seed)
        loss, grads = net.loss_and_grads(X, y, training=False)
        names = net.param_names()
        gw = [np.linalg.norm(grads[names.index(f"{l}.W")]) for l in range(depth + 1)]
        np.testing.assert_allclose(row.grad_norms, gw, rtol=1e-12)
        np.testing.assert_allclose(row.error_norms, [np.linalg.norm(e) for e in net.layer_errors], rtol=1e-12)
        assert row.loss == pytest.approx(loss, rel=1e-12)


def _numpy_backprop(net, X, y):
    """Plain numpy forward/backward for a Dense stack with mse (independent of the kernels)."""
    Ws = [p for n, p in zip(net.param_names(), net.params()) if n.endswith(".W")]
    bs = [p for n, p in zip(net.param_names(), net.params()) if n.endswith(".b")]
    acts = [layer.activation for layer in net.layers]
    A, As, Zs = X, [X], []
    for W, b, act in zip(Ws, bs, acts):
        Z = A @ W + b
        A = act.forward(Z)
        Zs.append(Z)
        As.append(A)
    E = (A - y.reshape(A.shape)) / X.shape[0] * acts[-1].derivative(Zs[-1])
    gW = [None] * len(Ws)
    for l in range(len(Ws) - 1, -1, -1):
        gW[l] = As[l].T @ E
        if l:
            E = (E @ Ws[l].T) * acts[l - 1].derivative(Zs[l - 1])
    return [np.linalg.norm(g) for g in gW]


@pytest.mark.parametrize("config", list(vanishing.DEFAULT_CONFIGS))
def test_norms_agree_with_plain_numpy_backprop(config):
    depth, width, batch, seed = 20, 32, 128, 0
    res = vanishing.run(depth=depth, width=width, batch=batch, seed=seed, configs=[config])
    net, X, y = _independent(*config, depth, width, batch, seed)
    np.testing.assert_allclose(res.rows[0].grad_norms, _numpy_backprop(net, X, y), rtol=1e-9)


def test_float32_gives_the_same_picture(default_result):
    r32 = vanishing.run(dtype="float32")
    assert r32.dtype == "float32" and r32.held
    for a, b in zip(default_result.rows, r32.rows):
        assert a.verdict == b.verdict
        assert b.ratio == pytest.approx(a.ratio, rel=1e-2)


def test_to_dict_is_json(default_result):
    d = json.loads(json.dumps(default_result.to_dict(), allow_nan=False))
    assert d["demo"] == "vanishing" and d["held"] is True and d["claim"] == vanishing.CLAIM
    assert d["n_layers"] == 21 and len(d["configs"]) == 4
    sig = d["configs"][0]
    assert sig["activation"] == "sigmoid" and sig["verdict"] == "vanishing"
    assert sig["grad_norms"] == default_result.rows[0].grad_norms
    assert d["sigmoid_ratio"] == default_result.sigmoid_ratio
    assert d["thresholds"] == {"vanishing_below": 1e-3, "exploding_above": 1e3, "relu_he_band": [0.1, 10.0]}


def test_custom_configs_and_aliases():
    r = vanishing.run(depth=3, width=4, batch=8, configs=["tanh/glorot_normal", ("gelu", "kaiming_uniform")])
    assert [(c.activation, c.init) for c in r.rows] == [("tanh", "xavier_normal"), ("gelu", "he_uniform")]
    assert r.held is None and "needs a sigmoid configuration" in r.reason
    assert "claim not tested for these settings" in vanishing.render(r) and "claim held" not in vanishing.render(r)
    assert r.sigmoid_ratio is None and r.relu_he_ratio is None


def test_seeded_runs_repeat():
    a = vanishing.run(depth=4, width=8, batch=16, seed=7)
    b = vanishing.run(depth=4, width=8, batch=16, seed=7)
    c = vanishing.run(depth=4, width=8, batch=16, seed=8)
    assert a.to_dict() == b.to_dict()
    assert a.rows[0].grad_norms != c.rows[0].grad_norms


@pytest.mark.parametrize("kwargs,exc", [
    (dict(depth=0), HyperparameterError),
    (dict(depth=2.5), HyperparameterError),
    (dict(width=0), HyperparameterError),
    (dict(batch=-1), HyperparameterError),
    (dict(seed=-1), HyperparameterError),
    (dict(depth=True), HyperparameterError),
    (dict(dtype="float16"), DTypeError),
    (dict(configs=[]), HyperparameterError),
    (dict(configs=["relu"]), HyperparameterError),
    (dict(configs=[("relu", "he_normal", 3)]), HyperparameterError),
    (dict(configs=[("relu", "he_normal"), ("nope", "he_normal")]), UnknownNameError),
    (dict(configs=[("relu", "he_normal"), ("relu", "nope")]), UnknownNameError),
    (dict(width=100_000), ResourceError),
])
def test_bad_arguments_raise_before_building(monkeypatch, kwargs, exc):
    def boom(*a, **k):
        raise AssertionError("a network was built before validation finished")

    monkeypatch.setattr(vanishing, "build_net", boom)
    with pytest.raises(exc) as info:
        vanishing.run(**kwargs)
    assert isinstance(info.value, NnlabError)


# ---------------------------------------------------------------- the printed terms and the pictures
def test_output_explains_its_terms(default_result):
    """E_l, σ_w², q*, χ*, ½logχ*, layerwise and measured are defined in the output where they first appear."""
    text = vanishing.render(default_result)
    mean_field = text.index("mean-field prediction")
    for term, definition in [("E_l", "= ∂L/∂Z_l, the error of hidden layer l"), ("σ_w²", "fan_in·mean(W²)"),
                             ("q*", "the fixed point of the variance map"), ("χ*", "< 1 the gradient"),
                             ("½logχ*", "the predicted log(‖E_l‖/‖E_{l+1}‖)"),
                             ("layerwise", "½·log χ_l averaged over layers"), ("measured", "minus the slope")]:
        line = next((ln for ln in text.splitlines() if ln.strip().startswith(term + " ")), None)
        assert line is not None and definition in text[text.index(line):], term
        assert text.index(line) > mean_field
    # the definitions come before the table that uses them, and nothing uses E_l before its definition
    assert text.index("  E_l        = ") < text.index("config                  σ_w²")
    assert "E_l" not in text[:mean_field] and "q*" not in text[:mean_field]


def test_output_says_why_q_star_is_zero(default_result):
    rows = {r.label: r.meanfield for r in default_result.rows}
    assert rows["tanh/xavier_normal"].q_star == 0.0 and rows["relu/he_normal"].q_star == 0.0
    assert rows["sigmoid/xavier_normal"].q_star > 0
    text = vanishing.render(default_result)
    assert "q* = 0 for tanh/xavier_normal: with σ_b² = 0 and tanh(0) = 0" in " ".join(text.split())
    assert "q* = 0 for relu/he_normal: with σ_b² = 0 relu's map is linear" in " ".join(text.split())
    assert "q* = 0 for sigmoid" not in text and "q* = 0 for selu" not in text


def _lines_of(fig):
    return [(ax.get_title(), [ln.get_label() for ln in ax.get_lines()], ax) for ax in fig.axes]


def test_plots_mark_the_output_layer(default_result):
    pytest.importorskip("matplotlib")
    from nnlab import charts

    captured = {}
    real = charts.figure
    try:
        charts.figure = lambda panels, title=None: captured.setdefault("fig", real(panels, title))
        vanishing.plot(default_result, "/dev/null")
    finally:
        charts.figure = real
    axes = _lines_of(captured["fig"])
    assert len(axes) == 2
    for _, labels, _ax in axes:
        assert f"output layer ({default_result.n_layers})" in labels
        assert any(lab.startswith("sigmoid/") for lab in labels)


def test_exploding_picture_shows_both_runs():
    pytest.importorskip("matplotlib")
    from nnlab import charts
    from nnlab.demos import exploding

    res = exploding.run(depth=6, width=16, steps=20, batch=32)
    fig = charts.figure(exploding.panels(res))
    try:
        found = {}
        for _title, _labels, ax in _lines_of(fig):
            for line in ax.get_lines():
                y = np.asarray(line.get_ydata(), dtype=float)
                if line.get_label() in ("plain SGD",) or line.get_label().startswith("clipped"):
                    found[line.get_label().split(" (")[0]] = (ax, int(np.isfinite(y).sum()))
        assert set(found) == {"plain SGD", "clipped"}
        (ax_plain, n_plain), (ax_clip, n_clip) = found["plain SGD"], found["clipped"]
        assert ax_plain is not ax_clip  # separate panels: neither series hides the other
        assert n_plain >= 1 and n_clip >= 1
        assert any("output layer" in lab for _, labels, _ in _lines_of(fig) for lab in labels)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
