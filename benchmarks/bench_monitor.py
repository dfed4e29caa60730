"""Benchmark: what recording gradient health costs -- Trainer.step with and without a GradientMonitor.

    python benchmarks/bench_monitor.py [--repeat 7] [--dtype float32] [--json out.json]

Two networks, batch 64, softmax cross-entropy, SGD with momentum 0.9:

* ``digits``: 64-64-64-10, ReLU (He init), the digits-sized net of docs/training.md;
* ``deep-narrow``: 50 sigmoid layers of 64 (Xavier init) and a linear 64 -> 10 output layer.

Runs alternate (no monitor, monitor) ``--repeat`` times and keep each side's fastest mean step
time, which is robust to other processes on a shared machine. The monitor's statistics run in the
same compiled call as the step (nnlab.kernels.cpu.grad_stats / update_stats).
"""

import argparse
import json
import time

import numpy as np


def build(kind, dtype):
    import nnlab as nl

    if kind == "digits":
        layers = [nl.Dense(64, 64, activation="relu", init="he_normal"),
                  nl.Dense(64, 64, activation="relu", init="he_normal"), nl.Dense(64, 10, init="he_normal")]
    else:
        layers = [nl.Dense(64, 64, activation="sigmoid", init="xavier_normal") for _ in range(50)]
        layers.append(nl.Dense(64, 10, init="xavier_normal"))
    X, y = nl.datasets.load("digits")
    return nl.Sequential(layers, loss="softmax_cross_entropy", seed=0, dtype=dtype), X[:64], y[:64]


def run(kind, dtype, monitor, steps):
    import nnlab as nl

    net, X, y = build(kind, dtype)
    mon = nl.GradientMonitor(net) if monitor else None
    trainer = nl.Trainer(net, nl.optim.SGD(lr=0.01, momentum=0.9), monitor=mon)
    for _ in range(5):
        trainer.step(X, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.step(X, y)
    return (time.perf_counter() - t0) / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64", "both"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    dtypes = ["float64", "float32"] if args.dtype == "both" else [args.dtype]
    results = []
    for dtype in dtypes:
        for kind, steps in (("digits", 500), ("deep-narrow", 40)):
            run(kind, dtype, False, 2)  # load the kernels
            run(kind, dtype, True, 2)
            plain, rec = [], []
            for _ in range(args.repeat):
                plain.append(run(kind, dtype, False, steps))
                rec.append(run(kind, dtype, True, steps))
            a, b = min(plain), min(rec)
            results.append({"net": kind, "dtype": dtype, "ms_plain": 1e3 * a, "ms_monitor": 1e3 * b,
                            "overhead": b / a - 1})
            print(f"{kind:12s} {dtype}: step {1e3 * a:8.3f} ms, with monitor {1e3 * b:8.3f} ms "
                  f"(+{100 * (b / a - 1):.0f}%)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
