"""Compilation settings shared by every kernel (one place, as in stumpy's config).

``FASTMATH`` is an explicit LLVM flag set: it never contains ``nnan``/``ninf``, so NaN and Inf
detection and gradient checks stay exact. ``JIT`` is what every module-level ``@njit`` gets.
"""

FASTMATH = frozenset()  # e.g. {"contract", "arcp"}; never "fast", "nnan" or "ninf"

JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=set(FASTMATH))

DTYPES = ("float32", "float64")


KERNEL_DIRS = ("kernels", "activations")
"""The packages that hold compiled code: every source file in them, and every nnlab module they
import (whose constants are frozen into the compiled code), keys the kernel cache."""

_IMPORT = None


def kernel_sources(root=None):
    """Sorted absolute paths of the files whose content can change a compiled kernel: every
    ``.py`` file of :data:`KERNEL_DIRS` and, transitively, every nnlab module they import."""
    import os
    import re

    global _IMPORT
    if _IMPORT is None:
        _IMPORT = re.compile(rb"^[ \t]*from[ \t]+(\.+)([\w.]*)[ \t]+import[ \t]+\(?([\w, \t]+)", re.M)
    root = root or os.path.dirname(os.path.abspath(__file__))
    todo = []
    for d in KERNEL_DIRS:
        folder = os.path.join(root, d)
        todo += sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".py"))
    seen, texts = set(), {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        try:
            with open(path, "rb") as fh:
                texts[path] = text = fh.read()
        except OSError:
            continue
        for dots, mod, names in _IMPORT.findall(text):
            base = os.path.dirname(path)
            for _ in range(len(dots) - 1):
                base = os.path.dirname(base)
            if not base.startswith(root):
                continue
            target = os.path.join(base, *mod.decode().split(".")) if mod else base
            cands = [target + ".py", os.path.join(target, "__init__.py")] if mod else []
            cands += [os.path.join(target, n.strip().decode() + ".py") for n in names.split(b",")]
            todo += [c for c in cands if os.path.isfile(c)]
    return sorted(texts), texts


def kernel_stamp(version, root=None):
    """The key of nnlab's compiled-kernel cache: a hash of nnlab's version, Numba's and Python's,
    and the relative path and content of every file of :func:`kernel_sources`."""
    import hashlib
    import os
    import sys

    import numba

    root = root or os.path.dirname(os.path.abspath(__file__))
    paths, texts = kernel_sources(root)
    digest = hashlib.sha256(f"nnlab {version}; numba {numba.__version__}; python {sys.version}".encode())
    for path in paths:
        digest.update(b"\0" + os.path.relpath(path, root).encode() + b"\0" + texts[path])
    return digest.hexdigest()


def kernel_cache_dirs(root=None):
    """[(directory, whether Numba would write there)] of every place Numba may keep cached kernels
    of nnlab's compiled sources, computed by Numba's own cache locators: the user-set
    ``NUMBA_CACHE_DIR`` (``<dir>/<folder>_<hash of the source folder>``), the in-tree
    ``__pycache__``, and the user-wide cache Numba falls back to when that is read-only."""
    import os

    from numba.core import caching, config

    root = root or os.path.dirname(os.path.abspath(__file__))

    def probe():  # the locators read only the first line number of the function
        pass

    out = []
    for d in KERNEL_DIRS:
        py_file = os.path.join(root, d, "__init__.py")
        pycache = os.path.join(root, d, "__pycache__")
        in_tree = os.access(pycache if os.path.isdir(pycache) else os.path.join(root, d), os.W_OK)
        classes = [(caching.InTreeCacheLocator, not config.CACHE_DIR and in_tree),
                   (caching.UserWideCacheLocator, not config.CACHE_DIR and not in_tree)]
        if config.CACHE_DIR:
            classes.insert(0, (caching.UserProvidedCacheLocator, True))
        for cls, used in classes:
            try:
                out.append((cls(probe, py_file).get_cache_path(), used))
            except Exception:  # a locator that cannot apply here (no home directory, ...)
                continue
    return out


STAMP_NAME = "nnlab-kernels.stamp"


def guard_kernel_cache(version="", root=None):
    """Drop Numba's cached kernels of nnlab when any kernel source changed.

    ``cache=True`` keys a cached kernel on its own source file only, but the kernels inline
    functions and constants from other files (the scalar activation math, the op-table layout, the
    optimizer rules): after an edit or an upgrade that changes only those, a stale kernel would run
    the old math. Every cache directory Numba may use for nnlab (:func:`kernel_cache_dirs`) holds a
    stamp, :func:`kernel_stamp`; where it differs, the directory's ``.nbi``/``.nbc`` files are
    deleted (they are rebuilt on first use) and the new stamp is written. The directory Numba will
    write to is created with its stamp, so a fresh cache is never mistaken for a stale one.
    Returns the stamp.
    """
    import glob
    import os

    stamp = kernel_stamp(version, root)
    for d, used in kernel_cache_dirs(root):
        stamp_file = os.path.join(d, STAMP_NAME)
        try:
            with open(stamp_file) as fh:
                if fh.read() == stamp:
                    continue
        except OSError:
            pass
        try:
            if not os.path.isdir(d):
                if not used:
                    continue
                os.makedirs(d, exist_ok=True)
            for f in glob.glob(os.path.join(d, "*.nbi")) + glob.glob(os.path.join(d, "*.nbc")):
                os.remove(f)
            tmp = f"{stamp_file}.{os.getpid()}"
            with open(tmp, "w") as fh:
                fh.write(stamp)
            os.replace(tmp, stamp_file)
        except OSError:  # a read-only install: nothing to clean, nothing we can write
            pass
    return stamp
