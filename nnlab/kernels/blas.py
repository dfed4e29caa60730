"""Matrix products for the compiled kernels: C = op(A) op(B) (:func:`gemm`) and C += op(A) op(B)
(:func:`gemm_acc`) through NumPy's own BLAS, and that library's thread count from compiled code.

Numba lowers ``np.dot`` inside ``@njit`` to SciPy's BLAS (``scipy.linalg.cython_blas``). The
wheels of NumPy and SciPy each bundle their own OpenBLAS build, and they differ: on the
development machine (NumPy 2.4 -> OpenBLAS 0.3.31, SciPy 1.17 -> 0.3.30) SciPy's non-transposed
float32 product was 1.3-1.8x slower at the wide network's shapes (256x2048x2048: 9.8 vs 7.8 ms;
``benchmarks/bench_bounds.py``), and the two libraries' worker threads fight for the cores when a
process uses both (a step that sent its forward products to one and its backward products to the
other took 6x longer). :func:`gemm` therefore calls the CBLAS ``sgemm``/``dgemm`` of the library
NumPy itself loaded -- the same one ``numpy.matmul`` and the benchmark's NumPy reference use -- and
falls back to ``np.dot`` where that library is not found (a NumPy built against MKL, Accelerate or
a system BLAS under other symbol names, or ``NNLAB_BLAS=numba`` in the environment).

How the compiled code finds the function and still caches: at import the function addresses go
into a small table -- ``sgemm``, ``dgemm``, and the library's ``set_num_threads`` and
``get_num_threads`` -- and the table's address is registered with LLVM under the symbol name
``nnlab_blas_table`` (``llvmlite.binding.add_symbol``). Compiled kernels read the table at run time
through that name, so a kernel loaded from Numba's cache in another process links to that
process's table. A thread entry of 0 makes :func:`blas_threads` return 0 and
:func:`set_blas_threads` do nothing.

The ``np.dot`` fallback is not a branch of the kernels: it is a C callback with the CBLAS
signature (:func:`np_dot_entries`: ``np.dot`` on packed copies of the operands, compiled once,
cached), whose addresses fill the product entries where NumPy's own library is not found. So the
kernels compile one product call and no ``np.dot`` code: a branch to ``np.dot`` in every product
had cost every kernel's first compile ~20% (the first float32 ``Trainer.step``: 23.4 -> 19.3 s).

The operands may be row-strided views (``Z[:, lo:hi]``: unit stride along a row, any row stride
at least the row length), which the BLAS takes through its leading dimensions; a view with an
element stride along its rows is refused with ValueError (the kernels never make one).

>>> import numpy as np
>>> from nnlab.kernels.blas import gemm
>>> A = np.arange(6.0).reshape(2, 3); B = np.ones((2, 4)); C = np.empty((3, 4))
>>> gemm(A, True, B, False, C)
>>> bool(np.array_equal(C, A.T @ B))
True
>>> gemm_acc(A, True, B, False, C)                  # C += A.T @ B
>>> bool(np.array_equal(C, 2 * (A.T @ B)))
True
"""

import ctypes
import functools
import glob
import os

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import JIT

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_SYMBOL = "nnlab_blas_table"


_BUNDLED = {  # package -> the file pattern of the OpenBLAS its wheel bundles in <package>.libs
    "numpy": "libscipy_openblas64_*",  # CBLAS with 64-bit integers, symbols suffixed 64_
    "scipy": "libscipy_openblas-*",
}


