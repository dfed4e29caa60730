"""BatchNorm and LayerNorm: gradients against central differences (train and eval, mixed stacks,
2-D and sequence inputs), the documented statistics, the running estimates against a NumPy
reference and torch, the train/eval split, buffers through copies, files and failed steps, bad input."""

import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnlab as nl
from nnlab.errors import HyperparameterError, NnlabError, ShapeError


def _data(shape, seed=0, scale=1.0, shift=0.0):
    return np.random.default_rng(seed).normal(size=shape) * scale + shift


def _set_affine(net, seed=5):
    """Random γ and β for every normalisation layer (the defaults 1 and 0 hide mistakes)."""
    rng = np.random.default_rng(seed)
    for name, p in zip(net.param_names(), net.params()):
        if name.endswith(".gamma"):
            p[...] = rng.uniform(0.5, 1.5, size=p.shape)
        elif name.endswith(".beta"):
            p[...] = rng.normal(scale=0.5, size=p.shape)


# ---------------------------------------------------------------- NumPy references
def bn_reference(X, gamma, beta, eps):
    """Training-mode batch normalisation of the rows of X (m, F): (output, mean, biased var)."""
    mean = X.mean(axis=0)
    var = ((X - mean) ** 2).mean(axis=0)
    return gamma * (X - mean) / np.sqrt(var + eps) + beta, mean, var


def ln_reference(X, gamma, beta, eps):
    mean = X.mean(axis=-1, keepdims=True)
    var = ((X - mean) ** 2).mean(axis=-1, keepdims=True)
    return gamma * (X - mean) / np.sqrt(var + eps) + beta


# ---------------------------------------------------------------- gradients: Hypothesis stacks
BLOCKS = ["bn", "ln", "dense_tanh", "act_tanh", "res_bn", "res_ln", "bn_sigmoid"]


def _block(kind, f):
    if kind == "bn":
        return [nl.BatchNorm(f, momentum=0.3)]
    if kind == "ln":
        return [nl.LayerNorm(f, eps=1e-3)]
    if kind == "dense_tanh":
        return [nl.Dense(f, f, activation="tanh")]
    if kind == "act_tanh":
        return [nl.Activation("tanh")]
    if kind == "res_bn":
        return [nl.Residual([nl.Dense(f, f), nl.BatchNorm(f), nl.Activation("tanh")])]
    if kind == "res_ln":
        return [nl.Residual([nl.LayerNorm(f), nl.Dense(f, f, activation="softplus")])]
    return [nl.Dense(f, f), nl.BatchNorm(f), nl.Activation("sigmoid")]


@st.composite
def norm_problems(draw):
    n_in = draw(st.integers(1, 4))
    f = draw(st.integers(2, 5))
    n_out = draw(st.integers(1, 3))
    rows = draw(st.integers(3, 6))
    steps = draw(st.sampled_from([None, 2, 3]))
    kinds = draw(st.lists(st.sampled_from(BLOCKS), min_size=1, max_size=4))
    first = draw(st.sampled_from(["bn_first", "dense"]))
    seed = draw(st.integers(0, 2**16))
    layers = [nl.BatchNorm(n_in), nl.Dense(n_in, f, activation="tanh")] if first == "bn_first" else \
        [nl.Dense(n_in, f, activation="tanh")]
    for k in kinds:
        layers += _block(k, f)
    layers.append(nl.Dense(f, n_out))
    net = nl.Sequential(layers, loss="mse", seed=seed)
    _set_affine(net, seed)
    shape = (rows, n_in) if steps is None else (rows, steps, n_in)
    X = _data(shape, seed, scale=1.5, shift=0.3)
    y = _data(shape[:-1] + (n_out,), seed + 1)
    return net, X, y


def _check_params_and_input(net, X, y):
    res = nl.gradcheck.check_network(net, X, y)
    if not res.ok:
        # A layer norm over two or three features whose inputs nearly agree has a tiny variance and
        # a steep, strongly curved loss: there the central difference's own error (~eps² times the
        # third derivative) exceeds the tolerance at eps = 1e-6 (one case: analytic 91.59518,
        # numeric 91.59733 at eps 1e-6, 91.59520 at 1e-7). A wrong analytic gradient does not get
        # closer as eps shrinks; the truncation error falls 100x for eps / 10.
        res = nl.gradcheck.check_network(net, X, y, eps=1e-7)
    assert res.ok, str(res)
    twin = net.copy()  # (a training-mode loss_and_grads moves the running statistics: not on net)
    _, _, dX = twin.loss_and_grads(X, y, wrt_input=True)
    assert dX.shape == X.shape
    probe = net.copy()
    num = nl.gradcheck.numeric_gradient(lambda x: probe.loss(x, y), X)
    r = nl.gradcheck.compare("dX", dX, num)
    assert r.ok, str(r)


