"""Activations on the device: the scalar math of :mod:`nnlab.activations._math` compiled as CUDA
device functions, and the elementwise kernel (the twin of :func:`nnlab.kernels.cpu.act_map`).

The device functions are compiled from the very Python functions the CPU kernels use (their
``py_func``): each is recompiled with ``cuda.jit(device=True)`` with its globals rebound so that
the helpers it calls (``sigm``, ``softplus1``, ...) are their device versions too. The
dispatchers ``act_f``/``act_d``/``act_dp`` are extended with the user-registered activations
exactly as :func:`nnlab.kernels.kernels_for` extends the CPU ones (a chain of ``if code == C``
calling the user's scalar functions, themselves recompiled for the device), so a custom
activation runs on the GPU with no extra code. One set per registry version (:func:`device_set`);
``builtin_act_f``/``builtin_act_d`` are the dispatchers of the built-in codes alone.

The scalar functions compute in float64 whatever the array dtype (their Python float constants
promote a float32 ``z``), exactly as on the CPU, and the kernels round the result once to the
array's dtype: float32 activation kernels therefore hold float64 instructions by design (the
CPU's general path does the same arithmetic). The kernels that do not evaluate an activation
(:mod:`nnlab.kernels.cuda.dense`'s products and sums, the copies) stay in their dtype.
"""

import types

import numpy as np
from numba import cuda

from ...activations import _math as M
from .device import blocks, threads_per_block

_SETS = {}
_FUNCS = {}  # id(CPU dispatcher) -> its device version (shared by every set)


def _device_fn(disp, extra=None):
    """The CUDA device version of the CPU dispatcher ``disp`` (its Python function recompiled with
    every jitted global it refers to replaced by that global's device version)."""
    key = id(disp)
    hit = _FUNCS.get(key)
    if hit is not None:
        return hit[0]
    py = disp.py_func
    globs = dict(py.__globals__)
    if extra:
        globs.update(extra)
    for name in py.__code__.co_names:
        val = globs.get(name)
        if val is not None and getattr(val, "py_func", None) is not None and not isinstance(val, type):
            globs[name] = _device_fn(val)
    clone = types.FunctionType(py.__code__, globs, py.__name__, py.__defaults__, py.__closure__)
    fn = cuda.jit(device=True)(clone)
    _FUNCS[key] = (fn, disp)  # keep disp alive: its id must not be reused
    return fn


def _dev(disp):
    return _device_fn(disp)


# the built-in activations alone (no user-registered codes), for kernels that reject custom codes
# (the RNN's general activation): float64 scalar math as the CPU's act_f/act_d
builtin_act_f = _dev(M.act_f)
builtin_act_d = _dev(M.act_d)


def _extend(base, entries, kind):
    """A device dispatcher like ``base`` (act_f, act_d or act_dp) that also knows the custom codes
    (the same generated chain as :func:`nnlab.kernels._extend`)."""
    fn = base
    for code, ent in entries.items():
        f, d, dps = ent.kernels
        nparams = len(ent.params)
        args = ", ".join(["z"] + [f"p{k}" for k in range(nparams)])
        ns = {"prev": fn, "f": _dev(f), "d": _dev(d), "CODE": code}
        if kind == "f":
            src = (f"def g(code, z, p0, p1, p2, u):\n    if code == CODE:\n        return f({args})\n"
                   f"    return prev(code, z, p0, p1, p2, u)\n")
        elif kind == "d":
            src = (f"def g(code, z, p0, p1, p2, u):\n    if code == CODE:\n        return d({args})\n"
                   f"    return prev(code, z, p0, p1, p2, u)\n")
        else:
            body = ""
            for k, dp in enumerate(dps):
                if dp is not None:
                    ns[f"dp{k}"] = _dev(dp)
                    body += f"        if k == {k}:\n            return dp{k}({args})\n"
            src = (f"def g(code, k, z, p0, p1, p2, u):\n    if code == CODE:\n{body}"
                   f"        return 0.0\n    return prev(code, k, z, p0, p1, p2, u)\n")
        exec(src, ns)  # noqa: S102 - generated from validated identifiers only
        fn = cuda.jit(device=True)(ns["g"])
    return fn


def _make_slots():
    @cuda.jit(device=True)
    def act_slots(params, mask, ap, q0, q1, q2, qa):
        """(p0, p1, p2, a) of an op: the fixed values q* unless the bit of ``mask`` says the slot is
        learnable, then params[ap + rank] (the twin of :func:`nnlab.kernels.common.act_slots`)."""
        j = 0
        p0 = q0
        if mask & 1:
            p0 = params[ap + j]
            j += 1
        p1 = q1
        if mask & 2:
            p1 = params[ap + j]
            j += 1
        p2 = q2
        if mask & 4:
            p2 = params[ap + j]
            j += 1
        a = qa
        if mask & 8:
            a = params[ap + j]
        return p0, p1, p2, a

    return act_slots


def _make_act_map(act_f, act_d, act_dp):
    @cuda.jit
    def act_map(what, code, z, out, p0, p1, p2, a, u):
        """out[i] = a·θ(z[i]) (what=0), a·θ'(z[i]) (1), a·∂θ/∂p_k (2+k), θ(z[i]) (5); ``u`` holds
        one noise sample per element, or one for all (the twin of ``cpu.act_map``)."""
        one_u = u.size == 1
        start = cuda.grid(1)
        stride = cuda.gridsize(1)
        for i in range(start, z.size, stride):
            ui = u[0] if one_u else u[i]
            if what == 0:
                out[i] = a * act_f(code, z[i], p0, p1, p2, ui)
            elif what == 1:
                out[i] = a * act_d(code, z[i], p0, p1, p2, ui)
            elif what == 5:
                out[i] = act_f(code, z[i], p0, p1, p2, ui)
            else:
                out[i] = a * act_dp(code, what - 2, z[i], p0, p1, p2, ui)

    return act_map


def device_set():
    """The device activation set of the current registry: a namespace with the device functions
    ``act_f``, ``act_d``, ``act_dp``, ``act_slots`` and the kernel ``act_map``; ``version`` is the
    registry version it was built for (kernel modules key their own kernels on it)."""
    from ...activations import custom_entries, registry_version

    version = registry_version()
    ds = _SETS.get(version)
    if ds is not None:
        return ds
    entries = custom_entries()
    f = _dev(M.act_f)
    d = _dev(M.act_d)
    dp = _dev(M.act_dp)
    if entries:
        f = _extend(f, entries, "f")
        d = _extend(d, entries, "d")
        dp = _extend(dp, entries, "dp")
    ds = types.SimpleNamespace(version=version, act_f=f, act_d=d, act_dp=dp, act_slots=_make_slots())
    ds.act_map = _make_act_map(f, d, dp)
    _SETS.clear()
    _SETS[version] = ds
    return ds


def act_map(what, code, z, out, p0, p1, p2, a, u, stream=0):
    """Launch the elementwise map on device arrays (flat ``z``, ``out``; ``u`` of z's size or 1)."""
    k = device_set().act_map
    tpb = threads_per_block()
    k[blocks(z.size, tpb), tpb, stream](int(what), int(code), z, out, float(p0), float(p1), float(p2),
                                        float(a), u)


def signature(dtype):
    """The act_map signature the executor launches, for :func:`numba.cuda.compile_ptx`."""
    t = "float32" if np.dtype(dtype) == np.float32 else "float64"
    return f"void(int64, int64, {t}[::1], {t}[::1], float64, float64, float64, float64, {t}[::1])"
