"""The normalisation layers' kernels: batch normalisation (per feature over the batch rows) and
layer normalisation (per row over its features).

``KIND_BATCHNORM`` (m = n·T rows of F features, statistics per feature j over the m rows):

    training:  μ_j = Σ_r x_rj / m,   σ²_j = Σ_r (x_rj − μ_j)² / m   (biased),   s_j = 1/√(σ²_j + ε)
    eval:      μ_j, σ²_j = the running estimates
    x̂ = (x − μ)·s,   A = γ·x̂ + β
    running ← (1 − momentum)·running + momentum·batch   (the variance unbiased: Σ(x − μ)²/(m − 1)),
              in training when a backward pass follows (``store``): once per training step
    backward:  dx̂ = dA·γ (the memoized error, at Z),  dγ = Σ_r dA·x̂,  dβ = Σ_r dA,
               training: dx = (s/m)·(m·dx̂ − Σ_r dx̂ − x̂·Σ_r dx̂·x̂);   eval: dx = dx̂·s

``KIND_LAYERNORM``: the same with the statistics of each row over its F features (no running
statistics, the same in training and eval): dx = (s_r/F)·(F·dx̂ − Σ_j dx̂ − x̂·Σ_j dx̂·x̂).

Tensors of an op: Z holds x̂ (and in ``dws`` dx̂), A the output. The first auxiliary tensor holds
s: BatchNorm's F values, then a flag (1 when the forward pass used the batch statistics) -- a
tensor of F + 1 elements per batch row, of which only the first F + 1 are used; LayerNorm's one
value per row and step.
Every sum is accumulated in float64 (float32 networks too; per-feature sums in a small float64
array allocated per call); ε > 0 keeps s finite.
"""

import math

import numpy as np
from numba import njit

from .._config import FASTMATH, JIT
from .common import rview
from .layout import DX_SKIP, DX_WRITE, F_A, F_AUX, F_B, F_BUF, F_DX, F_NOUT, F_T, F_W, F_X, F_Z, HP_EPS, HP_MOMENTUM

SUM_JIT = dict(JIT, fastmath=set(FASTMATH) | {"reassoc"})


# ---------------------------------------------------------------- scalar math (shared with a GPU twin)
@njit(**JIT)
def inv_std(var, eps):
    """1/√(var + ε): finite for var ≥ 0 and ε > 0."""
    return 1.0 / math.sqrt(var + eps)


@njit(**JIT)
def running_update(running, batch, momentum):
    """momentum·batch + (1 − momentum)·running (torch's order of the terms)."""
    return momentum * batch + (1.0 - momentum) * running


@njit(**JIT)
def norm_dx(dxh, xh, s1, s2, s, m):
    """The input gradient of a normalisation over m values: (s/m)·(m·dx̂ − Σdx̂ − x̂·Σdx̂x̂)."""
    return (s / m) * (m * dxh - s1 - xh * s2)


@njit(**JIT)
def _flat(buf, tens, t, n):
    off = tens[t, 0] * n
    return buf[off:off + n * tens[t, 1]]