@settings(deadline=None, max_examples=25)
@given(norm_problems())
def test_gradcheck_mixed_stacks_training_mode(problem):
    net, X, y = problem
    _check_params_and_input(net, X, y)


@settings(deadline=None, max_examples=25)
@given(norm_problems())
def test_gradcheck_mixed_stacks_eval_mode(problem):
    net, X, y = problem
    for k in range(3):  # move the running statistics away from (0, 1)
        net.loss_and_grads(X * (1 + 0.3 * k), y)
    bn = [layer for layer, _ in _walk(net) if isinstance(layer, nl.BatchNorm)]
    for layer in bn:
        assert not np.all(layer.running_var == 1.0)
    net.eval()
    _check_params_and_input(net, X, y)


def _walk(net):
    stack = [(layer, str(i)) for i, layer in enumerate(net.layers)]
    while stack:
        layer, path = stack.pop(0)
        yield layer, path
        stack += [(c, f"{path}.{j}") for j, c in enumerate(layer.children())]


def test_eval_backward_is_not_the_batch_backward():
    """The two backward formulas differ (a kernel that always took one would fail one gradcheck);
    each agrees with the central differences of its own mode."""
    net = nl.Sequential([nl.Dense(3, 4, activation="tanh"), nl.BatchNorm(4), nl.Dense(4, 2)], seed=1)
    _set_affine(net)
    X, y = _data((6, 3), 2), _data((6, 2), 3)
    net.loss_and_grads(X, y)
    g_train = net.copy().loss_and_grads(X, y, wrt_input=True)
    g_eval = net.copy().eval().loss_and_grads(X, y, wrt_input=True)
    assert not np.allclose(g_train[2], g_eval[2])
    assert nl.gradcheck.check_network(net, X, y).ok
    assert nl.gradcheck.check_network(net.eval(), X, y).ok


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("training", [True, False])
def test_no_stale_gradient_slots_or_workspace(dtype, training):
    """Every gradient slot of the norm layers is written, not added to, and nothing is read from
    the workspace that the pass did not write: garbage in grads, ws and dws changes nothing."""
    net = nl.Sequential([nl.Dense(4, 5, activation="tanh"),
                         nl.Residual([nl.BatchNorm(5), nl.Dense(5, 5, activation="tanh"), nl.LayerNorm(5)]),
                         nl.BatchNorm(5), nl.Dense(5, 2)], loss="mse", seed=0, dtype=dtype)
    _set_affine(net)
    X, Y = net._prepare(_data((7, 4), 0), _data((7, 2), 1))
    prog = net._prog_for(X)
    results = []
    for fill in (0.0, 123.0):
        store = net._store.copy()
        grads = np.full_like(net._flat, fill)
        ws, dws = np.full(7 * prog.width, fill, net.dtype), np.full(7 * prog.width, fill, net.dtype)
        loss = net._kernels.loss_and_grad(prog.ops, prog.hp, prog.tens, store, grads, ws, dws, X, Y,
                                          net._loss_code, training, -1)
        results.append((loss, grads, store))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    np.testing.assert_array_equal(results[0][2], results[1][2])  # the running statistics too


# ---------------------------------------------------------------- the documented statistics
@pytest.mark.parametrize("shape", [(9, 4), (3, 5, 4)])
def test_batchnorm_training_output_has_mean_0_variance_1_per_feature(shape):
    net = nl.Sequential([nl.BatchNorm(4, eps=1e-5)], seed=0)
    X = _data(shape, 1, scale=np.array([0.5, 2.0, 10.0, 0.1]), shift=np.array([3.0, -1.0, 0.0, 7.0]))
    out = net.forward(X).reshape(-1, 4)  # per feature over all N·T rows
    Xr = X.reshape(-1, 4)
    v = Xr.var(axis=0)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)  # (the mean of 7 ± 0.01 rounds at 1e-15)
    # variance 1 up to ε: var(x̂) = σ²/(σ² + ε)
    np.testing.assert_allclose(out.var(axis=0), v / (v + 1e-5), rtol=1e-12)
    assert np.all(np.abs(out.var(axis=0) - 1.0) < 0.1)
    np.testing.assert_allclose(out.reshape(-1, 4), bn_reference(Xr, 1.0, 0.0, 1e-5)[0], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("shape", [(9, 6), (3, 5, 6)])
def test_layernorm_output_has_mean_0_variance_1_per_row(shape):
    net = nl.Sequential([nl.LayerNorm(6)], seed=0)
    X = _data(shape, 1, scale=3.0, shift=2.0)
    for training in (True, False):  # no train/eval difference
        out = net.forward(X, training=training)
        v = X.var(axis=-1)
        np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-14)
        np.testing.assert_allclose(out.var(axis=-1), v / (v + 1e-5), rtol=1e-12)
        np.testing.assert_allclose(out, ln_reference(X, 1.0, 0.0, 1e-5), rtol=1e-12, atol=1e-13)


