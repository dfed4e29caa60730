"""Device twins of :mod:`nnlab.kernels.norm`: ``KIND_BATCHNORM`` and ``KIND_LAYERNORM``.

The math and the tensors are the CPU module's (x̂ at Z, the output at A, the inverse deviations s
in the first auxiliary tensor; BatchNorm's flag "the forward pass used the batch statistics" after
them; the running statistics in the store's buffer block ``F_BUF``, updated in training with
``store``). Every reduction is race-free: one block per feature (BatchNorm's statistics and
gradient sums, LayerNorm's ∂γ and ∂β) or per row (LayerNorm's statistics and input gradient), the
block's threads striding over the values and summing in a shared-memory tree
(:func:`nnlab.kernels.cuda._blocks.block_sum`).

As on the CPU every sum is accumulated in float64 and the statistics (μ, s) are float64 values,
so x̂, A and the gradients are computed from them in float64 and rounded once to the network's
dtype: the float32 kernels of this module contain float64 arithmetic on purpose (the one
exception to "a float32 kernel computes in float32", checked by the PTX tests). The order of the
additions is the tree's, not the CPU's row order: results agree to the float64 rounding of the
sums, far below a float32 rounding.
"""

import math

from numba import cuda, float64

from ..layout import (
    DX_ADD,
    DX_SKIP,
    DX_WRITE,
    F_A,
    F_AUX,
    F_B,
    F_BUF,
    F_DX,
    F_NOUT,
    F_T,
    F_W,
    F_X,
    F_Z,
    HP_EPS,
    HP_MOMENTUM,
    KIND_BATCHNORM,
    KIND_LAYERNORM,
)
from ._blocks import SHARED, block_sum, launch_blocks, per_dtype, signature
from .registry import register


