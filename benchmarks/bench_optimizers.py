"""The optimizer update alone: one compiled ``opt_update`` over a flat buffer, per optimizer and
option set (the loop each takes: plain, weight decay, AdamW's decoupled decay, the general loop).

    python benchmarks/bench_optimizers.py [--n 269322] [--dtype float32|float64|both] [--repeat 100]

Prints the median time per update over ``--repeat`` calls, after two warm-up calls, with the data
(parameters, gradients, state: a few MB) warm in the caches -- the update as measured alone, not
inside a training step (docs/performance.md, "context", shows what the step adds). A measurement,
never an assertion; compare numbers within one run.
"""

import argparse
import time

import numpy as np

VARIANTS = (
    ("sgd", dict(lr=1e-2)),
    ("sgd momentum", dict(lr=1e-2, momentum=0.9)),
    ("sgd momentum + weight_decay", dict(lr=1e-2, momentum=0.9, weight_decay=5e-4)),
    ("adagrad", dict(lr=1e-2)),
    ("adagrad + weight_decay", dict(lr=1e-2, weight_decay=1e-4)),
    ("adadelta", dict()),
    ("rmsprop", dict(lr=1e-3)),
    ("rmsprop centered + momentum", dict(lr=1e-3, centered=True, momentum=0.9)),
    ("adam", dict(lr=1e-3)),
    ("adam amsgrad", dict(lr=1e-3, amsgrad=True)),
    ("adam + weight_decay", dict(lr=1e-3, weight_decay=1e-4)),
    ("adamw", dict(lr=1e-3, weight_decay=0.01)),
    ("nadam", dict(lr=1e-3)),
    ("adamax", dict(lr=1e-3)),
    ("rprop", dict(lr=1e-3)),
    ("smorms3", dict(lr=1e-3)),
)


def time_update(name, kwargs, n, dtype, repeat, seed=0):
    import nnlab as nl
    from nnlab.kernels import optim_cpu as OK

    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 1e-2).astype(dtype)
    opt = nl.optim.get(name.split()[0], **kwargs)
    code, hp, t, state = opt.begin_flat(p)
    for _ in range(2):
        OK.opt_update(code, hp, t, p, g, state)
    ts = np.empty(repeat)
    for k in range(repeat):
        t0 = time.perf_counter()
        OK.opt_update(code, hp, t, p, g, state)
        ts[k] = time.perf_counter() - t0
    return float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=269_322, help="parameters (default: the mnist-like network's)")
    ap.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    ap.add_argument("--repeat", type=int, default=100)
    args = ap.parse_args(argv)
    if args.n < 1 or args.repeat < 1:
        ap.error("--n and --repeat must be >= 1")
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    print(f"opt_update of {args.n:,} parameters, median of {args.repeat} calls (us)")
    print(f"{'optimizer':32s}" + "".join(f"{d:>10s}" for d in dtypes))
    out = {}
    for name, kwargs in VARIANTS:
        row = [time_update(name, kwargs, args.n, np.dtype(d), args.repeat) for d in dtypes]
        out[name] = dict(zip(dtypes, row))
        print(f"{name:32s}" + "".join(f"{t * 1e6:10.1f}" for t in row), flush=True)
    return out


if __name__ == "__main__":
    main()
