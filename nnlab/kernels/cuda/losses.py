"""The losses on the device: the twins of :func:`nnlab.kernels.cpu.loss_sum` and
:func:`nnlab.kernels.cpu.loss_fwd_bwd`.

One thread per row (grid-stride) computes the row's loss terms in float64, as the CPU does (the
casts to float64 spell out the promotions compiled code makes, so the simulator computes the same), and
with ``need_grad`` writes dL/dŶ of the batch's mean loss. The per-row sums go to a float64 device
array and are added on the host in row order after one copy (n doubles): no atomics, so the
loss is the same bits on every run.
"""

import math

import numpy as np
from numba import cuda, float32, float64

from ..layout import LOSS_BCE, LOSS_MSE, LOSS_SOFTMAX_CE
from ._blocks import by_dtype
from .device import blocks, threads_per_block


def _make(dtype):
    # nbt(math.exp(x)) and the like: compiled code evaluates math functions of a float32 argument in
    # float32 (expf), on the CPU and on the device alike; the casts say so for the simulator, which
    # would otherwise return a Python float (and cost nothing in compiled code)
    nbt = float32 if np.dtype(dtype) == np.float32 else float64

    @cuda.jit(device=True)
    def sigm(x):
        """``_math.sigm`` of a value of the dtype (σ in float64 from the dtype's exponential)."""
        if x >= 0:
            return 1.0 / (1.0 + nbt(math.exp(-x)))
        e = nbt(math.exp(x))
        return e / (1.0 + e)

    @cuda.jit
    def rows(code, Yhat, Y, dY, k, need_grad, out):
        """out[r] = Σ_j loss terms of row r of the flat (n, k) Yhat against Y (float64); with
        ``need_grad`` dY = dL/dŶ of the mean loss (Y: labels in column 0 for the softmax loss)."""
        n = Yhat.size // k
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for r in range(start, n, stride):
            o = r * k
            total = 0.0
            if code == LOSS_MSE:
                for j in range(k):
                    diff = float64(Yhat[o + j] - Y[o + j])  # (the difference in the dtype, as on the CPU)
                    total += 0.5 * diff * diff
                    if need_grad:
                        dY[o + j] = diff / n
            elif code == LOSS_SOFTMAX_CE:
                m = Yhat[o]
                for j in range(1, k):
                    if Yhat[o + j] > m:
                        m = Yhat[o + j]
                s = 0.0
                for j in range(k):
                    e = nbt(math.exp(Yhat[o + j] - m))
                    s += e
                    if need_grad:
                        dY[o + j] = e
                label = int(Y[r])
                total += float64(m - Yhat[o + label]) + math.log(s)
                if need_grad:
                    for j in range(k):
                        p = dY[o + j] / s
                        dY[o + j] = ((p - 1.0) if j == label else p) / n
            else:  # LOSS_BCE
                for j in range(k):
                    x = Yhat[o + j]
                    xy = float64(x * Y[o + j])  # (the product in the dtype, as on the CPU)
                    total += max(float64(x), 0.0) - xy + float64(nbt(math.log1p(nbt(math.exp(-abs(x))))))
                    if need_grad:
                        dY[o + j] = (sigm(x) - float64(Y[o + j])) / (n * k)
            out[r] = total

    return rows


kernel = by_dtype(_make, """The per-row loss kernel of ``dtype``.""")


def signature(dtype):
    t = "float32" if np.dtype(dtype) == np.float32 else "float64"
    return f"void(int64, {t}[::1], {t}[::1], {t}[::1], int64, boolean, float64[::1])"


def loss_sum(cuda_mod, loss_code, Yhat, Y, dY, need_grad, total, rows, stream=0):
    """``total`` plus the float64 sum of the loss terms of the ``rows`` rows of the flat device
    arrays Yhat against Y (softmax: Y holds one label per row); with ``need_grad`` writes dY."""
    k = Yhat.size // rows
    out = cuda_mod.device_array(rows, np.float64, stream=stream)
    tpb = threads_per_block()
    kernel(Yhat.dtype)[blocks(rows, tpb), tpb, stream](int(loss_code), Yhat, Y, dY, k, bool(need_grad), out)
    host = out.copy_to_host(stream=stream)
    if stream:
        stream.synchronize()
    for v in host.tolist():  # in row order, as the CPU adds them
        total += v
    return total


def mean(loss_code, total, rows, k):
    """The loss from the sum (:func:`nnlab.kernels.cpu.loss_fwd_bwd`): over rows·k for bce, rows otherwise."""
    return total / (rows * k) if loss_code == LOSS_BCE else total / rows
