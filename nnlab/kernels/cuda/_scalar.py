"""The scalar activation math of :mod:`nnlab.activations._math` as CUDA device functions.

The module's ``@njit`` functions are plain scalar Python; each is compiled again here with
``cuda.jit(device=True)`` from its own source, in a copy of the module's namespace where the
functions it calls are their device versions. So a device kernel computes exactly the registry's
formulas (in float64, as the CPU's ``act_f``/``act_d`` do).
"""

import types

from numba import cuda

from ...activations import _math


def _retarget(module):
    ns = dict(vars(module))
    for name, obj in vars(module).items():
        f = getattr(obj, "py_func", None)
        if f is not None and getattr(f, "__module__", None) == module.__name__:
            ns[name] = types.FunctionType(f.__code__, ns, name, f.__defaults__, f.__closure__)
    for name, obj in list(ns.items()):
        if isinstance(obj, types.FunctionType) and obj.__globals__ is ns:
            ns[name] = cuda.jit(device=True)(obj)
    return ns


_NS = _retarget(_math)
act_f = _NS["act_f"]
act_d = _NS["act_d"]
