"""Compilation settings shared by every kernel (one place, as in stumpy's config).

``FASTMATH`` is an explicit LLVM flag set: it never contains ``nnan``/``ninf``, so NaN and Inf
detection and gradient checks stay exact. ``JIT`` is what every module-level ``@njit`` gets.
"""

FASTMATH = frozenset()  # e.g. {"contract", "arcp"}; never "fast", "nnan" or "ninf"

JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=set(FASTMATH))

DTYPES = ("float32", "float64")


def guard_kernel_cache():
    """Drop Numba's cached kernels when any kernel source changed.

    ``cache=True`` keys a cached kernel on its own source file only, but the kernels inline
    functions from other files (the scalar activation math, the optimizer rules): after an edit
    or an upgrade that changes only those, a stale kernel would run the old math. A stamp holding
    a hash of every nnlab source file that uses Numba sits beside the cache files; when it differs, the cached
    ``.nbi``/``.nbc`` files of nnlab are deleted (they are rebuilt on first use).
    """
    import glob
    import hashlib
    import os

    import numba

    root = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True))
    digest = hashlib.sha256()
    kernel_sources = []
    for path in sources:
        try:
            with open(path, "rb") as fh:
                text = fh.read()
        except OSError:
            continue
        if b"njit" in text or b"numba" in text:  # only files that define or shape compiled code
            kernel_sources.append(path)
            digest.update(path[len(root):].encode() + b"\0" + text)
    sources = kernel_sources
    stamp = digest.hexdigest()
    dirs = {os.path.join(os.path.dirname(p), "__pycache__") for p in sources}
    cache_dir = numba.config.CACHE_DIR
    if cache_dir:
        dirs |= {os.path.join(cache_dir, os.path.splitdrive(os.path.dirname(p))[1].lstrip(os.sep)) for p in sources}
    for d in dirs:
        stamp_file = os.path.join(d, "nnlab-kernels.stamp")
        try:
            with open(stamp_file) as fh:
                if fh.read() == stamp:
                    continue
        except OSError:
            pass
        if not os.path.isdir(d):
            continue
        try:
            for f in glob.glob(os.path.join(d, "*.nbi")) + glob.glob(os.path.join(d, "*.nbc")):
                os.remove(f)
            with open(stamp_file, "w") as fh:
                fh.write(stamp)
        except OSError:  # a read-only install: nothing to clean, nothing we can write
            pass
