"""What bounds nnlab's training step where its speed goals (docs/performance.md#goals) are missed: profile evidence, measured.

    python benchmarks/bench_bounds.py [--configs mnist,deep-narrow,wide] [--skip gemm,context,threads]
        [--json out.json]
    python benchmarks/bench_bounds.py --report out.json      # re-print a saved run's tables

Three sections, each a measurement (never an assertion; compare numbers within one run):

``gemm``     The step's matrix products (per layer Z = XW, dW = XᵀE and, above the first layer,
             dX = EWᵀ), each in the memory layout nnlab's kernels use, timed through nnlab's own call
             (``nnlab.kernels.blas.gemm``: NumPy's OpenBLAS, or ``np.dot`` inside ``@njit`` ->
             SciPy's BLAS with ``NNLAB_BLAS=numba``), ``np.dot`` inside ``@njit`` (SciPy's BLAS:
             nnlab's path before ``kernels/blas.py``), NumPy's ``matmul`` and ``torch.mm``
             (PyTorch's BLAS, MKL on x86)
             when torch is importable. Each product is checked against the others first. The sum per
             step is the floor of any step built on that library's products.
``context``  The parts of nnlab's fused step (``loss_and_grad``; the gradient norm; the optimizer
             update) timed alone and one after another as ``train_step`` runs them: on a multi-core
             BLAS the worker threads write part of every product (dW, Z) into their own cores'
             caches, and the norm and the update that read them afterwards pay for the transfer.
``threads``  The optimizer update as one serial loop and split over Numba's ``prange`` threads,
             alone and interleaved with a BLAS product (the choice documented in
             ``nnlab/kernels/cpu.py``: BLAS threads for products, serial elementwise loops).
``pool``     The direction the ``threads`` section leaves open: one thread pool for the whole step.
             Every product of a step with the BLAS on one thread, each split into row blocks over
             Numba's ``prange`` threads (one single-threaded product per block), and the SGD-momentum
             update split the same way -- against today's step layout (the BLAS's own threads for
             each product, the update serial): products alone, update alone, products then update.
             Also the update as level-1 BLAS calls (``saxpby`` + ``saxpy``) on the BLAS's own
             threads, alone and after the products.
``after``    Why a pass costs more after a product: the squared norm of a product's output C
             (mnist's and wide's largest dW) right after the BLAS call that wrote it, with one and
             with two BLAS threads, against the same norm with C in this core's cache and with C
             pushed out by streaming 4x its size.

See docs/performance.md ("What bounds the missed goals") for a run's numbers and their reading.
"""

import argparse
import json
import os
import time

import numpy as np

from nnlab.benchmark import CONFIGS, build_nnlab, make_data, nnlab_optimizer

SECTIONS = ("gemm", "context", "threads", "after", "pool")
TARGET_S, ROUNDS = 0.05, 7  # seconds per timed block, blocks per median


def median_time(fn, target=None, rounds=None):
    """Median seconds per call of ``fn`` over ``rounds`` blocks of about ``target`` seconds."""
    target = TARGET_S if target is None else target
    rounds = ROUNDS if rounds is None else rounds
    fn()
    t0 = time.perf_counter()
    fn()
    one = max(time.perf_counter() - t0, 1e-7)
    k = max(1, int(target / one))
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        ts.append((time.perf_counter() - t0) / k)
    return float(np.median(ts))


# ---------------------------------------------------------------- gemm
def products(spec):
    """(name, A, B, transA, transB) for every product of one step, as nnlab's kernels lay them out:
    Z = X W (X, W C-contiguous), dW = Xᵀ E (Xᵀ a transposed view), dX = E Wᵀ (Wᵀ a transposed view)."""
    rng = np.random.default_rng(0)
    n = spec.batch
    out = []
    for i, (a, b) in enumerate(zip(spec.widths[:-1], spec.widths[1:])):
        X = rng.standard_normal((n, a)).astype(np.float32)
        W = rng.standard_normal((a, b)).astype(np.float32)
        E = rng.standard_normal((n, b)).astype(np.float32)
        out.append((f"L{i + 1} Z=XW {n}x{a}x{b}", X, W, False, False))
        out.append((f"L{i + 1} dW=XtE {a}x{n}x{b}", X, E, True, False))
        if i > 0:
            out.append((f"L{i + 1} dX=EWt {n}x{b}x{a}", E, W, False, True))
    return out


