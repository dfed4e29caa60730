"""The dense layer on the device: the twin of :mod:`nnlab.kernels.dense`.

Forward: Z = X W + b (Z = X for an Activation layer, ``F_W = -1``), A = a·θ(Z), and with
``store`` the derivative a·θ'(Z) kept in the slot of E in ``dws`` (ops without learnable
activation hyperparameters), as the CPU's specialised loops do. Backward: E = dA ⊙ a·θ'(Z) (or
dA ⊙ the stored derivative), the learnable hyperparameters' gradients Σ dA ⊙ ∂(aθ)/∂p (one block,
a tree reduction in float64: no atomics, the same bits every run), db = Σ_rows E (one thread per
column, rows in order, as the CPU adds them), dW = Xᵀ E and dX = E Wᵀ with
:func:`nnlab.kernels.cuda.gemm.gemm` (DX_ADD accumulates with beta = 1, no scratch needed).
"""

import numpy as np
from numba import cuda, float32, float64

from ..layout import (
    DX_ADD,
    DX_WRITE,
    F_A,
    F_ACT,
    F_AMASK,
    F_AP,
    F_B,
    F_DX,
    F_NIN,
    F_NOISE,
    F_NOUT,
    F_T,
    F_W,
    F_X,
    F_Z,
    KIND_DENSE,
)
from . import elementwise
from .activations import device_set
from .device import blocks, threads_per_block
from .gemm import gemm
from .registry import register

MAX_TPB = 1024  # shared-memory size of the one-block reductions
_kernels = {}


def _make(dtype, ds):
    nbt = float32 if np.dtype(dtype) == np.float32 else float64
    act_f, act_d, act_dp, act_slots = ds.act_f, ds.act_d, ds.act_dp, ds.act_slots

    @cuda.jit
    def forward(Z, A, D, params, b, nout, code, mask, ap, q0, q1, q2, qa, U, has_noise, store):
        """Z += b (b >= 0), A = a·θ(Z) and, with ``store``, D = a·θ'(Z); flat, row-major (·, nout)."""
        p0, p1, p2, a = act_slots(params, mask, ap, q0, q1, q2, qa)
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for k in range(start, Z.size, stride):
            z = Z[k]
            if b >= 0:
                z = z + params[b + k % nout]
                Z[k] = z
            u = U[k] if has_noise else nbt(0.0)
            A[k] = a * act_f(code, z, p0, p1, p2, u)
            if store:
                D[k] = a * act_d(code, z, p0, p1, p2, u)

    @cuda.jit
    def errors(E, dA, Z, params, code, mask, ap, q0, q1, q2, qa, U, has_noise):
        """E = dA·a·θ'(Z) (an op that did not store its derivative; otherwise ``elementwise.mul``)."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        p0, p1, p2, a = act_slots(params, mask, ap, q0, q1, q2, qa)
        for k in range(start, E.size, stride):
            u = U[k] if has_noise else nbt(0.0)
            E[k] = dA[k] * a * act_d(code, Z[k], p0, p1, p2, u)

    @cuda.jit
    def param_grads(dA, Z, params, grads, code, mask, ap, q0, q1, q2, qa, U, has_noise):
        """grads[ap + rank] += Σ dA·a·∂θ/∂p_k (and Σ dA·θ for a learnable scale a): one block, each
        thread a strided float64 partial sum, then a tree reduction in shared memory."""
        s0 = cuda.shared.array(MAX_TPB, float64)
        s1 = cuda.shared.array(MAX_TPB, float64)
        s2 = cuda.shared.array(MAX_TPB, float64)
        sa = cuda.shared.array(MAX_TPB, float64)
        p0, p1, p2, a = act_slots(params, mask, ap, q0, q1, q2, qa)
        t = cuda.threadIdx.x
        nt = cuda.blockDim.x
        g0 = 0.0
        g1 = 0.0
        g2 = 0.0
        ga = 0.0
        for k in range(t, Z.size, nt):
            z = Z[k]
            u = U[k] if has_noise else nbt(0.0)
            d = dA[k]
            if mask & 1:
                g0 += d * a * act_dp(code, 0, z, p0, p1, p2, u)
            if mask & 2:
                g1 += d * a * act_dp(code, 1, z, p0, p1, p2, u)
            if mask & 4:
                g2 += d * a * act_dp(code, 2, z, p0, p1, p2, u)
            if mask & 8:
                ga += d * act_f(code, z, p0, p1, p2, u)
        s0[t] = g0
        s1[t] = g1
        s2[t] = g2
        sa[t] = ga
        cuda.syncthreads()
        step = 1
        while step < nt:
            if t % (2 * step) == 0 and t + step < nt:
                s0[t] += s0[t + step]
                s1[t] += s1[t + step]
                s2[t] += s2[t + step]
                sa[t] += sa[t + step]
            cuda.syncthreads()
            step *= 2
        if t == 0:
            j = 0
            if mask & 1:
                grads[ap + j] += s0[0]
                j += 1
            if mask & 2:
                grads[ap + j] += s1[0]
                j += 1
            if mask & 4:
                grads[ap + j] += s2[0]
                j += 1
            if mask & 8:
                grads[ap + j] += sa[0]

    @cuda.jit
    def col_sum(E, db, nout):
        """db[j] = Σ_r E[r, j] over the rows of the flat (·, nout) E, in row order, in E's dtype."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        rows = E.size // nout
        for j in range(start, nout, stride):
            s = nbt(0.0)
            for r in range(rows):
                s += E[r * nout + j]
            db[j] = s

    return {"forward": forward, "errors": errors, "param_grads": param_grads, "col_sum": col_sum}


