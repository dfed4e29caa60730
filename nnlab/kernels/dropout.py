"""Kernels of the dropout ops (elementwise, any width, on the op's n·T rows).

``KIND_DROPOUT`` (inverted dropout, as torch.nn.Dropout), p = ``hp[i, HP_P]``:

    training:  m = [u >= p] (u ~ U(0,1) from the op's noise tensor, so P(m = 1) = 1 − p)
               A = X·s,  s = m/(1 − p)          dX = dA·s
    eval:      A = X                             dX = dA

``KIND_ALPHA_DROPOUT`` (as torch.nn.AlphaDropout, ATen's ``_dropout_impl`` with alpha), with
α = λ_selu·α_selu = 1.7580993408473766 (the negative saturation value of SELU is −α):

    a = 1/sqrt((α²p + 1)(1 − p))
    training:  A = X·(a·m) + a·α·(m − 1 + p)    (kept: a·X + aαp; dropped: −aα + aαp)
               dX = dA·a·m
    eval:      A = X                             dX = dA

In a pass that a backward pass follows (``store``), the forward pass writes the multiplier s
(dropout), a·m (alpha dropout) or 1 (eval) into the ``dws`` region of the noise tensor, which no
gradient uses; the backward pass reads it there, so it does not need to know the mode. An op
lowered without noise (p = 0) is the identity in both modes.
"""

import math

from numba import njit

from .._config import JIT
from .common import tview
from .layout import DX_ADD, DX_WRITE, F_A, F_DX, F_NOISE, F_X, HP_P

SELU_ALPHA = 1.7580993408473766  # λα of SELU: its outputs saturate at −SELU_ALPHA


@njit(**JIT)
def dropout_scale(p):
    """1/(1 − p): the multiplier of a kept entry (torch's noise.div_(1 − p))."""
    return 1.0 / (1.0 - p)


@njit(**JIT)
def alpha_dropout_consts(p):
    """(a, c_keep, c_drop) of alpha dropout: A = a·X + c_keep for a kept entry, c_drop for a
    dropped one, rounded as torch rounds them (c_keep = (αa)·p, c_drop = −αa + c_keep)."""
    a = 1.0 / math.sqrt((SELU_ALPHA * SELU_ALPHA * p + 1.0) * (1.0 - p))
    aa = SELU_ALPHA * a
    keep = aa * p
    return a, keep, -aa + keep


@njit(**JIT)
def _flat(buf, tens, t, n):
    return tview(buf, tens, t, n).reshape(-1)


@njit(**JIT)
def _identity_forward(ops, tens, ws, dws, i, n, store):
    x = _flat(ws, tens, ops[i, F_X], n)
    a = _flat(ws, tens, ops[i, F_A], n)
    for k in range(a.size):
        a[k] = x[k]
    if store and ops[i, F_NOISE] >= 0:
        d = _flat(dws, tens, ops[i, F_NOISE], n)
        for k in range(d.size):
            d[k] = 1.0


@njit(**JIT)
def dropout_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """Training: A = X·m/(1 − p) with m = [u >= p]; eval (or no noise): A = X."""
    if not training or ops[i, F_NOISE] < 0:
        _identity_forward(ops, tens, ws, dws, i, n, store)
        return
    p = hp[i, HP_P]
    s = dropout_scale(p)
    x = _flat(ws, tens, ops[i, F_X], n)
    a = _flat(ws, tens, ops[i, F_A], n)
    u = _flat(ws, tens, ops[i, F_NOISE], n)
    if store:
        d = _flat(dws, tens, ops[i, F_NOISE], n)
        for k in range(a.size):
            mult = s if u[k] >= p else 0.0
            a[k] = x[k] * mult
            d[k] = mult
    else:
        for k in range(a.size):
            a[k] = x[k] * (s if u[k] >= p else 0.0)


@njit(**JIT)
def alpha_dropout_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """Training: A = a·X + aαp where u >= p (kept), −aα + aαp elsewhere; eval: A = X."""
    if not training or ops[i, F_NOISE] < 0:
        _identity_forward(ops, tens, ws, dws, i, n, store)
        return
    p = hp[i, HP_P]
    sa, keep, drop = alpha_dropout_consts(p)
    x = _flat(ws, tens, ops[i, F_X], n)
    a = _flat(ws, tens, ops[i, F_A], n)
    u = _flat(ws, tens, ops[i, F_NOISE], n)
    if store:
        d = _flat(dws, tens, ops[i, F_NOISE], n)
        for k in range(a.size):
            kept = u[k] >= p
            a[k] = x[k] * sa + keep if kept else drop
            d[k] = sa if kept else 0.0
    else:
        for k in range(a.size):
            a[k] = x[k] * sa + keep if u[k] >= p else drop


@njit(**JIT)
def dropout_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """dX = dA·s with the multiplier s the forward pass kept (dX = dA without noise). Serves both
    dropout kinds."""
    mode = ops[i, F_DX]
    da = _flat(dws, tens, ops[i, F_A], n)
    dx = _flat(dws, tens, ops[i, F_X], n)
    if ops[i, F_NOISE] < 0:
        if mode == DX_WRITE:
            for k in range(dx.size):
                dx[k] = da[k]
        elif mode == DX_ADD:
            for k in range(dx.size):
                dx[k] += da[k]
        return
    d = _flat(dws, tens, ops[i, F_NOISE], n)
    if mode == DX_WRITE:
        for k in range(dx.size):
            dx[k] = da[k] * d[k]
    elif mode == DX_ADD:
        for k in range(dx.size):
            dx[k] += da[k] * d[k]


@njit(**JIT)
def alpha_dropout_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """dX = dA·a·m (eval: dX = dA)."""
    dropout_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)
