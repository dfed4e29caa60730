"""Pieces the layer kernels share: a per-dtype kernel cache, 1-D launch configuration, and the
block-wide sum used by the race-free reductions (one block per feature or per row).

Kernel modules build their kernels for one numba float type ``nbt`` in a factory (constants are
written as ``nbt(...)`` so a float32 kernel stays in float32) and cache them per dtype with
:func:`per_dtype` (:func:`by_dtype` for factories that take the NumPy dtype). :func:`signature` spells the ``cuda.compile_ptx`` signature of a kernel with
``F`` standing for the dtype, so the tests compile every kernel at the types its launcher uses.
"""

import numpy as np
from numba import cuda, float32, float64

from .device import blocks, threads_per_block

SHARED = 1024  # threads per block at most: the size of the reduction's shared array


def by_dtype(make, doc=None):
    """A function ``kernels(dtype)`` returning ``make(np.dtype(dtype))`` (the kernels of one dtype),
    made once per dtype; ``doc`` is its docstring."""
    cache = {}

    def kernels(dtype):
        dtype = np.dtype(dtype)
        k = cache.get(dtype)
        if k is None:
            k = cache[dtype] = make(dtype)
        return k

    kernels.__doc__ = doc
    return kernels


def per_dtype(build):
    """A function ``kernels(dtype)`` returning ``build(nbt)`` (a namespace of kernels, ``nbt`` the
    numba float type of the dtype), built once per dtype."""
    return by_dtype(lambda dtype: build(float32 if dtype == np.float32 else float64))


def launch(kernel, size, prog):
    """``kernel`` configured for a grid-stride launch over ``size`` items on the program's stream."""
    return kernel[blocks(size), threads_per_block(), prog.stream]


def launch_blocks(kernel, count, prog):
    """``kernel`` configured with one block per item (feature or row), at most MAX_BLOCKS blocks
    (the kernel strides over the items by the grid size)."""
    return kernel[blocks(count, 1), threads_per_block(), prog.stream]


def signature(template, dtype):
    """``template`` with ``F`` replaced by the numba name of ``dtype`` (e.g. "void(F[::1], int64)")."""
    return template.replace("F", "float32" if np.dtype(dtype) == np.float32 else "float64")


def scalar(prog, value):
    """``value`` as a scalar of the program's dtype (a float32 kernel gets a float32 argument)."""
    return prog.dtype.type(value)


@cuda.jit(device=True)
def block_sum(sh, v):
    """Σ over the threads of the block of their values ``v`` (a tree in shared memory ``sh``, any
    block size up to SHARED); every thread gets the sum. Call it from every thread of the block."""
    tid = cuda.threadIdx.x
    bd = cuda.blockDim.x
    sh[tid] = v
    cuda.syncthreads()
    p = 1
    while p < bd:
        p *= 2
    p //= 2
    while p > 0:
        if tid < p and tid + p < bd:
            sh[tid] += sh[tid + p]
        cuda.syncthreads()
        p //= 2
    total = sh[0]
    cuda.syncthreads()
    return total