@functools.cache
def _bundled(package, *names):
    """(file name, [the named functions]) of the OpenBLAS bundled with ``package``'s wheel, or None
    (not installed from a wheel, another BLAS, or a symbol missing). Loading it with ctypes gives
    the handle of the copy the package already loaded; the result is cached."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        return None
    libs = os.path.join(os.path.dirname(os.path.dirname(spec.origin)), package + ".libs")
    for path in sorted(glob.glob(os.path.join(libs, _BUNDLED[package]))):
        try:
            lib = ctypes.CDLL(path)
            return os.path.basename(path), [getattr(lib, name) for name in names]
        except (OSError, AttributeError):
            continue
    return None


def _numpy_cblas():
    """(sgemm address, dgemm address, description) of the CBLAS bundled with NumPy's wheel
    (scipy-openblas, 64-bit integers: ``scipy_cblas_sgemm64_``), or (0, 0, reason)."""
    if os.environ.get("NNLAB_BLAS", "").lower() == "numba":
        return 0, 0, "np.dot inside @njit (SciPy's BLAS): NNLAB_BLAS=numba"
    found = _bundled("numpy", "scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_")
    if found is not None:
        s, d = (ctypes.cast(f, ctypes.c_void_p).value for f in found[1])
        if s and d:
            return s, d, f"NumPy's OpenBLAS ({found[0]}, CBLAS with 64-bit integers)"
    return 0, 0, "np.dot inside @njit (SciPy's BLAS): NumPy's bundled OpenBLAS was not found"


# ---------------------------------------------------------------- thread count
# OpenBLAS's thread count is process-wide and per library: NumPy's build (which the products call)
# and SciPy's (the np.dot fallback) each keep their own. Both are set; the count reported is the one
# of the library the products use.
_THREAD_API = {  # package -> (set symbol, get symbol)
    "numpy": ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    "scipy": ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
}


def _thread_functions(package):
    """(set, get) ctypes functions of ``package``'s bundled OpenBLAS, or None."""
    found = _bundled(package, *_THREAD_API[package])
    if found is None:
        return None
    setter, getter = found[1]
    setter.argtypes, setter.restype = [ctypes.c_int], None
    getter.argtypes, getter.restype = [], ctypes.c_int
    return setter, getter


def set_threads(n):
    """Use ``n`` threads in the OpenBLAS builds of NumPy and SciPy (the kernels' products); returns
    the number of libraries set (0 when neither bundled OpenBLAS was found)."""
    done = 0
    for package in ("numpy", "scipy"):
        fns = _thread_functions(package)
        if fns is not None:
            fns[0](int(n))
            done += 1
    return done


def get_threads():
    """Threads of the OpenBLAS the products use, or None when it is not a bundled OpenBLAS."""
    fns = _thread_functions("numpy" if _S else "scipy")
    return None if fns is None else int(fns[1]())


def _thread_addresses(package):
    """(set_num_threads, get_num_threads) addresses of ``package``'s bundled OpenBLAS, or (0, 0)."""
    fns = _thread_functions(package)
    if fns is None:
        return 0, 0
    return tuple(ctypes.cast(f, ctypes.c_void_p).value or 0 for f in fns)


_S, _D, LIBRARY = _numpy_cblas()
"""Which BLAS the kernels' matrix products call (a description)."""

# sgemm, dgemm, and the thread setter and getter of the library the products use (SciPy's for the
# np.dot callbacks, which fill the product entries below when NumPy's CBLAS was not found); kept
# alive for the life of the process


def address_table(symbol, size):
    """(table, read): a zeroed table of ``size`` int64 slots (function addresses, counts) registered
    with LLVM under ``symbol``, and the intrinsic ``read(which)`` that compiled kernels read a slot
    with at run time (:func:`table_reader`). Keep the table referenced for the life of the process."""
    table = (ctypes.c_uint64 * size)()
    llvm.add_symbol(symbol, ctypes.addressof(table))
    return table, table_reader(symbol, size)


def callback(fn, sig, what):
    """``fn`` compiled as a C callback of signature ``sig`` (``numba.cfunc``, cached on disk as the
    kernels are): what the kernels call through the address tables instead of linking the code.
    ``what`` names it in the compile notice (Numba announces no compile of a C callback)."""
    import numba

    from .._compile_notice import compiling

    with compiling(what):
        return numba.cfunc(sig, cache=True, nopython=True, error_model="numpy")(fn)