def _numba_products():
    """The products as nnlab's kernels call them: :func:`nnlab.kernels.blas.gemm` inside ``@njit``."""
    from nnlab.kernels.blas import gemm

    return {(ta, tb): (lambda A, B, C, ta=ta, tb=tb: gemm(A, ta, B, tb, C)) for ta in (False, True) for tb in (False, True)}


def _numba_dot_products():
    """The same products through ``np.dot`` inside ``@njit`` (Numba sends them to SciPy's BLAS):
    nnlab's path before ``kernels/blas.py``, and its fallback."""
    from numba import njit

    @njit(cache=False)
    def nn(A, B, C):
        np.dot(A, B, C)

    @njit(cache=False)
    def tn(A, B, C):
        np.dot(A.T, B, C)

    @njit(cache=False)
    def nt(A, B, C):
        np.dot(A, B.T, C)

    return {(False, False): nn, (True, False): tn, (False, True): nt}


def gemm_section(specs):
    kern, dot = _numba_products(), _numba_dot_products()
    try:
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        torch = None
    from nnlab.kernels.blas import LIBRARY

    libs = ["nnlab (" + ("NumPy's OpenBLAS" if LIBRARY.startswith("NumPy") else "SciPy's BLAS") + ")",
            "np.dot in @njit (SciPy's)", "np.matmul (NumPy OpenBLAS)"] + (["torch.mm (" + _torch_blas(torch) + ")"]
                                                                  if torch is not None else [])
    result = {"libraries": libs, "configs": {}}
    for spec in specs:
        rows, totals, seen = [], np.zeros(len(libs)), {}
        for name, A, B, ta, tb in products(spec):
            key = (name.split(" ", 1)[1], A.shape, B.shape)  # a product of the same kind and shape: timed once
            if key in seen:
                row = rows[seen[key]]
                row[2] += 1
                row[3] = name.split(" ", 1)[0]
                totals += row[1]
                continue
            times = _time_product(kern, dot, torch, name, A, B, ta, tb)
            totals += times
            seen[key] = len(rows)
            rows.append([name, times, 1, None])
        result["configs"][spec.name] = {"rows": rows, "totals": totals.tolist()}
    return result


