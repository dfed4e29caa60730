"""Dense / Sequential: the public API, whole-network comparisons with PyTorch
(optional), custom activations inside networks, and determinism."""

import math
import zlib

import numpy as np
import pytest

import nnlab as nl
from nnlab import activations
from nnlab.errors import ShapeError, UnknownNameError

RNG = np.random.default_rng(1234)


def _mlp(acts, widths, loss="mse", seed=0, dtype="float64", bias=True, init="xavier_normal"):
    layers = [nl.Dense(widths[i], widths[i + 1], activation=a, init=init, bias=bias) for i, a in enumerate(acts)]
    return nl.Sequential(layers, loss=loss, seed=seed, dtype=dtype)


def _data(net, n=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, net.n_in))
    if net.loss_name == "softmax_cross_entropy":
        y = rng.integers(0, net.n_out, n)
    elif net.loss_name == "bce":
        y = rng.uniform(0, 1, (n, net.n_out))
    else:
        y = rng.normal(size=(n, net.n_out))
    return X, y


# ---------------------------------------------------------------- API basics
def test_docstring_example_shapes_and_live_params():
    net = nl.Sequential([nl.Dense(4, 8, activation="tanh", init="xavier_normal"),
                         nl.Dense(8, 1, activation="identity")], loss="mse", seed=0, dtype="float64")
    assert [p.shape for p in net.params()] == [(4, 8), (8,), (8, 1), (1,)]
    assert net.param_names() == ["0.W", "0.b", "1.W", "1.b"]
    assert net.n_params == 4 * 8 + 8 + 8 + 1
    assert net.n_in == 4 and net.n_out == 1
    X = RNG.normal(size=(16, 4))
    y = X.sum(axis=1)
    loss, grads = net.loss_and_grads(X, y)
    assert [g.shape for g in grads] == [p.shape for p in net.params()]
    assert [E.shape for E in net.layer_errors] == [(16, 8), (16, 1)]
    # params() are live: writing into them changes the network's output
    out = net.forward(X)
    net.params()[3][...] += 1.0
    np.testing.assert_allclose(net.forward(X), out + 1.0, rtol=1e-12)
    # biases start at zero (bias_init default), the forward is tanh(X W1 + b1) W2 + b2
    W1, b1, W2, b2 = net.params()
    np.testing.assert_allclose(net.forward(X), np.tanh(X @ W1 + b1) @ W2 + b2, rtol=1e-12)


def test_grads_are_fresh_arrays_and_layer_errors_are_copies():
    net = _mlp(["tanh", "identity"], [3, 4, 2])
    X, y = _data(net)
    _, g1 = net.loss_and_grads(X, y)
    E1 = [E.copy() for E in net.layer_errors]
    saved = [g.copy() for g in g1]
    X2, y2 = _data(net, seed=5)
    net.loss_and_grads(X2, y2)
    for a, b in zip(g1, saved):
        np.testing.assert_array_equal(a, b)  # a later call does not overwrite earlier grads
    assert any(not np.array_equal(a, b) for a, b in zip(E1, net.layer_errors))
    for g, p in zip(g1, net.params()):
        assert not np.shares_memory(g, p)


def test_single_row_forward_and_batch_consistency():
    net = _mlp(["gelu", "softsign", "identity"], [3, 5, 4, 2])
    X, _ = _data(net, n=6)
    batch = net.forward(X)
    rows = np.vstack([net.forward(x) for x in X])  # 1-D input is one row
    np.testing.assert_allclose(rows, batch, rtol=1e-12, atol=1e-14)
    assert net.predict(X).shape == (6, 2)


def test_without_bias_has_no_b_params():
    net = _mlp(["relu", "identity"], [3, 4, 1], bias=False)
    assert net.param_names() == ["0.W", "1.W"]
    X, y = _data(net)
    loss, grads = net.loss_and_grads(X, y)
    assert len(grads) == 2
    assert nl.gradcheck.check_network(net, X, y).ok