# ---------------------------------------------------------------- batch normalisation
# The loops run along the rows of the C-ordered (m, F) tensors (every cache line used in full, the
# inner loop over features vectorised) with per-feature float64 sums in a small array of 2·F
# values allocated per call: a loop per feature down the columns is 5-10x slower at F = 256.
@njit(**JIT)
def batchnorm_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """x̂ = (x − μ)·s and A = γ·x̂ + β with the batch statistics (training) or the running ones
    (eval); in training with ``store`` the running statistics take one step towards the batch's."""
    steps = ops[i, F_T]
    m = n * steps
    f = ops[i, F_NOUT]
    X = rview(ws, tens, ops[i, F_X], n, steps)
    Z = rview(ws, tens, ops[i, F_Z], n, steps)
    A = rview(ws, tens, ops[i, F_A], n, steps)
    aux = _flat(ws, tens, ops[i, F_AUX], n)
    w = ops[i, F_W]
    b = ops[i, F_B]
    gamma = params[w:w + f]
    beta = params[b:b + f]
    buf = ops[i, F_BUF]
    rmean = params[buf:buf + f]
    rvar = params[buf + f:buf + 2 * f]
    eps = hp[i, HP_EPS]
    momentum = hp[i, HP_MOMENTUM]
    acc = np.zeros(2 * f)
    mean = acc[:f]   # μ per feature
    s = acc[f:]      # Σ(x − μ)², then s = 1/√(σ² + ε)
    if training:
        for r in range(m):
            for j in range(f):
                mean[j] += X[r, j]
        for j in range(f):
            mean[j] /= m
        for r in range(m):
            for j in range(f):
                d = X[r, j] - mean[j]
                s[j] += d * d
        if training and store:
            for j in range(f):
                rmean[j] = running_update(rmean[j], mean[j], momentum)
                rvar[j] = running_update(rvar[j], s[j] / max(m - 1, 1), momentum)
        for j in range(f):
            s[j] = inv_std(s[j] / m, eps)
    else:
        for j in range(f):
            mean[j] = rmean[j]
            s[j] = inv_std(rvar[j] + 0.0, eps)
    for j in range(f):
        aux[j] = s[j]
    aux[f] = 1.0 if training else 0.0
    for r in range(m):
        for j in range(f):
            xh = (X[r, j] - mean[j]) * s[j]
            Z[r, j] = xh
            A[r, j] = gamma[j] * xh + beta[j]


@njit(**JIT)
def batchnorm_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """dx̂ = dA·γ (memoized at Z), dγ = Σ dA·x̂, dβ = Σ dA, and dx: the batch-statistics gradient
    after a training forward pass, dx̂·s after an eval one. (Σ dx̂ = γ·Σ dA and
    Σ dx̂·x̂ = γ·Σ dA·x̂: the two sums serve both.)"""
    steps = ops[i, F_T]
    m = n * steps
    f = ops[i, F_NOUT]
    Z = rview(ws, tens, ops[i, F_Z], n, steps)
    dA = rview(dws, tens, ops[i, F_A], n, steps)
    E = rview(dws, tens, ops[i, F_Z], n, steps)
    dX = rview(dws, tens, ops[i, F_X], n, steps)
    aux = _flat(ws, tens, ops[i, F_AUX], n)
    w = ops[i, F_W]
    b = ops[i, F_B]
    gamma = params[w:w + f]
    dgamma = grads[w:w + f]
    dbeta = grads[b:b + f]
    mode = ops[i, F_DX]
    acc = np.zeros(2 * f)
    sg = acc[:f]   # Σ dA·x̂
    sb = acc[f:]   # Σ dA
    for r in range(m):
        for j in range(f):
            d = dA[r, j] + 0.0
            E[r, j] = d * gamma[j]
            sg[j] += d * Z[r, j]
            sb[j] += d
    for j in range(f):
        dgamma[j] = sg[j]
        dbeta[j] = sb[j]
    if mode == DX_SKIP:
        return
    if aux[f] != 0.0:  # the forward pass used the batch statistics
        for j in range(f):  # Σ dx̂ and Σ dx̂·x̂ in place
            g = gamma[j] + 0.0
            sb[j] *= g
            sg[j] *= g
        for r in range(m):
            for j in range(f):
                v = norm_dx(dA[r, j] * (gamma[j] + 0.0), Z[r, j] + 0.0, sb[j], sg[j], aux[j] + 0.0, m)
                if mode == DX_WRITE:
                    dX[r, j] = v
                else:
                    dX[r, j] += v
    else:
        for r in range(m):
            for j in range(f):
                v = dA[r, j] * (gamma[j] + 0.0) * aux[j]
                if mode == DX_WRITE:
                    dX[r, j] = v
                else:
                    dX[r, j] += v