def table_reader(symbol, size):
    """An intrinsic ``read(which)``: slot ``which`` of the int64 table of ``size`` slots that is
    registered with LLVM under ``symbol``, read at run time (so that cached kernels find this
    process's table)."""

    @intrinsic
    def read(typingctx, which):
        if not isinstance(which, types.Integer):
            return None

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            mod = builder.module
            gv = mod.globals.get(symbol)
            if gv is None:
                gv = ir.GlobalVariable(mod, ir.ArrayType(i64, size), symbol)
                gv.linkage = "external"
            idx = context.cast(builder, args[0], signature.args[0], types.intp)
            return builder.load(builder.gep(gv, [ir.Constant(ir.IntType(32), 0), idx]))

        return types.int64(which), codegen

    return read


_TABLE, _table_entry = address_table(_SYMBOL, 4)
_TABLE[:] = (_S or 0, _D or 0, *_thread_addresses("numpy" if _S else "scipy"))
"""Slot ``which`` of the table: the function address of 0 sgemm, 1 dgemm, 2 set threads, 3 get
threads."""


@intrinsic
def _cblas_gemm(typingctx, fn, ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc):
    """cblas_?gemm(RowMajor, ta, tb, m, n, k, 1, A, lda, B, ldb, beta, C, ldc) through the address
    ``fn``; A, B, C 2-D arrays of one float dtype whose rows are contiguous (the caller passes the
    leading dimensions)."""
    arrays = (A, B, C)
    if not all(isinstance(a, types.Array) and a.ndim == 2 and a.layout in ("C", "A") for a in arrays):
        return None
    dtype = A.dtype
    if dtype not in (types.float32, types.float64) or B.dtype != dtype or C.dtype != dtype:
        return None
    if not isinstance(beta, types.Float):
        return None

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        fty = context.get_value_type(dtype)
        pty = fty.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, fty, pty, i64, pty, i64, fty, pty, i64])
        func = builder.inttoptr(args[0], fnty.as_pointer())

        def data(pos):
            return context.make_array(signature.args[pos])(context, builder, args[pos]).data

        def as64(pos):
            return context.cast(builder, args[pos], signature.args[pos], types.int64)

        b = context.cast(builder, args[10], signature.args[10], dtype)
        builder.call(func, [ir.Constant(i32, _ROW_MAJOR), builder.trunc(as64(1), i32), builder.trunc(as64(2), i32),
                            as64(3), as64(4), as64(5), ir.Constant(fty, 1.0), data(6), as64(7), data(8), as64(9),
                            b, data(11), as64(12)])
        return context.get_dummy_value()

    return types.void(fn, ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc), codegen


@intrinsic
def _call_void_int(typingctx, fn, value):
    """f(value) for the C function ``void f(int)`` at address ``fn``."""
    if not isinstance(fn, types.Integer) or not isinstance(value, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i32])
        func = builder.inttoptr(args[0], fnty.as_pointer())
        v = context.cast(builder, args[1], signature.args[1], types.int64)
        builder.call(func, [builder.trunc(v, i32)])
        return context.get_dummy_value()

    return types.void(fn, value), codegen


@intrinsic
def _call_int(typingctx, fn):
    """f() for the C function ``int f(void)`` at address ``fn``."""
    if not isinstance(fn, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [])
        func = builder.inttoptr(args[0], fnty.as_pointer())
        return builder.sext(builder.call(func, []), ir.IntType(64))

    return types.int64(fn), codegen


@intrinsic
def call_i64(typingctx, fn, args):
    """f(*args) for the C function ``void f(int64, ...)`` at address ``fn``; ``args`` a tuple of
    integers (an array's ``ctypes.data`` passes its data pointer: on x86-64 and AArch64 a pointer
    argument is passed as a 64-bit integer is)."""
    if not isinstance(fn, types.Integer) or not isinstance(args, types.BaseTuple):
        return None
    if not all(isinstance(a, types.Integer) for a in args):
        return None

    def codegen(context, builder, signature, llargs):
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [i64] * len(args))
        func = builder.inttoptr(context.cast(builder, llargs[0], signature.args[0], types.int64), fnty.as_pointer())
        vals = [context.cast(builder, builder.extract_value(llargs[1], k), args[k], types.int64)
                for k in range(len(args))]
        builder.call(func, vals)
        return context.get_dummy_value()

    return types.void(fn, args), codegen


