"""Dropout and AlphaDropout: the masks (from the op's U(0,1) noise, m = [u >= p]), torch's formulas
bit for bit on the same mask, the identity in eval, the statistics they keep, gradients in both
modes, reproducible masks, save/load, float32, the fused Trainer."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layer_grad_checks import assert_gradients_both_modes, data, targets

import nnlab as nl
from nnlab.errors import HyperparameterError, ShapeError
from nnlab.kernels.layout import F_NOISE

ALPHA = 1.7580993408473766  # −(SELU's saturation value)


def _passthrough(layer, f, dtype="float64", seed=0):
    """Dense(f, f) with W = I, b = 0 (its output is its input, exactly) followed by ``layer``."""
    net = nl.Sequential([nl.Dense(f, f), layer], seed=seed, dtype=dtype)
    net.params()[0][...] = np.eye(f)
    return net


def _noise(net, X):
    """The U(0,1) draws the last training forward pass of ``net`` on X used (first noisy op)."""
    n = X.shape[0]
    prog = net._program(1 if X.ndim == 2 else X.shape[1])
    i = int(np.flatnonzero(prog.ops[:, F_NOISE] >= 0)[0])
    ws, _ = net._workspace(n, prog.width)
    return prog.tensor(ws, int(prog.ops[i, F_NOISE]), n).reshape(X.shape).copy()


# ---------------------------------------------------------------- the formulas
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_is_x_times_mask_over_keep_probability(p):
    X = data(300, 7, seed=2)
    net = _passthrough(nl.Dropout(p), 7)
    out = net.forward(X)
    u = _noise(net, X)
    m = u >= p
    np.testing.assert_array_equal(out, X * np.where(m, 1.0 / (1.0 - p), 0.0))
    # each entry is dropped with probability p (binomial, 5 sigma)
    dropped = 1.0 - m.mean()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / m.size)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.7])
def test_alpha_dropout_formula(p):
    X = data(300, 7, seed=3)
    net = _passthrough(nl.AlphaDropout(p), 7)
    out = net.forward(X)
    m = _noise(net, X) >= p
    a = 1.0 / math.sqrt((ALPHA ** 2 * p + 1.0) * (1.0 - p))
    b = a * ALPHA * p          # = −a·α'·p with α' = −ALPHA
    expect = np.where(m, a * X + b, a * -ALPHA + b)
    np.testing.assert_allclose(out, expect, rtol=1e-15, atol=1e-15)
    assert abs((1.0 - m.mean()) - p) < 5 * math.sqrt(p * (1 - p) / m.size)


@pytest.mark.parametrize("layer", [nl.Dropout, nl.AlphaDropout])
@pytest.mark.parametrize("p", [0.2, 0.6])
def test_torch_formula_on_the_same_mask_bit_for_bit(layer, p):
    """torch's ATen dropout (noise.bernoulli_(1 − p); dropout: noise.div_(1 − p), x·noise; alpha:
    b = (noise − 1)·(αa) + αap, noise·a, x·noise + b), run in torch on nnlab's mask."""
    torch = pytest.importorskip("torch")
    X = data(40, 6, seed=4)
    net = _passthrough(layer(p), 6)
    out = net.forward(X)
    noise = torch.tensor((_noise(net, X) >= p).astype(np.float64))
    x = torch.tensor(X)
    if layer is nl.Dropout:
        expect = x.mul(noise.div_(1 - p))
    else:
        a = 1.0 / math.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))
        b = noise.add(-1).mul_(ALPHA * a).add_(ALPHA * a * p)
        expect = x.mul(noise.mul_(a)).add_(b)
    np.testing.assert_array_equal(out, expect.numpy())


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_torch_functional_outputs_take_the_same_two_values(p):
    """torch's own F.dropout / F.alpha_dropout (its mask, not ours): every output is nnlab's kept
    value of that x or nnlab's dropped value, bit for bit -- the constants agree with torch's."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    X = data(50, 8, seed=5)
    torch.manual_seed(0)
    t_drop = F.dropout(torch.tensor(X), p, training=True).numpy()
    t_alpha = F.alpha_dropout(torch.tensor(X), p, training=True).numpy()
    a = 1.0 / math.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))
    keep_d, keep_a, drop_a = X * (1.0 / (1.0 - p)), X * a + ALPHA * a * p, -ALPHA * a + ALPHA * a * p
    assert ((t_drop == keep_d) | (t_drop == 0.0)).all() and (t_drop == 0.0).any() and (t_drop == keep_d).any()
    assert ((t_alpha == keep_a) | (t_alpha == drop_a)).all() and (t_alpha == drop_a).any()
    # and nnlab's outputs take the same two values
    for layer, keep, drop in ((nl.Dropout(p), keep_d, 0.0), (nl.AlphaDropout(p), keep_a, drop_a)):
        out = _passthrough(layer, 8).forward(X)
        assert ((out == keep) | (out == drop)).all()


@pytest.mark.parametrize("layer", [nl.Dropout(0.4), nl.AlphaDropout(0.4), nl.Dropout(0.0), nl.AlphaDropout(0.0)])
def test_eval_is_the_identity(layer):
    X = data(20, 5, seed=6)
    net = _passthrough(layer, 5).eval()
    np.testing.assert_array_equal(net.forward(X), X)
    # and its backward pass hands the error through unchanged: dX = dL/dY = (Y − y)/N for mse
    y = targets(net, 20)
    _, _, dX = net.loss_and_grads(X, y, wrt_input=True)
    np.testing.assert_array_equal(dX, (X - y) / 20)


@pytest.mark.parametrize("layer", [nl.Dropout, nl.AlphaDropout])
def test_p_zero_is_the_identity_in_training_too(layer):
    X = data(20, 5, seed=7)
    net = _passthrough(layer(0.0), 5)
    assert net.training and not net._has_noise
    np.testing.assert_array_equal(net.forward(X), X)


def test_dropout_keeps_the_mean_in_training():
    """E[x·m/(1 − p)] = x: the mean over many rows of the same x is x (5 standard errors)."""
    p, n = 0.3, 40000
    x = np.array([1.5, -2.0, 0.25, 3.0])
    net = _passthrough(nl.Dropout(p), 4)
    out = net.forward(np.tile(x, (n, 1)))
    se = np.abs(x) * math.sqrt(p / (1 - p)) / math.sqrt(n)
    assert (np.abs(out.mean(axis=0) - x) < 5 * se).all()
    # without the 1/(1 − p) the mean would be (1 − p)·x, far outside the tolerance
    assert (np.abs((1 - p) * x - x) > 50 * se).all()


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3])
def test_alpha_dropout_keeps_mean_zero_and_variance_one(p):
    """On standard-normal input: mean 0 and variance 1 within 5 standard errors (N = 200000), where
    plain dropout gives variance 1/(1 − p)."""
    X = data(25000, 8, seed=8)
    out = _passthrough(nl.AlphaDropout(p), 8).forward(X)
    N = out.size
    assert abs(out.mean()) < 5 / math.sqrt(N)
    # Var(y²) <= E[y⁴] ≈ 3 + (something bounded): 5·sqrt(4/N) bounds the variance's error here
    assert abs(out.var() - 1.0) < 5 * math.sqrt(4.0 / N)
    plain = _passthrough(nl.Dropout(p), 8).forward(X)
    assert abs(plain.var() - 1.0 / (1.0 - p)) < 5 * math.sqrt(4.0 / (1 - p) ** 2 / N)
    assert abs(plain.var() - 1.0) > 5 * math.sqrt(4.0 / N)


def test_alpha_dropout_keeps_a_selu_network_self_normalizing():
    """SELU + LeCun normal + AlphaDropout: after 8 layers the activations still have mean ≈ 0 and
    variance ≈ 1 in training (the pairing docs/layers.md recommends)."""
    def run(drop):
        layers = []
        for _ in range(8):
            layers += [nl.Dense(64, 64, activation="selu", init="lecun_normal"), drop(0.1)]
        return nl.Sequential(layers, seed=0).forward(data(2000, 64, seed=9))

    out = run(nl.AlphaDropout)
    assert abs(out.mean()) < 0.05 and abs(out.var() - 1.0) < 0.1
    assert run(nl.Dropout).var() > 1.2  # plain dropout inflates the variance layer after layer


# ---------------------------------------------------------------- masks: seeds and calls
def test_masks_repeat_from_the_network_seed_and_change_between_calls():
    X = data(30, 6, seed=10)

    def make(seed):
        return nl.Sequential([nl.Dense(6, 6, activation="tanh"), nl.Dropout(0.5), nl.Dense(6, 3),
                              nl.AlphaDropout(0.3)], seed=seed)

    a, b, c = make(1), make(1), make(2)
    c.set_params(a.params())
    a1, a2 = a.forward(X), a.forward(X)
    b1, b2 = b.forward(X), b.forward(X)
    np.testing.assert_array_equal(a1, b1)     # the same seed: the same masks, call after call
    np.testing.assert_array_equal(a2, b2)
    assert not np.array_equal(a1, a2)         # a new draw on every call
    assert not np.array_equal(a1, c.forward(X))  # another seed: other masks (same weights)
    a.fixed_noise_seed = 99
    f1, f2 = a.forward(X), a.forward(X)
    np.testing.assert_array_equal(f1, f2)     # fixed_noise_seed: one draw for every call
    _, g1 = a.loss_and_grads(X, np.zeros((30, 3)))
    _, g2 = a.loss_and_grads(X, np.zeros((30, 3)))
    for x, y in zip(g1, g2):
        np.testing.assert_array_equal(x, y)
    # eval draws nothing: the generator is left alone and the output is deterministic
    state = a.rng.bit_generator.state
    a.fixed_noise_seed = None
    a.eval()
    np.testing.assert_array_equal(a.forward(X), a.forward(X))
    assert a.rng.bit_generator.state == state


def test_the_backward_pass_uses_the_forward_mask():
    """dX of a passthrough + dropout net is dY·m/(1 − p) with the mask of that same pass."""
    p = 0.5
    X = data(25, 4, seed=11)
    net = _passthrough(nl.Dropout(p), 4)
    y = np.zeros((25, 4))
    _, _, dX = net.loss_and_grads(X, y, wrt_input=True)
    m = _noise(net, X) >= p
    Y = X * np.where(m, 2.0, 0.0)
    np.testing.assert_array_equal(dX, (Y / 25) * np.where(m, 2.0, 0.0))


# ---------------------------------------------------------------- gradients
@settings(deadline=None, max_examples=12)
@given(n=st.integers(1, 5), f=st.integers(1, 5), steps=st.one_of(st.none(), st.integers(1, 3)),
       p=st.sampled_from([0.0, 0.2, 0.5, 0.85]), alpha=st.booleans(), seed=st.integers(0, 10**6))
def test_gradients_in_both_modes(n, f, steps, p, alpha, seed):
    drop = nl.AlphaDropout(p) if alpha else nl.Dropout(p)
    net = nl.Sequential([nl.Dense(3, f, activation="selu" if alpha else "tanh"), drop,
                         nl.Dense(f, 2, activation="tanh")], seed=seed % 1000)
    X = data(n, 3, steps, seed=seed)
    assert_gradients_both_modes(net, X, targets(net, n, steps, seed=seed + 1))


def test_dropout_as_first_layer_and_inside_a_residual_block():
    net = nl.Sequential([nl.Dense(4, 4), nl.Residual([nl.Dropout(0.3), nl.Dense(4, 4, activation="tanh"),
                                                      nl.AlphaDropout(0.2)]), nl.Dropout(0.5), nl.Dense(4, 2)],
                        seed=3)
    X = data(6, 4, seed=12)
    assert_gradients_both_modes(net, X, targets(net, 6))
    X = data(3, 4, steps=2, seed=13)
    assert_gradients_both_modes(net, X, targets(net, 3, steps=2))


# ---------------------------------------------------------------- files, dtypes, trainer, errors
def test_save_load_round_trip(tmp_path):
    net = nl.Sequential([nl.Dense(3, 5, activation="selu", init="lecun_normal"), nl.AlphaDropout(0.15),
                         nl.Dense(5, 4), nl.Dropout(0.35), nl.Dense(4, 2)], seed=4)
    net.save(tmp_path / "d.npz")
    net2 = nl.load(tmp_path / "d.npz")
    assert [repr(l) for l in net2.layers] == [repr(l) for l in net.layers]
    assert net2.layers[1].p == 0.15 and net2.layers[3].p == 0.35
    np.testing.assert_array_equal(net2._store, net._store)
    X = data(7, 3, seed=14)
    net.fixed_noise_seed = net2.fixed_noise_seed = 5
    np.testing.assert_array_equal(net2.forward(X), net.forward(X))
    np.testing.assert_array_equal(net2.eval().forward(X), net.eval().forward(X))


def test_float32_network_runs_and_matches_float64():
    layers = [nl.Dense(4, 8, activation="relu"), nl.Dropout(0.3), nl.Dense(8, 8, activation="selu"),
              nl.AlphaDropout(0.2), nl.Dense(8, 2)]
    net = nl.Sequential(layers, seed=0, dtype="float32")
    net64 = net.copy(dtype="float64")
    net.fixed_noise_seed = net64.fixed_noise_seed = 3
    X = data(16, 4, seed=15)
    out32, out64 = net.forward(X), net64.forward(X)
    assert out32.dtype == np.float32 and np.isfinite(out32).all()
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    loss, grads = net.loss_and_grads(X, np.zeros((16, 2)))
    loss64, grads64 = net64.loss_and_grads(X, np.zeros((16, 2)))
    assert loss == pytest.approx(loss64, rel=1e-4)
    for g, g64 in zip(grads, grads64):
        np.testing.assert_allclose(g, g64, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_fit_equals_the_per_step_path_bit_for_bit(dtype):
    def make():
        return nl.Sequential([nl.Dense(5, 8, activation="relu"), nl.Dropout(0.4), nl.Dense(8, 8, activation="selu"),
                              nl.AlphaDropout(0.1), nl.Dense(8, 3)], loss="softmax_cross_entropy", seed=7,
                             dtype=dtype)
    X = data(30, 5, seed=16)
    y = np.random.default_rng(0).integers(0, 3, 30)
    a, b = make(), make()
    ta, tb = nl.Trainer(a, nl.optim.Adam(lr=0.01)), nl.Trainer(b, nl.optim.Adam(lr=0.01))
    tb.compiled_epochs = False
    ha = ta.fit(X, y, epochs=3, batch_size=8, seed=1)
    hb = tb.fit(X, y, epochs=3, batch_size=8, seed=1)
    assert ha.loss == hb.loss
    np.testing.assert_array_equal(a._flat, b._flat)
    # the masks mattered: a net trained without dropout ends elsewhere
    c = nl.Sequential([nl.Dense(5, 8, activation="relu"), nl.Dropout(0.4), nl.Dense(8, 8, activation="selu"),
                       nl.AlphaDropout(0.1), nl.Dense(8, 3)], loss="softmax_cross_entropy", seed=7, dtype=dtype)
    c.eval()
    nl.Trainer(c, nl.optim.Adam(lr=0.01)).fit(X, y, epochs=3, batch_size=8, seed=1)
    assert not np.array_equal(a._flat, c._flat)


@pytest.mark.parametrize("layer", [nl.Dropout, nl.AlphaDropout])
@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, float("nan"), "0.5", True, None])
def test_bad_p(layer, p):
    with pytest.raises(HyperparameterError, match="p"):
        layer(p)


def test_width_agnostic_and_bad_input():
    net = nl.Sequential([nl.Dense(3, 4), nl.Dropout(0.5), nl.AlphaDropout(0.1)], seed=0)
    assert net.n_out == 4 and net.param_names() == ["0.W", "0.b"]
    with pytest.raises(ShapeError, match="input width"):
        nl.Sequential([nl.Dropout(0.5)])
    with pytest.raises(ShapeError):
        net.forward(np.ones((2, 5)))
    assert nl.Dropout().p == 0.5 and nl.AlphaDropout().p == 0.1
    assert repr(nl.Dropout(0.25)) == "Dropout(p=0.25)"


# ---------------------------------------------------------------- the uniform noise stream
def _splitmix64(key, count):
    """SplitMix64 written out with Python integers: state += γ, output = mix(state)."""
    mask = (1 << 64) - 1
    out, state = [], key
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & mask
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        out.append(z ^ (z >> 31))
    return out


def test_uniform_noise_is_splitmix64_in_zero_one():
    """Dropout's U(0,1) noise: SplitMix64 from a per-op key drawn from the call's seed; its top 24
    (float32) or 53 (float64) bits over 2^24 / 2^53: exactly reproducible, in [0, 1), uniform."""
    from nnlab.kernels.common import uniform_stream

    key = 0x1234_5678_9ABC_DEF
    ref = _splitmix64(key, 8)
    a = np.empty(1 << 20, np.float32)
    b = np.empty(1 << 20, np.float64)
    uniform_stream(a, np.uint64(key))
    uniform_stream(b, np.uint64(key))
    assert a[:8].tolist() == [(z >> 40) / 2.0 ** 24 for z in ref]
    assert b[:8].tolist() == [(z >> 11) / 2.0 ** 53 for z in ref]
    np.testing.assert_array_equal(a, (np.floor(b * 2.0 ** 24) / 2.0 ** 24).astype(np.float32))
    assert a.min() >= 0.0 and a.max() < 1.0 and b.min() >= 0.0 and b.max() < 1.0
    hist = np.histogram(b, bins=64, range=(0.0, 1.0))[0]
    expect = b.size / 64
    chi2 = float(((hist - expect) ** 2 / expect).sum())
    assert chi2 < 63 + 6 * math.sqrt(2 * 63)                       # 64 bins: 6 sigma
    assert abs(b.mean() - 0.5) < 6 * math.sqrt(1 / 12 / b.size)
    assert abs(np.corrcoef(b[:-1], b[1:])[0, 1]) < 6 / math.sqrt(b.size)
    c = np.empty(16, np.float64)
    uniform_stream(c, np.uint64(key + 1))                          # another key: other numbers
    assert not np.array_equal(c, b[:16])
