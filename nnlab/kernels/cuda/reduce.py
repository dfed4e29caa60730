"""Race-free reductions on the device: sums of squares, max |x| and the scaled sums of
:mod:`nnlab.kernels.optim_cpu`'s overflow-free norms, over a whole flat buffer or over each of
its segments ``x[offs[k]:offs[k+1]]`` at once.

Every reduction is two-stage and uses no floating-point atomics: each block reduces its
grid-stride share in shared memory (a fixed tree, so a launch configuration always adds in the
same order) and writes one partial per block (per segment: a 2-D grid, ``blockIdx.y`` the
segment); the host adds the few partials. Sums accumulate in float64 whatever the buffer's dtype,
as the CPU's (the reason float32 reduction kernels contain float64 instructions).
"""

import math

import numpy as np
from numba import boolean, cuda, float32, float64, int64

from .. import optim_cpu as K
from ._blocks import by_dtype
from .device import MAX_BLOCKS, threads_per_block

MAXT = 1024  # shared-memory slots per block: the largest threads-per-block
_offsets = {}
_partials = {}


@cuda.jit(device=True)
def block_sum(sh, v):
    """Σ of ``v`` over the block's threads (every thread gets it); ``sh`` a float64 shared array."""
    tid = cuda.threadIdx.x
    bd = cuda.blockDim.x
    cuda.syncthreads()
    sh[tid] = v
    cuda.syncthreads()
    step = 1
    while step < bd:
        if tid % (2 * step) == 0 and tid + step < bd:
            sh[tid] += sh[tid + step]
        cuda.syncthreads()
        step *= 2
    r = sh[0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True)
def block_max(sh, v):
    """max of ``v`` over the block's threads (NaN passed over, as ``optim_cpu.max_abs``)."""
    tid = cuda.threadIdx.x
    bd = cuda.blockDim.x
    cuda.syncthreads()
    sh[tid] = v
    cuda.syncthreads()
    step = 1
    while step < bd:
        if tid % (2 * step) == 0 and tid + step < bd:
            b = sh[tid + step]
            if b > sh[tid]:
                sh[tid] = b
        cuda.syncthreads()
        step *= 2
    r = sh[0]
    cuda.syncthreads()
    return r


@cuda.jit(device=True)
def tree_sum(sh, k):
    """Add the rows 0..k-1 of the (rows, MAXT) float64 shared array ``sh``, which every thread has
    filled at its column, into column 0 (one tree for all rows: one barrier per level)."""
    tid = cuda.threadIdx.x
    bd = cuda.blockDim.x
    cuda.syncthreads()
    step = 1
    while step < bd:
        if tid % (2 * step) == 0 and tid + step < bd:
            for r in range(k):
                sh[r, tid] += sh[r, tid + step]
        cuda.syncthreads()
        step *= 2


def _factory(dtype):
    @cuda.jit
    def seg_sq(x, offs, whole, part):
        """part[k, b] = Σ x² (float64) over block b's share of segment k (the whole x if ``whole``)."""
        sh = cuda.shared.array(MAXT, float64)
        k = cuda.blockIdx.y
        lo = 0 if whole else offs[k]
        hi = x.size if whole else offs[k + 1]
        acc = float64(0.0)
        for i in range(lo + cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, hi,
                       cuda.gridDim.x * cuda.blockDim.x):
            v = float64(x[i])
            acc += v * v
        t = block_sum(sh, acc)
        if cuda.threadIdx.x == 0:
            part[k, cuda.blockIdx.x] = t

    @cuda.jit
    def seg_max(x, offs, whole, part):
        """part[k, b] = max |x| (float64; NaN passed over) over block b's share of segment k."""
        sh = cuda.shared.array(MAXT, float64)
        k = cuda.blockIdx.y
        lo = 0 if whole else offs[k]
        hi = x.size if whole else offs[k + 1]
        m = float64(0.0)
        for i in range(lo + cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, hi,
                       cuda.gridDim.x * cuda.blockDim.x):
            a = abs(float64(x[i]))
            if a > m:
                m = a
        t = block_max(sh, m)
        if cuda.threadIdx.x == 0:
            part[k, cuda.blockIdx.x] = t

    @cuda.jit
    def seg_scaled_sq(x, offs, whole, s1, s2, part):
        """part[k, b] = Σ ((x·s1[k])·s2[k])² (float64; s1, s2 powers of two: exact scaling)."""
        sh = cuda.shared.array(MAXT, float64)
        k = cuda.blockIdx.y
        lo = 0 if whole else offs[k]
        hi = x.size if whole else offs[k + 1]
        a1 = s1[k]
        a2 = s2[k]
        acc = float64(0.0)
        for i in range(lo + cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, hi,
                       cuda.gridDim.x * cuda.blockDim.x):
            v = (float64(x[i]) * a1) * a2
            acc += v * v
        t = block_sum(sh, acc)
        if cuda.threadIdx.x == 0:
            part[k, cuda.blockIdx.x] = t

    return {"seg_sq": seg_sq, "seg_max": seg_max, "seg_scaled_sq": seg_scaled_sq}


kernels = by_dtype(_factory, """{name: kernel} of the reductions over a float32 or float64 buffer.""")


