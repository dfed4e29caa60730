"""Counting the kernel launches of device work.

:func:`count_launches` is a context manager: inside it, every launch of a numba-cuda kernel (on a
GPU: a configured launch ``kernel[grid, block, stream](...)``; under the simulator: a kernel call,
not a device function's) is counted, by kernel name, and so is every matrix product handed to
cuBLAS (:mod:`nnlab.kernels.cuda.gemm` reports those as ``"cublas_gemm"``; cuBLAS may run more
than one kernel for one). The launch path is patched for the duration of the block only, and
restored when the last open block closes. For example (a network on "cuda")::

    with count_launches() as c:
        trainer.step(X, y)
    c.total, c.by_kernel.most_common(3)
"""

import collections
import threading

from .device import simulated

_lock = threading.Lock()
_active = []  # the open counters
_restore = []  # (owner, attribute, original) of the patched launch path while a counter is open


class LaunchCount:
    """Launches seen inside one :func:`count_launches` block: ``total`` and ``by_kernel`` (a
    :class:`collections.Counter` of kernel names)."""

    def __init__(self):
        self.by_kernel = collections.Counter()

    @property
    def total(self):
        return sum(self.by_kernel.values())

    def __repr__(self):
        return f"LaunchCount(total={self.total}, by_kernel={dict(self.by_kernel)})"


def note(name):
    """Count one launch of ``name`` in every open block (for work not launched through numba-cuda)."""
    for c in list(_active):
        c.by_kernel[name] += 1


def _patch():
    if simulated():
        from numba.cuda.simulator import kernel as K

        original = K.FakeCUDAKernel.__call__

        def call(self, *args):
            if not self._device and K._kernel_context is None:
                note(getattr(self.fn, "__name__", "kernel"))
            return original(self, *args)

        owner = K.FakeCUDAKernel
    else:
        from numba.cuda.dispatcher import _LaunchConfiguration

        original = _LaunchConfiguration.__call__

        def call(self, *args):
            note(getattr(self.dispatcher.py_func, "__name__", "kernel"))
            return original(self, *args)

        owner = _LaunchConfiguration
    owner.__call__ = call
    _restore.append((owner, "__call__", original))


class count_launches:
    """Context manager counting kernel launches (see the module docstring); yields a
    :class:`LaunchCount`. Blocks may nest; each counts what runs inside it."""

    def __enter__(self):
        self.count = LaunchCount()
        with _lock:
            if not _active:
                _patch()
            _active.append(self.count)
        return self.count

    def __exit__(self, *exc):
        with _lock:
            _active.remove(self.count)
            if not _active:
                while _restore:
                    owner, attr, original = _restore.pop()
                    setattr(owner, attr, original)
        return False
