"""Profile the parts of an LSTM training step (a development tool; the comparison with PyTorch is
``nnlab bench``'s "layers" section).

    python benchmarks/profile_lstm.py [--batch 64] [--steps 50] [--hidden 128] [--inputs 1]
        [--repeat 30] [--baseline /tmp/base/nnlab_base]

The network is the benchmark's: ``LSTM(inputs, hidden)`` + ``Dense(hidden, 1)``, many-to-one, MSE,
Adam, float32. Three tables, every number the median (and minimum) over ``--repeat`` calls:

* **whole**: ``Trainer.step`` and ``net.forward`` (and PyTorch's step and forward with the same
  architecture where torch is installed; with ``--baseline``, those of an older copy of the package,
  e.g. ``cp -r nnlab /tmp/base/nnlab_base`` before a change), interleaved in rounds with idle gaps
  so that load from other processes hits all alike;
* **the step's parts** as the kernels run them now: the calls of ``nnlab.kernels.recurrent`` on the
  trainer's own buffers (input copy and projection, forward sweeps, backward sweeps, the products
  over all steps), the optimizer update, and the rest of the step (the Dense layer, the loss,
  clipping, Python) as the difference;
* **per time step**: each piece of one step of the recurrence -- the recurrent products, the gate
  math forward and backward, the per-step sums -- timed alone on one thread for one block of rows
  (the way the layer runs it now) and for the whole batch with the products on the BLAS's threads
  (the way it ran before the blocks), and the product for ∂L/∂W_hh over all steps both ways.

The machine is shared: compare numbers of one run only, prefer the minimum when the median is
disturbed, and run it quiet (``nnlab bench --wait-quiet`` has a waiting loop; this tool does not).
"""

import argparse
import importlib
import os
import sys
import time

import numpy as np


def build(nl, N, T, F, H, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, T, F)).astype(np.float32)
    y = rng.standard_normal((N, 1)).astype(np.float32)
    net = nl.Sequential([nl.LSTM(F, H), nl.Dense(H, 1)], loss="mse", seed=seed, dtype="float32")
    tr = nl.Trainer(net, nl.optim.Adam(lr=1e-3))
    tr.step(X, y)
    return net, tr, X, y


def times(fn, repeat, warm=3):
    for _ in range(warm):
        fn()
    ts = np.empty(repeat)
    for k in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts[k] = time.perf_counter() - t0
    return float(np.median(ts)), float(ts.min())


def fmt(t):
    return f"{t * 1e6:8.1f} us" if t < 1e-3 else f"{t * 1e3:8.3f} ms"


