"""Device twins of :mod:`nnlab.kernels.dropout` (``KIND_DROPOUT``, ``KIND_ALPHA_DROPOUT``) and of the
program's noise (:func:`nnlab.kernels.common.fill_noise`).

The math is the CPU module's: in training a kept entry (u >= p) is scaled by 1/(1 − p) (alpha
dropout: a·x + aαp, a dropped one −aα + aαp); in eval, or for an op lowered without noise, A = X.
In a pass that a backward pass follows (``store``) the multiplier is written into the ``dws``
region of the noise tensor and the backward pass reads it there (dX = dA·multiplier).
The mask is the CPU's bit for bit: the comparison u >= p is made against the smallest value of
the network's dtype that is >= p (a float32 u is compared with the float64 p on the CPU).

Noise, the same numbers as the CPU for the same seed. The CPU draws, per call and in op order, a
62-bit key per op with uniform noise from Numba's generator (seeded with the call's seed) and runs
the SplitMix64 stream :func:`nnlab.kernels.common.uniform_stream` from it; normal noise is drawn
element by element. The device executor draws the same keys on the host, once per forward pass,
with the compiled :func:`draw_noise`, and each op's noise is made on the device from its key by
the twin of ``uniform_stream`` (normal noise, drawn on the host, is copied)::

    keys, normal = draw_noise(prog.ops, prog.tens, n, seed, training, prog.dtype)
    for i in range(n_ops):
        if prog.ops[i, F_NOISE] >= 0:
            fill_noise(prog, i, n, training, keys, normal)
        forward(prog, i, n, training, store)

(``seed`` as the CPU's ``forward_store`` gets it: < 0 leaves the generator unseeded.)
"""

import math

import numpy as np
from numba import cuda, njit, uint64

from ..._config import JIT
from ..common import tview
from ..dropout import SELU_ALPHA
from ..layout import (
    DX_ADD,
    DX_WRITE,
    F_A,
    F_DX,
    F_NKIND,
    F_NOISE,
    F_X,
    HP_P,
    KIND_ALPHA_DROPOUT,
    KIND_DROPOUT,
    NOISE_UNIFORM,
)
from ._blocks import launch, per_dtype, scalar, signature
from .registry import register

_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _build(nbt):
    f32 = nbt.bitwidth == 32

    if f32:
        @cuda.jit
        def uniform_stream(U, key):
            """U[k] = the (k+1)-th SplitMix64 output from state ``key``, its top 24 bits in [0, 1)."""
            for k in range(cuda.grid(1), U.size, cuda.gridsize(1)):
                z = key + uint64(k + 1) * uint64(_GAMMA)
                z = (z ^ (z >> uint64(30))) * uint64(_MIX1)
                z = (z ^ (z >> uint64(27))) * uint64(_MIX2)
                z = z ^ (z >> uint64(31))
                U[k] = nbt(z >> uint64(40)) * nbt(5.9604644775390625e-08)
    else:
        @cuda.jit
        def uniform_stream(U, key):
            """U[k] = the (k+1)-th SplitMix64 output from state ``key``, its top 53 bits in [0, 1)."""
            for k in range(cuda.grid(1), U.size, cuda.gridsize(1)):
                z = key + uint64(k + 1) * uint64(_GAMMA)
                z = (z ^ (z >> uint64(30))) * uint64(_MIX1)
                z = (z ^ (z >> uint64(27))) * uint64(_MIX2)
                z = z ^ (z >> uint64(31))
                U[k] = nbt(z >> uint64(11)) * nbt(1.1102230246251565e-16)

    @cuda.jit
    def fill(U, v):
        """U[:] = v (the eval value of the noise)."""
        for k in range(cuda.grid(1), U.size, cuda.gridsize(1)):
            U[k] = v

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

    return _Kernels(uniform_stream, fill, copy, dropout, alpha_dropout, backward)


