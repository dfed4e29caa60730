"""Plain-SGD stand-ins for the device optimizer and clipping modules, for the executor's training
tests where ``nnlab.kernels.cuda.optim`` / ``.clip`` are not installed: p -= lr·g on the device,
and the global gradient norm (no clipping). The tests compare a device run with a CPU run, so
any mistake in the executor around these calls still shows."""

import math
import sys
import types

import numpy as np
from numba import cuda

from nnlab.kernels import optim_cpu as OK
from nnlab.kernels.cuda.device import blocks, threads_per_block


@cuda.jit
def _sgd(P, G, lr):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for k in range(start, P.size, stride):
        P[k] = P[k] - lr * G[k]


def opt_update(code, opt_hp, t, P, grads, state, stream=0):
    assert code == OK.SGD and opt_hp[OK.H_WD] == 0 and opt_hp[OK.H_DWD] == 0
    tpb = threads_per_block()
    _sgd[blocks(P.size, tpb), tpb, stream](P, grads, P.dtype.type(opt_hp[OK.H_LR]))


def opt_update_checked(code, opt_hp, t, P, grads, state, norm, stream=0):
    opt_update(code, opt_hp, t, P, grads, state, stream)
    return bool(np.isfinite(P.copy_to_host()).all())


def clip_flat(kind, value, grads, offsets, stream=0):
    assert kind == OK.CLIP_NONE
    g = grads.copy_to_host().astype(np.float64)
    return math.sqrt(float(g @ g))


def install(monkeypatch):
    """Put the stand-ins in place of the modules that are missing; returns the names replaced."""
    import importlib

    replaced = []
    for name, funcs in (("optim", ("opt_update", "opt_update_checked")), ("clip", ("clip_flat",))):
        full = f"nnlab.kernels.cuda.{name}"
        try:
            importlib.import_module(full)
        except ImportError:
            mod = types.ModuleType(full)
            for f in funcs:
                setattr(mod, f, getattr(sys.modules[__name__], f))
            monkeypatch.setitem(sys.modules, full, mod)
            replaced.append(name)
    return replaced