def kernels(dtype):
    """The dense kernels of ``dtype`` for the current activation registry."""
    ds = device_set()
    key = (np.dtype(dtype), ds.version)
    k = _kernels.get(key)
    if k is None:
        for old in [kk for kk in _kernels if kk[1] != ds.version]:
            del _kernels[old]
        k = _kernels[key] = _make(dtype, ds)
    return k


def signatures(dtype):
    """{kernel name: signature} exactly as the launchers below call them (for compile_ptx)."""
    t = "float32" if np.dtype(dtype) == np.float32 else "float64"
    a = f"{t}[::1]"
    q = "float64, float64, float64, float64"
    return {
        "forward": f"void({a}, {a}, {a}, {a}, int64, int64, int64, int64, int64, {q}, {a}, boolean, boolean)",
        "errors": f"void({a}, {a}, {a}, {a}, int64, int64, int64, {q}, {a}, boolean)",
        "param_grads": f"void({a}, {a}, {a}, {a}, int64, int64, int64, {q}, {a}, boolean)",
        "col_sum": f"void({a}, {a}, int64)",
    }


def _act_args(prog, i):
    ops, hp = prog.ops, prog.hp
    return (int(ops[i, F_ACT]), int(ops[i, F_AMASK]), int(ops[i, F_AP]),
            float(hp[i, 0]), float(hp[i, 1]), float(hp[i, 2]), float(hp[i, 3]))


def _noise(prog, i, n, steps):
    t = int(prog.ops[i, F_NOISE])
    if t >= 0:
        return prog.flat(prog.ws, t, n), True
    return prog.flat(prog.ws, int(prog.ops[i, F_Z]), n), False


def dense_forward(prog, i, n, training, store):
    """Launch op i forward (Z, A and with ``store`` the derivative); returns whether it stored."""
    ops = prog.ops
    steps = int(ops[i, F_T])
    nin = int(ops[i, F_NIN])
    nout = int(ops[i, F_NOUT])
    X = prog.rview(prog.ws, int(ops[i, F_X]), n, steps)
    Z = prog.rview(prog.ws, int(ops[i, F_Z]), n, steps)
    w = int(ops[i, F_W])
    if w >= 0:
        gemm(X, False, prog.params[w:w + nin * nout].reshape(nin, nout), False, Z, stream=prog.stream)
    else:
        elementwise.copy(Z, X, prog.stream)
    code, mask, ap, q0, q1, q2, qa = _act_args(prog, i)
    do_store = bool(store) and mask == 0
    Zf = prog.flat(prog.ws, int(ops[i, F_Z]), n)
    U, has_noise = _noise(prog, i, n, steps)
    tpb = threads_per_block()
    kernels(prog.dtype)["forward"][blocks(Zf.size, tpb), tpb, prog.stream](
        Zf, prog.flat(prog.ws, int(ops[i, F_A]), n), prog.flat(prog.dws, int(ops[i, F_Z]), n), prog.params,
        int(ops[i, F_B]), nout, code, mask, ap, q0, q1, q2, qa, U, has_noise, do_store)
    return do_store


def dense_backward(prog, i, n, stored):
    """Launch op i backward: E (memoized in dws at Z), the activation-parameter, bias and weight
    gradients and dX in the op's DX_* mode."""
    ops = prog.ops
    steps = int(ops[i, F_T])
    m = n * steps
    nin = int(ops[i, F_NIN])
    nout = int(ops[i, F_NOUT])
    K = kernels(prog.dtype)
    st = prog.stream
    tpb = threads_per_block()
    z = int(ops[i, F_Z])
    Ef = prog.flat(prog.dws, z, n)
    dAf = prog.flat(prog.dws, int(ops[i, F_A]), n)
    Zf = prog.flat(prog.ws, z, n)
    code, mask, ap, q0, q1, q2, qa = _act_args(prog, i)
    U, has_noise = _noise(prog, i, n, steps)
    if mask and not stored:
        K["param_grads"][1, min(tpb, MAX_TPB), st](dAf, Zf, prog.params, prog.grads, code, mask, ap,
                                                   q0, q1, q2, qa, U, has_noise)
    if stored:  # E = dA ⊙ a·θ'(Z), the derivative kept by the forward pass: in the dtype, no activation
        elementwise.mul(Ef, dAf, st)
    else:
        K["errors"][blocks(Ef.size, tpb), tpb, st](Ef, dAf, Zf, prog.params, code, mask, ap, q0, q1, q2, qa,
                                                   U, has_noise)
    b = int(ops[i, F_B])
    if b >= 0:
        K["col_sum"][blocks(nout, tpb), tpb, st](Ef, prog.grads[b:b + nout], nout)
    mode = int(ops[i, F_DX])
    x = int(ops[i, F_X])
    w = int(ops[i, F_W])
    if w < 0:  # an activation alone: dX = E
        elementwise.put_dx(prog.flat(prog.dws, x, n), Ef, mode, st)
        return
    E = Ef.reshape(m, nout)
    W = prog.params[w:w + nin * nout].reshape(nin, nout)
    gemm(prog.rview(prog.ws, x, n, steps), True, E, False, prog.grads[w:w + nin * nout].reshape(nin, nout),
         stream=st)
    if mode == DX_WRITE or mode == DX_ADD:
        gemm(E, False, W, True, prog.rview(prog.dws, x, n, steps), beta=1.0 if mode == DX_ADD else 0.0, stream=st)


register(KIND_DENSE, dense_forward, dense_backward)
