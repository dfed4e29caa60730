"""Recurrent layers (RNN, LSTM): backward passes against central differences and a NumPy
reference of (truncated) backpropagation through time, torch on copied weights, truncated BPTT in
the layer (truncate=k) and in the Trainer (fit(tbptt=k)), the per-step gradient norms of the
monitor, model files, float32, the adding problem, bad input."""

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnlab as nl
from nnlab.errors import HyperparameterError, ShapeError
from nnlab.kernels.layout import HP_CARRY


# ---------------------------------------------------------------- a NumPy reference, written out
def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


_ACTS = {"tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
         "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float))}


def ref_forward(kind, Wih, Whh, b, X, h0=None, c0=None, act="tanh"):
    """h_0..h_T (T+1, N, H) and what the backward pass needs; h_0 = h0 (zeros), c_0 = c0 (zeros)."""
    N, T, _ = X.shape
    H = Whh.shape[0]
    h = np.zeros((N, H)) if h0 is None else h0.copy()
    c = np.zeros((N, H)) if c0 is None else c0.copy()
    hs, cs, zs, gates = [h], [c], [], []
    for t in range(T):
        z = X[:, t] @ Wih + h @ Whh + b
        zs.append(z)
        if kind == "rnn":
            h = _ACTS[act][0](z)
        else:
            i, f, g, o = _sig(z[:, :H]), _sig(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), _sig(z[:, 3 * H:])
            c = f * c + i * g
            h = o * np.tanh(c)
            gates.append((i, f, g, o))
            cs.append(c)
        hs.append(h)
    return np.stack(hs), {"hs": hs, "cs": cs, "zs": zs, "gates": gates}


def ref_backward(kind, Wih, Whh, cache, X, dout, k=None, act="tanh"):
    """BPTT(k) by its definition: the loss term at step t (its gradient dout[t] at h_t) runs back
    through steps t, t−1, ..., t−k+1 only (all steps when k is None), every sweep accumulated.
    Returns dW_ih, dW_hh, db, dX (N, T, F), dZ (T, N, G) and dH (T+1, N, H), the gradient
    reaching each h_t."""
    N, T, F = X.shape
    H = Whh.shape[0]
    G = Whh.shape[1]
    dZ = np.zeros((T, N, G))
    dH = np.zeros((T + 1, N, H))
    for t in range(T, 0, -1):
        dh = dout[t].copy()
        dc = np.zeros((N, H))
        lo = 1 if k is None else max(1, t - k + 1)
        for s in range(t, lo - 1, -1):
            dH[s] += dh
            if kind == "rnn":
                g = dh * _ACTS[act][1](cache["zs"][s - 1])
            else:
                i, f, gg, o = cache["gates"][s - 1]
                tc = np.tanh(cache["cs"][s])
                dcs = dc + dh * o * (1 - tc ** 2)
                g = np.concatenate([dcs * gg * i * (1 - i), dcs * cache["cs"][s - 1] * f * (1 - f),
                                    dcs * i * (1 - gg ** 2), dh * tc * o * (1 - o)], axis=1)
                dc = dcs * f
            dZ[s - 1] += g
            dh = g @ Whh.T
    dWih = sum(X[:, t].T @ dZ[t] for t in range(T))
    dWhh = sum(cache["hs"][t].T @ dZ[t] for t in range(T))
    dX = np.stack([dZ[t] @ Wih.T for t in range(T)], axis=1)
    return dWih, dWhh, dZ.sum(axis=(0, 1)), dX, dZ, dH


def ref_loss_grads(kind, net, X, y, seq, k=None, act="tanh"):
    """Loss, [dW_ih, dW_hh, db], dX, dZ, dH of a network holding one recurrent layer and mse."""
    Wih, Whh, b = net.params()
    Hs, cache = ref_forward(kind, Wih, Whh, b, X, act=act)
    N, T, _ = X.shape
    dout = np.zeros_like(Hs)
    if seq:
        diff = Hs[1:] - y.transpose(1, 0, 2)
        loss = 0.5 * np.sum(diff ** 2) / (N * T)
        dout[1:] = diff / (N * T)
    else:
        diff = Hs[T] - y
        loss = 0.5 * np.sum(diff ** 2) / N
        dout[T] = diff / N
    dWih, dWhh, db, dX, dZ, dH = ref_backward(kind, Wih, Whh, cache, X, dout, k=k, act=act)
    return loss, [dWih, dWhh, db], dX, dZ, dH


def _layer(kind, n_in, hidden, **kw):
    return nl.RNN(n_in, hidden, **kw) if kind == "rnn" else nl.LSTM(n_in, hidden, **kw)


def _data(N, T, F, H, seq, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, T, F))
    y = rng.normal(size=(N, T, H) if seq else (N, H))
    return X, y


def _check(net, X, y):
    """Every parameter and the input against central differences, in training and eval mode."""
    for mode in ("train", "eval"):
        getattr(net, mode)()
        res = nl.gradcheck.check_network(net, X, y)
        assert res.ok, f"{mode}: {res}"
        _, _, dX = net.loss_and_grads(X, y, wrt_input=True)
        num = nl.gradcheck.numeric_gradient(lambda x: net.loss(x, y), X)
        res = nl.gradcheck.compare("dX", dX, num)
        assert res.ok, f"{mode} dX: {res}"
    net.train()