@intrinsic
def call_f64(typingctx, fn, args):
    """f(*args) for the C function ``double f(...)`` at address ``fn``: each C-contiguous array of
    the tuple ``args`` passes its data pointer followed by its shape (one int64 per dimension),
    each integer or bool passes as an int64. The callee rebuilds the arrays with ``carray``."""
    if not isinstance(fn, types.Integer) or not isinstance(args, types.BaseTuple):
        return None
    for a in args:
        if isinstance(a, types.Array):
            if a.layout != "C":
                return None
        elif not isinstance(a, (types.Integer, types.Boolean)):
            return None

    def codegen(context, builder, signature, llargs):
        i64 = ir.IntType(64)
        tys, vals = [], []
        for k, a in enumerate(args):
            v = builder.extract_value(llargs[1], k)
            if isinstance(a, types.Array):
                ary = context.make_array(a)(context, builder, v)
                tys.append(ary.data.type)
                vals.append(ary.data)
                for dim in cgutils.unpack_tuple(builder, ary.shape, a.ndim):
                    tys.append(i64)
                    vals.append(dim)
            else:
                tys.append(i64)
                vals.append(context.cast(builder, v, a, types.int64))
        fnty = ir.FunctionType(ir.DoubleType(), tys)
        func = builder.inttoptr(context.cast(builder, llargs[0], signature.args[0], types.int64), fnty.as_pointer())
        return builder.call(func, vals)

    return types.float64(fn, args), codegen


def c_signature(args):
    """The ``numba.cfunc`` signature of a callee that :func:`call_f64` calls with argument types
    ``args`` (Numba types: arrays, integers, bools)."""
    flat = []
    for a in args:
        if isinstance(a, types.Array):
            flat.append(types.CPointer(a.dtype))
            flat.extend([types.int64] * a.ndim)
        else:
            flat.append(types.int64)
    return types.float64(*flat)


# ---------------------------------------------------------------- the np.dot fallback
@njit(**JIT)
def _np_dot_gemm(ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc):
    """The CBLAS product C = op(A) op(B) + beta·C (row-major; alpha 1, beta 0 or 1) through ``np.dot``:
    A, B, C are flat views over the operands' memory with leading dimensions lda, ldb, ldc; op(A)
    and op(B) are packed into contiguous arrays (so ``np.dot`` sees the same operands as a plain
    ``np.dot(np.ascontiguousarray(A.T), B)``: the same bits), C is written, and read only for
    beta = 1."""
    a = np.empty((m, k), A.dtype)
    for i in range(m):
        for p in range(k):
            a[i, p] = A[p * lda + i] if ta else A[i * lda + p]
    b = np.empty((k, n), B.dtype)
    for p in range(k):
        for j in range(n):
            b[p, j] = B[j * ldb + p] if tb else B[p * ldb + j]
    P = np.empty((m, n), C.dtype)
    np.dot(a, b, P)
    for i in range(m):
        for j in range(n):
            C[i * ldc + j] = P[i, j] + C[i * ldc + j] if beta != 0.0 else P[i, j]


