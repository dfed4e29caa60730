"""CPU backend settings: flushing denormal (subnormal) floats to zero; BLAS threads.

Deep saturating nets push float32 gradients into subnormal numbers (|x| < 1.18e-38), and x86 CPUs
compute with those many times slower. :func:`set_flush_denormals` sets the FTZ and DAZ bits of the
calling thread's MXCSR register, as ``torch.set_flush_denormal`` does: subnormal results become 0
and subnormal inputs read as 0, in nnlab's kernels and in everything else this thread computes
(NumPy included). XLA does this by default. It changes results only where they are below 1.18e-38
(float32) or 2.2e-308 (float64) in magnitude.

>>> import nnlab as nl
>>> old = nl.backend.set_flush_denormals(True)
>>> nl.backend.flush_denormals_enabled() == nl.backend.FTZ_SUPPORTED
True
>>> _ = nl.backend.set_flush_denormals(old)
"""

import contextlib
import platform

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

FTZ_SUPPORTED = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
_FTZ_DAZ = 0x8040  # MXCSR bit 15 (flush to zero) | bit 6 (denormals are zero)


def _mxcsr_call(builder, name, ptr):
    from llvmlite import ir

    fnty = ir.FunctionType(ir.VoidType(), [ir.PointerType(ir.IntType(8))])
    fn = builder.module.declare_intrinsic(name, fnty=fnty)
    builder.call(fn, [builder.bitcast(ptr, ir.PointerType(ir.IntType(8)))])


@intrinsic
def _stmxcsr(typingctx):
    def codegen(context, builder, signature, args):
        from llvmlite import ir

        ptr = builder.alloca(ir.IntType(32))
        _mxcsr_call(builder, "llvm.x86.sse.stmxcsr", ptr)
        return builder.load(ptr)

    return types.uint32(), codegen


@intrinsic
def _ldmxcsr(typingctx, value):
    def codegen(context, builder, signature, args):
        from llvmlite import ir

        ptr = builder.alloca(ir.IntType(32))
        builder.store(args[0], ptr)
        _mxcsr_call(builder, "llvm.x86.sse.ldmxcsr", ptr)
        return context.get_dummy_value()

    return types.void(types.uint32), codegen


@njit(cache=True)
def _get_mxcsr():
    return _stmxcsr()


@njit(cache=True)
def _set_mxcsr(value):
    _ldmxcsr(value)


def flush_denormals_enabled():
    """True when the calling thread flushes denormals to zero (FTZ and DAZ both set)."""
    if not FTZ_SUPPORTED:
        return False
    return (int(_get_mxcsr()) & _FTZ_DAZ) == _FTZ_DAZ


def set_flush_denormals(enabled):
    """Turn flush-to-zero (FTZ+DAZ) on or off for the calling thread; returns the previous setting.

    On CPUs other than x86 this does nothing and returns False (as ``torch.set_flush_denormal``
    returns False where unsupported).
    """
    if not FTZ_SUPPORTED:
        return False
    old = int(_get_mxcsr())
    new = (old | _FTZ_DAZ) if enabled else (old & ~_FTZ_DAZ)
    _set_mxcsr(np.uint32(new))
    return (old & _FTZ_DAZ) == _FTZ_DAZ


@contextlib.contextmanager
def flush_denormals(enabled=True):
    """Context manager: flush denormals inside the block, restore the previous setting after."""
    old = set_flush_denormals(enabled)
    try:
        yield FTZ_SUPPORTED
    finally:
        set_flush_denormals(old)


# ---------------------------------------------------------------- BLAS threads
def set_num_threads(n):
    """Run nnlab's matrix products on ``n`` threads (as ``torch.set_num_threads``).

    The products go to the OpenBLAS bundled with NumPy (SciPy's where NumPy's is not found; see
    :mod:`nnlab.kernels.blas`), whose thread count is process-wide: NumPy's own products in this
    process follow it too. Every other part of a step runs on the calling thread, except the sweeps
    over time of a large LSTM, which run in blocks of batch rows on at most ``n`` of Numba's threads
    (``n = 1``: on the calling thread; see :mod:`nnlab.kernels.recurrent`). On a machine
    whose cores are busy with other work, ``set_num_threads(1)`` avoids OpenBLAS threads waiting
    for a core (measured 3-15x slower demos under load with the default); the environment variable
    ``OPENBLAS_NUM_THREADS`` does the same before the process starts. Raises
    :class:`~nnlab.errors.HyperparameterError` for n < 1 and :class:`~nnlab.errors.NnlabError` when
    no bundled OpenBLAS is found (a NumPy built against another BLAS: set that library's own
    variable, e.g. ``MKL_NUM_THREADS``).

    >>> import nnlab as nl
    >>> before = nl.backend.get_num_threads()
    >>> nl.backend.set_num_threads(1)
    >>> nl.backend.get_num_threads() in (1, None)
    True
    >>> nl.backend.set_num_threads(before or 1)
    """
    from . import _validate
    from .errors import NnlabError
    from .kernels import blas

    n = _validate.positive_int(n, "threads")
    if blas.set_threads(n) == 0:
        raise NnlabError("cannot set the BLAS thread count: neither NumPy's nor SciPy's bundled OpenBLAS was "
                         "found; set your BLAS library's own variable (e.g. MKL_NUM_THREADS) before starting")