def test_learnable_activation_params_are_params():
    net = nl.Sequential([nl.Dense(3, 4, activation="prelu"), nl.Dense(4, 4, activation="acon_c"),
                         nl.Dense(4, 4, activation=activations.get("scaled", base="tanh", a=1.7159, learnable=True)),
                         nl.Dense(4, 2, activation="swish")], loss="mse", seed=3)
    names = net.param_names()
    assert "0.act.alpha" in names and "3.act.beta" in names and "2.act.a" in names
    assert [n for n in names if n.startswith("1.act.")] == ["1.act.p1", "1.act.p2", "1.act.beta"]
    p = dict(zip(names, net.params()))
    assert p["0.act.alpha"][0] == 0.25 and p["2.act.a"][0] == pytest.approx(1.7159)
    assert tuple(p["1.act.p1"]) == (1.0,) and tuple(p["1.act.p2"]) == (0.0,)
    X, y = _data(net)
    res = nl.gradcheck.check_network(net, X, y)
    assert res.ok, str(res)


def test_set_params_round_trip_and_sync_into_activation_config():
    net = nl.Sequential([nl.Dense(2, 3, activation="prelu"), nl.Dense(3, 1)], seed=0)
    new = [np.full(p.shape, 0.5) for p in net.params()]
    new[2] = np.array([0.1])  # prelu alpha
    net.set_params(new)
    for p, q in zip(net.params(), new):
        np.testing.assert_array_equal(p, q)
    assert net.layers[0].activation.hyperparams["alpha"] == 0.1
    assert net.config()["layers"][0]["activation"]["values"]["alpha"] == 0.1


def test_copy_is_independent_and_recasts():
    net = _mlp(["tanh", "identity"], [3, 4, 2], dtype="float32")
    c = net.copy()
    assert c.dtype == np.float32
    c64 = net.copy(dtype="float64")
    assert c64.dtype == np.float64
    for a, b in zip(net.params(), c64.params()):
        np.testing.assert_array_equal(a.astype(np.float64), b)
    c.params()[0][...] = 0.0
    assert not np.all(net.params()[0] == 0.0)
    X, _ = _data(net)
    np.testing.assert_allclose(net.forward(X), c64.forward(X), rtol=1e-5, atol=1e-6)


def test_train_eval_modes():
    net = _mlp(["rrelu", "identity"], [3, 8, 2])
    assert net.training  # like torch: a new network is in training mode
    X = -np.abs(RNG.normal(size=(32, 3)))
    assert net.eval() is net and not net.training
    e1, e2 = net.forward(X), net.forward(X)
    np.testing.assert_array_equal(e1, e2)  # eval is deterministic
    net.train()
    t1, t2 = net.forward(X), net.forward(X)
    assert not np.array_equal(t1, t2)  # fresh training noise on each call
    np.testing.assert_array_equal(net.forward(X, training=False), e1)


def test_mismatched_widths_raise_shape_error():
    with pytest.raises(ShapeError, match=r"layer 1 Dense\(5, .*\) expects 5 inputs but layer 0 Dense\(.*\) gives 4"):
        nl.Sequential([nl.Dense(3, 4), nl.Dense(5, 2)])


# ---------------------------------------------------------------- 10. determinism
def test_same_seed_same_init_loss_and_grads():
    def build(seed):
        return nl.Sequential([nl.Dense(5, 8, activation="relu", init="he_normal", bias_init="normal"),
                              nl.Dense(8, 8, activation="selu", init="lecun_normal"),
                              nl.Dense(8, 3, activation="identity", init="orthogonal")],
                             loss="ce", seed=seed)
    a, b, c = build(7), build(7), build(8)
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_array_equal(p, q)
    assert any(not np.array_equal(p, q) for p, q in zip(a.params(), c.params()))
    X, y = _data(a)
    la, ga = a.loss_and_grads(X, y)
    lb, gb = b.loss_and_grads(X, y)
    assert la == lb
    for p, q in zip(ga, gb):
        np.testing.assert_array_equal(p, q)