def _build(nbt):
    @cuda.jit
    def bn_forward(X, Z, A, aux, gamma, beta, rmean, rvar, m, f, eps, momentum, training, store):
        """One block per feature j: the batch statistics (training; the running ones updated with
        ``store``) or the running statistics (eval), then x̂ and A for its m rows."""
        sh = cuda.shared.array(SHARED, float64)
        tid = cuda.threadIdx.x
        bd = cuda.blockDim.x
        for j in range(cuda.blockIdx.x, f, cuda.gridDim.x):
            if training:
                acc = 0.0
                for r in range(tid, m, bd):
                    acc += X[r * f + j]
                mean = block_sum(sh, acc) / m
                acc = 0.0
                for r in range(tid, m, bd):
                    d = X[r * f + j] - mean
                    acc += d * d
                ss = block_sum(sh, acc)
                if store and tid == 0:
                    rmean[j] = momentum * mean + (1.0 - momentum) * rmean[j]
                    rvar[j] = momentum * (ss / max(m - 1, 1)) + (1.0 - momentum) * rvar[j]
                s = 1.0 / math.sqrt(ss / m + eps)
            else:
                mean = float64(rmean[j])
                s = 1.0 / math.sqrt(float64(rvar[j]) + eps)
            if tid == 0:
                aux[j] = s
            g = float64(gamma[j])
            b = float64(beta[j])
            for r in range(tid, m, bd):
                xh = (X[r * f + j] - mean) * s
                Z[r * f + j] = xh
                A[r * f + j] = g * xh + b
        if cuda.blockIdx.x == 0 and tid == 0:
            aux[f] = nbt(1.0) if training else nbt(0.0)

    @cuda.jit
    def bn_backward(Z, dA, E, dX, aux, gamma, dgamma, dbeta, m, f, mode):
        """One block per feature j: E = dA·γ, ∂γ = Σ dA·x̂, ∂β = Σ dA, and dX in its mode (the
        batch-statistics gradient after a training forward pass, dx̂·s after an eval one)."""
        sh = cuda.shared.array(SHARED, float64)
        tid = cuda.threadIdx.x
        bd = cuda.blockDim.x
        batch = aux[f] != 0.0
        for j in range(cuda.blockIdx.x, f, cuda.gridDim.x):
            g = float64(gamma[j])
            sg = 0.0
            sb = 0.0
            for r in range(tid, m, bd):
                d = float64(dA[r * f + j])
                E[r * f + j] = d * g
                sg += d * Z[r * f + j]
                sb += d
            sg = block_sum(sh, sg)
            sb = block_sum(sh, sb)
            if tid == 0:
                dgamma[j] = sg
                dbeta[j] = sb
            if mode == DX_SKIP:
                continue
            s = float64(aux[j])
            sb *= g
            sg *= g
            for r in range(tid, m, bd):
                k = r * f + j
                if batch:
                    v = (s / m) * (m * (dA[k] * g) - sb - Z[k] * sg)
                else:
                    v = dA[k] * g * s
                if mode == DX_WRITE:
                    dX[k] = v
                elif mode == DX_ADD:
                    dX[k] += v

    @cuda.jit
    def ln_forward(X, Z, A, aux, gamma, beta, m, f, eps):
        """One block per row r: μ_r and s_r over its f features, then x̂ and A."""
        sh = cuda.shared.array(SHARED, float64)
        tid = cuda.threadIdx.x
        bd = cuda.blockDim.x
        for r in range(cuda.blockIdx.x, m, cuda.gridDim.x):
            lo = r * f
            acc = 0.0
            for j in range(tid, f, bd):
                acc += X[lo + j]
            mean = block_sum(sh, acc) / f
            acc = 0.0
            for j in range(tid, f, bd):
                d = X[lo + j] - mean
                acc += d * d
            s = 1.0 / math.sqrt(block_sum(sh, acc) / f + eps)
            if tid == 0:
                aux[r] = s
            for j in range(tid, f, bd):
                xh = (X[lo + j] - mean) * s
                Z[lo + j] = xh
                A[lo + j] = float64(gamma[j]) * xh + beta[j]

    @cuda.jit
    def ln_param_grads(Z, dA, dgamma, dbeta, m, f):
        """One block per feature j: ∂γ_j = Σ_rows dA·x̂, ∂β_j = Σ_rows dA."""
        sh = cuda.shared.array(SHARED, float64)
        tid = cuda.threadIdx.x
        bd = cuda.blockDim.x
        for j in range(cuda.blockIdx.x, f, cuda.gridDim.x):
            sg = 0.0
            sb = 0.0
            for r in range(tid, m, bd):
                d = float64(dA[r * f + j])
                sg += d * Z[r * f + j]
                sb += d
            sg = block_sum(sh, sg)
            sb = block_sum(sh, sb)
            if tid == 0:
                dgamma[j] = sg
                dbeta[j] = sb

    @cuda.jit
    def ln_backward(Z, dA, E, dX, aux, gamma, m, f, mode):
        """One block per row r: E = dx̂ = dA·γ, then dX = (s/f)·(f·dx̂ − Σdx̂ − x̂·Σdx̂x̂) in its mode."""
        sh = cuda.shared.array(SHARED, float64)
        tid = cuda.threadIdx.x
        bd = cuda.blockDim.x
        for r in range(cuda.blockIdx.x, m, cuda.gridDim.x):
            lo = r * f
            s1 = 0.0
            s2 = 0.0
            for j in range(tid, f, bd):
                dxh = dA[lo + j] * float64(gamma[j])
                E[lo + j] = dxh
                s1 += dxh
                s2 += dxh * Z[lo + j]
            s1 = block_sum(sh, s1)
            s2 = block_sum(sh, s2)
            if mode == DX_SKIP:
                continue
            s = float64(aux[r])
            for j in range(tid, f, bd):
                v = (s / f) * (f * (dA[lo + j] * float64(gamma[j])) - s1 - Z[lo + j] * s2)
                if mode == DX_WRITE:
                    dX[lo + j] = v
                elif mode == DX_ADD:
                    dX[lo + j] += v

    return _Kernels(bn_forward, bn_backward, ln_forward, ln_param_grads, ln_backward)


class _Kernels:
    def __init__(self, bn_forward, bn_backward, ln_forward, ln_param_grads, ln_backward):
        self.bn_forward = bn_forward
        self.bn_backward = bn_backward
        self.ln_forward = ln_forward
        self.ln_param_grads = ln_param_grads
        self.ln_backward = ln_backward


kernels = per_dtype(_build)

SIGNATURES = {
    "bn_forward": "void(F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], int64, int64, float64, "
                  "float64, int64, int64)",
    "bn_backward": "void(F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], int64, int64, int64)",
    "ln_forward": "void(F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], int64, int64, float64)",
    "ln_param_grads": "void(F[::1], F[::1], F[::1], F[::1], int64, int64)",
    "ln_backward": "void(F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], int64, int64, int64)",
}
FLOAT64_ON_PURPOSE = frozenset(SIGNATURES)  # every kernel here: float64 statistics, as on the CPU


