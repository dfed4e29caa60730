"""Device twin of :mod:`nnlab.kernels.maxout` (``KIND_MAXOUT``), on the op's n·T rows.

    Z = X W + b  (n_out·k columns; piece p of unit j is column j·k + p),  A_j = max_p Z_{j·k+p}

with the CPU's tie rule (the first largest piece wins; a NaN piece wins, the first NaN). The
products are :func:`nnlab.kernels.cuda.gemm.gemm`; one thread per (row, unit) adds the bias and
picks. Backward: the routed error E (dA to each unit's winning piece, 0 to the others; the op's
memoized error at Z), ∂b = Σ_rows E (one thread per column, rows in order: the CPU's sum), ∂W =
Xᵀ E, and dX = E Wᵀ written (DX_WRITE) or computed into the op's scratch tensor and added
(DX_ADD), as on the CPU.
"""

from numba import cuda

from ..layout import DX_ADD, DX_WRITE, F_A, F_B, F_DX, F_K, F_NIN, F_NOUT, F_SCRATCH, F_T, F_W, F_X, F_Z, KIND_MAXOUT
from ._blocks import launch, per_dtype, signature
from .gemm import gemm
from .registry import register


def _build(nbt):
    @cuda.jit(device=True)
    def pick(Z, base, k):
        """Index of the winning piece among Z[base:base + k] (the CPU's ``maxout_pick``)."""
        best = Z[base]
        if best != best:
            return 0
        arg = 0
        for p in range(1, k):
            v = Z[base + p]
            if v != v:
                return p
            if v > best:
                best = v
                arg = p
        return arg

    @cuda.jit
    def forward(Z, A, bias, has_bias, m, nout, k):
        """Per (row r, unit j): Z += b over the unit's pieces, A_j = the winning piece."""
        width = nout * k
        for q in range(cuda.grid(1), m * nout, cuda.gridsize(1)):
            r = q // nout
            j = q - r * nout
            base = r * width + j * k
            if has_bias:
                for p in range(k):
                    Z[base + p] = Z[base + p] + bias[j * k + p]
            A[q] = Z[base + pick(Z, base, k)]

    @cuda.jit
    def route(Z, dA, E, m, nout, k):
        """E = dA at each unit's winning piece, 0 at the others."""
        width = nout * k
        for q in range(cuda.grid(1), m * nout, cuda.gridsize(1)):
            r = q // nout
            j = q - r * nout
            base = r * width + j * k
            for p in range(k):
                E[base + p] = nbt(0.0)
            E[base + pick(Z, base, k)] = dA[q]

    @cuda.jit
    def col_sums(E, db, m, width):
        """db_j = Σ_rows E[:, j], the rows in order (one thread per column)."""
        for j in range(cuda.grid(1), width, cuda.gridsize(1)):
            acc = nbt(0.0)
            for r in range(m):
                acc += E[r * width + j]
            db[j] = acc

    @cuda.jit
    def add_into(dst, src):
        """dst += src."""
        for k in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
            dst[k] += src[k]

    return _Kernels(forward, route, col_sums, add_into)


class _Kernels:
    def __init__(self, forward, route, col_sums, add_into):
        self.forward = forward
        self.route = route
        self.col_sums = col_sums
        self.add_into = add_into


kernels = per_dtype(_build)

SIGNATURES = {
    "forward": "void(F[::1], F[::1], F[::1], int64, int64, int64, int64)",
    "route": "void(F[::1], F[::1], F[::1], int64, int64, int64)",
    "col_sums": "void(F[::1], F[::1], int64, int64)",
    "add_into": "void(F[::1], F[::1])",
}


def ptx_kernels(dtype):
    """[(name, python function, compile_ptx signature)] of every kernel of this module for ``dtype``."""
    k = kernels(dtype)
    return [(name, getattr(k, name).py_func, signature(sig, dtype)) for name, sig in SIGNATURES.items()]


def _shape(prog, i, n):
    o = prog.ops[i]
    return o, n * int(o[F_T]), int(o[F_NIN]), int(o[F_NOUT]), int(o[F_K])


def maxout_forward(prog, i, n, training, store):
    """Z = X W + b and A_j = max over the k pieces of unit j."""
    o, m, nin, nout, k = _shape(prog, i, n)
    width = nout * k
    w = int(o[F_W])
    Z = prog.flat(prog.ws, int(o[F_Z]), n)
    gemm(prog.flat(prog.ws, int(o[F_X]), n).reshape(m, nin), False, prog.params[w:w + nin * width].reshape(nin, width),
         False, Z.reshape(m, width), stream=prog.stream)
    b = int(o[F_B])
    bias = prog.params[b:b + width] if b >= 0 else Z
    launch(kernels(prog.dtype).forward, m * nout, prog)(Z, prog.flat(prog.ws, int(o[F_A]), n), bias,
                                                        1 if b >= 0 else 0, m, nout, k)
    return False


def maxout_backward(prog, i, n, stored):
    """E = dA routed to each unit's winning piece (memoized at Z), ∂b = Σ_rows E, ∂W = Xᵀ E,
    dX = E Wᵀ in the op's mode."""
    o, m, nin, nout, k = _shape(prog, i, n)
    width = nout * k
    kern = kernels(prog.dtype)
    E = prog.flat(prog.dws, int(o[F_Z]), n)
    launch(kern.route, m * nout, prog)(prog.flat(prog.ws, int(o[F_Z]), n), prog.flat(prog.dws, int(o[F_A]), n), E,
                                       m, nout, k)
    b = int(o[F_B])
    if b >= 0:
        launch(kern.col_sums, width, prog)(E, prog.grads[b:b + width], m, width)
    w = int(o[F_W])
    X = prog.flat(prog.ws, int(o[F_X]), n).reshape(m, nin)
    E2 = E.reshape(m, width)
    gemm(X, True, E2, False, prog.grads[w:w + nin * width].reshape(nin, width), stream=prog.stream)
    mode = int(o[F_DX])
    W = prog.params[w:w + nin * width].reshape(nin, width)
    dX = prog.flat(prog.dws, int(o[F_X]), n)
    if mode == DX_WRITE:
        gemm(E2, False, W, True, dX.reshape(m, nin), stream=prog.stream)
    elif mode == DX_ADD:
        s = int(prog.tens[int(o[F_SCRATCH]), 0]) * n
        tmp = prog.dws[s:s + m * nin]
        gemm(E2, False, W, True, tmp.reshape(m, nin), stream=prog.stream)
        launch(kern.add_into, m * nin, prog)(dX, tmp)


register(KIND_MAXOUT, maxout_forward, maxout_backward)
