"""Kernel sets. ``kernels_for(codes)`` returns the object whose functions run a program.

Built-in activations use :mod:`nnlab.kernels.cpu` directly (compiled once, loaded from Numba's
cache). When a program uses a user-registered activation, the same kernel functions are rebound to
extended dispatchers that also call the user's compiled scalar functions: their bytecode is
reused with new globals, so there is one executor source and no hand-written copy. Only the
functions that reach the dispatchers are rebound (the rest are the cached built-ins). Such a set
is compiled in each process (it cannot be cached) and rebuilt when the registry changes.
"""

import types

from numba import njit

from ..activations import _math as M
from . import cpu

_custom_sets = {}


def kernels_for(codes):
    """The kernel set able to run activation ``codes`` (an iterable of ints)."""
    if all(int(c) < M.CUSTOM_BASE for c in codes):
        return cpu
    from ..activations import custom_entries, registry_version

    version = registry_version()
    ks = _custom_sets.get(version)
    if ks is None:
        _custom_sets.clear()
        ks = _custom_sets[version] = _build_custom_set(custom_entries())
    return ks


def _extend(base, entries, kind):
    """A dispatcher like ``base`` (act_f, act_d or act_dp) that also knows the custom codes."""
    fn = base
    for code, ent in entries.items():
        f, d, dps = ent.kernels
        nparams = len(ent.params)
        args = ", ".join(["z"] + [f"p{k}" for k in range(nparams)])
        ns = {"prev": fn, "f": f, "d": d, "CODE": code}
        if kind == "f":
            src = f"def g(code, z, p0, p1, p2, u):\n    if code == CODE:\n        return f({args})\n    return prev(code, z, p0, p1, p2, u)\n"
        elif kind == "d":
            src = f"def g(code, z, p0, p1, p2, u):\n    if code == CODE:\n        return d({args})\n    return prev(code, z, p0, p1, p2, u)\n"
        else:
            body = ""
            for k, dp in enumerate(dps):
                if dp is not None:
                    ns[f"dp{k}"] = dp
                    body += f"        if k == {k}:\n            return dp{k}({args})\n"
            src = (f"def g(code, k, z, p0, p1, p2, u):\n    if code == CODE:\n{body}"
                   f"        return 0.0\n    return prev(code, k, z, p0, p1, p2, u)\n")
        exec(src, ns)  # noqa: S102 - generated from validated identifiers only
        fn = njit(ns["g"])
    return fn


def _dispatching(module, roots=("act_f", "act_d", "act_dp")):
    """Names of the module's jitted functions that call (directly or through each other) one of
    ``roots``: only these need rebinding; the others (losses, the specialised loops of the hot
    built-in activations, the statistics helpers) stay the cached compiled functions."""
    funcs = {name: obj.py_func for name, obj in module.__dict__.items()
             if getattr(obj, "py_func", None) is not None and obj.py_func.__module__ == module.__name__}
    need = set(roots)
    changed = True
    while changed:
        changed = False
        for name, py in funcs.items():
            if name not in need and need & set(py.__code__.co_names):
                need.add(name)
                changed = True
    return need & set(funcs)


def _build_custom_set(entries):
    g = dict(cpu.__dict__)
    g["act_f"] = _extend(M.act_f, entries, "f")
    g["act_d"] = _extend(M.act_d, entries, "d")
    g["act_dp"] = _extend(M.act_dp, entries, "dp")
    ks = types.SimpleNamespace()
    rebind = _dispatching(cpu)
    for name, obj in list(cpu.__dict__.items()):
        py = getattr(obj, "py_func", None)
        if py is not None and py.__module__ == cpu.__name__ and name not in rebind:
            setattr(ks, name, obj)
        elif py is not None and py.__module__ == cpu.__name__:
            # the same compile options (error model, fastmath flags, inlining), minus the on-disk
            # cache: these functions exist only in this process
            opts = {k: v for k, v in getattr(obj, "targetoptions", {}).items() if k not in ("cache", "nopython")}
            g[name] = njit(types.FunctionType(py.__code__, g, name, py.__defaults__, py.__closure__), **opts)
            setattr(ks, name, g[name])
    return ks
