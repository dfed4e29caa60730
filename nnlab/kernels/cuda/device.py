"""Finding the CUDA target and sizing launches.

:func:`cuda` returns ``numba.cuda`` when kernels can run: on a GPU (numba-cuda and a driver), or
on the CPU under Numba's simulator (``NUMBA_ENABLE_CUDASIM=1`` in the environment before Numba is
first imported; slow, for tests). Otherwise it raises :class:`nnlab.errors.DeviceError` naming
what is missing. Launch sizes come from one place: :func:`threads_per_block` (settable, so tests
run several blocks and partial blocks on tiny arrays) and :func:`blocks`.
"""

import os

from ...errors import DeviceError

_TPB = [128]  # threads per block of the 1-D (grid-stride) kernels
MAX_BLOCKS = 4096  # grid-stride kernels never launch more blocks than this
GEMM_TILE = 16  # the tiled matrix product's tile (GEMM_TILE x GEMM_TILE threads a block)


def simulated():
    """True when Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


def cuda():
    """The ``numba.cuda`` module, able to launch kernels, or DeviceError saying what is missing."""
    try:
        from numba import cuda as numba_cuda
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise DeviceError(f'the CUDA backend needs numba-cuda: pip install "nnlab[cuda]" ({exc})') from None
    if simulated():
        return numba_cuda
    try:
        ok = numba_cuda.is_available()
    except Exception as exc:  # noqa: BLE001 - the driver's own error, reported in one line
        raise DeviceError(f"no usable CUDA GPU: {type(exc).__name__}: {exc}") from None
    if not ok:
        raise DeviceError("no CUDA GPU found (no NVIDIA driver or device on this machine); "
                          'device="cuda" needs one, with pip install "nnlab[cuda]"')
    return numba_cuda


def threads_per_block():
    """Threads per block of the 1-D kernels."""
    return _TPB[0]


def set_threads_per_block(n):
    """Set the threads per block of the 1-D kernels (a multiple of 32 from 32 to 1024 on a GPU; any
    n >= 1 under the simulator, where tests use small blocks); returns the previous value."""
    n = int(n)
    if n < 1 or n > 1024 or (not simulated() and n % 32):
        raise ValueError(f"threads per block must be a multiple of 32 in [32, 1024], got {n}")
    old = _TPB[0]
    _TPB[0] = n
    return old


def blocks(n, tpb=None):
    """Blocks for a grid-stride launch over ``n`` items (at least 1, at most ``MAX_BLOCKS``)."""
    tpb = tpb or _TPB[0]
    return max(1, min(MAX_BLOCKS, (int(n) + tpb - 1) // tpb))


# ---------------------------------------------------------------- which matrix product runs
GEMM_MODES = ("auto", "cublas", "tiled")
CUPY_INSTALL = "pip install cupy-cuda12x"
_GEMM = [None]  # the requested mode; None: read NNLAB_CUDA_GEMM on first use
_GEMM_RESOLVED = [None]  # "cublas" or "tiled" for the requested mode (found once)


def _gemm_mode(value, name):
    from ...errors import HyperparameterError

    v = value.lower() if isinstance(value, str) else value
    if v not in GEMM_MODES:
        raise HyperparameterError(f"{name} must be one of {', '.join(map(repr, GEMM_MODES))}; got {value!r}")
    return v


def gemm_mode():
    """The requested device matrix product: "auto" (cuBLAS through CuPy where CuPy is installed
    and a real GPU runs, else nnlab's tiled kernel), "cublas" or "tiled"."""
    if _GEMM[0] is None:
        _GEMM[0] = _gemm_mode(os.environ.get("NNLAB_CUDA_GEMM", "auto"), "NNLAB_CUDA_GEMM")
    return _GEMM[0]


def set_gemm(mode):
    """Request the device matrix product (see :func:`gemm_mode`); returns the previous request.
    "cublas" without CuPy raises DeviceError naming the package to install."""
    mode = _gemm_mode(mode, "gemm")
    if mode == "cublas":
        cupy_module(required=True)
    old = gemm_mode()
    _GEMM[0] = mode
    _GEMM_RESOLVED[0] = None
    return old


def cupy_module(required=False):
    """The ``cupy`` module, or None when it cannot be imported (DeviceError when ``required``)."""
    try:
        import cupy
    except ImportError as exc:
        if required:
            raise DeviceError(f"the cuBLAS matrix product needs CuPy: {CUPY_INSTALL} ({exc})") from None
        return None
    return cupy


def gemm_backend():
    """Which matrix product the device runs now: "cublas" or "tiled" (found once per request)."""
    if _GEMM_RESOLVED[0] is None:
        mode = gemm_mode()
        if mode == "tiled":
            which = "tiled"
        elif mode == "cublas":
            cupy_module(required=True)
            which = "cublas"
        else:  # auto: the simulator's arrays are host memory, which cuBLAS cannot read
            which = "cublas" if not simulated() and cupy_module() is not None else "tiled"
        _GEMM_RESOLVED[0] = which
    return _GEMM_RESOLVED[0]
