"""Small elementwise kernels every launcher may use: writing an input gradient in the op's ``DX_*``
mode (the twin of :func:`nnlab.kernels.common.put_dx`), copies and fills.

Grid-stride loops over flat device arrays of one dtype; no arithmetic beyond the dtype's own
addition, so the float32 kernels hold no float64 instruction.
"""

import numpy as np
from numba import cuda

from ..layout import DX_ADD, DX_WRITE
from ._blocks import by_dtype
from .device import blocks, threads_per_block


def _make(dtype):
    """A compiled copy of each kernel per dtype (each launch then compiles one signature)."""

    @cuda.jit
    def put(dst, src, add):
        """dst = src, or dst += src when ``add``."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        if add:
            for k in range(start, dst.size, stride):
                dst[k] += src[k]
        else:
            for k in range(start, dst.size, stride):
                dst[k] = src[k]

    @cuda.jit
    def fill(dst, value):
        """dst[:] = value (a value of dst's dtype)."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for k in range(start, dst.size, stride):
            dst[k] = value

    @cuda.jit
    def mul(dst, src):
        """dst = src ⊙ dst."""
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for k in range(start, dst.size, stride):
            dst[k] = src[k] * dst[k]

    return {"put": put, "fill": fill, "mul": mul}


kernels = by_dtype(_make, """The kernels of ``dtype`` (float32 or float64).""")


def _flat(a):
    return a.reshape(a.size) if a.ndim != 1 else a


def put_dx(dst, src, mode, stream=0):
    """dst = src (DX_WRITE) or dst += src (DX_ADD) on device arrays of one size; DX_SKIP: nothing."""
    if mode != DX_WRITE and mode != DX_ADD:
        return
    d = _flat(dst)
    tpb = threads_per_block()
    kernels(d.dtype)["put"][blocks(d.size, tpb), tpb, stream](d, _flat(src), mode == DX_ADD)


def copy(dst, src, stream=0):
    """dst = src (device arrays of one size and dtype)."""
    put_dx(dst, src, DX_WRITE, stream)


def mul(dst, src, stream=0):
    """dst = src ⊙ dst (device arrays of one size and dtype)."""
    d = _flat(dst)
    tpb = threads_per_block()
    kernels(d.dtype)["mul"][blocks(d.size, tpb), tpb, stream](d, _flat(src))


def fill(dst, value, stream=0):
    """dst[:] = value."""
    d = _flat(dst)
    if d.size == 0:
        return
    tpb = threads_per_block()
    kernels(d.dtype)["fill"][blocks(d.size, tpb), tpb, stream](d, d.dtype.type(value))


def signatures(dtype):
    """{kernel name: signature} as the launchers call them (for :func:`numba.cuda.compile_ptx`)."""
    t = "float32" if np.dtype(dtype) == np.float32 else "float64"
    return {"put": f"void({t}[::1], {t}[::1], boolean)", "fill": f"void({t}[::1], {t})",
            "mul": f"void({t}[::1], {t}[::1])"}
