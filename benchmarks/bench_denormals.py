"""Benchmark: flush-to-zero on a deep float32 sigmoid MLP, whose gradients go subnormal.

    python benchmarks/bench_denormals.py [--depth 50] [--steps 30] [--repeat 5] [--json out.json]

The deep-sigmoid net: ``--depth`` sigmoid layers of width 64 and a linear 64 -> 10 output, batch 64,
float32, softmax cross-entropy, SGD(lr=0.01, momentum=0.9), every weight and bias drawn from
U(-1/sqrt(64), 1/sqrt(64)) -- PyTorch's default ``nn.Linear`` initialisation -- so that the backward
signal shrinks by ~0.14 per layer and reaches float32's subnormal range (< 1.18e-38) in the lower
layers. It times ``Trainer.step`` with flush-to-zero off and on (``nl.backend.flush_denormals``),
prints the fraction of gradient entries that are subnormal (from ``nl.GradientMonitor``) and the
speed-up; then the same with PyTorch eager (``torch.set_flush_denormal``) when torch is importable,
on the same weights. Blocks of steps alternate (off, on) ``--repeat`` times from the same starting
weights; each side keeps its fastest block (robust on a shared machine).
"""

import argparse
import json
import math
import time

import numpy as np

WIDTH, BATCH, N_CLASSES = 64, 64, 10


def build(depth, seed=0):
    import nnlab as nl

    b = 1.0 / math.sqrt(WIDTH)
    init = nl.init.get("uniform", low=-b, high=b)
    layers = [nl.Dense(WIDTH, WIDTH, activation="sigmoid", init=init, bias_init=init) for _ in range(depth)]
    layers.append(nl.Dense(WIDTH, N_CLASSES, init=init, bias_init=init))
    return nl.Sequential(layers, loss="softmax_cross_entropy", seed=seed, dtype="float32")


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((BATCH, WIDTH)).astype(np.float32), rng.integers(0, N_CLASSES, size=BATCH)


def subnormal_report(net, X, y, ftz):
    """(fraction of all gradient entries that are subnormal, worst layer's fraction, its index)."""
    import nnlab as nl

    mon = nl.GradientMonitor(net.copy())
    with nl.backend.flush_denormals(ftz):
        mon.observe(X, y)
    sub, n = mon.series("subnormal")[0], mon.series("n_grad")[0]
    worst = int(np.argmax(sub / n))
    return float(sub.sum() / n.sum()), float(sub[worst] / n[worst]), worst + 1, mon


def time_nnlab(depth, steps, repeat, X, y):
    import nnlab as nl

    start = build(depth)
    best = {False: math.inf, True: math.inf}
    for _ in range(repeat):
        for ftz in (False, True):
            net = start.copy()
            trainer = nl.Trainer(net, nl.optim.SGD(lr=0.01, momentum=0.9))
            with nl.backend.flush_denormals(ftz):
                trainer.step(X, y)  # workspace, optimizer state
                t0 = time.perf_counter()
                for _ in range(steps):
                    trainer.step(X, y)
                best[ftz] = min(best[ftz], (time.perf_counter() - t0) / steps)
    return best


def time_torch(depth, steps, repeat, X, y, threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    start = build(depth)
    params = start.params()
    Xt, yt = torch.tensor(X), torch.tensor(y, dtype=torch.long)

    def model():
        layers = []
        for i in range(depth + 1):
            lin = torch.nn.Linear(WIDTH, WIDTH if i < depth else N_CLASSES)
            with torch.no_grad():
                lin.weight.copy_(torch.tensor(params[2 * i].T))
                lin.bias.copy_(torch.tensor(params[2 * i + 1]))
            layers.append(lin)
            if i < depth:
                layers.append(torch.nn.Sigmoid())
        return torch.nn.Sequential(*layers)

    best = {False: math.inf, True: math.inf}
    old = False
    try:
        for _ in range(repeat):
            for ftz in (False, True):
                net = model()
                opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
                torch.set_flush_denormal(ftz)

                def step(net=net, opt=opt):
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(net(Xt), yt).backward()
                    opt.step()

                step()
                t0 = time.perf_counter()
                for _ in range(steps):
                    step()
                best[ftz] = min(best[ftz], (time.perf_counter() - t0) / steps)
    finally:
        torch.set_flush_denormal(old)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import nnlab as nl

    if not nl.backend.FTZ_SUPPORTED:
        print("flush-to-zero is not supported on this CPU (not x86): nothing to compare")
        return {}
    X, y = data()
    net = build(args.depth)
    frac, worst, layer, mon = subnormal_report(net, X, y, False)
    frac_ftz, _, _, _ = subnormal_report(net, X, y, True)
    g = mon.series("grad_norm")[0]
    print(f"{args.depth} sigmoid layers of {WIDTH} + linear {WIDTH}->{N_CLASSES}, batch {BATCH}, float32, "
          f"U(+-1/sqrt({WIDTH})) init, SGD(lr=0.01, momentum=0.9)")
    print(f"||dL/dW_l||: layer 1 {g[0]:.2e}, layer {args.depth // 2} {g[args.depth // 2 - 1]:.2e}, "
          f"output {g[-1]:.2e}")
    print(f"subnormal gradient entries (dL/dW and E), flush-to-zero off: {100 * frac:.1f}% of all, "
          f"{100 * worst:.1f}% in layer {layer}; with flush-to-zero on: {100 * frac_ftz:.1f}%")
    nn = time_nnlab(args.depth, args.steps, args.repeat, X, y)
    out = {"depth": args.depth, "width": WIDTH, "batch": BATCH, "subnormal_fraction": frac,
           "subnormal_fraction_worst_layer": worst, "worst_layer": layer,
           "nnlab_ms": {"ftz_off": 1e3 * nn[False], "ftz_on": 1e3 * nn[True]},
           "nnlab_speedup": nn[False] / nn[True]}
    print(f"nnlab  Trainer.step: {1e3 * nn[False]:7.2f} ms flush-to-zero off, {1e3 * nn[True]:7.2f} ms on "
          f"({nn[False] / nn[True]:.2f}x)")
    tt = time_torch(args.depth, args.steps, args.repeat, X, y, args.torch_threads)
    if tt is not None:
        import torch

        out["torch_ms"] = {"ftz_off": 1e3 * tt[False], "ftz_on": 1e3 * tt[True]}
        out["torch_speedup"] = tt[False] / tt[True]
        out["torch"] = {"version": torch.__version__, "threads": args.torch_threads}
        print(f"torch  eager step:   {1e3 * tt[False]:7.2f} ms set_flush_denormal(False), {1e3 * tt[True]:7.2f} ms "
              f"True ({tt[False] / tt[True]:.2f}x; torch {torch.__version__}, {args.torch_threads} thread(s))")
    else:
        print("torch is not importable: skipped")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return out


if __name__ == "__main__":
    main()
