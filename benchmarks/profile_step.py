"""Profile the parts of nnlab's fused training step (a development tool; the benchmark against
PyTorch/JAX is ``bench_train_step.py``).

    python benchmarks/profile_step.py [--configs tiny,mnist,deep,wide] [--opt sgd|adam] [--ftz]
    python benchmarks/profile_step.py --baseline /tmp/base/nnlab_base [--configs ...]

The first form prints, per configuration (float32, the benchmark's), the median and minimum time of

* ``step``      ``Trainer.step(X, y)`` (input checks included),
* ``_step``     ``Trainer._step`` on pre-validated arrays (optimizer bookkeeping, the kernel call),
* ``kernel``    ``train_step`` called directly (forward, loss, backward, clip, update),
* ``lossgrad``  ``loss_and_grad`` (forward with stored derivatives, loss, backward),
* ``forward``   ``run_forward``,
* ``update``    ``opt_update`` over the flat buffer, ``norm`` ``clip_flat`` without clipping,
* ``fit/step``  ``Trainer.fit`` wall time per step (compiled epochs; epoch evaluation included),

so each layer's cost is a difference of two columns. The second form times ``Trainer.step``
of a baseline copy of the package (a directory holding an older ``nnlab`` renamed, e.g.
``cp -r nnlab /tmp/base/nnlab_base`` before a change) against this tree, interleaved in rounds so
that load from other processes hits both alike. The machine is shared: compare numbers of one
run only, and prefer the minimum when the median is disturbed.
"""

import argparse
import importlib
import os
import sys
import time

import numpy as np

CONFIGS = {  # name: (widths, batch, activation, loss) -- the benchmark's configurations
    "tiny": ([8, 16, 16, 1], 16, "tanh", "mse"),
    "mnist": ([784, 256, 256, 10], 128, "relu", "softmax_cross_entropy"),
    "deep": ([64] + [64] * 50 + [10], 64, "sigmoid", "softmax_cross_entropy"),
    "wide": ([1024, 2048, 2048, 10], 256, "relu", "softmax_cross_entropy"),
}
REPEAT = {"tiny": 3000, "mnist": 300, "deep": 200, "wide": 20}


def build(nl, name, opt_name):
    widths, batch, act, loss = CONFIGS[name]
    layers = [nl.Dense(widths[i], widths[i + 1], activation=act if i < len(widths) - 2 else "identity",
                       init="he_normal" if act == "relu" else "xavier_normal")
              for i in range(len(widths) - 1)]
    net = nl.Sequential(layers, loss=loss, seed=0, dtype="float32")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch, widths[0])).astype(np.float32)
    y = (rng.normal(size=(batch, widths[-1])).astype(np.float32) if loss == "mse"
         else rng.integers(0, widths[-1], batch))
    opt = nl.optim.SGD(lr=1e-3, momentum=0.9) if opt_name == "sgd" else nl.optim.Adam(lr=1e-4)
    return nl.Trainer(net, opt), X, y


def times(fn, repeat):
    for _ in range(max(3, repeat // 20)):
        fn()
    ts = np.empty(repeat)
    clock = time.perf_counter
    for k in range(repeat):
        t0 = clock()
        fn()
        ts[k] = clock() - t0
    return float(np.median(ts)), float(ts.min())


def fmt(t):
    return f"{t * 1e6:.1f} µs" if t < 1e-3 else f"{t * 1e3:.3f} ms"


def profile(nl, name, opt_name, repeat):
    from nnlab.kernels import optim_cpu as OK

    tr, X, y = build(nl, name, opt_name)
    net = tr.net
    Xp, Yp = net._prepare(X, y)
    k = net._kernels
    ws, dws = net._workspace(Xp.shape[0])
    grads = np.zeros_like(net._flat)
    tr.step(X, y)  # creates the optimizer state
    code, hp, t, state = tr.optimizer.begin_flat(net._flat)
    out = np.zeros(3)
    args = (net._ops, net._hp, net._tens, net._flat, grads, ws, dws, Xp, Yp, net._loss_code, True, -1)
    parts = {
        "step": lambda: tr.step(X, y),
        "_step": lambda: tr._step(Xp, Yp),
        "kernel": lambda: k.train_step(*args, OK.CLIP_NONE, 0.0, tr._offsets, code, hp, t, state, True, out,
                                       False, *tr._no_monitor),
        "lossgrad": lambda: k.loss_and_grad(*args),
        "forward": lambda: k.run_forward(net._ops, net._hp, net._tens, net._flat, ws, Xp, True, -1),
        "update": lambda: OK.opt_update(code, hp, t, net._flat, grads, state),
        "norm": lambda: OK.clip_flat(OK.CLIP_NONE, 0.0, grads, tr._offsets),
    }
    res = {key: times(fn, repeat) for key, fn in parts.items()}
    rng = np.random.default_rng(1)
    batch = Xp.shape[0]
    n_rows = batch * max(8, min(64, repeat // 10))
    Xf = rng.normal(size=(n_rows, Xp.shape[1])).astype(np.float32)
    yf = np.resize(y, (n_rows,) + y.shape[1:])
    res["fit/step"] = tuple(v / (n_rows // batch) for v in times(lambda: tr.fit(Xf, yf, batch_size=batch), 5))
    print(f"{name:6s} ({opt_name}, {net.n_params} params), median/min:", flush=True)
    print("   " + "  ".join(f"{key} {fmt(v[0])}/{fmt(v[1])}" for key, v in res.items()), flush=True)


def compare(baseline, name, opt_name):
    """Trainer.step of the baseline package and of this tree, interleaved in rounds."""
    import nnlab

    sys.path.insert(0, os.path.dirname(os.path.abspath(baseline)))
    base = importlib.import_module(os.path.basename(os.path.normpath(baseline)))
    per, rounds = {"tiny": (200, 30), "mnist": (20, 15), "deep": (20, 15), "wide": (2, 8)}[name]
    setups = {"baseline": build(base, name, opt_name), "this tree": build(nnlab, name, opt_name)}
    res = {key: [] for key in setups}
    for tr, X, y in setups.values():
        for _ in range(3):
            tr.step(X, y)
    clock = time.perf_counter
    for _ in range(rounds):
        for key, (tr, X, y) in setups.items():
            for _ in range(per):
                t0 = clock()
                tr.step(X, y)
                res[key].append(clock() - t0)
    b, d = np.array(res["baseline"]), np.array(res["this tree"])
    print(f"{name:6s} {opt_name}: baseline median {fmt(np.median(b))} min {fmt(b.min())} | this tree median "
          f"{fmt(np.median(d))} min {fmt(d.min())} | speedup {np.median(b) / np.median(d):.2f}x (median) "
          f"{b.min() / d.min():.2f}x (min)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="tiny,mnist,deep,wide")
    ap.add_argument("--opt", default="sgd", choices=("sgd", "adam"))
    ap.add_argument("--repeat", type=int, default=0, help="calls per measurement (default: per config)")
    ap.add_argument("--ftz", action="store_true", help="flush denormals to zero")
    ap.add_argument("--baseline", help="directory of a renamed copy of an older nnlab package to compare with")
    args = ap.parse_args()
    import nnlab as nl

    if args.ftz:
        nl.backend.set_flush_denormals(True)
    for name in args.configs.split(","):
        if args.baseline:
            compare(args.baseline, name, args.opt)
        else:
            profile(nl, name, args.opt, args.repeat or REPEAT[name])


if __name__ == "__main__":
    main()