def _np_dot_entry(layout, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    """The C callback over :func:`_np_dot_gemm`, with the signature the kernels call NumPy's
    ``cblas_?gemm64_`` with (row-major layout; alpha is 1)."""
    ra, ca = (k, m) if ta == _TRANS else (m, k)
    rb, cb = (n, k) if tb == _TRANS else (k, n)
    _np_dot_gemm(ta == _TRANS, tb == _TRANS, m, n, k, carray(A, ((ra - 1) * lda + ca,)), lda,
                 carray(B, ((rb - 1) * ldb + cb,)), ldb, beta, carray(C, ((m - 1) * ldc + n,)), ldc)


_FALLBACKS = []


def np_dot_entries():
    """(sgemm, dgemm) addresses of the ``np.dot`` callbacks (compiled, or loaded from Numba's
    cache, on first use): what the product entries hold where NumPy's CBLAS is not found."""
    if not _FALLBACKS:
        i32, i64 = types.int32, types.int64
        for ftype in (types.float32, types.float64):
            ptr = types.CPointer(ftype)
            sig = types.void(i32, i32, i32, i64, i64, i64, ftype, ptr, i64, ptr, i64, ftype, ptr, i64)
            _FALLBACKS.append(callback(_np_dot_entry, sig, f"the np.dot matrix product ({ftype})"))
    return tuple(cb.address for cb in _FALLBACKS)


if not _S:
    _TABLE[0], _TABLE[1] = np_dot_entries()


@njit(**JIT)
def _ld(X):
    """The leading dimension of a 2-D array whose rows are contiguous (in elements), or -1 when the
    BLAS cannot take it as it is (an element stride other than 1 along a row, overlapping rows)."""
    rows, cols = X.shape
    if cols > 1 and X.strides[1] != X.itemsize:
        return -1
    ld = X.strides[0] // X.itemsize if rows > 1 else cols
    if rows > 1 and (X.strides[0] % X.itemsize != 0 or ld < cols):
        return -1
    return max(1, cols, ld)


@njit(**JIT)
def _gemm(A, ta, B, tb, C, beta):
    m, n = C.shape
    k = A.shape[0] if ta else A.shape[1]
    if (A.shape[1] if ta else A.shape[0]) != m or (B.shape[0] if tb else B.shape[1]) != n or \
            (B.shape[1] if tb else B.shape[0]) != k:
        raise ValueError("gemm: the shapes of op(A), op(B) and C do not match")
    if m == 0 or n == 0:
        return
    if k == 0:
        if beta == 0.0:
            for r in range(m):  # (C[:, :] = 0.0 as a loop: see nnlab.kernels.common.assign2)
                for j in range(n):
                    C[r, j] = 0.0
        return
    fn = _table_entry(0 if A.itemsize == 4 else 1)
    lda, ldb, ldc = _ld(A), _ld(B), _ld(C)
    if lda < 0 or ldb < 0 or ldc < 0:
        # (the kernels pass contiguous arrays and their column blocks only; packing other views here
        # made every kernel's first compile ~20% longer)
        raise ValueError("gemm: an operand has an element stride along its rows; pass a contiguous copy")
    _cblas_gemm(fn, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS, m, n, k,
                A, lda, B, ldb, beta, C, ldc)


# gemm and gemm_acc are inlined into their callers at the Numba IR level and pass the transpose
# flags on as plain bools (``ta != 0``): the kernels call them with constants (``gemm(X, True, E,
# False, dW)``), which Numba types as literals and would compile a copy of the product -- and of
# the np.dot fallback -- per combination of constants (and re-optimise it in each caller).
_INLINE = dict(JIT, inline="always")


@njit(**_INLINE)
def gemm(A, ta, B, tb, C):
    """C = op(A) op(B), op = transpose where ``ta``/``tb``; A, B, C 2-D arrays of one float dtype,
    C-contiguous or row-strided views (C is overwritten, never read; ValueError for other views). Through NumPy's BLAS (see the
    module docstring), else ``np.dot`` (:func:`np_dot_entries`)."""
    _gemm(A, ta != 0, B, tb != 0, C, 0.0)


@njit(**_INLINE)
def gemm_acc(A, ta, B, tb, C):
    """C += op(A) op(B) (the BLAS's beta = 1: no temporary, no second pass over C); operands as
    for :func:`gemm`."""
    _gemm(A, ta != 0, B, tb != 0, C, 1.0)


@njit(**JIT)
def blas_threads():
    """The thread count of the BLAS the products use, read at run time; 0 when unknown."""
    fn = _table_entry(3)
    if fn == 0:
        return 0
    return _call_int(fn)


@njit(**JIT)
def set_blas_threads(count):
    """Set the thread count of the BLAS the products use (process-wide, as
    ``nl.backend.set_num_threads``); nothing when unknown."""
    fn = _table_entry(2)
    if fn != 0:
        _call_void_int(fn, count)
