"""The maxout layer's kernels, on the op's n·T rows.

    Z = X W + b            W (n_in, n_out·k), b (n_out·k,); piece m of unit j is column j·k + m
    A_j = max_m Z_{j·k+m}  the first largest piece wins a tie (a NaN piece wins and propagates)

Backward: the error dA_j goes to the winning piece, recomputed from Z with the same rule, and 0
to the others; that routed error E = ∂L/∂Z is the op's memoized error (``dws`` at Z). Then
dW = Xᵀ E, db = Σ_rows E and dX = E Wᵀ by :func:`nnlab.kernels.dense.affine_backward`.
"""

from numba import njit

from .._config import JIT
from .blas import gemm
from .common import rview, scratch
from .dense import affine_backward
from .layout import DX_ADD, F_A, F_B, F_DX, F_K, F_NIN, F_NOUT, F_T, F_W, F_X, F_Z


@njit(**JIT)
def maxout_pick(Z, r, base, k):
    """Index (0..k−1) of the winning piece among Z[r, base:base + k]: the first largest; a NaN
    piece wins (the first NaN), so a NaN is never hidden."""
    best = Z[r, base]
    arg = 0
    if best != best:
        return 0
    for m in range(1, k):
        v = Z[r, base + m]
        if v > best or v != v:
            best = v
            arg = m
            if v != v:
                return m
    return arg


@njit(**JIT)
def maxout_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """Z = X W + b and A_j = max over the k pieces of unit j."""
    steps = ops[i, F_T]
    m = n * steps
    nin = ops[i, F_NIN]
    nout = ops[i, F_NOUT]
    k = ops[i, F_K]
    width = nout * k
    X = rview(ws, tens, ops[i, F_X], n, steps)
    Z = rview(ws, tens, ops[i, F_Z], n, steps)
    A = rview(ws, tens, ops[i, F_A], n, steps)
    w = ops[i, F_W]
    gemm(X, False, params[w:w + nin * width].reshape((nin, width)), False, Z)
    b = ops[i, F_B]
    if b >= 0:
        bias = params[b:b + width]
        for r in range(m):
            for j in range(width):
                Z[r, j] = Z[r, j] + bias[j]
    for r in range(m):
        for j in range(nout):
            A[r, j] = Z[r, j * k + maxout_pick(Z, r, j * k, k)]


@njit(**JIT)
def maxout_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """E = dA routed to each unit's winning piece (memoized at Z), db = Σ_rows E, dW = Xᵀ E,
    dX = E Wᵀ."""
    steps = ops[i, F_T]
    m = n * steps
    nin = ops[i, F_NIN]
    nout = ops[i, F_NOUT]
    k = ops[i, F_K]
    width = nout * k
    X = rview(ws, tens, ops[i, F_X], n, steps)
    Z = rview(ws, tens, ops[i, F_Z], n, steps)
    dA = rview(dws, tens, ops[i, F_A], n, steps)
    E = rview(dws, tens, ops[i, F_Z], n, steps)
    for r in range(m):
        for j in range(width):
            E[r, j] = 0.0
        for j in range(nout):
            E[r, j * k + maxout_pick(Z, r, j * k, k)] = dA[r, j]
    b = ops[i, F_B]
    if b >= 0:
        db = grads[b:b + width]
        for j in range(width):
            db[j] = 0.0
        for r in range(m):
            for j in range(width):
                db[j] += E[r, j]
    mode = ops[i, F_DX]
    w = ops[i, F_W]
    W = params[w:w + nin * width].reshape((nin, width))
    dW = grads[w:w + nin * width].reshape((nin, width))
    affine_backward(X, E, W, dW, rview(dws, tens, ops[i, F_X], n, steps),
                    scratch(ops, tens, dws, i, n, m * nin).reshape((m, nin)) if mode == DX_ADD else E, mode)
