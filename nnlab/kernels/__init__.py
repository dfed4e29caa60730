"""Kernel sets. ``kernels_for(codes)`` returns the object whose functions run a program.

Built-in activations use :mod:`nnlab.kernels.cpu` directly (compiled once, loaded from Numba's
cache); a network whose ops are all of the kinds of one of ``cpu.EXECUTOR_KINDS`` (dense only;
dense and recurrent; every kind but the recurrent ones) gets ``kinds_set(group)``, the same entry
points compiled with the dispatch of those kinds only (cached under their own names, e.g.
``loss_and_grad_k2`` for dense ops), so it does not compile the kernels of the other kinds. The
training entry points exist per optimizer as well (``ks.train_step_o0`` is SGD's step: see
:mod:`nnlab.kernels.variants`).

When a program uses a user-registered activation, the same kernel functions are rebound to
extended dispatchers that also call the user's compiled scalar functions: their bytecode is
reused with new globals, so there is one executor source and no hand-written copy. Only the
functions that reach the dispatchers are rebound (the rest are the cached built-ins). Such a set
is compiled in each process (it cannot be cached) and rebuilt when the registry changes.
"""

import types

from numba import njit

from .._compile_notice import install as _install_compile_notice
from ..activations import _math as M
from . import cpu, variants

_install_compile_notice()  # a line on stderr whenever a kernel is not in the cache and compiles

_custom_sets = {}


def kernels_for(codes, kinds=None):
    """The kernel set able to run activation ``codes`` (an iterable of ints) and op ``kinds``
    (``KIND_*`` codes; None: any kind)."""
    if all(int(c) < M.CUSTOM_BASE for c in codes):
        if kinds is None:
            return cpu
        kinds = {int(k) for k in kinds}
        for group in cpu.EXECUTOR_KINDS:
            if kinds <= group:
                return kinds_set(group)
        return cpu
    from ..activations import custom_entries, registry_version

    version = registry_version()
    ks = _custom_sets.get(version)
    if ks is None:
        _custom_sets.clear()
        ks = _custom_sets[version] = _build_custom_set(custom_entries())
    return ks


def is_cached(ks):
    """Whether kernel set ``ks`` is one of the built-in, cached sets (not compiled per process)."""
    return ks is cpu or any(ks is v for v in _kind_sets.values())


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


def _kernel_modules():
    """Every module whose compiled functions may reach the activation dispatchers."""
    import importlib
    import pkgutil

    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name not in ("blas", "fastmath", "layout", "optim_cpu"):
            mods.append(importlib.import_module(f"{__name__}.{info.name}"))
    return mods


def _jitted(module):
    """{name: dispatcher} of the functions compiled in ``module`` (not the imported ones)."""
    return {name: obj for name, obj in module.__dict__.items()
            if getattr(obj, "py_func", None) is not None and obj.py_func.__module__ == module.__name__}


def _dispatching(modules, roots):
    """ids of the jitted functions that call (directly or through each other, across the kernel
    modules, by the names they import) one of the dispatchers in ``roots``: only these need
    rebinding; the others (losses, the specialised loops of the hot built-in activations, the
    statistics helpers) stay the cached compiled functions."""
    funcs = {}
    for mod in modules:
        for obj in _jitted(mod).values():
            funcs[id(obj)] = (mod, obj)
    need = {id(r) for r in roots}
    changed = True
    while changed:
        changed = False
        for fid, (mod, obj) in funcs.items():
            if fid in need:
                continue
            if any(id(mod.__dict__.get(name)) in need for name in obj.py_func.__code__.co_names):
                need.add(fid)
                changed = True
    return {fid: funcs[fid] for fid in need if fid in funcs}


def _direct_entry(globs):
    """``cpu.loss_and_grad_entry`` for a kernel set without a loss_and_grad callback: ``cpu.lg_direct``
    (the direct call) seeing the set's globals ``globs``."""
    direct = cpu.lg_direct.py_func
    return njit(types.FunctionType(direct.__code__, globs, "loss_and_grad_entry"), **cpu.INLINE)