def get_num_threads():
    """The thread count of the OpenBLAS that nnlab's products use; None when it is not a bundled
    OpenBLAS (see :func:`set_num_threads`)."""
    from .kernels import blas

    return blas.get_threads()



# ---------------------------------------------------------------- devices
_DEVICE = [None]  # None: read NNLAB_DEVICE on first use


def set_device(device):
    """Make ``device`` ("cpu" or "cuda") where networks created from now on run (a network's own
    ``device=`` argument and :meth:`~nnlab.Sequential.to` override it); returns the previous one.
    "cuda" is checked first: :class:`~nnlab.errors.DeviceError` names what is missing (numba-cuda,
    a GPU). See docs/gpu.md.

    >>> import nnlab as nl
    >>> nl.backend.get_device()
    'cpu'
    """
    from . import _validate

    device = _validate.device(device)
    if device == "cuda":
        from .kernels.cuda.device import cuda

        cuda()
    old = get_device()
    _DEVICE[0] = device
    return old


def get_device():
    """The device new networks run on: "cpu" unless :func:`set_device` changed it (or the environment
    variable ``NNLAB_DEVICE`` names one, as ``nnlab ... --device cuda`` sets it for its workers)."""
    if _DEVICE[0] is None:
        import os

        from . import _validate

        _DEVICE[0] = _validate.device(os.environ.get("NNLAB_DEVICE", "cpu"), "NNLAB_DEVICE")
    return _DEVICE[0]


def set_gemm(mode):
    """Choose the device's matrix product: "auto" (the default: cuBLAS through CuPy where CuPy is
    installed and a real GPU runs, else nnlab's own tiled kernel), "cublas" or "tiled"; returns the
    previous choice. The environment variable ``NNLAB_CUDA_GEMM`` sets it for a whole process.
    "cublas" without CuPy raises :class:`~nnlab.errors.DeviceError` naming the package to install
    (``pip install cupy-cuda12x``); an unknown name :class:`~nnlab.errors.HyperparameterError`.
    :func:`info` says which one runs. See docs/gpu.md.

    >>> import nnlab as nl
    >>> old = nl.backend.set_gemm("tiled")
    >>> nl.backend.set_gemm(old)
    'tiled'
    """
    from .kernels.cuda import device as dev

    return dev.set_gemm(mode)


def info():
    """What runs where, as a dict: ``device`` (the default device), ``cpu_gemm`` (the CPU's matrix
    products), and ``cuda`` once the device backend is loaded (a network was put on "cuda", or
    set_device("cuda")): the GPU's name (or "simulator"), ``gemm``, the device's matrix product that
    runs (cuBLAS through CuPy, or nnlab's own tiled shared-memory kernel) and ``gemm_mode``, the
    choice of :func:`set_gemm`. Loading nothing: it never imports numba.cuda itself.

    >>> import nnlab as nl
    >>> {"cpu_gemm", "device"} <= set(nl.backend.info())
    True
    """
    import sys

    from .kernels import blas

    out = {"device": get_device(),
           "cpu_gemm": "OpenBLAS (cblas_?gemm)" if blas.get_threads() is not None else "numpy.dot"}
    if "nnlab.kernels.cuda.device" in sys.modules:
        from .errors import DeviceError
        from .kernels.cuda import device as dev
        try:
            c = dev.cuda()
            gpu = "simulator" if dev.simulated() else str(c.get_current_device().name)
        except DeviceError as exc:
            gpu = f"unusable: {exc}"
        try:
            gemm = _gemm_name(dev)
        except DeviceError as exc:
            gemm = f"unusable: {exc}"
        out["cuda"] = {"gpu": gpu, "gemm": gemm, "gemm_mode": dev.gemm_mode(),
                       "threads_per_block": dev.threads_per_block()}
    return out


def _gemm_name(dev):
    """The device matrix product that runs, in words."""
    if dev.gemm_backend() == "cublas":
        cp = dev.cupy_module(required=True)
        return f"cuBLAS through CuPy {getattr(cp, '__version__', '')}".rstrip()
    return f"nnlab tiled kernel ({dev.GEMM_TILE}x{dev.GEMM_TILE} shared-memory tiles)"
