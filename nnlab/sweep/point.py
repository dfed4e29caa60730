"""The built-in grid point: build a seeded network from a point's settings, train it, measure it.

Everything random comes from the point's own ``seed`` (weights: ``Sequential(seed=seed)``; batch
order: ``np.random.default_rng(seed)``), and the data subset is fixed (the first ``samples`` rows
of the permutation ``default_rng(0)``), so a point gives the same numbers in this process, in a
Dask worker on this machine or on another one, and in a rerun.
"""

import functools
import math

import numpy as np

from .grid import SETTINGS


@functools.lru_cache(maxsize=8)
def dataset(name, samples, standardize):
    """(X, y, task) of a point's data: a fixed subset, optionally standardised (cached per process)."""
    from .. import datasets

    X, y = datasets.load(name)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"the sweep's training point takes tabular data; {name!r} has shape {X.shape}")
    if samples and samples < X.shape[0]:
        idx = np.sort(np.random.default_rng(0).permutation(X.shape[0])[:samples])
        X, y = X[idx], y[idx]
    if standardize:
        sd = X.std(axis=0)
        X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    X.setflags(write=False)
    y = np.asarray(y)
    y.setflags(write=False)
    return X, y, datasets.TASKS[name]


def build_net(p, n_in, n_out, loss):
    """The point's network: ``depth`` hidden Dense(width) layers and a linear output layer."""
    from .. import init as _init
    from ..network import Dense, Sequential

    widths = [n_in] + [p["width"]] * p["depth"] + [n_out]
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        act = p["activation"] if i < p["depth"] else "identity"
        if p["init"] == "meanfield":
            w = _init.get("normal", std=math.sqrt(p["sigma_w2"] / a))
            bias = _init.get("normal", std=math.sqrt(p["sigma_b2"])) if p["sigma_b2"] > 0 else 0.0
        else:
            w, bias = p["init"], 0.0
        layers.append(Dense(a, b, activation=act, init=w, bias_init=bias))
    return Sequential(layers, loss=loss, seed=p["seed"], dtype=p["dtype"])


def weight_grad_norms(net, X, y):
    """‖∂L/∂W_l‖ of every Dense layer (the first hidden layer first) on (X, y), eval mode."""
    _, grads = net.loss_and_grads(X, y, training=False)
    out = []
    for name, g in zip(net.param_names(), grads):
        if name.endswith(".W"):
            g = np.asarray(g, dtype=np.float64)
            out.append(float(np.sqrt(np.sum(g * g))))
    return out


def decay_rate(norms):
    """The per-layer decay rate of the squared gradient norm towards the input: minus the slope of
    ln ‖∂L/∂W_l‖² over the bulk hidden layers l (a quarter of them cut from each end), per layer
    going from the output towards the input. Mean-field theory predicts −ln χ₁ (negative: the
    gradient grows towards the input). None when there are fewer than 4 hidden layers or a norm is
    not positive and finite."""
    depth = len(norms) - 1  # the last entry is the output layer
    if depth < 4:
        return None
    cut = math.ceil(depth / 4)
    y = np.asarray(norms[cut:depth - cut], dtype=np.float64)
    if y.size < 2 or not np.all(np.isfinite(y) & (y > 0)):
        return None
    x = np.arange(y.size, dtype=np.float64)
    slope = float(np.polyfit(x, 2.0 * np.log(y), 1)[0])  # d ln‖g‖² / dl, l growing towards the output
    return slope


def _finite(x):
    x = float(x)
    return x if math.isfinite(x) else None


def train_point(params):
    """Train the network of one point and return its metrics (a JSON-safe dict).

    Metrics: ``loss_init``/``accuracy_init`` and ``loss``/``accuracy`` (whole training subset, eval
    mode; accuracy None for regression), ``steps_done`` and ``stopped`` (why training ended early,
    e.g. a non-finite gradient); with ``record`` containing ``grad_norms``: ``grad_norms_init`` and
    ``grad_norms`` (per Dense layer, input side first, on the first 256 rows) and
    ``grad_decay_init`` (:func:`decay_rate` at initialisation); with ``verdicts``: ``verdicts`` (the
    names of the GradientMonitor verdicts that fired).
    """
    from .. import optim
    from ..diagnostics import GradientMonitor
    from ..trainer import Trainer

    p = {k: params.get(k, s.default) for k, s in SETTINGS.items()}
    X, y, task = dataset(p["data"], p["samples"], p["standardize"])
    classes = int(np.max(y)) + 1 if task == "classification" else None
    n_out = classes if task == "classification" else (1 if y.ndim == 1 else y.shape[1])
    loss = "softmax_cross_entropy" if task == "classification" else "mse"
    net = build_net(p, X.shape[1], n_out, loss)
    kwargs = {"lr": p["lr"]}
    if p["optimizer"] == "sgd" and p["momentum"]:
        kwargs["momentum"] = p["momentum"]
    opt = optim.get(p["optimizer"], **kwargs)
    monitor = GradientMonitor(net) if "verdicts" in p["record"] else None
    trainer = Trainer(net, opt, clip=("global_norm", p["clip"]) if p["clip"] else None, monitor=monitor)
    Xe, ye = X[:256], y[:256]
    out = {}
    if "grad_norms" in p["record"]:
        g0 = weight_grad_norms(net, Xe, ye)
        out["grad_norms_init"] = [_finite(v) for v in g0]
        out["grad_decay_init"] = decay_rate(g0)
    loss0, acc0 = trainer.evaluate(X, y)
    out["loss_init"], out["accuracy_init"] = _finite(loss0), None if acc0 is None else float(acc0)
    rng = np.random.default_rng(p["seed"])
    n, bs = X.shape[0], min(p["batch_size"], X.shape[0])
    order, pos, done, stopped = rng.permutation(n), 0, 0, ""
    while done < p["steps"]:
        if pos + bs > n:  # a new epoch: a new permutation, full batches only
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + bs]
        pos += bs
        step_loss = trainer.step(np.ascontiguousarray(X[idx]), np.ascontiguousarray(y[idx]))
        if not trainer.last.applied:
            stopped = (f"non-finite {'loss' if not math.isfinite(step_loss) else 'gradient'} at step {done + 1}; "
                       "weights kept")
            break
        done += 1
    loss1, acc1 = trainer.evaluate(X, y)
    out["loss"], out["accuracy"] = _finite(loss1), None if acc1 is None else float(acc1)
    out["steps_done"], out["stopped"] = done, stopped
    if "grad_norms" in p["record"]:
        out["grad_norms"] = [_finite(v) for v in weight_grad_norms(net, Xe, ye)]
    if monitor is not None:
        out["verdicts"] = [v.name for v in monitor.fired()]
    return out


def cost(params):
    """A rough relative cost of a point (to start the expensive ones first)."""
    p = {k: params.get(k, s.default) for k, s in SETTINGS.items()}
    return (p["depth"] * p["width"] ** 2 + p["width"] * 64) * max(p["steps"], 1) * p["batch_size"]


def warm(points):
    """Compile (or load from Numba's cache) the kernels the points will use, once, in this process:
    a tiny point of each dtype and activation, so that worker processes load the cache instead of
    compiling."""
    seen = set()
    for p in points:
        sig = (p.get("dtype", "float32"), p.get("activation", "tanh"), p.get("optimizer", "sgd"),
               bool(p.get("clip")), "verdicts" in p.get("record", ()))
        if sig in seen:
            continue
        seen.add(sig)
        tiny = dict(p, depth=1, width=4, steps=2, samples=64, batch_size=16)
        train_point(tiny)
