"""Device twins of :mod:`nnlab.kernels.combine`: ``KIND_ADD`` (A = X + X2, dX = dX2 = dA) and
``KIND_GATE`` (A = T·H + (1 − T)·X; dX = dA·(1 − T), dH = dA·T, dT = dA·(H − X); H = X2, T = X3).
Elementwise grid-stride kernels; each input gradient written or added in its own ``DX_*`` mode.
"""

from numba import cuda

from ..layout import DX_ADD, DX_WRITE, F_A, F_DX, F_DX2, F_DX3, F_X, F_X2, F_X3, KIND_ADD, KIND_GATE
from ._blocks import launch, per_dtype, signature
from .registry import register


def _build(nbt):
    @cuda.jit
    def add(x, s, a):
        """A = X + X2."""
        for k in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            a[k] = x[k] + s[k]

    @cuda.jit
    def add_back(da, dx, mode, dx2, mode2):
        """dX = dA and dX2 = dA, each in its mode."""
        for k in range(cuda.grid(1), da.size, cuda.gridsize(1)):
            g = da[k]
            if mode == DX_WRITE:
                dx[k] = g
            elif mode == DX_ADD:
                dx[k] += g
            if mode2 == DX_WRITE:
                dx2[k] = g
            elif mode2 == DX_ADD:
                dx2[k] += g

    @cuda.jit
    def gate(x, h, t, a):
        """A = T·H + (1 − T)·X."""
        for k in range(cuda.grid(1), a.size, cuda.gridsize(1)):
            a[k] = t[k] * h[k] + (nbt(1.0) - t[k]) * x[k]

    @cuda.jit
    def gate_back(x, h, t, da, dx, mode, dh, mode2, dt, mode3):
        """dT = dA·(H − X), dH = dA·T, dX = dA·(1 − T), each in its mode (a tensor read twice by
        the gate, e.g. X = H, gets both shares: the CPU's order, dT then dH then dX)."""
        for k in range(cuda.grid(1), da.size, cuda.gridsize(1)):
            g = da[k]
            xk = x[k]
            hk = h[k]
            tk = t[k]
            v = g * (hk - xk)
            if mode3 == DX_WRITE:
                dt[k] = v
            elif mode3 == DX_ADD:
                dt[k] += v
            v = g * tk
            if mode2 == DX_WRITE:
                dh[k] = v
            elif mode2 == DX_ADD:
                dh[k] += v
            v = g * (nbt(1.0) - tk)
            if mode == DX_WRITE:
                dx[k] = v
            elif mode == DX_ADD:
                dx[k] += v

    return _Kernels(add, add_back, gate, gate_back)


class _Kernels:
    def __init__(self, add, add_back, gate, gate_back):
        self.add = add
        self.add_back = add_back
        self.gate = gate
        self.gate_back = gate_back


kernels = per_dtype(_build)

SIGNATURES = {
    "add": "void(F[::1], F[::1], F[::1])",
    "add_back": "void(F[::1], F[::1], int64, F[::1], int64)",
    "gate": "void(F[::1], F[::1], F[::1], F[::1])",
    "gate_back": "void(F[::1], F[::1], F[::1], F[::1], F[::1], int64, F[::1], int64, F[::1], int64)",
}


def ptx_kernels(dtype):
    """[(name, python function, compile_ptx signature)] of every kernel of this module for ``dtype``."""
    k = kernels(dtype)
    return [(name, getattr(k, name).py_func, signature(sig, dtype)) for name, sig in SIGNATURES.items()]


def _t(prog, buf, i, col, n):
    return prog.flat(buf, int(prog.ops[i, col]), n)


def add_forward(prog, i, n, training, store):
    """A = X + X2."""
    a = _t(prog, prog.ws, i, F_A, n)
    launch(kernels(prog.dtype).add, a.size, prog)(_t(prog, prog.ws, i, F_X, n), _t(prog, prog.ws, i, F_X2, n), a)
    return False


def add_backward(prog, i, n, stored):
    """dX = dA and dX2 = dA."""
    o = prog.ops[i]
    if o[F_DX] not in (DX_WRITE, DX_ADD) and o[F_DX2] not in (DX_WRITE, DX_ADD):
        return
    da = _t(prog, prog.dws, i, F_A, n)
    launch(kernels(prog.dtype).add_back, da.size, prog)(da, _t(prog, prog.dws, i, F_X, n), int(o[F_DX]),
                                                        _t(prog, prog.dws, i, F_X2, n), int(o[F_DX2]))


def gate_forward(prog, i, n, training, store):
    """A = T·H + (1 − T)·X."""
    a = _t(prog, prog.ws, i, F_A, n)
    launch(kernels(prog.dtype).gate, a.size, prog)(_t(prog, prog.ws, i, F_X, n), _t(prog, prog.ws, i, F_X2, n),
                                                   _t(prog, prog.ws, i, F_X3, n), a)
    return False


def gate_backward(prog, i, n, stored):
    """dX = dA·(1 − T), dH = dA·T, dT = dA·(H − X)."""
    o = prog.ops[i]
    da = _t(prog, prog.dws, i, F_A, n)
    launch(kernels(prog.dtype).gate_back, da.size, prog)(
        _t(prog, prog.ws, i, F_X, n), _t(prog, prog.ws, i, F_X2, n), _t(prog, prog.ws, i, F_X3, n), da,
        _t(prog, prog.dws, i, F_X, n), int(o[F_DX]), _t(prog, prog.dws, i, F_X2, n), int(o[F_DX2]),
        _t(prog, prog.dws, i, F_X3, n), int(o[F_DX3]))


register(KIND_ADD, add_forward, add_backward)
register(KIND_GATE, gate_forward, gate_backward)