def _build_custom_set(entries):
    new = {id(M.act_f): _extend(M.act_f, entries, "f"), id(M.act_d): _extend(M.act_d, entries, "d"),
           id(M.act_dp): _extend(M.act_dp, entries, "dp")}
    modules = _kernel_modules()
    # the training entry points call loss_and_grad through the built-in executors' C callbacks
    # (cpu.loss_and_grad_entry); here they call this set's loss_and_grad directly
    rebind = _dispatching(modules, (M.act_f, M.act_d, M.act_dp, cpu.loss_and_grad_entry))
    globs = {mod.__name__: dict(mod.__dict__) for mod in modules}
    new[id(cpu.loss_and_grad_entry)] = _direct_entry(globs[cpu.__name__])
    for fid, (mod, obj) in rebind.items():
        if fid in new:
            continue
        py = obj.py_func
        # the same compile options (error model, fastmath flags, inlining), minus the on-disk
        # cache: these functions exist only in this process
        opts = {k: v for k, v in getattr(obj, "targetoptions", {}).items() if k not in ("cache", "nopython")}
        fn = types.FunctionType(py.__code__, globs[mod.__name__], py.__name__, py.__defaults__, py.__closure__)
        new[fid] = njit(fn, **opts)
    for g in globs.values():  # every module's copy of the globals sees the rebound functions
        for name, value in list(g.items()):
            if id(value) in new:
                g[name] = new[id(value)]
    ks = types.SimpleNamespace()
    for name, obj in _jitted(cpu).items():
        setattr(ks, name, new.get(id(obj), obj))
    return ks


_kind_sets = {}
_kind_globs = {}


class KernelSet(types.SimpleNamespace):
    """A built-in kernel set of :func:`kinds_set`; its per-optimizer training entry points
    (``train_step_o0``, ...: :mod:`nnlab.kernels.variants`) are made on first use."""

    def __getattr__(self, name):  # (only for names not set yet)
        globs = _kind_globs.get(self.__dict__.get("kinds"))
        if globs is None or name.startswith("__"):
            raise AttributeError(name)
        return variants.variant(globs, name, self.__dict__)


def kinds_set(kinds):
    """The built-in kernel set whose executor dispatches on the op ``kinds`` (a set of ``KIND_*``
    codes) only: cpu's functions that reach ``op_forward``/``op_backward``, rebound to a
    dispatch generated for those kinds (:func:`nnlab.kernels.cpu.dispatch_source`) and cached under
    their name + ``_k<mask>`` (the bit mask of the kinds); the other functions are cpu's own."""
    kinds = frozenset(int(k) for k in kinds)
    ks = _kind_sets.get(kinds)
    if ks is not None:
        return ks
    suffix = f"_k{sum(1 << k for k in kinds):x}"
    globs = dict(cpu.__dict__)
    # compiled with cpu.py as its file name: the cache keys it on that file, like the code it calls
    exec(compile(cpu.dispatch_source(kinds, suffix), cpu.__file__, "exec"), globs)  # noqa: S102 - fixed template
    new = {id(cpu.op_forward): njit(globs["op_forward" + suffix], **cpu.INLINE),
           id(cpu.op_backward): njit(globs["op_backward" + suffix], **cpu.INLINE)}
    # this executor's slots of the loss_and_grad callbacks (cpu's LOSS_AND_GRAD)
    globs["LG_EXECUTOR"] = index = cpu.EXECUTOR_KINDS.index(kinds) if kinds in cpu.EXECUTOR_KINDS else None
    rebind = _dispatching([cpu], (cpu.op_forward, cpu.op_backward, cpu.loss_and_grad_entry))
    if index is None:  # (a set of kinds of no executor group: no callback slot, direct calls)
        new[id(cpu.loss_and_grad_entry)] = _direct_entry(globs)
    for fid, (_, obj) in rebind.items():
        if fid in new:
            continue
        py = obj.py_func
        fn = types.FunctionType(py.__code__, globs, py.__name__ + suffix, py.__defaults__, py.__closure__)
        fn.__qualname__ = py.__qualname__ + suffix  # the name of its cache files
        fn.__doc__ = py.__doc__
        opts = {k: v for k, v in obj.targetoptions.items() if k != "nopython"}
        # cache is not among the target options (njit turns it on apart): every cpu function is
        # cached (JIT), so ask for it again, or each process would compile the executor anew
        new[fid] = njit(fn, cache=True, **opts)
    for name, value in list(globs.items()):
        if id(value) in new:
            globs[name] = new[id(value)]
    ks = KernelSet(kinds=kinds)
    for name, obj in _jitted(cpu).items():
        setattr(ks, name, new.get(id(obj), obj))
    if index is not None:
        cb = cpu.lg_callback
        fn = types.FunctionType(cb.__code__, globs, cb.__name__ + suffix)
        fn.__qualname__ = cb.__qualname__ + suffix  # the name of its cache files
        ks.LG = (index, fn, "loss_and_grad" + suffix)
    _kind_globs[kinds] = globs
    _kind_sets[kinds] = ks
    return ks