# ---------------------------------------------------------------- gradient checks
@settings(deadline=None, max_examples=10)
@given(kind=st.sampled_from(["rnn", "lstm"]), seq=st.booleans(), N=st.integers(1, 3), T=st.integers(1, 6),
       F=st.integers(1, 3), H=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_single_layer_gradcheck(kind, seq, N, T, F, H, seed):
    net = nl.Sequential([_layer(kind, F, H, return_sequences=seq)], seed=seed)
    X, y = _data(N, T, F, H, seq, seed)
    _check(net, X, y)


@settings(deadline=None, max_examples=8)
@given(kinds=st.tuples(st.sampled_from(["rnn", "lstm"]), st.sampled_from(["rnn", "lstm"])),
       last_seq=st.booleans(), N=st.integers(1, 3), T=st.integers(1, 5), H=st.integers(1, 4),
       seed=st.integers(0, 2**16))
def test_stacks_with_dense_residual_and_activation_layers_gradcheck(kinds, last_seq, N, T, H, seed):
    layers = [nl.Dense(2, 3, activation="tanh"),                              # on every step
              _layer(kinds[0], 3, H, return_sequences=True),
              nl.Residual([nl.Dense(H, H, activation="tanh"), nl.Dense(H, H)]),
              nl.Activation("softsign"),
              _layer(kinds[1], H, 3, return_sequences=last_seq),
              nl.Dense(3, 2)]                                                 # a head per step or on h_T
    net = nl.Sequential(layers, seed=seed)
    X, y = _data(N, T, 2, 2, last_seq, seed)
    _check(net, X, y)


@settings(deadline=None, max_examples=6)
@given(kind=st.sampled_from(["rnn", "lstm"]), N=st.integers(1, 3), T=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_recurrent_layer_inside_a_residual_block_and_classification_per_step(kind, N, T, seed):
    net = nl.Sequential([nl.Dense(2, 4, activation="tanh"),
                         nl.Residual([_layer(kind, 4, 4, return_sequences=True)]),
                         nl.Dense(4, 3)], loss="softmax_cross_entropy", seed=seed)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, T, 2))
    labels = rng.integers(0, 3, size=(N, T))
    _check(net, X, labels)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "gelu", "leaky_relu", "identity"])
def test_rnn_activations_gradcheck(activation):
    """The fast loops (relu, sigmoid, leaky_relu, identity) and the general dispatcher (gelu)."""
    net = nl.Sequential([nl.RNN(3, 4, activation=activation, return_sequences=True), nl.Dense(4, 1)], seed=3)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3, 5, 3))
    _check(net, X, rng.normal(size=(3, 5, 1)))