@pytest.mark.parametrize("act", ["rrelu", "noisy_relu"])
def test_training_noise_reproducible_with_same_network_seed(act):
    def build(seed):
        return _mlp([act, act, "identity"], [4, 16, 16, 2], seed=seed)
    X = RNG.normal(size=(20, 4))
    y = RNG.normal(size=(20, 2))
    a, b, c = build(11), build(11), build(12)
    for net in (a, b, c):
        net.train()
    # the noise stream comes from the network's seed: same seed, same sequence of draws
    seq_a = [a.loss_and_grads(X, y) for _ in range(3)]
    seq_b = [b.loss_and_grads(X, y) for _ in range(3)]
    for (la, ga), (lb, gb) in zip(seq_a, seq_b):
        assert la == lb
        for p, q in zip(ga, gb):
            np.testing.assert_array_equal(p, q)
    assert len({la for la, _ in seq_a}) == 3  # fresh noise on each call
    c.set_params(a.params())  # same weights, another seed: another noise stream
    assert c.loss_and_grads(X, y)[0] != seq_a[0][0]
    # a fixed noise seed makes every call draw the same noise; eval uses none
    a.fixed_noise_seed = 99
    assert a.loss(X, y) == a.loss(X, y) == a.loss_and_grads(X, y)[0]
    a.eval()
    b.eval()
    assert a.loss(X, y) == b.loss(X, y)


def test_rrelu_training_slopes_lie_in_lower_upper():
    lower, upper = 0.1, 0.3
    net = nl.Sequential([nl.Dense(1, 1, activation=activations.get("rrelu", lower=lower, upper=upper),
                                  init="ones")], seed=0)
    net.train()
    z = -np.linspace(0.5, 3.0, 400).reshape(-1, 1)
    slopes = net.forward(z) / z
    assert slopes.min() >= lower and slopes.max() <= upper
    assert slopes.std() > 0.03  # really random, roughly U(lower, upper): std (upper-lower)/sqrt(12)
    assert abs(slopes.mean() - (lower + upper) / 2) < 0.02
    net.eval()
    np.testing.assert_allclose(net.forward(z) / z, (lower + upper) / 2, rtol=1e-12)


# ---------------------------------------------------------------- 4. whole network vs PyTorch
def _torch_act(name, torch):
    nn = torch.nn
    return {
        "identity": nn.Identity, "tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid,
        "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU, "softplus": nn.Softplus,
        "mish": nn.Mish, "leaky_relu": lambda: nn.LeakyReLU(0.01),
        "prelu": lambda: nn.PReLU(num_parameters=1, init=0.25), "hard_swish": nn.Hardswish,
        "hard_sigmoid": nn.Hardsigmoid, "softsign": nn.Softsign, "celu": nn.CELU, "silu": nn.SiLU,
        "rrelu": lambda: nn.RReLU(1 / 8, 1 / 3),
    }[name]()


TORCH_ACTS = ["tanh", "relu", "sigmoid", "elu", "selu", "gelu", "softplus", "silu", "mish", "leaky_relu",
              "prelu", "hard_swish", "hard_sigmoid", "softsign", "celu", "rrelu"]


def _nnlab_act(name):
    if name == "silu":
        return activations.get("swish", learnable=False)  # SiLU: swish with a fixed beta = 1
    return activations.get(name)


def _torch_twin(net, torch_acts, torch):
    """The same MLP in torch float64 with the same weights (torch Linear.weight is W.T)."""
    mods = []
    params = dict(zip(net.param_names(), net.params()))
    for li, (layer, act) in enumerate(zip(net.layers, torch_acts)):
        lin = torch.nn.Linear(layer.n_in, layer.n_out, bias=layer.bias, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(params[f"{li}.W"].T.copy()))
            if layer.bias:
                lin.bias.copy_(torch.from_numpy(params[f"{li}.b"].copy()))
        mods += [lin, act.double()]
    return torch.nn.Sequential(*mods)


def _torch_loss(net, out, y, torch):
    if net.loss_name == "mse":
        t = torch.from_numpy(np.asarray(y, dtype=np.float64).reshape(out.shape))
        return torch.nn.MSELoss(reduction="sum")(out, t) / (2 * out.shape[0])
    if net.loss_name == "bce":
        return torch.nn.BCEWithLogitsLoss()(out, torch.from_numpy(np.asarray(y, dtype=np.float64)))
    return torch.nn.CrossEntropyLoss()(out, torch.from_numpy(np.asarray(y, dtype=np.int64)))


