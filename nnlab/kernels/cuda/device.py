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
