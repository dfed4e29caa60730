"""Benchmark: one forward + backward (loss and all gradients) per call, nnlab vs PyTorch/JAX/NumPy.

    python benchmarks/bench_grad.py [--repeat 50] [--json out.json] [--configs tiny,mnist]

Prints median time per call and the ratio other/nnlab (> 1 means nnlab is faster) for each
framework that is importable. Before timing, checks that every framework computes the same loss
and gradients on the same weights. Timings are measurements, not assertions: compare ratios
from one run (the machine is shared and noisy).
"""

import argparse
import json
import math
import time

import numpy as np

CONFIGS = {
    # name: (widths, batch, activation, loss)
    "tiny": ([8, 16, 16, 1], 16, "tanh", "mse"),
    "mnist": ([784, 256, 256, 10], 128, "relu", "softmax_cross_entropy"),
    "deep-narrow": ([64] + [64] * 50 + [10], 64, "sigmoid", "softmax_cross_entropy"),
    "wide": ([1024, 2048, 2048, 10], 256, "relu", "softmax_cross_entropy"),
}


def make_data(widths, batch, loss, rng):
    X = rng.normal(size=(batch, widths[0])).astype(np.float32)
    if loss == "mse":
        y = rng.normal(size=(batch, widths[-1])).astype(np.float32)
    else:
        y = rng.integers(0, widths[-1], size=batch)
    return X, y


def build_nnlab(widths, act, loss):
    import nnlab as nl

    layers = [nl.Dense(widths[i], widths[i + 1], activation=act if i < len(widths) - 2 else "identity",
                       init="he_normal" if act == "relu" else "xavier_normal")
              for i in range(len(widths) - 1)]
    return nl.Sequential(layers, loss=loss, seed=0, dtype="float32")


def time_calls(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_torch(net, widths, act, loss, X, y, repeat):
    import torch

    torch.set_num_threads(2)
    params = [torch.tensor(p, requires_grad=True) for p in net.params()]
    Xt = torch.tensor(X)
    yt = torch.tensor(y)
    f = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}[act]

    def step():
        for p in params:
            p.grad = None
        a = Xt
        for i in range(0, len(params), 2):
            a = a @ params[i] + params[i + 1]
            if i + 2 < len(params):
                a = f(a)
        if loss == "mse":
            L = 0.5 * ((a - yt) ** 2).sum() / a.shape[0]
        else:
            L = torch.nn.functional.cross_entropy(a, yt)
        L.backward()
        return L

    L = step()
    return time_calls(step, repeat), float(L.detach()), [p.grad.numpy() for p in params]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for name in args.configs.split(","):
        widths, batch, act, loss = CONFIGS[name]
        rng = np.random.default_rng(0)
        X, y = make_data(widths, batch, loss, rng)
        t0 = time.perf_counter()
        net = build_nnlab(widths, act, loss)
        loss_nn, grads_nn = net.loss_and_grads(X, y)
        first = time.perf_counter() - t0
        t_nn = time_calls(lambda net=net, X=X, y=y: net.loss_and_grads(X, y), args.repeat)
        row = {"config": name, "nnlab_s": t_nn, "nnlab_first_call_s": first}
        try:
            t_t, loss_t, grads_t = bench_torch(net, widths, act, loss, X, y, args.repeat)
            agree = math.isclose(loss_t, loss_nn, rel_tol=1e-4) and all(
                np.allclose(a, b, rtol=1e-3, atol=1e-5 * max(1.0, float(np.abs(b).max())))
                for a, b in zip(grads_nn, grads_t))
            row.update(torch_s=t_t, torch_over_nnlab=t_t / t_nn, torch_agrees=bool(agree))
        except ImportError:
            pass
        rows.append(row)
        extra = (f"  torch {row['torch_s'] * 1e6:9.1f} us  ratio torch/nnlab {row['torch_over_nnlab']:5.2f}"
                 f"  agree={row['torch_agrees']}") if "torch_s" in row else "  (torch not installed)"
        print(f"{name:12s} nnlab {t_nn * 1e6:9.1f} us (first call {first:5.2f} s){extra}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
