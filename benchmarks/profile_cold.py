"""Where the first run's time goes: per-function Numba compile times on an empty kernel cache.

    python benchmarks/profile_cold.py [TARGET ...] [--top 15] [--json FILE] [--shared]

A TARGET is a demo name (``vanishing``, ``exploding``, ...), ``step`` (the first ``Trainer.step``
of a small dense float64 network), ``step32`` (the float32 network of ``nnlab bench --cold step``),
``fit32`` (one epoch of ``Trainer.fit`` of that network) or ``step-lstm`` (the first step of an LSTM
network); default: ``vanishing step``. Each target runs in a child process with a fresh, empty ``NUMBA_CACHE_DIR`` (with
``--shared`` all targets share one cache, in the order given: "every other demo after the first").
The child records Numba's ``numba:compile`` events and prints, per target, its wall and CPU
seconds (user + system, children included), the total compile time, and the functions with the
largest compile time of their own (their callees' compile time subtracted; a caller's time
includes the LLVM optimisation of everything it links in). The machine may be shared: the CPU
seconds are the steadier number.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

STEP_SRC = """
import numpy as np, nnlab as nl
rng = np.random.default_rng(0)
X = rng.normal(size=(32, 8)); y = rng.integers(0, 3, 32)
net = nl.Sequential([nl.Dense(8, 16, activation="tanh"), nl.Dense(16, 3)], loss="softmax_cross_entropy", seed=0)
nl.Trainer(net, nl.optim.SGD(lr=0.1)).step(X, y)
"""

STEP32_SRC = """
import numpy as np, nnlab as nl
rng = np.random.default_rng(0)
X = rng.normal(size=(32, 8)).astype(np.float32); y = rng.integers(0, 3, 32)
net = nl.Sequential([nl.Dense(8, 16, activation="tanh"), nl.Dense(16, 3)], loss="softmax_cross_entropy", seed=0,
                    dtype="float32")
nl.Trainer(net, nl.optim.SGD(lr=0.1)).step(X, y)
"""

FIT32_SRC = STEP32_SRC.replace(".step(X, y)", ".fit(X, y, epochs=1, batch_size=8)")

STEP_LSTM_SRC = """
import numpy as np, nnlab as nl
rng = np.random.default_rng(0)
X = rng.normal(size=(16, 5, 2)); y = rng.normal(size=(16, 1))
net = nl.Sequential([nl.LSTM(2, 8), nl.Dense(8, 1)], loss="mse", seed=0)
nl.Trainer(net, nl.optim.Adam(lr=0.01)).step(X, y)
"""


def _child(target, out_path):
    from numba.core import event

    stack = []
    own = {}
    total = {}
    clock = time.perf_counter

    class Rec(event.Listener):
        def on_start(self, ev):
            stack.append([clock(), 0.0])

        def on_end(self, ev):
            t0, child = stack.pop()
            dt = clock() - t0
            if stack:
                stack[-1][1] += dt
            d = ev.data["dispatcher"]
            name = f"{d.py_func.__module__}.{d.py_func.__qualname__}"
            sig = ", ".join(str(a) for a in ev.data["args"])
            key = f"{name}({sig})"
            own[key] = own.get(key, 0.0) + dt - child
            if not stack:
                total[key] = total.get(key, 0.0) + dt

    event.register("numba:compile", Rec())
    t0 = clock()
    if target == "step":
        exec(STEP_SRC, {})
    elif target == "step32":
        exec(STEP32_SRC, {})
    elif target == "fit32":
        exec(FIT32_SRC, {})
    elif target == "step-lstm":
        exec(STEP_LSTM_SRC, {})
    else:
        from nnlab_cli.main import cli

        try:
            cli.main(["demo", target], standalone_mode=False)
        except SystemExit:
            pass
    wall = clock() - t0
    with open(out_path, "w") as fh:
        json.dump({"wall": wall, "own": own, "top": total}, fh)


def run_target(target, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, NNLAB_QUIET="1", NNLAB_WARMUP="0")  # what it compiles itself
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", target, out], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(out) as fh:
        rec = json.load(fh)
    os.remove(out)
    rec.update(target=target, process_wall=wall, cpu=cpu)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", default=["vanishing", "step"])
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", dest="json_path")
    ap.add_argument("--shared", action="store_true", help="one cache for all targets, in order")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(*args.child)
        return
    records = []
    with tempfile.TemporaryDirectory() as shared:
        for target in args.targets:
            with tempfile.TemporaryDirectory() as fresh:
                rec = run_target(target, shared if args.shared else fresh)
            records.append(rec)
            comp = sum(rec["own"].values())
            print(f"== {target}: process wall {rec['process_wall']:.1f} s, CPU {rec['cpu']:.1f} s, "
                  f"compile {comp:.1f} s ({len(rec['own'])} compiled functions)")
            print("   top-level compiles (time incl. callees):")
            for k, v in sorted(rec["top"].items(), key=lambda kv: -kv[1])[:args.top]:
                print(f"   {v:7.2f} s  {k[:150]}")
            print("   own compile time:")
            for k, v in sorted(rec["own"].items(), key=lambda kv: -kv[1])[:args.top]:
                print(f"   {v:7.2f} s  {k[:150]}")
            sys.stdout.flush()
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(records, fh, indent=1)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