def _torch_grads(tnet, net):
    """Torch grads in nnlab's order and layout: W (n_in, n_out), b, activation params."""
    out = []
    mods = list(tnet)
    for li, layer in enumerate(net.layers):
        lin, act = mods[2 * li], mods[2 * li + 1]
        out.append(lin.weight.grad.numpy().T)
        if layer.bias:
            out.append(lin.bias.grad.numpy())
        for _ in layer.activation.param_names:  # only PReLU here
            out.append(act.weight.grad.numpy().reshape(1))
    return out


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy", "bce"])
@pytest.mark.parametrize("act", TORCH_ACTS)
def test_whole_network_matches_torch(act, loss):
    torch = pytest.importorskip("torch")
    widths = [5, 7, 6, 3]
    acts = [act, act, "identity"]
    net = nl.Sequential([nl.Dense(widths[i], widths[i + 1], activation=_nnlab_act(a), init="xavier_normal",
                                  bias_init="normal")
                         for i, a in enumerate(acts)], loss=loss, seed=zlib.crc32(f"{act}/{loss}".encode()) % 1000)
    net.eval()  # rrelu: torch's eval slope (lower+upper)/2; no other activation here is random
    X, y = _data(net, n=9, seed=3)
    X *= 1.5  # reach the saturating and negative branches
    loss_nl, grads = net.loss_and_grads(X, y)
    tnet = _torch_twin(net, [_torch_act(a, torch) for a in acts[:-1]] + [torch.nn.Identity()], torch)
    tnet.eval()
    out = tnet(torch.from_numpy(X))
    np.testing.assert_allclose(net.forward(X), out.detach().numpy(), rtol=1e-10, atol=1e-12)
    lt = _torch_loss(net, out, y, torch)
    lt.backward()
    assert loss_nl == pytest.approx(lt.item(), rel=1e-10, abs=1e-13)
    tgrads = _torch_grads(tnet, net)
    assert len(tgrads) == len(grads)
    # torch's Hardsigmoid backward multiplies by float32(1/6) even in float64 (relative error 2^-24);
    # nnlab uses the exact 1/6
    rtol = 2e-7 if act == "hard_sigmoid" else 1e-9
    for name, g, t in zip(net.param_names(), grads, tgrads):
        np.testing.assert_allclose(g, t, rtol=rtol, atol=1e-12, err_msg=name)


def test_deep_mixed_network_with_learnable_params_matches_torch():
    """A deep net mixing activations, with swish's β and acon_c's p1, p2, β and a scaled a learnable:
    torch gets the same functions written out with its autograd."""
    torch = pytest.importorskip("torch")

    class Swish(torch.nn.Module):
        def __init__(self, beta):
            super().__init__()
            self.beta = torch.nn.Parameter(torch.tensor([beta], dtype=torch.float64))

        def forward(self, x):
            return x * torch.sigmoid(self.beta * x)

    class AconC(torch.nn.Module):
        def __init__(self, p1, p2, beta):
            super().__init__()
            self.p = torch.nn.Parameter(torch.tensor([p1, p2, beta], dtype=torch.float64))

        def forward(self, x):
            p1, p2, beta = self.p
            d = (p1 - p2) * x
            return d * torch.sigmoid(beta * d) + p2 * x

    class Scaled(torch.nn.Module):
        def __init__(self, a, f):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor([a], dtype=torch.float64))
            self.f = f

        def forward(self, x):
            return self.a * self.f(x)

    nl_acts = [activations.get("swish", beta=0.7), activations.get("acon_c", p1=1.2, p2=0.1, beta=0.9),
               activations.get("scaled", base="tanh", a=1.7159, learnable=True), "gelu",
               activations.get("gelu", approximate="tanh"), "prelu", "elu", "identity"]
    t_acts = [Swish(0.7), AconC(1.2, 0.1, 0.9), Scaled(1.7159, torch.tanh), torch.nn.GELU(),
              torch.nn.GELU(approximate="tanh"), torch.nn.PReLU(init=0.25), torch.nn.ELU(), torch.nn.Identity()]
    widths = [4, 8, 8, 7, 8, 6, 8, 5, 3]
    net = nl.Sequential([nl.Dense(widths[i], widths[i + 1], activation=a, init="he_normal", bias_init=0.1)
                         for i, a in enumerate(nl_acts)], loss="softmax_cross_entropy", seed=5)
    X, y = _data(net, n=11, seed=9)
    loss_nl, grads = net.loss_and_grads(X, y)
    tnet = _torch_twin(net, t_acts, torch)
    lt = _torch_loss(net, tnet(torch.from_numpy(X)), y, torch)
    lt.backward()
    assert loss_nl == pytest.approx(lt.item(), rel=1e-10)
    mods = list(tnet)
    tg = []
    for li in range(len(net.layers)):
        tg += [mods[2 * li].weight.grad.numpy().T, mods[2 * li].bias.grad.numpy()]
        act = mods[2 * li + 1]
        grads_act = [p.grad.numpy().reshape(-1) for p in act.parameters()]
        tg += [g[k:k + 1] for g in grads_act for k in range(g.size)]
    assert len(tg) == len(grads)
    for name, g, t in zip(net.param_names(), grads, tg):
        np.testing.assert_allclose(g, t, rtol=1e-9, atol=1e-12, err_msg=name)


