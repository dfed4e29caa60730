"""Matrix products on the device: C = op(A) @ op(B) (+ beta·C), op = identity or transpose.

Kernel modules import ``numba.cuda`` at module level as the global ``cuda`` (the simulator swaps
that global for its own module) and are imported only once :func:`nnlab.kernels.cuda.device.cuda`
has found a GPU or the simulator.

Two implementations, chosen by :func:`nnlab.kernels.cuda.device.gemm_backend` (``"auto"``,
``"cublas"`` or ``"tiled"``: ``nl.backend.set_gemm`` or ``NNLAB_CUDA_GEMM``):

* cuBLAS through CuPy (``?gemm``), where CuPy is installed and a real GPU runs. The numba device
  arrays are wrapped as CuPy arrays without a copy (a CuPy view of the same device pointer, kept
  alive by the numba array; not through ``__cuda_array_interface__``, whose consumer side would
  synchronize the stream on every product), and cuBLAS runs on numba's stream
  (``cupy.cuda.ExternalStream`` of its handle), so the product is ordered with the kernels around
  it and nothing waits on the host. ``cupy.cublas.gemm`` takes the transposes and ``beta`` and
  handles the row-major layout (it computes Cᵀ = op(B)ᵀ·op(A)ᵀ in cuBLAS's column-major terms).
* nnlab's own shared-memory tiled kernel (``TILE`` × ``TILE`` tiles, one thread per output entry),
  one compiled copy per dtype. It runs under the simulator too, so every product of the device
  executor is tested without a GPU.
"""

import numpy as np
from numba import cuda, float32, float64

from .device import GEMM_TILE, gemm_backend
from .launches import note

TILE = GEMM_TILE
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
    if gemm_backend() == "cublas" and m and n and (A.shape[0] if ta else A.shape[1]):
        cublas_gemm(A, ta, B, tb, C, beta, stream)
        return
    k = _kernel(C.dtype)
    grid = ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE)
    k[grid, (TILE, TILE), stream](A, bool(ta), B, bool(tb), C, C.dtype.type(beta))  # beta in C's dtype


# ---------------------------------------------------------------- cuBLAS through CuPy
_streams = {}  # numba stream handle -> cupy.cuda.ExternalStream
_device_id = [None]


def _stream_ptr(stream):
    """The CUDA stream handle of a numba stream (0: the default stream, and the simulator's)."""
    try:
        return int(stream) if stream else 0
    except TypeError:  # the simulator's stream object
        return 0


def _extent(arr):
    """Bytes from the first to one past the last element of the device array ``arr``."""
    if arr.size == 0:
        return 0
    return sum((d - 1) * abs(s) for d, s in zip(arr.shape, arr.strides)) + arr.dtype.itemsize


def cupy_view(cp, arr):
    """``arr`` (a numba device array) as a CuPy array over the same device memory (no copy)."""
    if _device_id[0] is None:
        _device_id[0] = int(getattr(cuda.get_current_device(), "id", 0))
    ptr = getattr(getattr(arr, "device_ctypes_pointer", None), "value", None) or 0  # (0 in the simulator)
    mem = cp.cuda.UnownedMemory(ptr, _extent(arr), arr, _device_id[0])
    return cp.ndarray(tuple(arr.shape), arr.dtype, cp.cuda.MemoryPointer(mem, 0), tuple(arr.strides))


def cublas_gemm(A, ta, B, tb, C, beta=0.0, stream=0):
    """C = op(A) @ op(B) + beta·C through ``cupy.cublas.gemm`` on ``stream`` (see the module docstring)."""
    import cupy as cp

    ptr = _stream_ptr(stream)
    ext = _streams.get(ptr)
    if ext is None:
        ext = _streams[ptr] = cp.cuda.ExternalStream(ptr)
    with ext:
        cp.cublas.gemm("T" if ta else "N", "T" if tb else "N", cupy_view(cp, A), cupy_view(cp, B),
                       out=cupy_view(cp, C), alpha=1.0, beta=float(beta))
    note("cublas_gemm")
