"""Gradient clipping on the device: the twin of :func:`nnlab.kernels.optim_cpu.clip_flat`.

The norms come from the race-free reductions of :mod:`nnlab.kernels.cuda.reduce` (per-block
float64 partial sums in shared memory, added on the host), with the CPU's rule when the float64
sum of squares over- or underflows (``SQ_LO``, ``norm_scales``: a second, power-of-two-scaled
pass), so a gradient of 1e±300 has its true norm and the norm is inf only for an infinite entry.
The elementwise kernels (clamp, scale) work in the buffer's dtype: a float32 gradient is scaled by
the coefficient rounded to float32 (the CPU multiplies in float64 and rounds the product: the two
differ by at most one float32 rounding). ``nnlab.clip``'s public functions run the CPU kernels of
``optim_cpu`` and have no kernels of their own, so these are all the clipping kernels.
"""

import math

import numpy as np
from numba import cuda, float32, float64, int64

from .. import optim_cpu as K
from ._blocks import by_dtype
from .device import MAX_BLOCKS, blocks, threads_per_block
from .reduce import device_offsets, norms_from_sq, seg_max, seg_scaled_sq, seg_sq


def _factory(dtype):
    nbt = float32 if dtype == np.float32 else float64

    @cuda.jit
    def clamp(x, c):
        """x = clip(x, −c, c); NaN stays NaN."""
        for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            v = x[i]
            x[i] = c if v > c else (-c if v < -c else v)

    @cuda.jit
    def seg_scale(x, offs, coef):
        """x[offs[k]:offs[k+1]] *= coef[k] where coef[k] < 1 (blockIdx.y = k)."""
        k = cuda.blockIdx.y
        c = coef[k]
        if c < nbt(1.0):
            for i in range(offs[k] + cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, offs[k + 1],
                           cuda.gridDim.x * cuda.blockDim.x):
                x[i] = x[i] * c

    return {"clamp": clamp, "seg_scale": seg_scale}


kernels = by_dtype(_factory, """{name: kernel} of the elementwise clipping kernels of one dtype.""")


def signatures(dtype):
    """{name: argument types} of :func:`kernels` (for ``cuda.compile_ptx``)."""
    t = float32 if np.dtype(dtype) == np.float32 else float64
    return {"clamp": (t[::1], t), "seg_scale": (t[::1], int64[::1], t[::1])}


def _scale(grads, offsets, coef, stream):
    """grads[offsets[k]:offsets[k+1]] *= coef[k] for every k with coef[k] < 1."""
    host = np.asarray(offsets, np.int64)
    nseg = host.size - 1
    tpb = threads_per_block()
    nb = max(1, min(MAX_BLOCKS, (int(np.max(np.diff(host))) + tpb - 1) // tpb))
    d_coef = cuda.to_device(np.asarray(coef, grads.dtype), stream=stream)
    kernels(grads.dtype)["seg_scale"][(nb, nseg), tpb, stream](grads, device_offsets(host, stream), d_coef)


def _global_from_sq(total, grads, lo, hi, stream):
    """:func:`nnlab.kernels.optim_cpu.global_from_sq` over grads[lo:hi] (the tensors side by side)."""
    if K.sq_in_range(total):
        return math.sqrt(total)
    if total != total:
        return total
    seg = grads[lo:hi]
    big = float(seg_max(seg, None, stream)[0]) if hi > lo else 0.0
    if big == 0.0 or not big <= K.DBL_MAX:
        return big
    s1, s2, e = K.norm_scales(big)
    return math.ldexp(math.sqrt(float(seg_scaled_sq(seg, [s1], [s2], None, stream)[0])), e)


def clip_flat(kind, value, grads, offsets, stream=0):
    """Clip the flat device gradient buffer ``grads``, whose tensors are
    ``grads[offsets[k]:offsets[k+1]]`` (``offsets`` a host int64 array), in place; returns the
    pre-clip global L2 norm (a float).

    kind: ``CLIP_NONE``, ``CLIP_VALUE`` (clamp to [−value, value]), ``CLIP_NORM`` (each tensor to
    norm ≤ value), ``CLIP_GLOBAL_NORM`` (the whole buffer to norm ≤ value); the codes of
    :mod:`nnlab.kernels.optim_cpu`. Coefficients min(1, value/(norm + 1e-6)) as torch's.
    """
    host = np.asarray(offsets, np.int64)
    kind = int(kind)
    c = float(value)
    if host.size < 2:
        total = 0.0
        if kind == K.CLIP_VALUE and grads.size:
            _clamp(grads, c, stream)
        return total
    lo, hi = int(host[0]), int(host[-1])
    if kind == K.CLIP_NORM:
        sq = seg_sq(grads, host, stream)
        total = 0.0
        for s in sq:  # Σ_k ‖g_k‖² tensor by tensor, as the CPU adds them
            total += float(s)
        norms = norms_from_sq(sq, grads, host, stream)
        fold = 0.0
        coef = np.ones(norms.size)
        for k, n in enumerate(norms):
            fold = math.hypot(fold, n)
            coef[k] = K.clip_coef(n, c)
        if np.any(coef < 1.0):
            _scale(grads, host, coef, stream)
        return math.sqrt(total) if K.sq_in_range(total) else (total if total != total else fold)
    sq = seg_sq(grads[lo:hi], None, stream) if hi > lo else np.zeros(1)
    norm = _global_from_sq(float(sq[0]), grads, lo, hi, stream)
    if kind == K.CLIP_VALUE:
        _clamp(grads, c, stream)
    elif kind == K.CLIP_GLOBAL_NORM:
        s = K.clip_coef(norm, c)
        if s < 1.0:
            _scale(grads, np.array([lo, hi], np.int64), [s], stream)
    return norm


def _clamp(grads, c, stream):
    tpb = threads_per_block()
    cast = np.float32 if np.dtype(grads.dtype) == np.float32 else np.float64
    kernels(grads.dtype)["clamp"][blocks(grads.size, tpb), tpb, stream](grads, cast(c))