def _time_product(kern, dot, torch, name, A, B, ta, tb):
    """Median seconds of op(A) op(B) through each library (checked against float64 first)."""
    a = A.T if ta else A
    b = B.T if tb else B
    C = np.empty((a.shape[0], b.shape[1]), np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    fns = [lambda: kern[(ta, tb)](A, B, C), lambda: dot[(ta, tb)](A, B, C), lambda: np.matmul(a, b, out=C)]
    if torch is not None:
        tA, tB, tC = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(C)
        tA = tA.t() if ta else tA
        tB = tB.t() if tb else tB
        fns.append(lambda: torch.mm(tA, tB, out=tC))
    times = []
    for fn in fns:
        fn()
        err = float(np.abs(C - ref).max() / max(np.abs(ref).max(), 1e-30))
        if err > 1e-4:
            raise SystemExit(f"{name}: a library disagrees with the float64 product (rel {err:.1e})")
        times.append(median_time(fn))
    return times


def _torch_blas(torch):
    cfg = torch.__config__.show()
    return "MKL" if "BLAS_INFO=mkl" in cfg else "its BLAS"


def print_gemm(res):
    libs = res["libraries"]
    w = max(len(lib) for lib in libs) + 2
    print("\n== gemm: the step's matrix products in nnlab's layouts, per library (us, median) ==")
    for name, r in res["configs"].items():
        print(f"\n{name}")
        print(f"  {'product (us per call)':34s}" + "".join(f"{lib:>{w}s}" for lib in libs))
        for pname, times, count, last in r["rows"]:
            first, rest = pname.split(" ", 1)
            label = pname if count == 1 else f"{first}-{last} {rest}"
            print(f"  {label:34s}" + "".join(f"{t * 1e6:{w},.1f}" for t in times))
        tot = r["totals"]
        print(f"  {'sum per step':34s}" + "".join(f"{t * 1e6:{w},.1f}" for t in tot))
        print(f"  {'ratio to nnlab':34s}" + "".join(f"{tot[0] / t:{w - 1}.2f}x" for t in tot))


# ---------------------------------------------------------------- context
def context_section(specs):
    import nnlab as nl
    from nnlab.kernels import cpu as K
    from nnlab.kernels import optim_cpu as OK

    return {spec.name: _context(nl, K, OK, spec) for spec in specs}


def _context(nl, K, OK, spec):
    net = build_nnlab(spec)
    X, y = make_data(spec)
    tr = nl.Trainer(net, nnlab_optimizer("sgd-momentum"))
    for _ in range(3):
        tr.step(X, y)
    Xp, Yp = net._prepare(X, y)
    ws, dws = net._workspace(Xp.shape[0])
    code, hp, t, state = tr.optimizer.begin_flat(net._flat)
    hp = hp.copy()
    hp[0] = 1e-12  # a tiny learning rate: the weights barely move over the many timed calls
    grads, res = tr._grads, np.zeros(3)
    args = (net._ops, net._hp, net._tens, net._flat, grads, ws, dws, Xp, Yp, net._loss_code, True, -1)

    def lg():
        K.loss_and_grad(*args)

    def norm():
        OK.clip_flat(OK.CLIP_NONE, 0.0, grads, tr._offsets)

    def upd():
        OK.opt_update(code, hp, t, net._flat, grads, state)

    K.ensure_loss_and_grad(K, net.dtype)  # (the general executor's step calls it through its callback)

    def step():
        K.train_step(*args, OK.CLIP_NONE, 0.0, tr._offsets, code, hp, t, state, True, res, False, *tr._no_monitor)

    parts = {"loss_and_grad": lg, "norm alone": norm, "update alone": upd,
             "loss_and_grad + norm": lambda: (lg(), norm()),
             "loss_and_grad + norm + update": lambda: (lg(), norm(), upd()),
             "train_step (one call)": step}
    d = {k: median_time(fn) for k, fn in parts.items()}
    d["norm in context"] = d["loss_and_grad + norm"] - d["loss_and_grad"]
    d["update in context"] = d["loss_and_grad + norm + update"] - d["loss_and_grad + norm"]
    # train_step computes the global norm after the backward pass, then updates: its cost beyond loss_and_grad
    d["norm + update in context (train_step)"] = d["train_step (one call)"] - d["loss_and_grad"]
    return d


def print_context(res):
    print("\n== context: the parts of nnlab's fused step alone and as the step runs them (us, median; SGD-momentum) ==")
    keys = list(next(iter(res.values())).keys())
    print(f"  {'part':34s}" + "".join(f"{name:>14s}" for name in res))
    for k in keys:
        print(f"  {k:34s}" + "".join(f"{res[name][k] * 1e6:14,.1f}" for name in res))


# ---------------------------------------------------------------- threads
def threads_section():
    from numba import njit, prange

    n = 269_322  # the mnist-like network's parameter count
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    m = np.zeros(n, np.float32)
    X = rng.standard_normal((128, 784)).astype(np.float32)
    W = rng.standard_normal((784, 256)).astype(np.float32)
    Z = np.empty((128, 256), np.float32)

    @njit(cache=False)
    def serial(p, g, m, lr, mu):
        for i in range(p.size):
            v = mu * m[i] + g[i]
            m[i] = v
            p[i] -= lr * v

    @njit(cache=False, parallel=True)
    def threaded(p, g, m, lr, mu):
        for i in prange(p.size):
            v = mu * m[i] + g[i]
            m[i] = v
            p[i] -= lr * v

    @njit(cache=False)
    def product(X, W, Z):
        np.dot(X, W, Z)

    lr, mu = np.float32(1e-12), np.float32(0.9)
    import numba
    res = {"numba_threads": numba.get_num_threads()}
    res["update serial"] = median_time(lambda: serial(p, g, m, lr, mu))
    res["update prange"] = median_time(lambda: threaded(p, g, m, lr, mu))
    res["threading layer"] = numba.threading_layer()
    res["product alone"] = median_time(lambda: product(X, W, Z))
    res["product + update serial"] = median_time(lambda: (product(X, W, Z), serial(p, g, m, lr, mu)))
    res["product + update prange"] = median_time(lambda: (product(X, W, Z), threaded(p, g, m, lr, mu)))
    return res


def print_threads(res):
    print(f"\n== threads: SGD-momentum update of 269,322 float32 parameters, serial vs prange "
          f"({res['numba_threads']} Numba threads, layer {res['threading layer']}), alone and after a "
          f"128x784x256 product (us, median) ==")
    for k, v in res.items():
        if isinstance(v, float):
            print(f"  {k:28s}{v * 1e6:12,.1f}")


# ---------------------------------------------------------------- after
AFTER_SHAPES = ((128, 784, 256), (256, 2048, 2048))  # (K, M, N) of mnist's and wide's largest dW = XᵀE


def after_section(shapes=AFTER_SHAPES):
    from numba import njit

    from nnlab.kernels import blas
    from nnlab.kernels.optim_cpu import sq_norm

    @njit(cache=False)
    def prod(X, E, C):
        blas.gemm(X, True, E, False, C)

    @njit(cache=False)
    def prod_norm(X, E, C):
        blas.gemm(X, True, E, False, C)
        return sq_norm(C.reshape(-1))

    rng = np.random.default_rng(0)
    before = blas.get_threads()
    res = {}
    try:
        for k, m, n in shapes:
            X = rng.standard_normal((k, m)).astype(np.float32)
            E = rng.standard_normal((k, n)).astype(np.float32)
            C = np.empty((m, n), np.float32)
            Cf = C.reshape(-1)
            big = np.ones(4 * C.size, np.float32)
            d = {}
            for th in (1, 2):
                blas.set_threads(th)
                t_prod = median_time(lambda X=X, E=E, C=C: prod(X, E, C))
                d[f"product, {th} BLAS thread(s)"] = t_prod
                d[f"norm right after it ({th})"] = median_time(lambda X=X, E=E, C=C: prod_norm(X, E, C)) - t_prod
            d["norm, C in cache"] = median_time(lambda Cf=Cf: sq_norm(Cf))
            t_big = median_time(lambda big=big: sq_norm(big))
            d["norm after streaming 4x C"] = median_time(lambda big=big, Cf=Cf: (sq_norm(big), sq_norm(Cf))) - t_big
            res[f"dW {m}x{n} (K={k})"] = d
    finally:
        if before:
            blas.set_threads(before)
    return res


def print_after(res):
    print("\n== after: the squared norm of a product's output right after the product, in cache, and cold (us, median) ==")
    keys = list(next(iter(res.values())).keys())
    print(f"  {'':34s}" + "".join(f"{name:>24s}" for name in res))
    for k in keys:
        print(f"  {k:34s}" + "".join(f"{res[name][k] * 1e6:24,.1f}" for name in res))


# ---------------------------------------------------------------- pool
def pool_section(specs):
    """Per configuration: the step's products and its SGD-momentum update with the BLAS's threads
    (today) and on one Numba pool with a single-threaded BLAS (see the module docstring)."""
    from numba import njit, prange

    from nnlab.kernels import blas
    from nnlab.kernels.blas import _gemm

    @njit(cache=False)
    def one(A, ta, B, tb, C):
        _gemm(A, ta, B, tb, C, 0.0)

    @njit(cache=False, parallel=True)
    def split(A, ta, B, tb, C, blocks):
        m = C.shape[0]
        for q in prange(blocks):
            lo, hi = m * q // blocks, m * (q + 1) // blocks
            if ta:
                _gemm(A[:, lo:hi], True, B, tb, C[lo:hi], 0.0)
            else:
                _gemm(A[lo:hi], False, B, tb, C[lo:hi], 0.0)

    @njit(cache=False)
    def update(p, g, m, lr, mu):  # nnlab's SGD-momentum loop after the first step (optim_cpu.sgd_update)
        for i in range(p.size):
            v = mu * m[i] + np.float64(g[i])
            m[i] = v
            p[i] = np.float64(p[i]) - lr * v

    @njit(cache=False, parallel=True)
    def update_split(p, g, m, lr, mu, blocks):
        n = p.size
        for q in prange(blocks):
            lo, hi = n * q // blocks, n * (q + 1) // blocks
            update(p[lo:hi], g[lo:hi], m[lo:hi], lr, mu)

    import numba
    blocks = numba.get_num_threads()
    before = blas.get_threads()
    rng = np.random.default_rng(0)
    res = {"threads": blocks, "threading layer": None}
    try:
        for spec in specs:
            res[spec.name] = _pool_config(spec, (one, split, update, update_split), blocks, before or 2, rng)
        res["threading layer"] = numba.threading_layer()
    finally:
        if before:
            blas.set_threads(before)
    return res


def _pool_config(spec, fns, blocks, threads, rng):
    """The pool section's six timings for one configuration (``fns``: the compiled whole product,
    row-split product, serial update and split update)."""
    from nnlab.kernels import blas

    one, split, update, update_split = fns
    prods = []
    for _, A, B, ta, tb in products(spec):
        m = A.shape[1] if ta else A.shape[0]
        n = B.shape[0] if tb else B.shape[1]
        prods.append((A, ta, B, tb, np.empty((m, n), np.float32)))
    n_par = sum(a * b + b for a, b in zip(spec.widths[:-1], spec.widths[1:]))
    p = rng.standard_normal(n_par).astype(np.float32)
    g = (rng.standard_normal(n_par) * 1e-3).astype(np.float32)
    mom = np.zeros(n_par, np.float32)
    lr, mu = 1e-12, 0.9

    def today():
        for A, ta, B, tb, C in prods:
            one(A, ta, B, tb, C)

    def pooled():
        for A, ta, B, tb, C in prods:
            split(A, ta, B, tb, C, blocks)

    blas.set_threads(threads)
    today()
    want = [C.copy() for *_, C in prods]
    blas.set_threads(1)
    pooled()
    for (*_, C), w in zip(prods, want):  # the row blocks give the same product
        np.testing.assert_allclose(C, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))
    d = {}
    blas.set_threads(threads)
    d["BLAS threads: products"] = median_time(today)
    d["BLAS threads: update (serial)"] = median_time(lambda: update(p, g, mom, lr, mu))
    d["BLAS threads: both"] = median_time(lambda: (today(), update(p, g, mom, lr, mu)))
    level1 = _level1_update(p, g, mom, lr, mu)
    if level1 is not None:  # the SGD family's update as level-1 BLAS calls, on the BLAS's own threads
        d["BLAS threads: update as level-1 BLAS"] = median_time(level1)
        d["BLAS threads: products + level-1 update"] = median_time(lambda: (today(), level1()))
    blas.set_threads(1)
    d["one pool: products"] = median_time(pooled)
    d["one pool: update"] = median_time(lambda: update_split(p, g, mom, lr, mu, blocks))
    d["one pool: both"] = median_time(lambda: (pooled(), update_split(p, g, mom, lr, mu, blocks)))
    return d


