"""Device twins of :mod:`nnlab.kernels.dropout` (``KIND_DROPOUT``, ``KIND_ALPHA_DROPOUT``).

The math is the CPU module's: in training a kept entry (u >= p) is scaled by 1/(1 − p) (alpha
dropout: a·x + aαp, a dropped one −aα + aαp); in eval, or for an op lowered without noise, A = X.
In a pass that a backward pass follows (``store``) the multiplier is written into the ``dws``
region of the noise tensor and the backward pass reads it there (dX = dA·multiplier).
The mask is the CPU's bit for bit: the comparison u >= p is made against the smallest value of
the network's dtype that is >= p (a float32 u is compared with the float64 p on the CPU).

The noise tensor is filled before the op runs, by :func:`nnlab.kernels.cuda.noise.fill_pass` (the
executor's noise: the CPU's per-op keys drawn on the host, the SplitMix64 stream expanded on the
device), so the mask is the CPU's for the same seed.
"""

import math

import numpy as np
from numba import cuda

from ..dropout import SELU_ALPHA
from ..layout import (
    DX_ADD,
    DX_WRITE,
    F_A,
    F_DX,
    F_NOISE,
    F_X,
    HP_P,
    KIND_ALPHA_DROPOUT,
    KIND_DROPOUT,
)
from ._blocks import launch, per_dtype, scalar, signature
from .registry import register


def _build(nbt):
    @cuda.jit
    def copy(x, a, d, store):
        """A = X; the multiplier 1 for the backward pass when ``store``."""
        for k in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            a[k] = x[k]
            if store:
                d[k] = nbt(1.0)

    @cuda.jit
    def dropout(x, a, u, d, thr, s, store):
        """A = X·s where u >= thr (kept), 0 elsewhere; the multiplier into d when ``store``."""
        for k in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            mult = s if u[k] >= thr else nbt(0.0)
            a[k] = x[k] * mult
            if store:
                d[k] = mult

    @cuda.jit
    def alpha_dropout(x, a, u, d, thr, sa, keep, drop, store):
        """A = a·X + c_keep where u >= thr, c_drop elsewhere; the multiplier a·m into d."""
        for k in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            kept = u[k] >= thr
            a[k] = x[k] * sa + keep if kept else drop
            if store:
                d[k] = sa if kept else nbt(0.0)

    @cuda.jit
    def backward(da, dx, d, mode, noise):
        """dX = dA·d (dA alone without noise), written (DX_WRITE) or added (DX_ADD)."""
        for k in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
            g = da[k] * d[k] if noise else da[k]
            if mode == DX_WRITE:
                dx[k] = g
            elif mode == DX_ADD:
                dx[k] += g

    return _Kernels(copy, dropout, alpha_dropout, backward)


class _Kernels:
    def __init__(self, copy, dropout, alpha_dropout, backward):
        self.copy = copy
        self.dropout = dropout
        self.alpha_dropout = alpha_dropout
        self.backward = backward


kernels = per_dtype(_build)

SIGNATURES = {  # the types each launcher passes (F: the network's dtype)
    "copy": "void(F[::1], F[::1], F[::1], int64)",
    "dropout": "void(F[::1], F[::1], F[::1], F[::1], F, F, int64)",
    "alpha_dropout": "void(F[::1], F[::1], F[::1], F[::1], F, F, F, F, int64)",
    "backward": "void(F[::1], F[::1], F[::1], int64, int64)",
}


def ptx_kernels(dtype):
    """[(name, python function, compile_ptx signature)] of every kernel of this module for ``dtype``."""
    k = kernels(dtype)
    return [(name, getattr(k, name).py_func, signature(sig, dtype)) for name, sig in SIGNATURES.items()]


def threshold(p, dtype):
    """The smallest value of ``dtype`` that is >= p: ``u >= threshold`` in the dtype is ``u >= p``
    with p in float64, as the CPU compares."""
    t = np.dtype(dtype).type(p)
    if float(t) < p:
        t = np.nextafter(t, np.dtype(dtype).type(np.inf))
    return t


# ---------------------------------------------------------------- launchers
def _views(prog, i, n):
    o = prog.ops[i]
    x = prog.flat(prog.ws, int(o[F_X]), n)
    a = prog.flat(prog.ws, int(o[F_A]), n)
    t = int(o[F_NOISE])
    u = prog.flat(prog.ws, t, n) if t >= 0 else a
    d = prog.flat(prog.dws, t, n) if t >= 0 else a
    return x, a, u, d


def dropout_forward(prog, i, n, training, store):
    """Training: A = X·m/(1 − p); eval (or no noise): A = X."""
    return _forward(prog, i, n, training, store, alpha=False)


def alpha_dropout_forward(prog, i, n, training, store):
    """Training: A = a·X + aαp where kept, −aα + aαp elsewhere; eval: A = X."""
    return _forward(prog, i, n, training, store, alpha=True)


def _forward(prog, i, n, training, store, alpha):
    k = kernels(prog.dtype)
    x, a, u, d = _views(prog, i, n)
    noise = prog.ops[i, F_NOISE] >= 0
    st = 1 if (store and noise) else 0
    if not training or not noise:
        launch(k.copy, a.size, prog)(x, a, d, st)
        return False
    p = float(prog.hp[i, HP_P])
    thr = threshold(p, prog.dtype)
    if alpha:
        sa = 1.0 / math.sqrt((SELU_ALPHA * SELU_ALPHA * p + 1.0) * (1.0 - p))
        aa = SELU_ALPHA * sa
        keep = aa * p
        launch(k.alpha_dropout, a.size, prog)(x, a, u, d, thr, scalar(prog, sa), scalar(prog, keep),
                                              scalar(prog, -aa + keep), st)
    else:
        launch(k.dropout, a.size, prog)(x, a, u, d, thr, scalar(prog, 1.0 / (1.0 - p)), st)
    return False


def dropout_backward(prog, i, n, stored):
    """dX = dA·(the multiplier the forward pass kept), dA alone without noise; both dropout kinds."""
    mode = int(prog.ops[i, F_DX])
    if mode not in (DX_WRITE, DX_ADD):
        return
    o = prog.ops[i]
    da = prog.flat(prog.dws, int(o[F_A]), n)
    dx = prog.flat(prog.dws, int(o[F_X]), n)
    t = int(o[F_NOISE])
    d = prog.flat(prog.dws, t, n) if t >= 0 else da
    launch(kernels(prog.dtype).backward, dx.size, prog)(da, dx, d, mode, 1 if t >= 0 else 0)


register(KIND_DROPOUT, dropout_forward, dropout_backward)
register(KIND_ALPHA_DROPOUT, alpha_dropout_forward, dropout_backward)