def test_affine_parameters_scale_and_shift():
    net = nl.Sequential([nl.BatchNorm(3), nl.LayerNorm(3)], seed=0)
    g1, b1, g2, b2 = (np.array([2.0, 0.5, -1.0]), np.array([0.1, -0.2, 3.0]), np.array([1.5, 1.0, 0.25]),
                      np.array([0.0, 1.0, -1.0]))
    net.set_params([g1, b1, g2, b2])
    X = _data((5, 3), 4)
    ref = ln_reference(bn_reference(X, g1, b1, 1e-5)[0], g2, b2, 1e-5)
    np.testing.assert_allclose(net.forward(X), ref, rtol=1e-12, atol=1e-13)


def test_memoized_error_of_a_norm_layer_is_dA_times_gamma():
    """E of a normalisation op is ∂L/∂x̂ = dA·γ (what the monitor reports as the layer error)."""
    net = nl.Sequential([nl.BatchNorm(3), nl.Dense(3, 2)], seed=0)
    _set_affine(net)
    X, y = _data((5, 3), 1), _data((5, 2), 2)
    net.loss_and_grads(X, y)
    E_bn, E_dense = net.layer_errors
    gamma, W = net.params()[0], net.params()[2]
    np.testing.assert_allclose(E_bn, (E_dense @ W.T) * gamma, rtol=1e-13, atol=1e-15)
    # sequences: one row per (sequence, step), as a dense layer's error
    seq = nl.Sequential([nl.Dense(3, 4), nl.LayerNorm(4), nl.BatchNorm(4), nl.Dense(4, 2)], seed=0)
    seq.loss_and_grads(_data((2, 5, 3), 1), _data((2, 5, 2), 2))
    assert [E.shape for E in seq.layer_errors] == [(10, 4), (10, 4), (10, 4), (10, 2)]


# ---------------------------------------------------------------- running statistics
def _bn_net(shape_f=4, momentum=0.25, dtype="float64"):
    net = nl.Sequential([nl.Dense(3, shape_f, activation="tanh"), nl.BatchNorm(shape_f, momentum=momentum),
                         nl.Dense(shape_f, 2)], seed=3, dtype=dtype)
    _set_affine(net)
    return net


@pytest.mark.parametrize("steps", [None, 4])
def test_running_statistics_follow_the_numpy_reference(steps):
    net = _bn_net()
    bn = net.layers[1]
    rm, rv = np.zeros(4), np.ones(4)
    np.testing.assert_array_equal(bn.running_mean, rm)
    np.testing.assert_array_equal(bn.running_var, rv)
    for k in range(5):
        shape = (6, 3) if steps is None else (3, steps, 3)
        X, y = _data(shape, 10 + k, scale=1 + k, shift=k), _data(shape[:-1] + (2,), 20 + k)
        H = np.tanh(X.reshape(-1, 3) @ net.params()[0] + net.params()[1])  # BatchNorm's input, N·T rows
        m = H.shape[0]
        _, mean, var = bn_reference(H, 1.0, 0.0, 1e-5)
        rm = 0.75 * rm + 0.25 * mean
        rv = 0.75 * rv + 0.25 * var * m / (m - 1)  # the unbiased variance goes into the estimate
        net.loss_and_grads(X, y)
        np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(bn.running_var, rv, rtol=1e-13)
        # forward and loss (train or eval) and an eval-mode backward pass never move them
        before = (bn.running_mean.copy(), bn.running_var.copy())
        net.forward(X)
        net.loss(X, y)
        net.forward(X, training=False)
        net.loss_and_grads(X, y, training=False)
        net.layer_inputs(X, training=True)
        assert np.array_equal(before[0], bn.running_mean) and np.array_equal(before[1], bn.running_var)


def test_running_statistics_are_live_views_and_drive_eval_mode():
    net = nl.Sequential([nl.BatchNorm(3)], seed=0)
    bn = net.layers[0]
    assert net.buffers()[0] is not None and net.buffer_names() == ["0.running_mean", "0.running_var"]
    bn.running_mean[...] = [1.0, -2.0, 0.5]
    bn.running_var[...] = [4.0, 0.25, 1.0]
    np.testing.assert_array_equal(net.buffers()[0], [1.0, -2.0, 0.5])
    X = _data((4, 3), 0)
    net.eval()
    expect = (X - bn.running_mean) / np.sqrt(bn.running_var + 1e-5)
    np.testing.assert_allclose(net.forward(X), expect, rtol=1e-14)
    # eval: a one-row batch is fine, and each row is normalised on its own (no batch coupling)
    np.testing.assert_allclose(net.forward(X[:1]), expect[:1], rtol=1e-14)
    net.train()
    assert not np.allclose(net.forward(X), expect)