def _level1_update(p, g, m, lr, mu):
    """SGD-momentum as two level-1 calls of NumPy's OpenBLAS, each split over the BLAS's threads:
    ``saxpby`` m = g + mu*m, then ``saxpy`` p -= lr*m. Not the same bits as nnlab's update (that one
    rounds mu*m + g from float64); a timing only. None without NumPy's bundled OpenBLAS."""
    import ctypes

    from nnlab.kernels import blas

    found = blas._bundled("numpy", "scipy_cblas_saxpby64_", "scipy_cblas_saxpy64_")
    if found is None or not blas.LIBRARY.startswith("NumPy's OpenBLAS"):
        return None
    saxpby, saxpy = found[1]
    i64, f32, ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    saxpby.argtypes, saxpby.restype = (i64, f32, ptr, i64, f32, ptr, i64), None
    saxpy.argtypes, saxpy.restype = (i64, f32, ptr, i64, ptr, i64), None
    n, pa, ga, ma = p.size, p.ctypes.data, g.ctypes.data, m.ctypes.data

    def update():
        saxpby(n, 1.0, ga, 1, mu, ma, 1)
        saxpy(n, -lr, ma, 1, pa, 1)

    return update


def print_pool(res):
    print(f"\n== pool: the step's products and SGD-momentum update, the BLAS's threads (today) vs one pool of "
          f"{res['threads']} Numba threads (layer {res['threading layer']}) over a single-threaded BLAS (us, median) ==")
    names = [k for k, v in res.items() if isinstance(v, dict)]
    keys = list(res[names[0]].keys())
    print(f"  {'':34s}" + "".join(f"{name:>14s}" for name in names))
    for k in keys:
        print(f"  {k:34s}" + "".join(f"{res[name][k] * 1e6:14,.1f}" for name in names))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="mnist,deep-narrow,wide")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: " + ",".join(SECTIONS))
    ap.add_argument("--json", default=None, help="write every number to this file")
    ap.add_argument("--report", default=None, metavar="FILE", help="only print the tables of a --json file")
    args = ap.parse_args(argv)
    if args.report:
        with open(args.report) as fh:
            out = json.load(fh)
        for key, show in (("gemm", print_gemm), ("context", print_context), ("threads", print_threads),
                          ("after", print_after), ("pool", print_pool)):
            if key in out:
                show(out[key])
        return out
    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    skip = {s for s in args.skip.split(",") if s}
    if unknown or skip - set(SECTIONS):
        ap.error(f"unknown config or section: {', '.join(unknown + sorted(skip - set(SECTIONS)))}")
    specs = [CONFIGS[c] for c in names]
    import numpy
    import scipy
    print(f"numpy {numpy.__version__} ({_blas_version(numpy)}), scipy {scipy.__version__} ({_blas_version(scipy)}), "
          f"{os.cpu_count()} CPUs")
    out = {}
    if "gemm" not in skip:
        out["gemm"] = gemm_section(specs)
        print_gemm(out["gemm"])
    if "context" not in skip:
        out["context"] = context_section(specs)
        print_context(out["context"])
    if "threads" not in skip:
        out["threads"] = threads_section()
        print_threads(out["threads"])
    if "after" not in skip:
        out["after"] = after_section()
        print_after(out["after"])
    if "pool" not in skip:
        out["pool"] = pool_section(specs)
        print_pool(out["pool"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return out


def _blas_version(mod):
    try:
        cfg = mod.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except Exception:  # a build without the dict form: the version is informative only
        return "BLAS unknown"


if __name__ == "__main__":
    main()