# ---------------------------------------------------------------- 7. custom activations inside a network
CUSTOM = ("nnlab_test_sq_softsign", "nnlab_test_scaled_softsign", "nnlab_test_bad_atan")


@pytest.fixture(scope="module")
def custom_acts():
    """Two user activations, registered once for the module (one custom kernel set is compiled)."""
    for name in CUSTOM:
        if name in activations.names():
            activations.unregister(name)
    # z / sqrt(1 + z^2): smooth, bounded; its derivative (1 + z^2)^(-3/2)
    activations.register(CUSTOM[0], lambda z: z / math.sqrt(1.0 + z * z),
                         lambda z: 1.0 / ((1.0 + z * z) * math.sqrt(1.0 + z * z)))
    # c * z / (1 + |z|) with a learnable c
    activations.register(CUSTOM[1], lambda z, c: c * z / (1.0 + abs(z)),
                         lambda z, c: c / ((1.0 + abs(z)) * (1.0 + abs(z))),
                         params={"c": 1.5}, learnable=("c",),
                         param_derivatives={"c": lambda z, c: z / (1.0 + abs(z))})
    # a planted bug: atan with a derivative 1% too large
    activations.register(CUSTOM[2], lambda z: math.atan(z), lambda z: 1.01 / (1.0 + z * z))
    yield CUSTOM
    for name in CUSTOM:
        if name in activations.names():
            activations.unregister(name)


def _custom_net(dtype="float64"):
    return nl.Sequential([nl.Dense(3, 6, activation=CUSTOM[0]), nl.Dense(6, 5, activation=CUSTOM[1]),
                          nl.Dense(5, 5, activation="tanh"), nl.Dense(5, 2)],
                         loss="mse", seed=2, dtype=dtype)


def test_custom_activation_in_network_passes_gradcheck(custom_acts):
    net = _custom_net()
    assert "1.act.c" in net.param_names()
    assert dict(zip(net.param_names(), net.params()))["1.act.c"][0] == 1.5
    X, y = _data(net, n=6)
    res = nl.gradcheck.check_network(net, X, y)
    assert res.ok, str(res)
    # and the forward really is the registered function
    W1, b1 = net.params()[:2]
    Z = X @ W1 + b1
    np.testing.assert_allclose(net.layer_inputs(X)[0][2], Z / np.sqrt(1 + Z * Z), rtol=1e-12)


def test_check_network_catches_a_wrong_custom_derivative(custom_acts):
    net = nl.Sequential([nl.Dense(3, 4, activation="tanh"), nl.Dense(4, 4, activation=CUSTOM[2]),
                         nl.Dense(4, 2)], loss="mse", seed=0)
    X, y = _data(net)
    res = nl.gradcheck.check_network(net, X, y)
    assert not res.ok
    assert res.where in ("0.W", "0.b", "1.W", "1.b")  # the parameters upstream of the bad derivative
    assert "FAIL" in str(res)
    # and the activation check pins it on the activation itself
    (d,) = nl.gradcheck.check_activation(CUSTOM[2])
    assert not d.ok and d.rel_error == pytest.approx(0.01, rel=1e-3)


