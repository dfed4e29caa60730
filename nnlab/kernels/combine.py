"""Kernels of the ops that combine tensors: a residual block's sum and a highway layer's gate.

``KIND_ADD``:  A = X + X2                 dX = dA,  dX2 = dA
``KIND_GATE``: A = T·H + (1 − T)·X         dX = dA·(1 − T),  dH = dA·T,  dT = dA·(H − X)
(H = X2, T = X3). Each input gradient is written or added in its own ``DX_*`` mode.
"""

from numba import njit

from .._config import JIT
from .common import tview
from .layout import DX_ADD, DX_WRITE, F_A, F_DX, F_DX2, F_DX3, F_X, F_X2, F_X3


@njit(**JIT)
def _flat(buf, tens, t, n):
    return tview(buf, tens, t, n).reshape(-1)


@njit(**JIT)
def add_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """A = X + X2."""
    x = _flat(ws, tens, ops[i, F_X], n)
    s = _flat(ws, tens, ops[i, F_X2], n)
    a = _flat(ws, tens, ops[i, F_A], n)
    for k in range(a.size):
        a[k] = x[k] + s[k]


@njit(**JIT)
def _route(dst, src, mode):
    if mode == DX_WRITE:
        for k in range(dst.size):
            dst[k] = src[k]
    elif mode == DX_ADD:
        for k in range(dst.size):
            dst[k] += src[k]


@njit(**JIT)
def add_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """dX = dA and dX2 = dA."""
    da = _flat(dws, tens, ops[i, F_A], n)
    _route(_flat(dws, tens, ops[i, F_X], n), da, ops[i, F_DX])
    _route(_flat(dws, tens, ops[i, F_X2], n), da, ops[i, F_DX2])


@njit(**JIT)
def gate_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """A = T·H + (1 − T)·X, written as X + T·(H − X)."""
    x = _flat(ws, tens, ops[i, F_X], n)
    h = _flat(ws, tens, ops[i, F_X2], n)
    t = _flat(ws, tens, ops[i, F_X3], n)
    a = _flat(ws, tens, ops[i, F_A], n)
    for k in range(a.size):
        a[k] = t[k] * h[k] + (1.0 - t[k]) * x[k]


@njit(**JIT)
def _gate_grad(dst, da, f, mode):
    """dst = da·f (DX_WRITE) or dst += da·f (DX_ADD)."""
    if mode == DX_WRITE:
        for k in range(dst.size):
            dst[k] = da[k] * f[k]
    elif mode == DX_ADD:
        for k in range(dst.size):
            dst[k] += da[k] * f[k]


@njit(**JIT)
def gate_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """dX = dA·(1 − T), dH = dA·T, dT = dA·(H − X)."""
    x = _flat(ws, tens, ops[i, F_X], n)
    h = _flat(ws, tens, ops[i, F_X2], n)
    t = _flat(ws, tens, ops[i, F_X3], n)
    da = _flat(dws, tens, ops[i, F_A], n)
    dx = _flat(dws, tens, ops[i, F_X], n)
    dh = _flat(dws, tens, ops[i, F_X2], n)
    dt = _flat(dws, tens, ops[i, F_X3], n)
    mode = ops[i, F_DX3]
    for k in range(dt.size):
        g = da[k] * (h[k] - x[k])
        if mode == DX_WRITE:
            dt[k] = g
        elif mode == DX_ADD:
            dt[k] += g
    _gate_grad(dh, da, t, ops[i, F_DX2])
    mode = ops[i, F_DX]
    if mode == DX_WRITE:
        for k in range(dx.size):
            dx[k] = da[k] * (1.0 - t[k])
    elif mode == DX_ADD:
        for k in range(dx.size):
            dx[k] += da[k] * (1.0 - t[k])