# ---------------------------------------------------------------- layer normalisation
# The forward pass's row sums are compiled with "reassoc" alone (as the monitor's statistics in
# nnlab.kernels.cpu): LLVM may then split a sum into vector lanes instead of one chain of dependent
# float64 additions (the forward pass 1.5x faster at F = 256); still float64 sums of the same
# terms, the same bits on every call.
@njit(**SUM_JIT)
def _row_sum(x, lo, f):
    """Σ x[lo:lo+f] in float64."""
    t = 0.0
    for j in range(lo, lo + f):
        t += x[j]
    return t


@njit(**SUM_JIT)
def _row_sq_dev(x, lo, f, mean):
    """Σ (x[lo+j] − mean)² in float64."""
    q = 0.0
    for j in range(lo, lo + f):
        d = x[j] - mean
        q += d * d
    return q


@njit(**JIT)
def layernorm_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """x̂ = (x − μ_r)·s_r over each row's F features, A = γ·x̂ + β (the same in training and eval)."""
    steps = ops[i, F_T]
    m = n * steps
    f = ops[i, F_NOUT]
    X = rview(ws, tens, ops[i, F_X], n, steps)
    Z = rview(ws, tens, ops[i, F_Z], n, steps)
    A = rview(ws, tens, ops[i, F_A], n, steps)
    aux = _flat(ws, tens, ops[i, F_AUX], n)
    w = ops[i, F_W]
    b = ops[i, F_B]
    gamma = params[w:w + f]
    beta = params[b:b + f]
    eps = hp[i, HP_EPS]
    Xf = X.reshape(-1)
    for r in range(m):
        lo = r * f
        mean = _row_sum(Xf, lo, f) / f
        s = inv_std(_row_sq_dev(Xf, lo, f, mean) / f, eps)
        aux[r] = s
        for j in range(f):
            xh = (X[r, j] - mean) * s
            Z[r, j] = xh
            A[r, j] = gamma[j] * xh + beta[j]


@njit(**JIT)
def layernorm_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """dx̂ = dA·γ (memoized at Z), dγ = Σ_rows dA·x̂, dβ = Σ_rows dA, dx per row."""
    steps = ops[i, F_T]
    m = n * steps
    f = ops[i, F_NOUT]
    Z = rview(ws, tens, ops[i, F_Z], n, steps)
    dA = rview(dws, tens, ops[i, F_A], n, steps)
    E = rview(dws, tens, ops[i, F_Z], n, steps)
    dX = rview(dws, tens, ops[i, F_X], n, steps)
    aux = _flat(ws, tens, ops[i, F_AUX], n)
    w = ops[i, F_W]
    b = ops[i, F_B]
    gamma = params[w:w + f]
    dgamma = grads[w:w + f]
    dbeta = grads[b:b + f]
    mode = ops[i, F_DX]
    acc = np.zeros(2 * f)  # Σ_rows dA·x̂ and Σ_rows dA in float64, accumulated row by row
    sg = acc[:f]
    sb = acc[f:]
    for r in range(m):
        for j in range(f):
            d = dA[r, j] + 0.0
            sg[j] += d * Z[r, j]
            sb[j] += d
    for j in range(f):
        dgamma[j] = sg[j]
        dbeta[j] = sb[j]
    for r in range(m):
        s1 = 0.0
        s2 = 0.0
        for j in range(f):
            dxh = dA[r, j] * (gamma[j] + 0.0)
            E[r, j] = dxh
            s1 += dxh
            s2 += dxh * Z[r, j]
        if mode == DX_SKIP:
            continue
        s = aux[r] + 0.0
        for j in range(f):
            v = norm_dx(dA[r, j] * (gamma[j] + 0.0), Z[r, j] + 0.0, s1, s2, s, f)
            if mode == DX_WRITE:
                dX[r, j] = v
            else:
                dX[r, j] += v