def test_custom_activation_save_load(custom_acts, tmp_path):
    net = _custom_net()
    p = dict(zip(net.param_names(), net.params()))
    p["1.act.c"][0] = 0.8  # a "trained" value of the learnable parameter
    X, _ = _data(net)
    out = net.forward(X)
    path = tmp_path / "custom.npz"
    net.save(path)
    net2 = nl.load(path)
    np.testing.assert_array_equal(net2.forward(X), out)
    for a, b in zip(net.params(), net2.params()):
        np.testing.assert_array_equal(a, b)
    # unregistered: loading names the missing activation
    activations.unregister(CUSTOM[1])
    try:
        with pytest.raises(UnknownNameError, match=CUSTOM[1]):
            nl.load(path)
    finally:
        activations.register(CUSTOM[1], lambda z, c: c * z / (1.0 + abs(z)),
                             lambda z, c: c / ((1.0 + abs(z)) * (1.0 + abs(z))),
                             params={"c": 1.5}, learnable=("c",),
                             param_derivatives={"c": lambda z, c: z / (1.0 + abs(z))})
    net3 = nl.load(path)  # registered again: loads (no kernel is run here: that would recompile)
    for a, b in zip(net.params(), net3.params()):
        np.testing.assert_array_equal(a, b)
    assert net3.config() == net.config()


def test_a_shared_activation_object_is_copied_per_layer():
    act = nl.activations.get("prelu")
    net = nl.Sequential([nl.Dense(3, 4, activation=act), nl.Dense(4, 2, activation=act)], seed=0)
    params = net.params()
    params[2][0] = 0.1   # layer 0's alpha
    params[5][0] = 0.7   # layer 1's alpha
    net2 = net.copy()
    alphas = [layer.activation.hyperparams["alpha"] for layer in net2.layers]
    assert alphas == [0.1, 0.7]
    assert act.hyperparams["alpha"] == 0.25  # the user's object is left alone


# ---------------------------------------------------------------- one executor for compared networks
def test_share_executor_puts_both_networks_on_the_covering_executor_with_the_same_bits():
    from nnlab.kernels import cpu, kinds_set
    from nnlab.network import share_executor

    def plain():
        return _mlp(["tanh", "tanh", "identity"], [4, 6, 6, 2], loss="softmax_cross_entropy", seed=5)

    def residual():
        return nl.Sequential([nl.Dense(4, 6, activation="tanh"), nl.Residual([nl.Dense(6, 6, activation="tanh")]),
                              nl.Dense(6, 2)], loss="softmax_cross_entropy", seed=5)

    alone, shared, other = plain(), plain(), residual()
    assert alone._kernels is kinds_set(cpu.EXECUTOR_KINDS[0])  # a dense stack: the dense executor
    share_executor(shared, other)
    covering = other._kernels
    assert shared._kernels is covering and covering is not alone._kernels
    assert shared._shared_kinds >= other._host_kinds()
    X, y = _data(alone, n=9)
    runs = []
    for net in (alone, shared):
        tr = nl.Trainer(net, nl.optim.Adam(lr=0.01), monitor=nl.GradientMonitor(net))
        losses = [tr.step(X, y) for _ in range(3)]
        runs.append((losses, [p.copy() for p in net.params()], net.forward(X), tr.evaluate(X, y)))
    (l0, p0, f0, e0), (l1, p1, f1, e1) = runs
    assert l0 == l1 and e0 == e1 and np.array_equal(f0, f1)  # the same bits on either executor
    assert all(np.array_equal(a, b) for a, b in zip(p0, p1))
    shared.to("cpu")
    assert shared._kernels is covering  # the choice stays with the network
    with pytest.raises(nl.errors.HyperparameterError, match="got list"):
        share_executor(shared, [1, 2])
    with pytest.raises(nl.errors.HyperparameterError, match="got none"):
        share_executor()
    assert shared._kernels is covering  # a refused call changes nothing