def torch_runner(N, T, F, H, X, y, threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    lstm, lin = torch.nn.LSTM(F, H, batch_first=True), torch.nn.Linear(H, 1)
    opt = torch.optim.Adam(list(lstm.parameters()) + list(lin.parameters()), lr=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)

    def step():
        opt.zero_grad(set_to_none=True)
        out = lin(lstm(Xt)[0][:, -1])
        (0.5 * ((out - yt) ** 2).sum() / N).backward()
        opt.step()

    def forward():
        with torch.no_grad():
            lin(lstm(Xt)[0][:, -1])

    return step, forward


def whole(args, nl):
    net, tr, X, y = build(nl, args.batch, args.steps, args.inputs, args.hidden)
    runs = {"nnlab step": lambda: tr.step(X, y), "nnlab forward": lambda: net.forward(X)}
    if args.baseline:
        sys.path.insert(0, os.path.dirname(os.path.abspath(args.baseline)))
        base = importlib.import_module(os.path.basename(os.path.normpath(args.baseline)))
        bnet, btr, _, _ = build(base, args.batch, args.steps, args.inputs, args.hidden)
        runs["baseline step"] = lambda: btr.step(X, y)
        runs["baseline forward"] = lambda: bnet.forward(X)
    t = torch_runner(args.batch, args.steps, args.inputs, args.hidden, X, y, nl.backend.get_num_threads() or 1)
    if t is not None:
        runs["torch step"], runs["torch forward"] = t
    res = {k: [] for k in runs}
    rounds = 3
    for _ in range(rounds):
        for k, fn in runs.items():
            time.sleep(0.25)  # BLAS/OpenMP worker threads of the previous one stop spinning
            res[k].append(times(fn, max(3, args.repeat // rounds), warm=2))
    print("\n== whole (median / min over rounds) ==")
    for k, v in res.items():
        print(f"  {k:22s} {fmt(float(np.median([m for m, _ in v])))} / {fmt(min(m for _, m in v))}")
    return res


def parts(args, nl):
    from nnlab.kernels import blas
    from nnlab.kernels import optim_cpu as OK
    from nnlab.kernels import recurrent as R
    from nnlab.kernels.layout import F_AUX, F_KIND, F_NIN, F_W, KIND_LSTM

    N, T, H = args.batch, args.steps, args.hidden
    G = 4 * H
    net, tr, X, y = build(nl, N, T, args.inputs, H)
    prog = net._prog_for(X.reshape(N, -1))
    ws, dws = net._workspace(N, prog.width)
    ops, hp, tens, params, grads = prog.ops, prog.hp, prog.tens, net._store, tr._grads
    i = int(np.flatnonzero(ops[:, F_KIND] == KIND_LSTM)[0])
    P = R._lstm_blocks(N, T, H, G, 4)
    F, aux, w = ops[i, F_NIN], ops[i, F_AUX], ops[i, F_W]
    Whh = params[w + F * G:w + F * G + H * G].reshape((H, G))
    spare = R._region(dws, tens, aux + 2, N)
    Wb, tb = (spare[:H * G].reshape((G, H)), False) if spare.size >= H * G else (Whh, True)
    small = F <= R.SMALL_IN
    acc = np.zeros((P, G * (1 + F) if small else G))
    Xk = X.reshape(N, -1)
    code, ohp, t, state = tr.optimizer.begin_flat(net._flat)

    def one_thread(fn):
        def run():
            before = blas.blas_threads()
            blas.set_blas_threads(1)
            fn()
            blas.set_blas_threads(before)
        return run if P > 1 else fn

    def project():
        R.to_time_major(Xk, R._region(ws, tens, aux + 1, N)[:T * N * F].reshape((T * N, F)), N, T, F)
        if P > 1:
            R._lstm_project_par(P, ops, tens, params, ws, i, N)
        else:
            R._lstm_project(ops, tens, params, ws, i, N, 0, T * N)

    def fwd():
        if P > 1:
            R._lstm_forward_par(P, ops, hp, tens, params, ws, i, N)
        else:
            R._lstm_forward_rows(ops, hp, tens, params, ws, i, N, 0, N)

    def bwd():
        acc[:] = 0.0
        if P > 1:
            R._lstm_backward_par(P, ops, hp, tens, params, ws, dws, i, N, Wb, tb, acc)
        else:
            R._lstm_backward_rows(ops, hp, tens, params, ws, dws, i, N, 0, N, Wb, tb, acc[0])

    def products():
        if P > 1:
            R._lstm_products_par(P, ops, hp, tens, grads, ws, dws, i, N)
        else:
            R._lstm_products(ops, hp, tens, grads, ws, dws, i, N, 0, G)

    pieces = {
        "step (Trainer.step)": lambda: tr.step(X, y),
        "input copy + projection": one_thread(project),
        f"forward sweeps ({P} block(s))": one_thread(fwd),
        "store W_hh^T": lambda: R._transpose_into(Whh, Wb) if not tb else None,
        f"backward sweeps ({P} block(s))": one_thread(bwd),
        "products dW_hh": one_thread(products),
        "optimizer update (Adam)": lambda: OK.opt_update(code, ohp, t, net._flat.copy(), grads, state.copy()),
    }
    res = {}
    for k, fn in pieces.items():
        time.sleep(0.1)
        res[k] = times(fn, args.repeat)
    rest = res["step (Trainer.step)"][0] - sum(v[0] for k, v in res.items() if k != "step (Trainer.step)")
    print(f"\n== the step's parts as the kernels run them ({P} block(s) of rows; median / min) ==")
    for k, v in res.items():
        print(f"  {k:32s} {fmt(v[0])} / {fmt(v[1])}")
    print(f"  {'rest (Dense, loss, clip, Python)':32s} {fmt(rest)}")
    return P, res


def per_step(args, nl, P):
    from numba import njit

    from nnlab.kernels import blas
    from nnlab.kernels import recurrent as R

    N, T, H, F = args.batch, args.steps, args.hidden, args.inputs
    G = 4 * H
    rng = np.random.default_rng(0)

    @njit
    def rep_gemm(k, A, ta, B, tb, C, acc):
        for _ in range(k):
            if acc:
                blas.gemm_acc(A, ta, B, tb, C)
            else:
                blas.gemm(A, ta, B, tb, C)

    @njit
    def rep_cell(k, Z, Gt, cp, cn, tc, hn, m, H):
        for _ in range(k):
            R._lstm_cell(Z, Gt, cp, cn, tc, hn, m, H)

    @njit
    def rep_back(k, dh, dc, Gt, cp, tc, dz, m, H):
        for _ in range(k):
            R._lstm_step_back(dh, dc, Gt, cp, tc, dz, m, H)

    @njit
    def rep_sums(k, dz, x, acc, small):
        for _ in range(k):
            R._step_sums(dz, x, acc, small)

    @njit
    def rep_add(k, a, b):
        for _ in range(k):
            R._add_into(a, b)

    def arrays(m):
        f32 = np.float32
        d = {"h": rng.standard_normal((m, H)).astype(f32), "W": rng.standard_normal((H, G)).astype(f32) * 0.1,
             "Z": rng.standard_normal((m, G)).astype(f32), "Gt": np.empty((m, G), f32),
             "cp": rng.standard_normal((m, H)).astype(f32), "cn": np.empty((m, H), f32), "tc": np.empty((m, H), f32),
             "hn": np.empty((m, H), f32), "dh": rng.standard_normal((m, H)).astype(f32),
             "dc": rng.standard_normal((m, H)).astype(f32), "dz": rng.standard_normal((m, G)).astype(f32),
             "x": rng.standard_normal((m, F)).astype(f32), "acc": np.zeros(G * (1 + F)),
             "Wih": rng.standard_normal((F, G)).astype(f32), "dx": np.empty((m, F), f32)}
        d["WT"] = np.ascontiguousarray(d["W"].T)
        rep_cell(1, d["Z"], d["Gt"], d["cp"], d["cn"], d["tc"], d["hn"], m, H)
        return d

    K = 10
    m = N // P
    now, before = arrays(m), arrays(N)
    threads = blas.blas_threads()
    rows = []

    def row(name, fn_now, fn_before, scale=T):
        out = []
        for fn, thr in ((fn_now, 1), (fn_before, threads)):
            if fn is None:
                out.append(None)
                continue
            blas.set_blas_threads(thr)
            time.sleep(0.3)  # the BLAS worker thread of a threaded product spins ~0.1 s (and slows this core)
            out.append(times(lambda fn=fn: fn(K), args.repeat)[0] / K)
        blas.set_blas_threads(threads)
        rows.append((name, out, scale))

    a, b = now, before
    row(f"z_t += h W_hh      ({m}|{N}x{H}x{G})", lambda k: rep_gemm(k, a["h"], False, a["W"], False, a["Z"], True),
        lambda k: rep_gemm(k, b["h"], False, b["W"], False, b["Gt"], False))
    row("  (before: + a separate add)", None, lambda k: rep_add(k, b["Z"], b["Gt"]))
    row("gate math, c_t, h_t", lambda k: rep_cell(k, a["Z"], a["Gt"], a["cp"], a["cn"], a["tc"], a["hn"], m, H),
        lambda k: rep_cell(k, b["Z"], b["Gt"], b["cp"], b["cn"], b["tc"], b["hn"], N, H))
    row("step back (gate gradients)", lambda k: rep_back(k, a["dh"], a["dc"], a["Gt"], a["cp"], a["tc"], a["dz"], m, H),
        lambda k: rep_back(k, b["dh"], b["dc"], b["Gt"], b["cp"], b["tc"], b["dz"], N, H))
    row(f"dh += dz W_hh^T    ({m}|{N}x{G}x{H})", lambda k: rep_gemm(k, a["dz"], False, a["WT"], False, a["dh"], True),
        lambda k: rep_gemm(k, b["dz"], False, b["W"], True, b["dh"], False))
    row("  (before: + a separate add)", None, lambda k: rep_add(k, b["dh"], b["cp"]))
    row("per-step sums (db, dW_ih), dX", lambda k: (rep_sums(k, a["dz"], a["x"], a["acc"], F <= R.SMALL_IN),
                                                    rep_gemm(k, a["dz"], False, a["Wih"], True, a["dx"], False)),
        None)
    print(f"\n== per time step: one block of {m} rows on one thread (now) | the whole batch of {N}, products "
          f"on {threads} BLAS thread(s) (before); median, x{T} steps ==")
    print(f"  {'piece':40s} {'now':>10s} {'x T':>10s} {'before':>10s} {'x T':>10s}")
    for name, (tn, tb_), scale in rows:
        cells = []
        for v in (tn, tb_):
            cells += ["-", "-"] if v is None else [f"{v * 1e6:.1f} us", f"{v * scale * 1e3:.2f} ms"]
        print(f"  {name:40s} {cells[0]:>10s} {cells[1]:>10s} {cells[2]:>10s} {cells[3]:>10s}")
    # the product over all steps for dW_hh: half the columns on one thread (now), all on the BLAS's threads
    Hs = rng.standard_normal((T * N, H)).astype(np.float32)
    dZ = rng.standard_normal((T * N, G)).astype(np.float32)
    dW = np.empty((H, G), np.float32)
    c1 = G // P
    blas.set_blas_threads(1)
    t_now = times(lambda: blas.gemm(Hs, True, dZ[:, :c1], False, dW[:, :c1]), max(5, args.repeat // 3))[0]
    blas.set_blas_threads(threads)
    time.sleep(0.1)
    t_before = times(lambda: blas.gemm(Hs, True, dZ, False, dW), max(5, args.repeat // 3))[0]
    print(f"  {'dW_hh = H^T dZ over all steps':40s} {fmt(t_now).strip():>10s} {'(1/' + str(P) + ' cols)':>10s} "
          f"{fmt(t_before).strip():>10s} {'(all)':>10s}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--inputs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--baseline", help="directory of a renamed copy of an older nnlab package to compare with")
    ap.add_argument("--skip", default="", help="comma-separated: whole,parts,per-step")
    args = ap.parse_args(argv)
    import nnlab as nl
    from nnlab.kernels import blas
    from nnlab.kernels import recurrent as R

    skip = set(args.skip.split(","))
    print(f"LSTM({args.inputs}, {args.hidden}) + Dense({args.hidden}, 1), batch {args.batch}, T {args.steps}, "
          f"float32, Adam; BLAS: {blas.LIBRARY}, {nl.backend.get_num_threads()} thread(s); threads an LSTM may use: "
          f"{R.enable_lstm_threads()}")
    out = {}
    if "whole" not in skip:
        out["whole"] = whole(args, nl)
    P = None
    if "parts" not in skip:
        P, out["parts"] = parts(args, nl)
    if "per-step" not in skip:
        G = 4 * args.hidden
        per_step(args, nl, P or R._lstm_blocks(args.batch, args.steps, args.hidden, G, 4))
    return out


if __name__ == "__main__":
    main()
