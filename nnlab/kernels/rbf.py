"""The Gaussian RBF layer's kernels, on the op's n·T rows.

    Z_j = ‖x − c_j‖² = Σ_i (x_i − c_ij)²     A_j = exp(−γ Z_j)

with the centres C (n_in, n_centers) at ``F_W`` (column j is centre c_j) and γ from
``hp[i, HP_GAMMA]``, or from ``params[F_AP]`` when it is learnable. Backward, with
dZ = dA ⊙ (−γ)·A the op's memoized error (``dws`` at Z):

    dx_i  = 2 Σ_j dZ_j (x_i − c_ij)         dc_ij = −2 Σ_rows dZ_j (x_i − c_ij)
    dγ    = Σ_rows Σ_j dA_j·(−Z_j)·A_j

Every sum is taken over the differences x_i − c_ij themselves, never as
‖x‖² − 2 x·c + ‖c‖² (or x_i Σ_j dZ_j − Σ_j dZ_j c_ij): for an input close to a centre far from
the origin those products cancel to their rounding error, while the direct differences are exact
to one rounding. The inner loops run over the centres, along contiguous rows of C, Z and dZ; the
sum of dx over the centres is the one loop compiled with "reassoc" (:func:`diff_dot`).
"""

import math

from numba import njit

from .._config import FASTMATH, JIT
from .common import rview
from .layout import DX_ADD, DX_WRITE, F_A, F_AP, F_DX, F_NIN, F_NOUT, F_T, F_W, F_X, F_Z, HP_GAMMA

REDUCE_JIT = dict(JIT, fastmath=set(FASTMATH) | {"reassoc"})  # "reassoc" only: NaN and inf keep their meaning


@njit(**JIT)
def rbf_gamma(ops, hp, params, i):
    """γ of op i: the learnable parameter at ``F_AP`` or the fixed ``hp`` value."""
    ap = ops[i, F_AP]
    return params[ap] if ap >= 0 else hp[i, HP_GAMMA]


@njit(**JIT)
def rbf_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """Z_j = ‖x − c_j‖² (summed over the input features in order) and A_j = exp(−γ Z_j)."""
    steps = ops[i, F_T]
    m = n * steps
    nin = ops[i, F_NIN]
    nc = ops[i, F_NOUT]
    X = rview(ws, tens, ops[i, F_X], n, steps)
    Z = rview(ws, tens, ops[i, F_Z], n, steps)
    A = rview(ws, tens, ops[i, F_A], n, steps)
    w = ops[i, F_W]
    C = params[w:w + nin * nc].reshape((nin, nc))
    g = rbf_gamma(ops, hp, params, i)
    for r in range(m):
        for j in range(nc):
            Z[r, j] = 0.0
        for f in range(nin):
            xf = X[r, f]
            for j in range(nc):
                d = xf - C[f, j]
                Z[r, j] += d * d
        for j in range(nc):
            A[r, j] = math.exp(-g * Z[r, j])


@njit(**REDUCE_JIT)
def diff_dot(E, r, xf, C, f, nc):
    """Σ_j E[r, j]·(xf − C[f, j]) in float64: the input gradient's sum over the centres. The one
    loop compiled with "reassoc" (as the statistics kernels of :mod:`nnlab.kernels.cpu`): LLVM
    then vectorises the sum -- 2x (float64) to 4x (float32) faster than the serial chain of adds;
    the terms are the same, only their order of addition changes (fixed for a given machine)."""
    s = 0.0
    for j in range(nc):
        s += E[r, j] * (xf - C[f, j])
    return s


@njit(**JIT)
def rbf_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """dZ = dA·(−γ)·A (memoized at Z), dx = 2 Σ_j dZ_j (x − c_j), dc_j = −2 Σ_rows dZ_j (x − c_j),
    and dγ when it is learnable; every gradient slot written."""
    steps = ops[i, F_T]
    m = n * steps
    nin = ops[i, F_NIN]
    nc = ops[i, F_NOUT]
    X = rview(ws, tens, ops[i, F_X], n, steps)
    Z = rview(ws, tens, ops[i, F_Z], n, steps)
    A = rview(ws, tens, ops[i, F_A], n, steps)
    dA = rview(dws, tens, ops[i, F_A], n, steps)
    E = rview(dws, tens, ops[i, F_Z], n, steps)
    w = ops[i, F_W]
    C = params[w:w + nin * nc].reshape((nin, nc))
    dC = grads[w:w + nin * nc].reshape((nin, nc))
    g = rbf_gamma(ops, hp, params, i)
    ap = ops[i, F_AP]
    if ap >= 0:
        dg = 0.0
        for r in range(m):
            for j in range(nc):
                dg -= dA[r, j] * Z[r, j] * A[r, j]
        grads[ap] = dg
    for r in range(m):
        for j in range(nc):
            E[r, j] = -g * (dA[r, j] * A[r, j])
    mode = ops[i, F_DX]
    dX = rview(dws, tens, ops[i, F_X], n, steps)
    for f in range(nin):
        for j in range(nc):
            dC[f, j] = 0.0
    for r in range(m):
        for f in range(nin):
            xf = X[r, f]
            for j in range(nc):
                dC[f, j] += E[r, j] * (xf - C[f, j])
            if mode == DX_WRITE:
                dX[r, f] = 2.0 * diff_dot(E, r, xf, C, f, nc)
            elif mode == DX_ADD:
                dX[r, f] += 2.0 * diff_dot(E, r, xf, C, f, nc)
    for f in range(nin):
        for j in range(nc):
            dC[f, j] = -2.0 * dC[f, j]