def signatures(dtype):
    """{name: argument types} of :func:`kernels` (for ``cuda.compile_ptx``)."""
    t = float32 if np.dtype(dtype) == np.float32 else float64
    x, offs, part = t[::1], int64[::1], float64[:, ::1]
    return {"seg_sq": (x, offs, boolean, part), "seg_max": (x, offs, boolean, part),
            "seg_scaled_sq": (x, offs, boolean, float64[::1], float64[::1], part)}


def to_host(darr, stream=0):
    """A host copy of the device array ``darr`` once it has arrived (a copy on a stream is
    asynchronous: the stream is synchronised before the values are read)."""
    h = darr.copy_to_host(stream=stream)
    if not isinstance(stream, int):
        stream.synchronize()
    return h


def partials(rows, nb, stream=0):
    """A (rows, nb) float64 device array for per-block partials, kept between calls (each call reads
    its partials back before the next launch on the stream can overwrite them)."""
    key = (rows, nb, id(stream))
    a = _partials.get(key)
    if a is None:
        if len(_partials) > 256:
            _partials.clear()
        a = _partials[key] = cuda.device_array((rows, nb), np.float64, stream=stream)
    return a


def device_offsets(offsets, stream=0):
    """A device copy of the int64 segment bounds ``offsets`` (kept: the executor passes the same
    bounds every step)."""
    if not isinstance(offsets, (np.ndarray, list, tuple)):
        return offsets  # already on the device
    host = np.ascontiguousarray(offsets, np.int64)
    key = host.tobytes()
    d = _offsets.get(key)
    if d is None:
        if len(_offsets) > 64:
            _offsets.clear()
        d = _offsets[key] = cuda.to_device(host, stream=stream)
    return d


def _grid(longest):
    tpb = threads_per_block()
    return tpb, max(1, min(MAX_BLOCKS, (int(longest) + tpb - 1) // tpb))


def _run(name, x, offsets, extra, stream, combine):
    """Per-segment results of reduction ``name`` (offsets None: one result over the whole x)."""
    whole = offsets is None
    if whole:
        nseg, longest = 1, x.size
        offs = device_offsets(np.zeros(2, np.int64), stream)
    else:
        host = np.asarray(offsets, np.int64)
        nseg, longest = host.size - 1, int(np.max(np.diff(host))) if host.size > 1 else 0
        offs = device_offsets(host, stream)
    if nseg <= 0:
        return np.zeros(0)
    tpb, nb = _grid(longest)
    part = partials(nseg, nb, stream)
    kernels(x.dtype)[name][(nb, nseg), tpb, stream](x, offs, whole, *extra, part)
    return combine(to_host(part, stream))


def seg_sq(x, offsets=None, stream=0):
    """Σ x² (float64) of each segment of ``x`` (offsets None: of the whole x, as a 1-element array)."""
    return _run("seg_sq", x, offsets, (), stream, lambda p: p.sum(axis=1))


def seg_max(x, offsets=None, stream=0):
    """max |x| (float64, NaN passed over) of each segment."""
    return _run("seg_max", x, offsets, (), stream, lambda p: np.fmax.reduce(p, axis=1))


def seg_scaled_sq(x, s1, s2, offsets=None, stream=0):
    """Σ ((x·s1)·s2)² of each segment, with per-segment power-of-two scales s1, s2."""
    d1 = cuda.to_device(np.ascontiguousarray(s1, np.float64), stream=stream)
    d2 = cuda.to_device(np.ascontiguousarray(s2, np.float64), stream=stream)
    return _run("seg_scaled_sq", x, offsets, (d1, d2), stream, lambda p: p.sum(axis=1))


def max_abs(x, stream=0):
    """max |x| of a device array (float64; NaN entries passed over)."""
    return float(seg_max(x, None, stream)[0]) if x.size else 0.0


def norms_from_sq(sq, x, offsets=None, stream=0):
    """‖x_k‖₂ of each segment given its Σx² ``sq`` (host float64 array): √sq where it is in range,
    else recomputed with the CPU's power-of-two scaling (:func:`nnlab.kernels.optim_cpu.norm_from_sq`):
    inf only for an infinite entry, NaN for a NaN entry, 0 only for an all-zero segment."""
    sq = np.asarray(sq, np.float64)
    out = np.empty(sq.size)
    redo = []
    for k, s in enumerate(sq):
        if K.SQ_LO <= s <= K.DBL_MAX:
            out[k] = math.sqrt(s)
        elif s != s:
            out[k] = s
        else:
            redo.append(k)
    if redo:
        big = seg_max(x, offsets, stream)
        s1 = np.ones(sq.size)
        s2 = np.ones(sq.size)
        scaled = []
        for k in redo:
            b = float(big[k])
            if b == 0.0 or not b <= K.DBL_MAX:
                out[k] = b
            else:
                s1[k], s2[k], e = K.norm_scales(b)
                scaled.append((k, e))
        if scaled:
            t = seg_scaled_sq(x, s1, s2, offsets, stream)
            for k, e in scaled:
                out[k] = math.ldexp(math.sqrt(t[k]), e)
    return out