class _Kernels:
    def __init__(self, uniform_stream, fill, copy, dropout, alpha_dropout, backward):
        self.uniform_stream = uniform_stream
        self.fill = fill
        self.copy = copy
        self.dropout = dropout
        self.alpha_dropout = alpha_dropout
        self.backward = backward


kernels = per_dtype(_build)

SIGNATURES = {  # the types each launcher passes (F: the network's dtype)
    "uniform_stream": "void(F[::1], uint64)",
    "fill": "void(F[::1], F)",
    "copy": "void(F[::1], F[::1], F[::1], int64)",
    "dropout": "void(F[::1], F[::1], F[::1], F[::1], F, F, int64)",
    "alpha_dropout": "void(F[::1], F[::1], F[::1], F[::1], F, F, F, F, int64)",
    "backward": "void(F[::1], F[::1], F[::1], int64, int64)",
}


def ptx_kernels(dtype):
    """[(name, python function, compile_ptx signature)] of every kernel of this module for ``dtype``."""
    k = kernels(dtype)
    return [(name, getattr(k, name).py_func, signature(sig, dtype)) for name, sig in SIGNATURES.items()]


# ---------------------------------------------------------------- noise
@njit(**JIT)
def draw_noise_into(ops, tens, n, seed, training, keys, normal):
    """The host side of a forward pass's noise, drawn exactly as the CPU's ``forward_store`` and
    ``fill_noise`` draw it: seed Numba's generator with ``seed`` (unless < 0), then per op with
    noise in op order one key ``randint(0, 1 << 62)`` (uniform noise) into ``keys[i]`` or every
    element from ``standard_normal()`` (normal noise) into ``normal`` at the noise tensor. Nothing
    is drawn in eval."""
    if seed >= 0:
        np.random.seed(seed)
    for i in range(ops.shape[0]):
        keys[i] = 0
        if ops[i, F_NOISE] < 0 or not training:
            continue
        if ops[i, F_NKIND] == NOISE_UNIFORM:
            keys[i] = np.random.randint(0, 1 << 62)
        else:
            U = tview(normal, tens, ops[i, F_NOISE], n).reshape(-1)
            for k in range(U.size):
                U[k] = np.random.standard_normal()


def draw_noise(ops, tens, n, seed, training, dtype):
    """(keys, normal) for one forward pass of an ``n``-row batch: ``keys`` uint64 per op (the key of
    its uniform noise), ``normal`` a host array of the workspace's layout holding the normal noise
    (empty when no op has normal noise). See the module docstring for the calling sequence."""
    ops = np.ascontiguousarray(ops, np.int64)
    tens = np.ascontiguousarray(tens, np.int64)
    keys = np.zeros(ops.shape[0], np.uint64)
    has_normal = bool(((ops[:, F_NOISE] >= 0) & (ops[:, F_NKIND] != NOISE_UNIFORM)).any())
    size = int(n * (tens[:, 0] + tens[:, 1]).max()) if has_normal else 0
    normal = np.zeros(size, dtype)
    draw_noise_into(ops, tens, int(n), int(seed), bool(training), keys, normal)
    return keys, normal


def fill_noise(prog, i, n, training, keys, normal):
    """Op i's noise on the device (the twin of ``common.fill_noise``): in training the SplitMix64
    stream from ``keys[i]`` (uniform) or the host-drawn ``normal`` values; in eval 0.5 (uniform) or
    0 (normal). ``keys``, ``normal``: from :func:`draw_noise` for this pass."""
    t = int(prog.ops[i, F_NOISE])
    U = prog.flat(prog.ws, t, n)
    uniform = prog.ops[i, F_NKIND] == NOISE_UNIFORM
    k = kernels(prog.dtype)
    if training:
        if uniform:
            launch(k.uniform_stream, U.size, prog)(U, np.uint64(keys[i]))
        else:
            off = int(prog.tens[t, 0]) * n
            U.copy_to_device(np.ascontiguousarray(normal[off:off + U.size], prog.dtype), stream=prog.stream)
    else:
        launch(k.fill, U.size, prog)(U, scalar(prog, 0.5 if uniform else 0.0))


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
