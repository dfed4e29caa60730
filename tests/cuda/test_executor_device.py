"""The device executor against the CPU executor: whole networks (dense layers, Activation layers,
learnable and noisy activations, sequences), training runs, the host/device copies behind the
public API, and the errors."""

import numpy as np
import pytest
import sgd_twin

import nnlab as nl
from nnlab.errors import DeviceError
from nnlab.kernels import layout as L
from nnlab.kernels.cuda import executor, registry
from nnlab.kernels.layout import KIND_DENSE

TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-12, atol=1e-13)}


def _layers():
    return [nl.Dense(3, 5, activation="tanh"), nl.Dense(5, 4, activation="prelu"), nl.Activation("elu"),
            nl.Dense(4, 3, activation=nl.activations.get("sigmoid", learnable=("alpha",))),
            nl.Dense(3, 2, activation="identity")]


def _pair(dtype, loss="softmax_cross_entropy", layers=_layers):
    a = nl.Sequential(layers(), loss=loss, seed=3, dtype=dtype)
    b = nl.Sequential(layers(), loss=loss, seed=3, dtype=dtype, device="cuda")
    return a, b


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_and_grads_match_cpu(dtype):
    a, b = _pair(dtype)
    X = np.random.default_rng(0).normal(size=(5, 3))
    y = np.array([0, 1, 1, 0, 1])
    la, ga, dxa = a.loss_and_grads(X, y, wrt_input=True)
    lb, gb, dxb = b.loss_and_grads(X, y, wrt_input=True)
    assert b.device == "cuda" and a.device == "cpu"
    np.testing.assert_allclose(lb, la, **TOL[dtype])
    for p, q in zip(ga, gb):
        np.testing.assert_allclose(q, p, **TOL[dtype])
    for p, q in zip(a.layer_errors, b.layer_errors):
        np.testing.assert_allclose(q, p, **TOL[dtype])
    np.testing.assert_allclose(dxb, dxa, **TOL[dtype])
    np.testing.assert_allclose(b.forward(X), a.forward(X), **TOL[dtype])
    np.testing.assert_allclose(b.loss(X, y), a.loss(X, y), **TOL[dtype])


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_sequence_data_and_regression_losses(loss):
    layers = lambda: [nl.Dense(2, 4, activation="softplus"), nl.Dense(4, 2, bias=False)]  # noqa: E731
    a, b = _pair("float64", loss, layers)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3, 4, 2))  # (N, T, F): the dense ops act on every step
    y = rng.uniform(size=(3, 4, 2)) if loss == "bce" else rng.normal(size=(3, 4, 2))
    la, ga = a.loss_and_grads(X, y)
    lb, gb = b.loss_and_grads(X, y)
    np.testing.assert_allclose(lb, la, rtol=1e-12)
    for p, q in zip(ga, gb):
        np.testing.assert_allclose(q, p, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(b.forward(X), a.forward(X), rtol=1e-12)


@pytest.mark.parametrize("act", ["rrelu", "noisy_relu"])
def test_training_noise_is_the_cpus(act):
    """Uniform noise (rrelu: a host-drawn key expanded by SplitMix64 on the device) and normal
    noise (noisy_relu: drawn on the host) give the CPU's values: the same outputs in training."""
    layers = lambda: [nl.Dense(3, 6, activation=act), nl.Dense(6, 2)]  # noqa: E731
    for dtype in ("float32", "float64"):
        a, b = _pair(dtype, "mse", layers)
        a.fixed_noise_seed = b.fixed_noise_seed = 11
        X = np.random.default_rng(2).normal(size=(4, 3))
        ya, yb = a.forward(X, training=True), b.forward(X, training=True)
        np.testing.assert_allclose(yb, ya, **TOL[dtype])
        assert not np.allclose(a.forward(X, training=False), ya)  # the noise did change the output
        np.testing.assert_allclose(b.forward(X, training=False), a.forward(X, training=False), **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("compiled_epochs", [True, False])
def test_training_run_matches_cpu(monkeypatch, dtype, compiled_epochs):
    sgd_twin.install(monkeypatch)
    monkeypatch.setattr(nl.Trainer, "compiled_epochs", compiled_epochs)
    layers = lambda: [nl.Dense(3, 5, activation="tanh"), nl.Dense(5, 2)]  # noqa: E731
    X = np.random.default_rng(4).normal(size=(10, 3))
    y = (X[:, 0] > 0).astype(np.int64)
    runs = []
    for device in ("cpu", "cuda"):
        net = nl.Sequential(layers(), loss="softmax_cross_entropy", seed=5, dtype=dtype)
        tr = nl.Trainer(net, nl.optim.SGD(lr=0.1), device=device)
        h = tr.fit(X, y, epochs=2, batch_size=4, seed=0)
        runs.append((net, tr, h))
    (a, ta, ha), (b, tb, hb) = runs
    assert b.device == "cuda"
    assert len(hb.loss) == len(ha.loss) == 6
    np.testing.assert_allclose(hb.loss, ha.loss, **TOL[dtype])
    np.testing.assert_allclose(hb.grad_norm, ha.grad_norm, **TOL[dtype])
    np.testing.assert_allclose(hb.epoch_loss, ha.epoch_loss, **TOL[dtype])
    assert hb.accuracy == ha.accuracy
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_allclose(q, p, **TOL[dtype])
    for p, q in zip(ta.grads, tb.grads):
        np.testing.assert_allclose(q, p, **TOL[dtype])


def test_host_writes_reach_the_device_and_files_round_trip(monkeypatch, tmp_path):
    sgd_twin.install(monkeypatch)
    net = nl.Sequential([nl.Dense(2, 3, activation="relu"), nl.Dense(3, 1)], seed=0, device="cuda")
    X = np.random.default_rng(0).normal(size=(4, 2))
    y = X.sum(axis=1)
    tr = nl.Trainer(net, nl.optim.SGD(lr=0.05))
    tr.step(X, y)
    after = [p.copy() for p in net.params()]  # copied back from the device
    cpu = net.copy()
    assert cpu.device == "cpu"
    for p, q in zip(after, cpu.params()):
        np.testing.assert_array_equal(q, p)
    net.params()[0][...] = 0.0  # a write into a live view is uploaded before the next kernel reads it
    cpu.params()[0][...] = 0.0
    np.testing.assert_allclose(net.forward(X), cpu.forward(X), rtol=1e-12)
    net.set_params(after)
    cpu.set_params(after)
    np.testing.assert_allclose(net.forward(X), cpu.forward(X), rtol=1e-12)
    path = tmp_path / "m.npz"
    tr.step(X, y)
    net.save(path)
    loaded = nl.load(path)
    for p, q in zip(net.params(), loaded.params()):
        np.testing.assert_array_equal(q, p)
    net.to("cpu")
    assert net.device == "cpu" and net._dev is None
    np.testing.assert_allclose(net.forward(X), loaded.forward(X), rtol=1e-12)


def test_unregistered_kind_is_refused_by_name():
    registry.load_all()
    executor.check_kinds({KIND_DENSE})
    with pytest.raises(DeviceError, match="999"):
        executor.check_kinds({KIND_DENSE, 999})


def test_bad_device_name():
    with pytest.raises(nl.errors.HyperparameterError, match="device"):
        nl.Sequential([nl.Dense(2, 1)], device="tpu")


def _mixed():
    return [nl.Dense(3, 6, activation="relu"), nl.BatchNorm(6), nl.Dropout(0.3),
            nl.Residual([nl.Dense(6, 6, activation="tanh"), nl.LayerNorm(6)]),
            nl.Highway(6, activation="tanh"), nl.Maxout(6, 4, k=2), nl.RBF(4, 3), nl.Dense(3, 2)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_layer_kind_in_one_network(monkeypatch, dtype):
    """Every registered kind in one program (shared inputs: the DX_ADD paths), in training (masks,
    batch statistics, running statistics) and in eval, then a few training steps."""
    missing = set(executor.KIND_NAMES) - set(registry.load_all())
    kinds = {KIND_DENSE} | {getattr(L, f"KIND_{n}") for n in ("BATCHNORM", "DROPOUT", "ADD", "LAYERNORM", "GATE",
                                                              "MAXOUT", "RBF")}
    assert not kinds & missing, f"no device kernels for {sorted(executor.KIND_NAMES[k] for k in kinds & missing)}"
    sgd_twin.install(monkeypatch)
    a, b = _pair(dtype, "softmax_cross_entropy", _mixed)
    a.fixed_noise_seed = b.fixed_noise_seed = 7
    X = np.random.default_rng(5).normal(size=(5, 3))
    y = np.array([0, 1, 1, 0, 1])
    la, ga = a.loss_and_grads(X, y)
    lb, gb = b.loss_and_grads(X, y)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lb, la, **tol)
    for name, p, q in zip(a.param_names(), ga, gb):
        np.testing.assert_allclose(q, p, err_msg=name, **tol)
    for p, q in zip(a.buffers(), b.buffers()):  # running statistics, updated by the training pass
        np.testing.assert_allclose(q, p, **tol)
    np.testing.assert_allclose(b.forward(X, training=False), a.forward(X, training=False), **tol)
    ta = nl.Trainer(a, nl.optim.SGD(lr=0.05))
    tb = nl.Trainer(b, nl.optim.SGD(lr=0.05))
    for _ in range(2):
        np.testing.assert_allclose(tb.step(X, y), ta.step(X, y), **tol)
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_allclose(q, p, **tol)


def test_gradcheck_of_a_device_network():
    """Finite differences of the device's loss against the device's gradients (float64)."""
    net = nl.Sequential([nl.Dense(2, 3, activation="softplus"), nl.Dense(3, 1)], seed=0, device="cuda")
    X = np.random.default_rng(3).normal(size=(3, 2))
    res = nl.gradcheck.check_network(net, X, X.sum(axis=1))
    assert res.ok, res
    assert net.device == "cuda"


def test_recurrent_network_and_truncated_bptt(monkeypatch):
    """An LSTM and an RNN on sequences, and fit(tbptt=k), whose windows carry the state through the
    workspace on the device (the program's carry hyperparameter changes between windows)."""
    sgd_twin.install(monkeypatch)
    monkeypatch.setattr(nl.Trainer, "compiled_epochs", False)
    layers = lambda: [nl.LSTM(2, 3, return_sequences=True), nl.RNN(3, 2, return_sequences=True),  # noqa: E731
                      nl.Dense(2, 1)]
    rng = np.random.default_rng(6)
    X = rng.normal(size=(2, 4, 2))
    y = rng.normal(size=(2, 4, 1))
    a, b = _pair("float64", "mse", layers)
    la, ga = a.loss_and_grads(X, y)
    lb, gb = b.loss_and_grads(X, y)
    np.testing.assert_allclose(lb, la, rtol=1e-11)
    for name, p, q in zip(a.param_names(), ga, gb):
        np.testing.assert_allclose(q, p, rtol=1e-10, atol=1e-12, err_msg=name)
    ha = nl.Trainer(a, nl.optim.SGD(lr=0.1)).fit(X, y, epochs=1, batch_size=2, tbptt=2, seed=0)
    hb = nl.Trainer(b, nl.optim.SGD(lr=0.1)).fit(X, y, epochs=1, batch_size=2, tbptt=2, seed=0)
    assert len(hb.loss) == len(ha.loss) == 2
    np.testing.assert_allclose(hb.loss, ha.loss, rtol=1e-11)
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_allclose(q, p, rtol=1e-10, atol=1e-12)