def ptx_kernels(dtype):
    """[(name, python function, compile_ptx signature)] of every kernel of this module for ``dtype``."""
    k = kernels(dtype)
    return [(name, getattr(k, name).py_func, signature(sig, dtype)) for name, sig in SIGNATURES.items()]


def _views(prog, i, n):
    o = prog.ops[i]
    m = n * int(o[F_T])
    f = int(o[F_NOUT])
    w, b = int(o[F_W]), int(o[F_B])
    return o, m, f, prog.params[w:w + f], prog.params[b:b + f], w, b


def batchnorm_forward(prog, i, n, training, store):
    """x̂ = (x − μ)·s and A = γ·x̂ + β with the batch statistics (training) or the running ones
    (eval); in training with ``store`` the running statistics take one step towards the batch's."""
    o, m, f, gamma, beta, _, _ = _views(prog, i, n)
    buf = int(o[F_BUF])
    ws = prog.ws
    launch_blocks(kernels(prog.dtype).bn_forward, f, prog)(
        prog.flat(ws, int(o[F_X]), n), prog.flat(ws, int(o[F_Z]), n), prog.flat(ws, int(o[F_A]), n),
        prog.flat(ws, int(o[F_AUX]), n), gamma, beta, prog.params[buf:buf + f], prog.params[buf + f:buf + 2 * f],
        m, f, float(prog.hp[i, HP_EPS]), float(prog.hp[i, HP_MOMENTUM]), 1 if training else 0,
        1 if (training and store) else 0)
    return False


def batchnorm_backward(prog, i, n, stored):
    """dx̂ = dA·γ (memoized at Z), ∂γ = Σ dA·x̂, ∂β = Σ dA, and dX in the op's mode."""
    o, m, f, gamma, _, w, b = _views(prog, i, n)
    launch_blocks(kernels(prog.dtype).bn_backward, f, prog)(
        prog.flat(prog.ws, int(o[F_Z]), n), prog.flat(prog.dws, int(o[F_A]), n), prog.flat(prog.dws, int(o[F_Z]), n),
        prog.flat(prog.dws, int(o[F_X]), n), prog.flat(prog.ws, int(o[F_AUX]), n), gamma, prog.grads[w:w + f],
        prog.grads[b:b + f], m, f, int(o[F_DX]))


def layernorm_forward(prog, i, n, training, store):
    """x̂ = (x − μ_r)·s_r over each row's features, A = γ·x̂ + β (the same in training and eval)."""
    o, m, f, gamma, beta, _, _ = _views(prog, i, n)
    ws = prog.ws
    launch_blocks(kernels(prog.dtype).ln_forward, m, prog)(
        prog.flat(ws, int(o[F_X]), n), prog.flat(ws, int(o[F_Z]), n), prog.flat(ws, int(o[F_A]), n),
        prog.flat(ws, int(o[F_AUX]), n), gamma, beta, m, f, float(prog.hp[i, HP_EPS]))
    return False


def layernorm_backward(prog, i, n, stored):
    """dx̂ = dA·γ (memoized at Z), ∂γ = Σ_rows dA·x̂, ∂β = Σ_rows dA, dX per row."""
    o, m, f, gamma, _, w, b = _views(prog, i, n)
    k = kernels(prog.dtype)
    Z = prog.flat(prog.ws, int(o[F_Z]), n)
    dA = prog.flat(prog.dws, int(o[F_A]), n)
    launch_blocks(k.ln_param_grads, f, prog)(Z, dA, prog.grads[w:w + f], prog.grads[b:b + f], m, f)
    launch_blocks(k.ln_backward, m, prog)(Z, dA, prog.flat(prog.dws, int(o[F_Z]), n),
                                          prog.flat(prog.dws, int(o[F_X]), n), prog.flat(prog.ws, int(o[F_AUX]), n),
                                          gamma, m, f, int(o[F_DX]))


register(KIND_BATCHNORM, batchnorm_forward, batchnorm_backward)
register(KIND_LAYERNORM, layernorm_forward, layernorm_backward)