def test_scaled_activation_rnn_matches_reference():
    a = 1.7159
    net = nl.Sequential([nl.RNN(2, 3, activation=nl.activations.get("scaled", base="tanh", a=a))], seed=0)
    X, _ = _data(2, 4, 2, 3, False)
    Wih, Whh, b = net.params()
    h = np.zeros((2, 3))
    for t in range(4):
        h = a * np.tanh(X[:, t] @ Wih + h @ Whh + b)
    np.testing.assert_allclose(net.forward(X), h, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("seq", [False, True])
def test_gradients_equal_the_numpy_reference(kind, seq):
    net = nl.Sequential([_layer(kind, 3, 4, return_sequences=seq)], seed=1)
    X, y = _data(4, 6, 3, 4, seq, 1)
    loss, grads, dX = net.loss_and_grads(X, y, wrt_input=True)
    rloss, rgrads, rdX, rdZ, _ = ref_loss_grads(kind, net, X, y, seq)
    assert loss == pytest.approx(rloss, rel=1e-13)
    for g, r in zip(grads, rgrads):
        np.testing.assert_allclose(g, r, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(dX, rdX, rtol=1e-11, atol=1e-15)
    # the memoized layer error: the gate gradients, time-major (T, N, G)
    np.testing.assert_allclose(net.layer_errors[0], rdZ, rtol=1e-11, atol=1e-15)


# ---------------------------------------------------------------- torch on copied weights
def _torch_copy(m, net_params, layer=0):
    import torch

    Wih, Whh, b = net_params
    with torch.no_grad():
        getattr(m, f"weight_ih_l{layer}").copy_(torch.tensor(Wih.T))
        getattr(m, f"weight_hh_l{layer}").copy_(torch.tensor(Whh.T))
        getattr(m, f"bias_ih_l{layer}").copy_(torch.tensor(b))
        getattr(m, f"bias_hh_l{layer}").zero_()


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("seq", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
def test_equals_torch_on_copied_weights(kind, seq, layers):
    torch = pytest.importorskip("torch")
    N, T, F, H = 4, 7, 3, 5
    stack = [_layer(kind, F if j == 0 else H, H, return_sequences=seq or j < layers - 1) for j in range(layers)]
    net = nl.Sequential(stack, seed=2)
    rng = np.random.default_rng(2)
    for p in net.params():  # torch's default scale, with the biases away from 0
        p[...] = rng.uniform(-0.6, 0.6, size=p.shape)
    X, y = _data(N, T, F, H, seq, 5)
    cls = torch.nn.RNN if kind == "rnn" else torch.nn.LSTM
    m = cls(F, H, num_layers=layers, batch_first=True).double()
    params = net.params()
    for j in range(layers):
        _torch_copy(m, params[3 * j:3 * j + 3], j)
    xt = torch.tensor(X, requires_grad=True)
    out, _ = m(xt)
    out = out if seq else out[:, -1]
    yt = torch.tensor(y)
    lt = 0.5 * ((out - yt) ** 2).sum() / (N * T if seq else N)
    lt.backward()
    np.testing.assert_allclose(net.forward(X), out.detach().numpy(), rtol=1e-12, atol=1e-14)
    loss, grads, dX = net.loss_and_grads(X, y, wrt_input=True)
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    for j in range(layers):
        gih, ghh, gb = grads[3 * j:3 * j + 3]
        np.testing.assert_allclose(gih, getattr(m, f"weight_ih_l{j}").grad.numpy().T, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(ghh, getattr(m, f"weight_hh_l{j}").grad.numpy().T, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(gb, getattr(m, f"bias_ih_l{j}").grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(gb, getattr(m, f"bias_hh_l{j}").grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dX, xt.grad.numpy(), rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------- a large LSTM: blocks of rows on threads
@contextlib.contextmanager
def _lstm_blocks(count):
    """Let a large LSTM run in ``count`` blocks of batch rows (count = 1: the one-thread path): the
    threads the kernels may use (their table) and the BLAS's thread count (the smaller decides).
    On a one-core machine the blocks run one after another on Numba's one thread. Skips where the
    BLAS's thread count is unknown (then the LSTM never splits)."""
    from nnlab.kernels import recurrent as R

    before = nl.backend.get_num_threads()
    if before is None:
        pytest.skip("no bundled OpenBLAS: the LSTM runs on one thread")
    R.enable_lstm_threads()
    R._compile_entries()
    saved = R._LSTM_TABLE[0]
    R._LSTM_TABLE[0] = count
    nl.backend.set_num_threads(count)
    try:
        yield
    finally:
        R._LSTM_TABLE[0] = saved
        nl.backend.set_num_threads(before)


# (N, T, F, H) large enough to be split (T·N·H·4H >= PAR_MIN_MACS, N >= 2·PAR_MIN_ROWS); the second
# has T·N < H: the per-step backward product takes W_hh transposed instead of a stored W_hhᵀ
BIG = [(16, 16, 1, 64), (17, 16, 6, 64), (16, 4, 2, 128)]


@pytest.mark.parametrize(("N", "T", "F", "H"), BIG)
@pytest.mark.parametrize("seq", [False, True])
@pytest.mark.parametrize("k", [None, 3])
def test_large_lstm_in_blocks_equals_the_numpy_reference(N, T, F, H, seq, k):
    """Forward, loss, every gradient, dX, the memoized errors and the per-step gradients reaching
    h_t: two blocks of rows against the float64 reference; the one-thread path gives the same
    numbers up to rounding (the order of the float64 sums of ∂L/∂b and of a narrow input's
    ∂L/∂W_ih, the BLAS's blocking of a product with fewer rows)."""
    from nnlab.kernels import recurrent as R

    assert T * N * H * 4 * H >= R.PAR_MIN_MACS and N >= 2 * R.PAR_MIN_ROWS
    X, y = _data(N, T, F, H, seq, 7)
    net = nl.Sequential([nl.LSTM(F, H, return_sequences=seq, truncate=k)], seed=3)
    rng = np.random.default_rng(3)
    for p in net.params():
        p[...] = rng.uniform(-0.3, 0.3, size=p.shape)
    runs = {}
    for count in (2, 1):
        with _lstm_blocks(count):
            assert R._lstm_blocks(N, T, H, 4 * H, 8) == count
            mon = nl.GradientMonitor(net)
            mon.observe(X, y)
            loss, grads, dX = net.loss_and_grads(X, y, wrt_input=True)
            runs[count] = (net.forward(X), loss, grads, dX, net.layer_errors[0], mon.time_grad_norms())
    out, loss, grads, dX, E, norms = runs[2]
    rloss, rgrads, rdX, rdZ, rdH = ref_loss_grads("lstm", net, X, y, seq, k=k)
    Hs = ref_forward("lstm", *net.params(), X)[0]
    np.testing.assert_allclose(out, Hs[1:].transpose(1, 0, 2) if seq else Hs[T], rtol=1e-12, atol=1e-14)
    assert loss == pytest.approx(rloss, rel=1e-12)
    for g, r in zip(grads, rgrads):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dX, rdX, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(E, rdZ, rtol=1e-10, atol=1e-14)
    (name, got), = norms.items()
    np.testing.assert_allclose(got, np.sqrt((rdH[1:] ** 2).sum(axis=(1, 2))), rtol=1e-10)
    one = runs[1]
    np.testing.assert_allclose(one[0], out, rtol=1e-12, atol=1e-16)
    assert one[1] == pytest.approx(loss, rel=1e-12)
    for a, b in zip(one[2], grads):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-16)
    np.testing.assert_allclose(one[3], dX, rtol=1e-11, atol=1e-16)
    np.testing.assert_allclose(one[4], E, rtol=1e-11, atol=1e-16)


def test_large_float32_lstm_in_blocks_equals_torch():
    """The benchmark's shape in small: float32, many-to-one, two blocks against torch on copied
    weights (float32 both): the first step's gradients, then the loss along SGD-momentum steps."""
    torch = pytest.importorskip("torch")
    N, T, F, H = 32, 20, 1, 64
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, T, F)).astype(np.float32)
    y = rng.normal(size=(N, 1)).astype(np.float32)
    net = nl.Sequential([nl.LSTM(F, H), nl.Dense(H, 1)], seed=0, dtype="float32")
    Wih, Whh, b, Wd, bd = net.params()
    m = torch.nn.LSTM(F, H, batch_first=True, dtype=torch.float32)
    lin = torch.nn.Linear(H, 1, dtype=torch.float32)
    _torch_copy(m, (Wih, Whh, b))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(Wd.T))
        lin.bias.copy_(torch.tensor(bd))
    m.bias_hh_l0.requires_grad_(False)  # one bias, as nnlab's b (two would move b_ih + b_hh twice as fast)
    opt = torch.optim.SGD([m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0] + list(lin.parameters()), lr=0.05,
                          momentum=0.9)
    xt, yt = torch.tensor(X), torch.tensor(y)
    with _lstm_blocks(2):
        tr = nl.Trainer(net, nl.optim.SGD(lr=0.05, momentum=0.9))
        for step in range(5):
            loss = tr.step(X, y)
            opt.zero_grad()
            lt = 0.5 * ((lin(m(xt)[0][:, -1]) - yt) ** 2).sum() / N
            lt.backward()
            if step == 0:
                tg = [m.weight_ih_l0.grad.numpy().T, m.weight_hh_l0.grad.numpy().T, m.bias_ih_l0.grad.numpy(),
                      lin.weight.grad.numpy().T, lin.bias.grad.numpy()]
                for g, r in zip(tr.grads, tg):
                    np.testing.assert_allclose(g, r, rtol=0, atol=1e-5 * np.abs(r).max())
            opt.step()
            assert loss == pytest.approx(lt.item(), rel=1e-5)


@pytest.mark.parametrize("k", [4, 16])
def test_large_lstm_tbptt_carries_the_state_in_blocks(k):
    """fit(tbptt=k) of a large sequence LSTM (state carried between windows, per block of rows):
    two blocks and one thread train to the same weights."""
    from nnlab.kernels import recurrent as R

    N, T = 64, 16
    assert k * N * 64 * 256 >= R.PAR_MIN_MACS  # each window is split
    rng = np.random.default_rng(4)
    X, Y = rng.normal(size=(N, T, 2)), rng.normal(size=(N, T, 1))
    flats = []
    for count in (2, 1):
        net = nl.Sequential([nl.LSTM(2, 64, return_sequences=True), nl.Dense(64, 1)], seed=4)
        with _lstm_blocks(count):
            nl.Trainer(net, nl.optim.SGD(lr=0.05)).fit(X, Y, epochs=2, batch_size=N, seed=0, tbptt=k)
        flats.append(net._flat.copy())
    np.testing.assert_allclose(flats[0], flats[1], rtol=1e-11, atol=1e-14)


# ---------------------------------------------------------------- truncation in the layer: BPTT(k)
@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("seq", [False, True])
def test_truncate_at_least_T_is_full_bptt_bit_for_bit(kind, seq):
    X, y = _data(3, 5, 2, 3, seq, 4)
    full = nl.Sequential([_layer(kind, 2, 3, return_sequences=seq)], seed=4)
    runs = [full.loss_and_grads(X, y, wrt_input=True)]
    for k in (5, 9):
        net = nl.Sequential([_layer(kind, 2, 3, return_sequences=seq, truncate=k)], seed=4)
        runs.append(net.loss_and_grads(X, y, wrt_input=True))
        np.testing.assert_array_equal(net.forward(X), full.forward(X))
    for other in runs[1:]:
        assert other[0] == runs[0][0]
        for g, r in zip(other[1], runs[0][1]):
            np.testing.assert_array_equal(g, r)
        np.testing.assert_array_equal(other[2], runs[0][2])


@settings(deadline=None, max_examples=10)
@given(kind=st.sampled_from(["rnn", "lstm"]), seq=st.booleans(), N=st.integers(1, 3), T=st.integers(2, 7),
       H=st.integers(1, 4), data=st.data())
def test_truncate_below_T_equals_the_numpy_bptt_k_reference(kind, seq, N, T, H, data):
    k = data.draw(st.integers(1, T - 1))
    seed = data.draw(st.integers(0, 2**16))
    net = nl.Sequential([_layer(kind, 2, H, return_sequences=seq, truncate=k)], seed=seed)
    X, y = _data(N, T, 2, H, seq, seed)
    loss, grads, dX = net.loss_and_grads(X, y, wrt_input=True)
    rloss, rgrads, rdX, rdZ, _ = ref_loss_grads(kind, net, X, y, seq, k=k)
    assert loss == pytest.approx(rloss, rel=1e-13)
    for g, r in zip(grads, rgrads):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(dX, rdX, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(net.layer_errors[0], rdZ, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_truncation_changes_the_gradient_and_zeroes_the_early_inputs(kind):
    N, T, k = 3, 8, 3
    X, y = _data(N, T, 2, 4, False, 6)
    full = nl.Sequential([_layer(kind, 2, 4)], seed=6)
    trunc = nl.Sequential([_layer(kind, 2, 4, truncate=k)], seed=6)
    _, gf, dXf = full.loss_and_grads(X, y, wrt_input=True)
    _, gt, dXt = trunc.loss_and_grads(X, y, wrt_input=True)
    # many-to-one: the loss at T reaches x_t only for the last k steps (0-based t >= T-k)
    assert np.all(dXt[:, :T - k] == 0.0)
    assert np.all(dXf[:, :T - k] != 0.0)
    np.testing.assert_allclose(dXt[:, T - k:], dXf[:, T - k:], rtol=1e-12, atol=1e-16)
    assert np.abs(gt[1] - gf[1]).max() > 1e-8  # W_hh's gradient loses the early terms
    # one step: only the last step's input and the previous state's product
    one = nl.Sequential([_layer(kind, 2, 4, truncate=1)], seed=6)
    _, g1, dX1 = one.loss_and_grads(X, y, wrt_input=True)
    assert np.all(dX1[:, :T - 1] == 0.0) and np.all(dX1[:, T - 1] != 0.0)


def test_sequence_truncation_is_per_step_not_a_prefix():
    """With a loss at every step, BPTT(k) keeps the k-step window behind *each* step: every input
    still gets a gradient (from its own step), unlike a single cut."""
    X, y = _data(2, 6, 2, 3, True, 7)
    net = nl.Sequential([nl.RNN(2, 3, return_sequences=True, truncate=2)], seed=7)
    _, _, dX = net.loss_and_grads(X, y, wrt_input=True)
    assert np.all(np.abs(dX).sum(axis=2) > 0)
    _check(net, X[:, :1], y[:, :1])  # T = 1 <= k: the full path, checked against differences


def test_truncated_gradient_is_the_gradient_of_its_definition():
    """BPTT(k) on a many-to-one RNN is the exact gradient of the loss with the state before the
    window held constant: central differences of that function (h_{T−k} frozen) agree."""
    N, T, k = 2, 6, 2
    net = nl.Sequential([nl.RNN(2, 3, truncate=k)], seed=8)
    X, y = _data(N, T, 2, 3, False, 8)
    _, grads = net.loss_and_grads(X, y)
    Wih, Whh, b = [p.copy() for p in net.params()]
    h_frozen = ref_forward("rnn", Wih, Whh, b, X[:, :T - k])[0][-1]

    def loss(flat):
        wi = flat[:Wih.size].reshape(Wih.shape)
        wh = flat[Wih.size:Wih.size + Whh.size].reshape(Whh.shape)
        bb = flat[Wih.size + Whh.size:]
        h = ref_forward("rnn", wi, wh, bb, X[:, T - k:], h0=h_frozen)[0][-1]
        return 0.5 * np.sum((h - y) ** 2) / N

    flat = np.concatenate([Wih.ravel(), Whh.ravel(), b])
    num = nl.gradcheck.numeric_gradient(loss, flat)
    assert nl.gradcheck.compare("BPTT(k)", np.concatenate([g.ravel() for g in grads]), num).ok


# ---------------------------------------------------------------- truncated BPTT in the Trainer
def _seq_net(kind, seed=0, dtype="float64", loss="mse", K=1):
    return nl.Sequential([_layer(kind, 2, 4, return_sequences=True), nl.Dense(4, K)], loss=loss, seed=seed,
                         dtype=dtype)


def _seq_data(N=10, T=7, K=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(N, T, 2)), rng.normal(size=(N, T, K))


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_tbptt_at_least_T_is_plain_fit_bit_for_bit(kind):
    X, Y = _seq_data()
    a, b, c = _seq_net(kind), _seq_net(kind), _seq_net(kind)
    ha = nl.Trainer(a, nl.optim.Adam(lr=0.01)).fit(X, Y, epochs=2, batch_size=4, seed=1)
    hb = nl.Trainer(b, nl.optim.Adam(lr=0.01)).fit(X, Y, epochs=2, batch_size=4, seed=1, tbptt=7)
    hc = nl.Trainer(c, nl.optim.Adam(lr=0.01)).fit(X, Y, epochs=2, batch_size=4, seed=1, tbptt=100)
    np.testing.assert_array_equal(a._flat, b._flat)
    np.testing.assert_array_equal(a._flat, c._flat)
    assert ha.loss == hb.loss == hc.loss and ha.epoch_loss == hb.epoch_loss


def _ref_tbptt_fit(kind, net, X, Y, k, batch_size, lr, epochs, seed, labels=False):
    """fit(tbptt=k) with plain SGD written out in NumPy: per batch, windows of k steps, each one
    forward from the state the previous window ended in (held constant), backward within the
    window, one SGD update; returns the parameters and the per-window losses."""
    Wih, Whh, b, Wd, bd = [p.copy() for p in net.params()]
    rng = np.random.default_rng(seed)
    N, T, _ = X.shape
    losses = []
    for _ in range(epochs):
        order = rng.permutation(N)
        for start in range(0, N, batch_size):
            idx = order[start:start + batch_size]
            xb, yb = X[idx], Y[idx]
            n = len(idx)
            h0 = c0 = None
            for lo in range(0, T, k):
                xw, yw = xb[:, lo:lo + k], yb[:, lo:lo + k]
                L = xw.shape[1]
                Hs, cache = ref_forward(kind, Wih, Whh, b, xw, h0, c0)
                O = np.einsum("tnh,hk->tnk", Hs[1:], Wd) + bd
                if labels:
                    e = np.exp(O - O.max(axis=2, keepdims=True))
                    p = e / e.sum(axis=2, keepdims=True)
                    lab = yw.T.astype(int)  # (L, n)
                    losses.append(-np.sum(np.log(np.take_along_axis(p, lab[..., None], 2))) / (n * L))
                    dO = p.copy()
                    np.put_along_axis(dO, lab[..., None], np.take_along_axis(p, lab[..., None], 2) - 1.0, 2)
                    dO /= n * L
                else:
                    diff = O - yw.transpose(1, 0, 2)
                    losses.append(0.5 * np.sum(diff ** 2) / (n * L))
                    dO = diff / (n * L)
                dWd = np.einsum("tnh,tnk->hk", Hs[1:], dO)
                dbd = dO.sum(axis=(0, 1))
                dout = np.zeros_like(Hs)
                dout[1:] = dO @ Wd.T
                dWih, dWhh, db, _, _, _ = ref_backward(kind, Wih, Whh, cache, xw, dout)
                h0 = Hs[-1]
                c0 = cache["cs"][-1] if kind == "lstm" else None
                Wih, Whh, b = Wih - lr * dWih, Whh - lr * dWhh, b - lr * db
                Wd, bd = Wd - lr * dWd, bd - lr * dbd
    return [Wih, Whh, b, Wd, bd], losses


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("k", [1, 3, 4])
def test_tbptt_equals_windows_with_explicitly_carried_states(kind, k):
    X, Y = _seq_data(N=10, T=7)
    net = _seq_net(kind, seed=3)
    ref, ref_losses = _ref_tbptt_fit(kind, net, X, Y, k, batch_size=4, lr=0.1, epochs=2, seed=5)
    tr = nl.Trainer(net, nl.optim.SGD(lr=0.1))
    hist = tr.fit(X, Y, epochs=2, batch_size=4, seed=5, tbptt=k)
    windows = -(-7 // k)
    assert len(hist.loss) == 2 * 3 * windows
    np.testing.assert_allclose(hist.loss, ref_losses, rtol=1e-11)
    for p, r in zip(net.params(), ref):
        np.testing.assert_allclose(p, r, rtol=1e-10, atol=1e-13)
    # the window programs start from zeros again after fit
    for steps in {k, 7 % k or k}:
        prog = net._program(steps)
        assert np.all(prog.hp[prog.recurrent, HP_CARRY] == 0.0)


def test_tbptt_splits_per_step_labels_and_carries_the_state():
    X, _ = _seq_data(N=6, T=5)
    labels = np.random.default_rng(1).integers(0, 3, size=(6, 5))
    net = _seq_net("lstm", seed=2, loss="softmax_cross_entropy", K=3)
    ref, ref_losses = _ref_tbptt_fit("lstm", net, X, labels, 2, batch_size=3, lr=0.2, epochs=1, seed=0, labels=True)
    hist = nl.Trainer(net, nl.optim.SGD(lr=0.2)).fit(X, labels, epochs=1, batch_size=3, seed=0, tbptt=2)
    np.testing.assert_allclose(hist.loss, ref_losses, rtol=1e-11)
    for p, r in zip(net.params(), ref):
        np.testing.assert_allclose(p, r, rtol=1e-10, atol=1e-13)
    # not the same as restarting every window from zeros: the carried state matters
    zero = _seq_net("lstm", seed=2, loss="softmax_cross_entropy", K=3)
    tr = nl.Trainer(zero, nl.optim.SGD(lr=0.2))
    tr.compiled_epochs = False
    losses = []
    for start in (0, 3):
        idx = np.random.default_rng(0).permutation(6)[start:start + 3]
        for lo in range(0, 5, 2):
            losses.append(tr.step(X[idx, lo:lo + 2], labels[idx, lo:lo + 2]))
    assert losses[0] == pytest.approx(hist.loss[0], rel=1e-14)
    assert abs(losses[1] - hist.loss[1]) > 1e-6


def test_tbptt_epoch_loss_weights_windows_by_their_steps_and_monitor_records_each():
    X, Y = _seq_data(N=4, T=5)
    net = _seq_net("rnn", seed=1)
    mon = nl.GradientMonitor(net)
    hist = nl.Trainer(net, nl.optim.SGD(lr=0.0), monitor=mon).fit(X, Y, epochs=1, batch_size=4, tbptt=2)
    assert len(hist.loss) == 3 and mon.steps == 3
    assert hist.epoch_loss[0] == pytest.approx((2 * hist.loss[0] + 2 * hist.loss[1] + hist.loss[2]) / 5, rel=1e-14)
    assert [len(v) for v in (mon.time_grad_norms(0)["0 RNN (tanh)"], mon.time_grad_norms(2)["0 RNN (tanh)"])] == [2, 1]
    # lr 0: the windows' losses add up to the full sequence's loss (the state carried exactly)
    assert hist.epoch_loss[0] == pytest.approx(net.loss(X, Y), rel=1e-12)


def test_tbptt_carries_every_layer_of_a_stack_exactly():
    """With a learning rate of 0 the windows, each started from the states the previous one ended
    in, reproduce the full sequences: the epoch loss is the full loss (two recurrent layers, each
    with its own carry, a ragged last batch). A forward pass between the windows (a callback)
    starts from zeros."""
    X, Y = _seq_data(N=7, T=8)
    net = nl.Sequential([nl.RNN(2, 3, return_sequences=True), nl.Dense(3, 3, activation="tanh"),
                         nl.LSTM(3, 4, return_sequences=True), nl.Dense(4, 1)], seed=2)
    seen = []
    hist = nl.Trainer(net, nl.optim.SGD(lr=0.0)).fit(
        X, Y, epochs=1, batch_size=3, tbptt=3,
        step_callback=lambda e, s, loss: seen.append(net.forward(X[:3, :3])))
    assert len(hist.loss) == 3 * 3
    assert hist.epoch_loss[0] == pytest.approx(net.loss(X, Y), rel=1e-12)
    first = net.forward(X[:3])[:, :3]
    for out in seen:
        np.testing.assert_allclose(out, first, rtol=1e-13, atol=1e-15)


def test_tbptt_bad_values_and_networks():
    X, Y = _seq_data()
    tr = nl.Trainer(_seq_net("rnn"), nl.optim.SGD(lr=0.1))
    for bad in (0, -2, 1.5, "3", True):
        with pytest.raises(HyperparameterError, match="tbptt"):
            tr.fit(X, Y, tbptt=bad)
    many_to_one = nl.Sequential([nl.LSTM(2, 3), nl.Dense(3, 1)], seed=0)
    with pytest.raises(HyperparameterError, match="only its last state.*truncate=k"):
        nl.Trainer(many_to_one, nl.optim.SGD(lr=0.1)).fit(X, Y[:, -1], tbptt=2)
    dense = nl.Sequential([nl.Dense(2, 1)], seed=0)
    with pytest.raises(HyperparameterError, match="recurrent layer"):
        nl.Trainer(dense, nl.optim.SGD(lr=0.1)).fit(X, Y, tbptt=2)


def test_tbptt_restores_the_programs_after_an_exception():
    X, Y = _seq_data()
    net = _seq_net("rnn")

    def boom(epoch, step, loss):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError):
        nl.Trainer(net, nl.optim.SGD(lr=0.1)).fit(X, Y, tbptt=3, step_callback=boom)
    for steps in (3, 1):
        prog = net._program(steps)
        assert np.all(prog.hp[prog.recurrent, HP_CARRY] == 0.0)
    # a later plain forward of a window length starts from zeros again
    np.testing.assert_allclose(net.forward(X[:, :3]), net.forward(X)[:, :3], rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------- the monitor's ‖∂L/∂h_t‖
@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("seq,k", [(False, None), (True, None), (False, 3), (True, 2)])
def test_time_grad_norms_equal_the_reference(kind, seq, k):
    X, y = _data(3, 6, 2, 4, seq, 9)
    net = nl.Sequential([_layer(kind, 2, 4, return_sequences=seq, truncate=k)], seed=9)
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    _, _, _, _, dH = ref_loss_grads(kind, net, X, y, seq, k=k)
    label = "0 LSTM" if kind == "lstm" else "0 RNN (tanh)"
    norms = mon.time_grad_norms()[label]
    np.testing.assert_allclose(norms, np.sqrt((dH[1:] ** 2).sum(axis=(1, 2))), rtol=1e-11)
    if k is not None and not seq:
        assert np.all(norms[:6 - k] == 0.0) and np.all(norms[6 - k:] > 0)


def test_time_grad_norms_of_a_stack_inside_training_equal_torch():
    torch = pytest.importorskip("torch")
    N, T = 4, 6
    net = nl.Sequential([nl.LSTM(2, 3, return_sequences=True), nl.Dense(3, 1)], seed=4)
    mon = nl.GradientMonitor(net)
    X, Y = _seq_data(N=N, T=T, seed=4)
    Wih, Whh, b, Wd, bd = [torch.tensor(p.copy()) for p in net.params()]
    nl.Trainer(net, nl.optim.SGD(lr=0.1), monitor=mon).step(X, Y)
    cell = torch.nn.LSTMCell(2, 3).double()
    with torch.no_grad():
        cell.weight_ih.copy_(Wih.T)
        cell.weight_hh.copy_(Whh.T)
        cell.bias_ih.copy_(b)
        cell.bias_hh.zero_()
    h = c = torch.zeros(N, 3, dtype=torch.float64)
    hs = []
    for t in range(T):
        h, c = cell(torch.tensor(X[:, t]), (h, c))
        h.retain_grad()
        hs.append(h)
    out = torch.stack(hs, 1) @ Wd + bd
    (0.5 * ((out - torch.tensor(Y)) ** 2).sum() / (N * T)).backward()
    ref = [float(x.grad.norm()) for x in hs]
    np.testing.assert_allclose(mon.time_grad_norms()["0 LSTM"], ref, rtol=1e-11)


# ---------------------------------------------------------------- parameters, files, float32
def test_parameters_initialisation_and_labels():
    net = nl.Sequential([nl.LSTM(3, 4, forget_bias=2.5, return_sequences=True), nl.RNN(4, 2, activation="relu")],
                        seed=0)
    assert net.param_names() == ["0.W_ih", "0.W_hh", "0.b", "1.W_ih", "1.W_hh", "1.b"]
    assert [p.shape for p in net.params()] == [(3, 16), (4, 16), (16,), (4, 2), (2, 2), (2,)]
    b = net.params()[2]
    assert np.all(b[4:8] == 2.5) and np.all(b[:4] == 0) and np.all(b[8:] == 0)
    Whh = net.params()[4]
    np.testing.assert_allclose(Whh @ Whh.T, np.eye(2), atol=1e-12)  # orthogonal recurrent weights
    mon = nl.GradientMonitor(net)
    assert [layer.label for layer in mon.layers] == ["0 LSTM", "1 RNN (relu)"]
    assert mon.recurrent == ["0 LSTM", "1 RNN (relu)"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_round_trip(tmp_path, dtype):
    net = nl.Sequential([nl.Dense(2, 3, activation="tanh"),
                         nl.LSTM(3, 4, return_sequences=True, forget_bias=0.5, truncate=3),
                         nl.RNN(4, 3, activation="relu", truncate=2, init="he_normal"), nl.Dense(3, 1)],
                        seed=3, dtype=dtype)
    X, y = _data(3, 6, 2, 1, False, 3)
    nl.Trainer(net, nl.optim.Adam(lr=0.01)).fit(X, y, epochs=2, batch_size=2)
    path = tmp_path / "rnn.npz"
    net.save(path)
    back = nl.load(path)
    assert back.config() == net.config()
    assert repr(back) == repr(net)
    np.testing.assert_array_equal(back._flat, net._flat)
    np.testing.assert_array_equal(back.forward(X), net.forward(X))
    for g, r in zip(back.loss_and_grads(X, y)[1], net.loss_and_grads(X, y)[1]):
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_float32_runs_matches_float64_and_trains(kind):
    X, y = nl.datasets.load("adding", n=128, T=8, seed=0)
    net = nl.Sequential([_layer(kind, 2, 16), nl.Dense(16, 1)], seed=0, dtype="float32")
    net64 = net.copy(dtype="float64")
    out = net.forward(X)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, net64.forward(X), rtol=1e-4, atol=1e-5)
    loss, grads = net.loss_and_grads(X, y)
    loss64, grads64 = net64.loss_and_grads(X, y)
    assert loss == pytest.approx(loss64, rel=1e-5)
    for g, r in zip(grads, grads64):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-5 * np.abs(r).max())
    hist = nl.Trainer(net, nl.optim.Adam(lr=0.01)).fit(X, y, epochs=15, batch_size=32, seed=0)
    assert np.all(np.isfinite(net._flat))
    assert hist.epoch_loss[-1] < 0.6 * hist.epoch_loss[0]
    seq = nl.Sequential([_layer(kind, 2, 8, return_sequences=True), nl.Dense(8, 1)], seed=0, dtype="float32")
    Y = np.repeat(y[:, None, None], 8, axis=1)
    hist = nl.Trainer(seq, nl.optim.Adam(lr=0.01)).fit(X, Y, epochs=3, batch_size=32, tbptt=3)
    assert len(hist.loss) == 3 * 4 * 3 and np.all(np.isfinite(hist.loss))


def test_no_stale_gradient_slots():
    net = nl.Sequential([nl.LSTM(2, 3, return_sequences=True), nl.RNN(3, 2, truncate=2)], seed=0)
    X, y = _data(3, 5, 2, 2, False, 0)
    X2, Y = net._prepare(X, y)
    prog = net._prog_for(X2)
    ws, dws = net._workspace(3, prog.width)
    clean = np.zeros_like(net._flat)
    dirty = np.full_like(net._flat, 123.0)
    args = (prog.ops, prog.hp, prog.tens, net._store)
    net._kernels.loss_and_grad(*args, clean, ws, dws, X2, Y, net._loss_code, True, -1)
    dws[:] = 77.0
    net._kernels.loss_and_grad(*args, dirty, ws, dws, X2, Y, net._loss_code, True, -1)
    np.testing.assert_array_equal(clean, dirty)


# ---------------------------------------------------------------- the adding problem
def test_adding_dataset_properties():
    X, y = nl.datasets.load("adding", n=4000, T=20, seed=0)
    assert X.shape == (4000, 20, 2) and y.shape == (4000,)
    values, marks = X[:, :, 0], X[:, :, 1]
    assert values.min() >= 0.0 and values.max() < 1.0
    assert set(np.unique(marks).tolist()) == {0.0, 1.0}
    assert np.all(marks.sum(axis=1) == 2)
    assert np.all(marks[:, :10].sum(axis=1) == 1) and np.all(marks[:, 10:].sum(axis=1) == 1)
    np.testing.assert_allclose(y, (values * marks).sum(axis=1), rtol=1e-15)
    # predicting 1.0: plain mean squared error Var(y) = 1/6; nnlab's mse (with its 1/2) is 1/12
    assert np.mean((y - 1.0) ** 2) == pytest.approx(1 / 6, abs=0.01)
    net = nl.Sequential([nl.RNN(2, 1), nl.Dense(1, 1)], seed=0)
    for p in net.params():
        p[...] = 0.0
    net.params()[-1][...] = 1.0
    assert net.loss(X, y) == pytest.approx(1 / 12, abs=0.005)
    X2, y2 = nl.datasets.load("adding", n=4000, T=20, seed=0)
    np.testing.assert_array_equal(X, X2)
    X3, _ = nl.datasets.load("adding", n=5, T=3, seed=1)   # odd T: the first half is step 0 alone
    assert np.all(X3[:, 0, 1] == 1) and np.all(X3[:, 1:, 1].sum(axis=1) == 1)
    assert "adding" in nl.datasets.names() and nl.datasets.TASKS["adding"] == "regression"
    with pytest.raises(HyperparameterError):
        nl.datasets.load("adding", T=1)
    with pytest.raises(HyperparameterError):
        nl.datasets.load("adding", n=0)


# ---------------------------------------------------------------- bad input
def test_bad_input():
    with pytest.raises(ShapeError, match=r"must be a sequence \(N, T, 2\)"):
        nl.Sequential([nl.RNN(2, 3)], seed=0).forward(np.zeros((4, 2)))
    with pytest.raises(ShapeError, match=r"layer 1 \(LSTM\(3, 2\)\) needs sequences"):
        nl.Sequential([nl.RNN(2, 3), nl.LSTM(3, 2)], seed=0)
    with pytest.raises(ShapeError, match="expects 3 inputs"):
        nl.Sequential([nl.RNN(2, 4, return_sequences=True), nl.LSTM(3, 2)], seed=0)
    for bad in (0, -1, 2.5, None):
        with pytest.raises(HyperparameterError, match="hidden"):
            nl.RNN(2, bad)
        with pytest.raises(HyperparameterError, match="hidden"):
            nl.LSTM(2, bad)
    for act, why in (("prelu", "learnable"), ("rrelu", "noisy"), ("noisy_relu", "noisy")):
        with pytest.raises(HyperparameterError, match=why):
            nl.RNN(2, 3, activation=act)
    with pytest.raises(HyperparameterError, match="learnable"):
        nl.RNN(2, 3, activation=nl.activations.get("swish", learnable=True))
    with pytest.raises(nl.errors.UnknownNameError):
        nl.RNN(2, 3, activation="no_such_activation")
    for bad in (0, -3, 1.5):
        with pytest.raises(HyperparameterError, match="truncate"):
            nl.LSTM(2, 3, truncate=bad)
    with pytest.raises(HyperparameterError, match="return_sequences"):
        nl.RNN(2, 3, return_sequences="yes")
    with pytest.raises(HyperparameterError, match="forget_bias"):
        nl.LSTM(2, 3, forget_bias=float("nan"))
    net = nl.Sequential([nl.LSTM(2, 3, return_sequences=True)], seed=0)
    with pytest.raises(ShapeError, match=r"y must have shape \(2, 4, K\)"):
        net.loss(np.zeros((2, 4, 2)), np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="no time steps"):
        net.forward(np.zeros((2, 0, 2)))


def test_custom_activation_is_refused():
    import math

    nl.activations.register("rec_probe_act", lambda z: math.sin(z), lambda z: math.cos(z))
    try:
        with pytest.raises(HyperparameterError, match="user-registered"):
            nl.RNN(2, 3, activation="rec_probe_act")
    finally:
        nl.activations.unregister("rec_probe_act")


def test_train_cli_refuses_the_sequence_dataset(run):
    res = run("train", "--data", "adding", "--epochs", "1")
    assert res.exit_code == 2
    assert "adding is a sequence dataset" in res.output and "Traceback" not in res.output
