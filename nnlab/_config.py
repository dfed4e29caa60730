"""Compilation settings shared by every kernel (one place, as in stumpy's config).

``FASTMATH`` is an explicit LLVM flag set: it never contains ``nnan``/``ninf``, so NaN and Inf
detection and gradient checks stay exact. ``JIT`` is what every module-level ``@njit`` gets.
"""

FASTMATH = frozenset()  # e.g. {"contract", "arcp"}; never "fast", "nnan" or "ninf"

JIT = dict(cache=True, nogil=True, error_model="numpy", fastmath=set(FASTMATH))

DTYPES = ("float32", "float64")
