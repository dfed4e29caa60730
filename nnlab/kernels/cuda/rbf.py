"""Device twin of :mod:`nnlab.kernels.rbf` (``KIND_RBF``), on the op's n·T rows.

    Z_j = ‖x − c_j‖² = Σ_i (x_i − c_ij)²,   A_j = exp(−γ Z_j)
    dZ = dA ⊙ (−γ)·A (the memoized error),  dx_i = 2 Σ_j dZ_j (x_i − c_ij),
    dc_ij = −2 Σ_rows dZ_j (x_i − c_ij),   dγ = −Σ dA ⊙ Z ⊙ A  (a learnable γ, ``params[F_AP]``)

Every sum over the differences x_i − c_ij themselves, as on the CPU (never the cancelling
‖x‖² − 2x·c + ‖c‖²). One thread per (row, centre) for Z and A, per (feature, centre) for dc (the
rows in order, the CPU's sum), per (row, feature) for dx; dγ is one block's tree sum. Arithmetic
in the network's dtype (the CPU takes dγ and the sum of dx in float64: float32 results agree to
float32 rounding).
"""

import math

from numba import cuda

from ..layout import DX_ADD, DX_SKIP, DX_WRITE, F_A, F_AP, F_DX, F_NIN, F_NOUT, F_T, F_W, F_X, F_Z, HP_GAMMA, KIND_RBF
from ._blocks import SHARED, block_sum, launch, per_dtype, scalar, signature
from .device import threads_per_block
from .registry import register


def _build(nbt):
    @cuda.jit(device=True)
    def gamma(params, ap, g):
        return params[ap] if ap >= 0 else g

    @cuda.jit
    def forward(X, C, Z, A, params, ap, g, m, nin, nc):
        """Per (row r, centre j): Z = Σ_f (x_f − c_fj)² (features in order), A = exp(−γ Z)."""
        gm = gamma(params, ap, g)
        for q in range(cuda.grid(1), m * nc, cuda.gridsize(1)):
            r = q // nc
            j = q - r * nc
            acc = nbt(0.0)
            for f in range(nin):
                d = X[r * nin + f] - C[f * nc + j]
                acc += d * d
            Z[q] = acc
            A[q] = math.exp(-gm * acc)

    @cuda.jit
    def dgamma(Z, A, dA, grads, ap):
        """grads[ap] = −Σ dA·Z·A (one block)."""
        sh = cuda.shared.array(SHARED, nbt)
        acc = nbt(0.0)
        for q in range(cuda.threadIdx.x, Z.size, cuda.blockDim.x):
            acc += dA[q] * Z[q] * A[q]
        total = block_sum(sh, acc)
        if cuda.threadIdx.x == 0:
            grads[ap] = -total

    @cuda.jit
    def error(A, dA, E, params, ap, g):
        """E = −γ·(dA·A)."""
        gm = gamma(params, ap, g)
        for q in range(cuda.grid(1), E.size, cuda.gridsize(1)):
            E[q] = -gm * (dA[q] * A[q])

    @cuda.jit
    def dcentres(X, C, E, dC, m, nin, nc):
        """Per (feature f, centre j): dc = −2 Σ_rows E_j (x_f − c_fj), the rows in order."""
        for q in range(cuda.grid(1), nin * nc, cuda.gridsize(1)):
            f = q // nc
            j = q - f * nc
            c = C[q]
            acc = nbt(0.0)
            for r in range(m):
                acc += E[r * nc + j] * (X[r * nin + f] - c)
            dC[q] = nbt(-2.0) * acc

    @cuda.jit
    def dinput(X, C, E, dX, m, nin, nc, mode):
        """Per (row r, feature f): dx = 2 Σ_j E_j (x_f − c_fj), written or added."""
        for q in range(cuda.grid(1), m * nin, cuda.gridsize(1)):
            r = q // nin
            f = q - r * nin
            xf = X[q]
            acc = nbt(0.0)
            for j in range(nc):
                acc += E[r * nc + j] * (xf - C[f * nc + j])
            v = nbt(2.0) * acc
            if mode == DX_WRITE:
                dX[q] = v
            elif mode == DX_ADD:
                dX[q] += v

    return _Kernels(forward, dgamma, error, dcentres, dinput)


class _Kernels:
    def __init__(self, forward, dgamma, error, dcentres, dinput):
        self.forward = forward
        self.dgamma = dgamma
        self.error = error
        self.dcentres = dcentres
        self.dinput = dinput


kernels = per_dtype(_build)

SIGNATURES = {
    "forward": "void(F[::1], F[::1], F[::1], F[::1], F[::1], int64, F, int64, int64, int64)",
    "dgamma": "void(F[::1], F[::1], F[::1], F[::1], int64)",
    "error": "void(F[::1], F[::1], F[::1], F[::1], int64, F)",
    "dcentres": "void(F[::1], F[::1], F[::1], F[::1], int64, int64, int64)",
    "dinput": "void(F[::1], F[::1], F[::1], F[::1], int64, int64, int64, int64)",
}


def ptx_kernels(dtype):
    """[(name, python function, compile_ptx signature)] of every kernel of this module for ``dtype``."""
    k = kernels(dtype)
    return [(name, getattr(k, name).py_func, signature(sig, dtype)) for name, sig in SIGNATURES.items()]


def _shape(prog, i, n):
    o = prog.ops[i]
    nin, nc, w = int(o[F_NIN]), int(o[F_NOUT]), int(o[F_W])
    return (o, n * int(o[F_T]), nin, nc, prog.params[w:w + nin * nc], int(o[F_AP]),
            scalar(prog, prog.hp[i, HP_GAMMA]))


def rbf_forward(prog, i, n, training, store):
    """Z_j = ‖x − c_j‖² and A_j = exp(−γ Z_j)."""
    o, m, nin, nc, C, ap, g = _shape(prog, i, n)
    launch(kernels(prog.dtype).forward, m * nc, prog)(
        prog.flat(prog.ws, int(o[F_X]), n), C, prog.flat(prog.ws, int(o[F_Z]), n), prog.flat(prog.ws, int(o[F_A]), n),
        prog.params, ap, g, m, nin, nc)
    return False


def rbf_backward(prog, i, n, stored):
    """dZ = dA·(−γ)·A (memoized at Z), dx, dc, and dγ when it is learnable."""
    o, m, nin, nc, C, ap, g = _shape(prog, i, n)
    k = kernels(prog.dtype)
    Z = prog.flat(prog.ws, int(o[F_Z]), n)
    A = prog.flat(prog.ws, int(o[F_A]), n)
    dA = prog.flat(prog.dws, int(o[F_A]), n)
    E = prog.flat(prog.dws, int(o[F_Z]), n)
    X = prog.flat(prog.ws, int(o[F_X]), n)
    if ap >= 0:
        k.dgamma[1, threads_per_block(), prog.stream](Z, A, dA, prog.grads, ap)
    launch(k.error, m * nc, prog)(A, dA, E, prog.params, ap, g)
    w = int(o[F_W])
    launch(k.dcentres, nin * nc, prog)(X, C, E, prog.grads[w:w + nin * nc], m, nin, nc)
    mode = int(o[F_DX])
    if mode != DX_SKIP:
        launch(k.dinput, m * nin, prog)(X, C, E, prog.flat(prog.dws, int(o[F_X]), n), m, nin, nc, mode)


register(KIND_RBF, rbf_forward, rbf_backward)
