"""Matrix products on the device: C = op(A) @ op(B) (+ beta·C), op = identity or transpose.

Kernel modules import ``numba.cuda`` at module level as the global ``cuda`` (the simulator swaps
that global for its own module) and are imported only once :func:`nnlab.kernels.cuda.device.cuda`
has found a GPU or the simulator.

nnlab's own shared-memory tiled kernel (``TILE`` × ``TILE`` tiles, one thread per output entry),
one compiled copy per dtype. It runs under the simulator too, so every product of the device
executor is tested without a GPU.
"""

import numpy as np
from numba import cuda, float32, float64

TILE = 16
_kernels = {}


def _kernel(dtype):
    dtype = np.dtype(dtype)
    k = _kernels.get(dtype)
    if k is not None:
        return k
    nbt = float32 if dtype == np.float32 else float64

    @cuda.jit
    def tiled(A, ta, B, tb, C, beta):
        """C[i, j] = Σ_k op(A)[i, k]·op(B)[k, j] + beta·C[i, j]; op(X) = X.T when the flag is set."""
        sA = cuda.shared.array((TILE, TILE), dtype=nbt)
        sB = cuda.shared.array((TILE, TILE), dtype=nbt)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        i = cuda.blockIdx.y * TILE + ty
        j = cuda.blockIdx.x * TILE + tx
        m = C.shape[0]
        n = C.shape[1]
        kk = A.shape[0] if ta else A.shape[1]
        acc = nbt(0.0)
        for t0 in range(0, kk, TILE):
            a_k = t0 + tx
            if i < m and a_k < kk:
                sA[ty, tx] = A[a_k, i] if ta else A[i, a_k]
            else:
                sA[ty, tx] = nbt(0.0)
            b_k = t0 + ty
            if j < n and b_k < kk:
                sB[ty, tx] = B[j, b_k] if tb else B[b_k, j]
            else:
                sB[ty, tx] = nbt(0.0)
            cuda.syncthreads()
            for q in range(TILE):
                acc += sA[ty, q] * sB[q, tx]
            cuda.syncthreads()
        if i < m and j < n:
            if beta != nbt(0.0):
                acc += beta * C[i, j]
            C[i, j] = acc

    _kernels[dtype] = tiled
    return tiled


def gemm(A, ta, B, tb, C, beta=0.0, stream=0):
    """C = op(A) @ op(B) + beta·C on the device (2-D device arrays of one dtype; C-contiguous views)."""
    m, n = C.shape
    k = _kernel(C.dtype)
    grid = ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE)
    k[grid, (TILE, TILE), stream](A, bool(ta), B, bool(tb), C, C.dtype.type(beta))  # beta in C's dtype