def test_trainer_step_moves_the_running_statistics_once_per_step():
    a, b = _bn_net(), _bn_net()
    X, y = _data((8, 3), 1), _data((8, 2), 2)
    tr = nl.Trainer(a, nl.optim.SGD(lr=0.0))  # lr 0: the same weights, so the same batch statistics
    for _ in range(3):
        tr.step(X, y)
        b.loss_and_grads(X, y)
    np.testing.assert_array_equal(a.layers[1].running_mean, b.layers[1].running_mean)
    np.testing.assert_array_equal(a.layers[1].running_var, b.layers[1].running_var)
    assert not np.all(a.layers[1].running_var == 1.0)


def test_momentum_0_and_1():
    X, y = _data((5, 3), 1), _data((5, 2), 2)
    frozen = _bn_net(momentum=0.0)
    frozen.loss_and_grads(X, y)
    np.testing.assert_array_equal(frozen.layers[1].running_mean, 0.0)
    np.testing.assert_array_equal(frozen.layers[1].running_var, 1.0)
    last = _bn_net(momentum=1.0)
    last.loss_and_grads(X, y)
    H = np.tanh(X @ last.params()[0] + last.params()[1])
    np.testing.assert_allclose(last.layers[1].running_mean, H.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(last.layers[1].running_var, H.var(axis=0, ddof=1), rtol=1e-13)


def test_running_statistics_before_the_layer_is_in_a_network():
    bn = nl.BatchNorm(3)
    with pytest.raises(NnlabError, match="not in a network"):
        _ = bn.running_mean
    with pytest.raises(NnlabError, match="not in a network"):
        _ = bn.running_var
    nl.Sequential([bn])
    assert bn.running_var.shape == (3,)


# ---------------------------------------------------------------- buffers through failures, copies, files
def test_a_failed_training_step_keeps_the_running_statistics():
    net = _bn_net()
    bn = net.layers[1]
    X, y = _data((8, 3), 1), _data((8, 2), 2)
    tr = nl.Trainer(net, nl.optim.Adam(lr=0.01))  # on_nonfinite="stop"
    tr.step(X, y)
    before = [b.copy() for b in net.buffers()]
    params = [p.copy() for p in net.params()]
    bad = y.copy()
    bad[3, 0] = 1e200  # (ŷ − y)² overflows: an infinite loss after the forward pass moved the statistics
    loss = tr.step(X * 2 + 1, bad)
    assert not math.isfinite(loss) and not tr.last.applied
    for b0, b1 in zip(before, net.buffers()):
        np.testing.assert_array_equal(b0, b1)
    for p0, p1 in zip(params, net.params()):
        np.testing.assert_array_equal(p0, p1)
    # the same batch with finite targets does move them: the restore is what kept them
    probe = net.copy()
    probe.loss_and_grads(X * 2 + 1, y)
    assert not np.array_equal(probe.layers[1].running_mean, bn.running_mean)


@pytest.mark.parametrize("compiled", [True, False])
def test_a_stopped_fit_keeps_the_running_statistics_of_the_last_applied_step(compiled):
    X, y = _data((12, 3), 1), _data((12, 2), 2)
    bad = y.copy()
    bad[9, 1] = 1e200  # in the third batch of 4 (shuffle=False)
    net, ref = _bn_net(), _bn_net()
    tr = nl.Trainer(net, nl.optim.SGD(lr=0.05))
    tr.compiled_epochs = compiled
    h = tr.fit(X, bad, epochs=1, batch_size=4, shuffle=False)
    assert h.stopped and len(h.loss) == 3
    tr_ref = nl.Trainer(ref, nl.optim.SGD(lr=0.05))
    for lo in (0, 4):
        tr_ref.step(X[lo:lo + 4], bad[lo:lo + 4])
    np.testing.assert_array_equal(net._store, ref._store)  # parameters and buffers, bit for bit


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_copy_and_save_load_keep_the_running_statistics_bit_for_bit(tmp_path, dtype):
    net = nl.Sequential([nl.Dense(3, 5, activation="tanh"), nl.BatchNorm(5, eps=1e-3, momentum=0.2),
                         nl.Residual([nl.LayerNorm(5, eps=1e-4), nl.BatchNorm(5)]), nl.Dense(5, 2)],
                        seed=2, dtype=dtype)
    tr = nl.Trainer(net, nl.optim.Adam(lr=0.01))
    X, y = _data((10, 3), 1).astype(dtype), _data((10, 2), 2).astype(dtype)
    for _ in range(4):
        tr.step(X, y)
    assert net.buffer_names() == ["1.running_mean", "1.running_var", "2.1.running_mean", "2.1.running_var"]
    assert all(not np.all(b == v) for b, v in zip(net.buffers(), [0.0, 1.0, 0.0, 1.0]))
    twin = net.copy()
    path = tmp_path / "bn.npz"
    net.save(path)
    loaded = nl.load(path)
    for other in (twin, loaded):
        assert other.buffer_names() == net.buffer_names() and other.dtype == net.dtype
        for a, b in zip(net.buffers(), other.buffers()):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(other._store, net._store)
        assert repr(other.layers[1]) == "BatchNorm(5, eps=0.001, momentum=0.2)"
        np.testing.assert_array_equal(other.layers[2].layers[1].running_var, net.layers[2].layers[1].running_var)
        for mode in (True, False):
            np.testing.assert_array_equal(other.forward(X, training=mode), net.forward(X, training=mode))
    # independent: training the copy leaves the original's statistics alone
    before = net.buffers()[0].copy()
    twin.loss_and_grads(X * 3, y)
    np.testing.assert_array_equal(net.buffers()[0], before)


def test_config_round_trip():
    for layer in (nl.BatchNorm(4, eps=1e-3, momentum=0.5), nl.LayerNorm(7, eps=2e-6)):
        again = nl.layers.from_config(layer.config())
        assert type(again) is type(layer) and again.config() == layer.config()
    assert repr(nl.BatchNorm(4)) == "BatchNorm(4)" and repr(nl.LayerNorm(3)) == "LayerNorm(3)"


# ---------------------------------------------------------------- float32 networks
def test_float32_network_matches_float64():
    net = nl.Sequential([nl.BatchNorm(3), nl.Dense(3, 6, activation="tanh"), nl.BatchNorm(6),
                         nl.Activation("softplus"), nl.LayerNorm(6), nl.Dense(6, 2)], seed=0, dtype="float32")
    _set_affine(net)
    X, y = _data((16, 3), 1, shift=100.0), _data((16, 2), 2)  # a large mean: float64 sums keep the variance
    net64 = net.copy(dtype="float64")
    l32, g32 = net.loss_and_grads(X, y)
    l64, g64 = net64.loss_and_grads(X, y)
    assert l32 == pytest.approx(l64, rel=1e-5)
    for name, a, b in zip(net.param_names(), g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5 * max(1.0, np.abs(b).max()), err_msg=name)
    for a, b in zip(net.buffers(), net64.buffers()):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    out = nl.Sequential([nl.BatchNorm(2)], dtype="float32").forward(
        np.array([[1e4 + 1, 1.0], [1e4 - 1, 3.0], [1e4, 2.0]], dtype=np.float32))
    np.testing.assert_allclose(out, [[1.2247, -1.2247], [-1.2247, 1.2247], [0.0, 0.0]], atol=1e-3)


# ---------------------------------------------------------------- torch
@pytest.fixture(autouse=True)
def _restore_torch_default_dtype():
    """The torch comparisons below switch torch to float64; other test modules expect its default."""
    torch = sys.modules.get("torch")
    old = torch.get_default_dtype() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and old is not None:
        torch.set_default_dtype(old)
    elif torch is not None:
        torch.set_default_dtype(torch.float32)


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_default_dtype(torch.float64)
    return torch


@pytest.mark.parametrize("steps", [None, 3])
def test_batchnorm_equals_torch_batchnorm1d(steps):
    torch = _torch()
    f = 4
    net = nl.Sequential([nl.BatchNorm(f, eps=1e-4, momentum=0.3)], seed=0)
    _set_affine(net, 7)
    tb = torch.nn.BatchNorm1d(f, eps=1e-4, momentum=0.3)
    with torch.no_grad():
        tb.weight.copy_(torch.tensor(net.params()[0]))
        tb.bias.copy_(torch.tensor(net.params()[1]))

    def torch_run(X, Y):
        xt = torch.tensor(X, requires_grad=True)
        out = tb(xt) if steps is None else tb(xt.transpose(1, 2)).transpose(1, 2)  # torch: (N, C, L)
        rows = out.numel() // f
        loss = 0.5 * ((out - torch.tensor(Y)) ** 2).sum() / rows  # nnlab's mse
        tb.weight.grad = tb.bias.grad = None
        loss.backward()
        return loss.item(), out.detach().numpy(), xt.grad.numpy(), tb.weight.grad.numpy(), tb.bias.grad.numpy()

    for k in range(4):  # training: batch statistics, the running estimates after each step
        shape = (5, f) if steps is None else (3, steps, f)
        X, Y = _data(shape, k, scale=1 + k, shift=k - 1), _data(shape, 10 + k)
        tb.train()
        t_loss, t_out, t_dx, t_dg, t_db = torch_run(X, Y)
        np.testing.assert_allclose(net.forward(X), t_out, rtol=1e-12, atol=1e-12)
        loss, (dg, db), dX = net.loss_and_grads(X, Y, wrt_input=True)
        assert loss == pytest.approx(t_loss, rel=1e-12)
        for a, b in ((dX, t_dx), (dg, t_dg), (db, t_db)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(net.layers[0].running_mean, tb.running_mean.numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(net.layers[0].running_var, tb.running_var.numpy(), rtol=1e-12)
    tb.eval()  # eval: the running estimates, dx = dA·γ/√(running var + ε)
    X, Y = _data(shape, 99, scale=2.0), _data(shape, 98)
    t_loss, t_out, t_dx, t_dg, t_db = torch_run(X, Y)
    net.eval()
    np.testing.assert_allclose(net.forward(X), t_out, rtol=1e-12, atol=1e-12)
    loss, (dg, db), dX = net.loss_and_grads(X, Y, wrt_input=True)
    assert loss == pytest.approx(t_loss, rel=1e-12)
    for a, b in ((dX, t_dx), (dg, t_dg), (db, t_db)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("steps", [None, 3])
def test_stack_with_both_norms_equals_torch(steps):
    torch = _torch()
    net = nl.Sequential([nl.Dense(3, 5, activation="tanh"), nl.BatchNorm(5), nl.Activation("sigmoid"),
                         nl.LayerNorm(5, eps=1e-3), nl.Dense(5, 2)], seed=4)
    _set_affine(net, 8)
    W1, b1, g1, be1, g2, be2, W2, b2 = [torch.tensor(p.copy(), requires_grad=True) for p in net.params()]
    bn = torch.nn.BatchNorm1d(5)
    bn.weight, bn.bias = torch.nn.Parameter(g1), torch.nn.Parameter(be1)

    def model(x):
        h = torch.tanh(x @ W1 + b1)
        h = bn(h) if steps is None else bn(h.transpose(1, 2)).transpose(1, 2)
        h = torch.sigmoid(h)
        h = torch.nn.functional.layer_norm(h, (5,), g2, be2, eps=1e-3)
        return h @ W2 + b2

    shape = (6, 3) if steps is None else (4, steps, 3)
    for k, mode in enumerate(["train", "train", "train", "eval"]):
        X, Y = _data(shape, k), _data(shape[:-1] + (2,), 20 + k)
        getattr(bn, mode)()
        getattr(net, mode)()
        xt = torch.tensor(X, requires_grad=True)
        out = model(xt)
        t_loss = 0.5 * ((out - torch.tensor(Y)) ** 2).sum() / (out.numel() // 2)
        leaves = [W1, b1, bn.weight, bn.bias, g2, be2, W2, b2, xt]
        for t in leaves:
            t.grad = None
        t_loss.backward()
        loss, grads, dX = net.loss_and_grads(X, Y, wrt_input=True)
        assert loss == pytest.approx(t_loss.item(), rel=1e-12)
        for name, g, t in zip(net.param_names() + ["X"], grads + [dX], leaves):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=f"{mode} {name}")
        np.testing.assert_allclose(net.layers[1].running_mean, bn.running_mean.numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(net.layers[1].running_var, bn.running_var.numpy(), rtol=1e-12)


def test_layernorm_equals_torch_layernorm():
    torch = _torch()
    net = nl.Sequential([nl.LayerNorm(6, eps=1e-6)], seed=0)
    _set_affine(net, 3)
    tl = torch.nn.LayerNorm(6, eps=1e-6)
    with torch.no_grad():
        tl.weight.copy_(torch.tensor(net.params()[0]))
        tl.bias.copy_(torch.tensor(net.params()[1]))
    for shape in [(5, 6), (3, 4, 6)]:
        X, Y = _data(shape, 1, scale=2.0, shift=1.0), _data(shape, 2)
        xt = torch.tensor(X, requires_grad=True)
        out = tl(xt)
        loss_t = 0.5 * ((out - torch.tensor(Y)) ** 2).sum() / (out.numel() // 6)
        tl.weight.grad = tl.bias.grad = None
        loss_t.backward()
        for mode in (True, False):
            loss, (dg, db), dX = net.loss_and_grads(X, Y, training=mode, wrt_input=True)
            assert loss == pytest.approx(loss_t.item(), rel=1e-12)
            np.testing.assert_allclose(net.forward(X, training=mode), out.detach().numpy(), rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(dX, xt.grad.numpy(), rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(dg, tl.weight.grad.numpy(), rtol=1e-10, atol=1e-13)
            np.testing.assert_allclose(db, tl.bias.grad.numpy(), rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------- training
def _deep_sigmoid(norm, seed=0):
    layers = [nl.Dense(2, 16)]
    for k in range(6):
        layers += ([nl.BatchNorm(16)] if norm else []) + [nl.Activation("sigmoid")] + \
            ([nl.Dense(16, 16)] if k < 5 else [])
    layers.append(nl.Dense(16, 2))
    return nl.Sequential(layers, loss="softmax_cross_entropy", seed=seed)


def test_trainer_trains_a_deep_sigmoid_mlp_with_batchnorm_compiled_fit_equals_per_step():
    X, y = nl.datasets.load("moons", n=256, seed=0)
    a, b, plain = _deep_sigmoid(True), _deep_sigmoid(True), _deep_sigmoid(False)
    ta = nl.Trainer(a, nl.optim.SGD(lr=0.1, momentum=0.9))
    tb = nl.Trainer(b, nl.optim.SGD(lr=0.1, momentum=0.9))
    tb.compiled_epochs = False
    ha = ta.fit(X, y, epochs=10, batch_size=32, seed=0)
    hb = tb.fit(X, y, epochs=10, batch_size=32, seed=0)
    np.testing.assert_array_equal(a._store, b._store)  # parameters and running statistics: same bits
    assert ha.loss == hb.loss and ha.epoch_loss == hb.epoch_loss and ha.accuracy == hb.accuracy
    assert ha.epoch_loss[-1] < 0.3 * ha.epoch_loss[0] and ha.accuracy[-1] > 0.9
    hp = nl.Trainer(plain, nl.optim.SGD(lr=0.1, momentum=0.9)).fit(X, y, epochs=10, batch_size=32, seed=0)
    # six sigmoid layers without it stay at chance (ln 2) in the same 10 epochs
    assert hp.epoch_loss[-1] > 0.65 and ha.epoch_loss[-1] < 0.3 * hp.epoch_loss[-1]
    assert not np.all(a.layers[1].running_var == 1.0)


def test_monitor_watches_the_norm_layers():
    """γ is the monitor's weight block of a normalisation layer, β its bias, x̂ its Z, dA·γ its error."""
    net = nl.Sequential([nl.Dense(3, 4, activation="tanh"), nl.BatchNorm(4), nl.LayerNorm(4), nl.Dense(4, 2)],
                        loss="softmax_cross_entropy", seed=0)
    _set_affine(net)
    mon = nl.GradientMonitor(net)
    assert [layer.kind for layer in mon.layers] == ["Dense", "BatchNorm", "LayerNorm", "Dense"]
    X, y = _data((16, 3), 1), (np.arange(16) % 2)
    nl.Trainer(net, nl.optim.Adam(lr=0.01), monitor=mon).fit(X, y, epochs=2, batch_size=8)
    assert mon.steps == 4 and np.isfinite(mon.series("grad_norm")).all()
    mon.observe(X, y)
    summary = mon.layer_summary()
    errors = net.layer_errors
    _, grads = net.loss_and_grads(X, y)
    named = dict(zip(net.param_names(), grads))
    for l, name in ((1, "1"), (2, "2")):
        rec = summary[l]
        assert rec["grad_norm"] == pytest.approx(np.linalg.norm(named[f"{name}.gamma"]), rel=1e-12)
        assert rec["bias_grad_norm"] == pytest.approx(np.linalg.norm(named[f"{name}.beta"]), rel=1e-12)
        assert rec["error_norm"] == pytest.approx(np.linalg.norm(errors[l]), rel=1e-12)
        assert rec["z_mean"] == pytest.approx(0.0, abs=1e-12)  # x̂: standardised (per feature / per row)
        assert rec["z_std"] == pytest.approx(1.0, abs=1e-3)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(("make", "match"), [
    (lambda: nl.BatchNorm(0), "n must be >= 1"),
    (lambda: nl.BatchNorm(-2), "n must be >= 1"),
    (lambda: nl.BatchNorm(2.5), "n must be an integer"),
    (lambda: nl.LayerNorm(0), "n must be >= 1"),
    (lambda: nl.LayerNorm(True), "n must be an integer"),
    (lambda: nl.BatchNorm(3, eps=0.0), "eps must be > 0"),
    (lambda: nl.BatchNorm(3, eps=-1e-5), "eps must be > 0"),
    (lambda: nl.BatchNorm(3, eps=float("nan")), "eps must be finite"),
    (lambda: nl.LayerNorm(3, eps=0), "eps must be > 0"),
    (lambda: nl.LayerNorm(3, eps="small"), "eps must be a real number"),
    (lambda: nl.BatchNorm(3, momentum=-0.1), r"momentum must be in \[0, 1\]"),
    (lambda: nl.BatchNorm(3, momentum=1.5), r"momentum must be in \[0, 1\]"),
    (lambda: nl.BatchNorm(3, momentum=float("inf")), "momentum must be finite"),
    (lambda: nl.BatchNorm(3, momentum=None), "momentum must be a real number"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(HyperparameterError, match=match):
        make()


def test_width_mismatch_names_both_layers():
    with pytest.raises(ShapeError, match=r"layer 1 BatchNorm\(5\) expects 5 inputs but layer 0 Dense\(3, 4"):
        nl.Sequential([nl.Dense(3, 4), nl.BatchNorm(5)])
    with pytest.raises(ShapeError, match=r"layer 2 Dense\(3, 1.*expects 3 inputs but layer 1 LayerNorm\(4\) gives 4"):
        nl.Sequential([nl.Dense(3, 4), nl.LayerNorm(4), nl.Dense(3, 1)])
    with pytest.raises(ShapeError, match=r"block layer 1 \(LayerNorm\(3\)\) expects 3 input features; it gets 4"):
        nl.Sequential([nl.Dense(2, 4), nl.Residual([nl.Dense(4, 4), nl.LayerNorm(3)])])
    net = nl.Sequential([nl.BatchNorm(3)])
    with pytest.raises(ShapeError, match=r"X must have shape \(N, 3\)"):
        net.forward(np.zeros((4, 2)))


def test_a_training_batch_of_one_row_is_refused_before_any_kernel_runs():
    net = _bn_net()
    X, y = _data((1, 3), 0), _data((1, 2), 1)
    before = net._store.copy()
    msg = r"layer 1 \(BatchNorm\(4, momentum=0.25\)\): expected more than 1 value per feature when training"
    for call in (lambda: net.forward(X), lambda: net.loss(X, y), lambda: net.loss_and_grads(X, y),
                 lambda: net.loss_and_grads(X, y, wrt_input=True), lambda: net.layer_inputs(X, training=True),
                 lambda: nl.Trainer(net, "adam").step(X, y), lambda: nl.GradientMonitor(net).observe(X, y),
                 lambda: net.forward(X.reshape(1, 1, 3))):
        with pytest.raises(ShapeError, match=msg):
            call()
    opt = nl.optim.Adam(lr=0.1)
    tr = nl.Trainer(net, opt)
    for compiled in (True, False):  # 9 rows in batches of 4: the last batch has one row
        tr.compiled_epochs = compiled
        with pytest.raises(ShapeError, match=r"\(a batch of 1 row\)"):
            tr.fit(_data((9, 3), 2), _data((9, 2), 3), epochs=1, batch_size=4)
        with pytest.raises(ShapeError, match="a batch of 1 row"):
            tr.fit(_data((5, 3), 2), _data((5, 2), 3), epochs=1, batch_size=1)
    np.testing.assert_array_equal(net._store, before)  # nothing ran: weights and running statistics as they were
    assert opt.t == 0
    # fine: eval mode; one sequence of several steps (N·T > 1 values per feature, as torch); two rows
    net.eval()
    net.forward(X)
    net.loss_and_grads(X, y)
    net.train()
    net.loss_and_grads(_data((1, 3, 3), 0), _data((1, 3, 2), 1))
    net.loss_and_grads(_data((2, 3), 0), _data((2, 2), 1))
    nl.Trainer(net, "sgd").fit(_data((9, 3), 2), _data((9, 2), 3), epochs=1, batch_size=3)
    # LayerNorm normalises each row: one row is fine in training
    nl.Sequential([nl.LayerNorm(3)]).loss_and_grads(X, X)


def test_norm_layers_with_a_user_activation():
    """A network with a user-registered activation runs on a rebuilt kernel set; the norm kernels
    are reached through it too."""
    name = "layers_core_sin"  # the sin of tests/test_layers_core.py: one kernel set for both
    if name not in nl.activations.names():
        nl.activations.register(name, lambda z: math.sin(z), lambda z: math.cos(z))
    net = nl.Sequential([nl.Dense(3, 4), nl.BatchNorm(4), nl.Activation(name), nl.LayerNorm(4), nl.Dense(4, 1)],
                        seed=0)
    _set_affine(net)
    assert net._kernels is not nl.kernels.cpu
    X = _data((6, 3), 1)
    assert nl.gradcheck.check_network(net, X, X[:, 0]).ok
    net.loss_and_grads(X, X[:, 0])
    assert not np.all(net.layers[1].running_var == 1.0)
    assert nl.gradcheck.check_network(net.eval(), X, X[:, 0]).ok
