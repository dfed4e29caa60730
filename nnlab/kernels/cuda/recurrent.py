"""Device twins of :mod:`nnlab.kernels.recurrent`: ``KIND_RNN`` and ``KIND_LSTM``, forward over time
and backpropagation through time (full, or truncated to ``F_K`` steps), with the carry block
(``HP_CARRY`` 0/1/2, ``F_CARRY``) and a sequence or last-state output (``F_SEQ``).

The tensors are the CPU module's (time-major auxiliary tensors h_0..h_T, the time-major input,
RNN: a·θ'(z_t); LSTM: the gate values, c_0..c_T, tanh(c_t); the backward scratch last), and so
is the math (read the CPU module's docstring). On the device:

* forward: the input products for all steps in one :func:`~nnlab.kernels.cuda.gemm.gemm`, then
  per step one gemm accumulating h_{t−1} W_hh into z_t (beta = 1) and one fused elementwise
  kernel (RNN: h_t = a·θ(z_t) and a·θ'(z_t); LSTM: the four gates, c_t, tanh c_t and h_t, one
  thread per (row, unit));
* backward: per step one fused elementwise kernel (RNN: ∂L/∂z_t = dh_t ⊙ a·θ'(z_t); LSTM: the gate
  gradients and the cell gradient carried to c_{t−1}) and one gemm adding ∂L/∂z_t W_hhᵀ into the
  gradient reaching h_{t−1}; then one product each for ∂L/∂W_ih = Xtᵀ ∂L/∂Z, ∂L/∂W_hh =
  [h_0..h_{T−1}]ᵀ ∂L/∂Z and the input gradient ∂L/∂Z W_ihᵀ (scattered to the batch-major input in
  the op's DX mode), and ∂L/∂b = Σ_rows ∂L/∂Z (one thread per column, rows in order).

The RNN's activation is the registry's scalar math compiled as device functions
(``builtin_act_f``/``builtin_act_d`` of :mod:`nnlab.kernels.cuda.activations`, float64 as the CPU's
``act_f``); tanh with a = 1 (the default, where the CPU takes its float32 fast form) and the LSTM's
sigmoid and tanh are computed in the network's dtype. The CPU's LSTM keeps W_hhᵀ in the ``dws`` region of its gate values; the device
product reads W_hh transposed instead and leaves that region alone.
"""

import math

from numba import cuda

from ...activations._math import CUSTOM_BASE, TANH
from ...errors import DeviceError
from ..layout import (
    DX_ADD,
    DX_SKIP,
    DX_WRITE,
    F_A,
    F_ACT,
    F_AUX,
    F_B,
    F_CARRY,
    F_DX,
    F_K,
    F_KIND,
    F_NIN,
    F_NOUT,
    F_SEQ,
    F_T,
    F_W,
    F_X,
    F_Z,
    HP_CARRY,
    KIND_LSTM,
    KIND_RNN,
)
from ._blocks import launch, per_dtype, scalar, signature
from .activations import builtin_act_d as act_d
from .activations import builtin_act_f as act_f
from .gemm import gemm
from .registry import register


def _build(nbt):
    @cuda.jit
    def to_time_major(X, Xt, n, T, F):
        """Xt[t·n + r, j] = X[r, t·F + j]."""
        for q in range(cuda.grid(1), n * T * F, cuda.gridsize(1)):
            t = q // (n * F)
            rest = q - t * n * F
            r = rest // F
            j = rest - r * F
            Xt[q] = X[r * T * F + t * F + j]

    @cuda.jit
    def from_time_major(dXt, dX, n, T, F, mode):
        """dX[r, t·F + j] = (DX_WRITE) or += (DX_ADD) dXt[t·n + r, j]."""
        for q in range(cuda.grid(1), n * T * F, cuda.gridsize(1)):
            r = q // (T * F)
            rest = q - r * T * F
            t = rest // F
            j = rest - t * F
            v = dXt[(t * n + r) * F + j]
            if mode == DX_WRITE:
                dX[q] = v
            elif mode == DX_ADD:
                dX[q] += v

    @cuda.jit
    def add_bias(Z, bias, G):
        """Z[q, j] += b[j] over the rows of a flat (·, G) matrix."""
        for q in range(cuda.grid(1), Z.size, cuda.gridsize(1)):
            Z[q] = Z[q] + bias[q % G]

    @cuda.jit
    def load_state(dst, carry, width, c0, H, kept):
        """dst (n, H) = carry[:, c0:c0 + H] (the carry block is (n, width)) when ``kept``, else 0."""
        for q in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
            if kept:
                r = q // H
                dst[q] = carry[r * width + c0 + q - r * H]
            else:
                dst[q] = nbt(0.0)

    @cuda.jit
    def keep_state(src, carry, width, c0, H):
        """carry[:, c0:c0 + H] = src (n, H)."""
        for q in range(cuda.grid(1), src.size, cuda.gridsize(1)):
            r = q // H
            carry[r * width + c0 + q - r * H] = src[q]

    @cuda.jit
    def output(Hs, A, n, T, H, seq):
        """A = every h_t batch-major (n, T·H) (``seq``) or h_T (n, H)."""
        for q in range(cuda.grid(1), A.size, cuda.gridsize(1)):
            if seq:
                r = q // (T * H)
                rest = q - r * T * H
                t = rest // H
                j = rest - t * H
                A[q] = Hs[((t + 1) * n + r) * H + j]
            else:
                A[q] = Hs[T * n * H + q]

    @cuda.jit
    def seed_dh(dA, dH, n, T, H, seq):
        """dH[t] = the output's gradient at h_t (every t ≥ 1 for a sequence output, t = T for the
        last state), 0 elsewhere."""
        for q in range(cuda.grid(1), (T + 1) * n * H, cuda.gridsize(1)):
            t = q // (n * H)
            rest = q - t * n * H
            r = rest // H
            j = rest - r * H
            if seq:
                dH[q] = dA[r * T * H + (t - 1) * H + j] if t >= 1 else nbt(0.0)
            else:
                dH[q] = dA[r * H + j] if t == T else nbt(0.0)

    @cuda.jit
    def fill(x, v):
        """x[:] = v."""
        for q in range(cuda.grid(1), x.size, cuda.gridsize(1)):
            x[q] = v

    @cuda.jit
    def col_sums(E, db, rows, G):
        """db_j = Σ_rows E[:, j], the rows in order (one thread per column)."""
        for j in range(cuda.grid(1), G, cuda.gridsize(1)):
            acc = nbt(0.0)
            for r in range(rows):
                acc += E[r * G + j]
            db[j] = acc

    # ------------------------------------------------------------ RNN
    @cuda.jit
    def rnn_tanh(z, h, d):
        """h = tanh z and d = 1 − tanh² z = 4e/(1+e)², e = exp(−2|z|)."""
        for q in range(cuda.grid(1), z.size, cuda.gridsize(1)):
            v = z[q]
            e = math.exp(nbt(-2.0) * abs(v))
            w = nbt(1.0) / (nbt(1.0) + e)
            h[q] = math.tanh(v)
            d[q] = nbt(4.0) * e * w * w

    @cuda.jit
    def rnn_act(z, h, d, code, p0, p1, p2, a):
        """h = a·θ(z) and d = a·θ'(z) with the registry's scalar math (float64, as the CPU)."""
        for q in range(cuda.grid(1), z.size, cuda.gridsize(1)):
            v = z[q]
            h[q] = a * act_f(code, v, p0, p1, p2, 0.0)
            d[q] = a * act_d(code, v, p0, p1, p2, 0.0)

    @cuda.jit
    def mul(x, y, out):
        """out = x ⊙ y."""
        for q in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            out[q] = x[q] * y[q]

    @cuda.jit
    def rnn_trunc_step(delta, dHs, Ds, g, dZs):
        """One step of a truncated sweep: dH_s += δ, g = δ ⊙ a·θ'(z_s), ∂L/∂z_s += g."""
        for q in range(cuda.grid(1), g.size, cuda.gridsize(1)):
            v = delta[q]
            dHs[q] += v
            w = v * Ds[q]
            g[q] = w
            dZs[q] += w

    # ------------------------------------------------------------ LSTM
    @cuda.jit(device=True)
    def sigmoid(x):
        if x >= nbt(0.0):
            return nbt(1.0) / (nbt(1.0) + math.exp(-x))
        e = math.exp(x)
        return e / (nbt(1.0) + e)

    @cuda.jit
    def lstm_cell(zt, gt, cprev, cnext, tct, hnext, n, H):
        """Per (row r, unit j): the gates i, f, g, o from z_t, c_t = f c_{t−1} + i g, tanh c_t and
        h_t = o tanh c_t."""
        G = 4 * H
        for q in range(cuda.grid(1), n * H, cuda.gridsize(1)):
            r = q // H
            j = q - r * H
            b = r * G + j
            ig = sigmoid(zt[b])
            fg = sigmoid(zt[b + H])
            gg = math.tanh(zt[b + 2 * H])
            og = sigmoid(zt[b + 3 * H])
            gt[b] = ig
            gt[b + H] = fg
            gt[b + 2 * H] = gg
            gt[b + 3 * H] = og
            c = fg * cprev[q] + ig * gg
            cnext[q] = c
            tc = math.tanh(c)
            tct[q] = tc
            hnext[q] = og * tc

    @cuda.jit(device=True)
    def cell_back(dh, dcv, ig, fg, gg, og, cp, t):
        """(∂z_i, ∂z_f, ∂z_g, ∂z_o, dc·f) of one unit from dh, the cell gradient from step t+1 dcv,
        the gate values, c_{t−1} and tanh c_t."""
        d = dcv + dh * og * (nbt(1.0) - t * t)
        return (d * gg * (ig * (nbt(1.0) - ig)), d * cp * (fg * (nbt(1.0) - fg)), d * ig * (nbt(1.0) - gg * gg),
                dh * t * (og * (nbt(1.0) - og)), d * fg)

    @cuda.jit
    def lstm_step_back(dh, dc, gt, cprev, tct, dz, n, H):
        """One step back for (row r, unit j): the gate gradients from dh (reaching h_t) and dc
        (reaching c_t from step t+1) into dz; dc ← the gradient reaching c_{t−1}."""
        G = 4 * H
        for q in range(cuda.grid(1), n * H, cuda.gridsize(1)):
            r = q // H
            b = r * G + q - r * H
            vi, vf, vg, vo, d = cell_back(dh[q], dc[q], gt[b], gt[b + H], gt[b + 2 * H], gt[b + 3 * H], cprev[q],
                                          tct[q])
            dz[b] = vi
            dz[b + H] = vf
            dz[b + 2 * H] = vg
            dz[b + 3 * H] = vo
            dc[q] = d

    @cuda.jit
    def lstm_trunc_step(dh, dHs, dc, gt, cprev, tct, g, dZs, n, H):
        """One step of a truncated sweep: dH_s += dh, this sweep's gate gradients into g and added
        into ∂L/∂z_s, dc ← the gradient reaching c_{s−1}."""
        G = 4 * H
        for q in range(cuda.grid(1), n * H, cuda.gridsize(1)):
            r = q // H
            b = r * G + q - r * H
            v = dh[q]
            dHs[q] += v
            vi, vf, vg, vo, d = cell_back(v, dc[q], gt[b], gt[b + H], gt[b + 2 * H], gt[b + 3 * H], cprev[q], tct[q])
            g[b] = vi
            g[b + H] = vf
            g[b + 2 * H] = vg
            g[b + 3 * H] = vo
            dZs[b] += vi
            dZs[b + H] += vf
            dZs[b + 2 * H] += vg
            dZs[b + 3 * H] += vo
            dc[q] = d

    return _Kernels(locals())


class _Kernels:
    def __init__(self, names):
        for name, k in names.items():
            if name not in ("nbt", "sigmoid", "cell_back"):
                setattr(self, name, k)


kernels = per_dtype(_build)

SIGNATURES = {
    "to_time_major": "void(F[::1], F[::1], int64, int64, int64)",
    "from_time_major": "void(F[::1], F[::1], int64, int64, int64, int64)",
    "add_bias": "void(F[::1], F[::1], int64)",
    "load_state": "void(F[::1], F[::1], int64, int64, int64, int64)",
    "keep_state": "void(F[::1], F[::1], int64, int64, int64)",
    "output": "void(F[::1], F[::1], int64, int64, int64, int64)",
    "seed_dh": "void(F[::1], F[::1], int64, int64, int64, int64)",
    "fill": "void(F[::1], F)",
    "col_sums": "void(F[::1], F[::1], int64, int64)",
    "rnn_tanh": "void(F[::1], F[::1], F[::1])",
    "rnn_act": "void(F[::1], F[::1], F[::1], int64, float64, float64, float64, float64)",
    "mul": "void(F[::1], F[::1], F[::1])",
    "rnn_trunc_step": "void(F[::1], F[::1], F[::1], F[::1], F[::1])",
    "lstm_cell": "void(F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], int64, int64)",
    "lstm_step_back": "void(F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], int64, int64)",
    "lstm_trunc_step": "void(F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], F[::1], int64, int64)",
}
# the RNN's general activation: the registry's float64 scalar math, as the CPU's act_f/act_d
FLOAT64_ON_PURPOSE = frozenset({"rnn_act"})


def ptx_kernels(dtype):
    """[(name, python function, compile_ptx signature)] of every kernel of this module for ``dtype``."""
    k = kernels(dtype)
    return [(name, getattr(k, name).py_func, signature(sig, dtype)) for name, sig in SIGNATURES.items()]


class _Op:
    """Op i's sizes and device views for an n-row batch."""

    def __init__(self, prog, i, n):
        o = prog.ops[i]
        self.prog, self.i, self.n = prog, i, n
        self.T, self.F, self.H = int(o[F_T]), int(o[F_NIN]), int(o[F_NOUT])
        self.G = (4 if o[F_KIND] == KIND_LSTM else 1) * self.H
        self.aux = int(o[F_AUX])
        self.mode = int(prog.hp[i, HP_CARRY])
        self.seq = 1 if o[F_SEQ] != 0 else 0
        w = int(o[F_W])
        F, G, H = self.F, self.G, self.H
        self.w = w
        self.Wih = prog.params[w:w + F * G].reshape(F, G)
        self.Whh = prog.params[w + F * G:w + F * G + H * G].reshape(H, G)
        self.k = kernels(prog.dtype)

    def region(self, buf, t, size):
        return self.prog.flat(buf, t, self.n)[:size]

    def mat(self, flat, row0, rows, cols):
        return flat[row0 * cols:(row0 + rows) * cols].reshape(rows, cols)

    def carry(self, width):
        off = int(self.prog.ops[self.i, F_CARRY]) * self.n
        return self.prog.ws[off:off + self.n * width]

    def go(self, kernel, size):
        return launch(kernel, size, self.prog)


def _forward_common(op):
    """Xt (time-major input), Z = Xt W_ih + b, views of Hs; returns (Xt, Z, Hs) flat."""
    prog, n, T, F, G, H = op.prog, op.n, op.T, op.F, op.G, op.H
    o = prog.ops[op.i]
    Hs = op.region(prog.ws, op.aux, (T + 1) * n * H)
    Xt = op.region(prog.ws, op.aux + 1, T * n * F)
    Z = prog.flat(prog.ws, int(o[F_Z]), n)[:T * n * G]
    op.go(op.k.to_time_major, T * n * F)(prog.flat(prog.ws, int(o[F_X]), n), Xt, n, T, F)
    gemm(Xt.reshape(T * n, F), False, op.Wih, False, Z.reshape(T * n, G), stream=prog.stream)
    b = int(o[F_B])
    if b >= 0:
        op.go(op.k.add_bias, Z.size)(Z, prog.params[b:b + G], G)
    return Xt, Z, Hs


def _output(op, Hs):
    prog = op.prog
    A = prog.flat(prog.ws, int(prog.ops[op.i, F_A]), op.n)
    op.go(op.k.output, A.size)(Hs, A, op.n, op.T, op.H, op.seq)


def rnn_forward(prog, i, n, training, store):
    """z_t = x_t W_ih + h_{t−1} W_hh + b and h_t = a·θ(z_t), keeping a·θ'(z_t)."""
    op = _Op(prog, i, n)
    T, H = op.T, op.H
    code = int(prog.ops[i, F_ACT])
    if code >= CUSTOM_BASE:
        raise DeviceError("an RNN with a user-registered activation has no device kernels")
    Xt, Z, Hs = _forward_common(op)
    D = op.region(prog.ws, op.aux + 2, T * n * H)
    m = n * H
    op.go(op.k.load_state, m)(Hs[:m], op.carry(H), H, 0, H, 1 if op.mode == 2 else 0)
    p0, p1, p2, a = (float(v) for v in prog.hp[i, :4])
    tanh = code == TANH and a == 1.0
    for t in range(T):
        zt = Z[t * m:(t + 1) * m]
        gemm(Hs[t * m:(t + 1) * m].reshape(n, H), False, op.Whh, False, zt.reshape(n, H), beta=1.0,
             stream=prog.stream)
        hn = Hs[(t + 1) * m:(t + 2) * m]
        if tanh:
            op.go(op.k.rnn_tanh, m)(zt, hn, D[t * m:(t + 1) * m])
        else:
            op.go(op.k.rnn_act, m)(zt, hn, D[t * m:(t + 1) * m], code, p0, p1, p2, a)
    if op.mode >= 1:
        op.go(op.k.keep_state, m)(Hs[T * m:(T + 1) * m], op.carry(H), H, 0, H)
    _output(op, Hs)
    return False


def _shared_products(op, Xt, Hs, dZ, dXt):
    """∂L/∂W_ih, ∂L/∂W_hh, ∂L/∂b and the input gradient in the op's DX mode."""
    prog, n, T, F, G, H, w = op.prog, op.n, op.T, op.F, op.G, op.H, op.w
    rows = T * n
    dZ2 = dZ.reshape(rows, G)
    gemm(Xt.reshape(rows, F), True, dZ2, False, prog.grads[w:w + F * G].reshape(F, G), stream=prog.stream)
    gemm(Hs[:rows * H].reshape(rows, H), True, dZ2, False,
         prog.grads[w + F * G:w + F * G + H * G].reshape(H, G), stream=prog.stream)
    b = int(prog.ops[op.i, F_B])
    if b >= 0:
        op.go(op.k.col_sums, G)(dZ, prog.grads[b:b + G], rows, G)
    mode = int(prog.ops[op.i, F_DX])
    if mode != DX_SKIP:
        gemm(dZ2, False, op.Wih, True, dXt.reshape(rows, F), stream=prog.stream)
        op.go(op.k.from_time_major, rows * F)(dXt, prog.flat(prog.dws, int(prog.ops[op.i, F_X]), n), n, T, F, mode)


def _backward_views(op, scratch_aux):
    prog, n, T, F, G, H = op.prog, op.n, op.T, op.F, op.G, op.H
    o = prog.ops[op.i]
    return (op.region(prog.ws, op.aux, (T + 1) * n * H), op.region(prog.dws, op.aux, (T + 1) * n * H),
            op.region(prog.ws, op.aux + 1, T * n * F), op.region(prog.dws, op.aux + 1, T * n * F),
            prog.flat(prog.dws, int(o[F_Z]), n)[:T * n * G], prog.flat(prog.ws, op.aux + scratch_aux, n),
            prog.flat(prog.dws, int(o[F_A]), n))


def rnn_backward(prog, i, n, stored):
    """Backpropagation through time (full or truncated), then the products over all steps."""
    op = _Op(prog, i, n)
    T, H = op.T, op.H
    Hs, dH, Xt, dXt, dZ, S, dA = _backward_views(op, 3)
    D = op.region(prog.ws, op.aux + 2, T * n * H)
    m = n * H
    k = int(prog.ops[i, F_K])
    WhhT = op.Whh
    if k == 0 or not op.seq:
        op.go(op.k.seed_dh, dH.size)(dA, dH, n, T, H, op.seq)
        lo = 1 if k == 0 else max(1, T - k + 1)
        if lo > 1:
            op.go(op.k.fill, (lo - 1) * m)(dZ[:(lo - 1) * m], scalar(prog, 0.0))
        for t in range(T, lo - 1, -1):
            g = dZ[(t - 1) * m:t * m]
            op.go(op.k.mul, m)(dH[t * m:(t + 1) * m], D[(t - 1) * m:t * m], g)
            if t > lo:
                gemm(g.reshape(n, H), False, WhhT, True, dH[(t - 1) * m:t * m].reshape(n, H), beta=1.0,
                     stream=prog.stream)
    else:
        delta = S[m:2 * m]
        g2 = S[2 * m:3 * m]
        op.go(op.k.fill, dH.size)(dH, scalar(prog, 0.0))
        op.go(op.k.fill, dZ.size)(dZ, scalar(prog, 0.0))
        for t in range(T, 0, -1):
            _column_block(op, dA, delta, t)
            lo = max(1, t - k + 1)
            for s in range(t, lo - 1, -1):
                op.go(op.k.rnn_trunc_step, m)(delta, dH[s * m:(s + 1) * m], D[(s - 1) * m:s * m], g2,
                                              dZ[(s - 1) * m:s * m])
                if s > lo:
                    gemm(g2.reshape(n, H), False, WhhT, True, delta.reshape(n, H), stream=prog.stream)
    op.go(op.k.fill, m)(dH[:m], scalar(prog, 0.0))
    _shared_products(op, Xt, Hs, dZ, dXt)


def _column_block(op, dA, dst, t):
    """dst (n, H) = the output's gradient at step t: dA[:, (t−1)·H:t·H]."""
    n, T, H = op.n, op.T, op.H
    op.go(op.k.load_state, n * H)(dst, dA, T * H, (t - 1) * H, H, 1)


def lstm_forward(prog, i, n, training, store):
    """The LSTM recurrence for t = 1..T: per step z_t += h_{t−1} W_hh (one product), then the gates,
    c_t and h_t (one kernel); the carried state in and out as ``hp[i, HP_CARRY]`` says."""
    op = _Op(prog, i, n)
    T, H, G = op.T, op.H, op.G
    Xt, Z, Hs = _forward_common(op)
    Gv = op.region(prog.ws, op.aux + 2, T * n * G)
    Cs = op.region(prog.ws, op.aux + 3, (T + 1) * n * H)
    TC = op.region(prog.ws, op.aux + 4, T * n * H)
    m = n * H
    kept = 1 if op.mode == 2 else 0
    carry = op.carry(2 * H)
    op.go(op.k.load_state, m)(Hs[:m], carry, 2 * H, 0, H, kept)
    op.go(op.k.load_state, m)(Cs[:m], carry, 2 * H, H, H, kept)
    for t in range(T):
        zt = Z[t * n * G:(t + 1) * n * G]
        if t > 0 or op.mode == 2:
            gemm(Hs[t * m:(t + 1) * m].reshape(n, H), False, op.Whh, False, zt.reshape(n, G), beta=1.0,
                 stream=prog.stream)
        op.go(op.k.lstm_cell, m)(zt, Gv[t * n * G:(t + 1) * n * G], Cs[t * m:(t + 1) * m], Cs[(t + 1) * m:(t + 2) * m],
                                 TC[t * m:(t + 1) * m], Hs[(t + 1) * m:(t + 2) * m], n, H)
    if op.mode >= 1:
        op.go(op.k.keep_state, m)(Hs[T * m:(T + 1) * m], carry, 2 * H, 0, H)
        op.go(op.k.keep_state, m)(Cs[T * m:(T + 1) * m], carry, 2 * H, H, H)
    _output(op, Hs)
    return False


def lstm_backward(prog, i, n, stored):
    """Backpropagation through time for the LSTM (full or truncated), then the products over all
    steps."""
    op = _Op(prog, i, n)
    T, H, G = op.T, op.H, op.G
    Hs, dH, Xt, dXt, dZ, S, dA = _backward_views(op, 5)
    Gv = op.region(prog.ws, op.aux + 2, T * n * G)
    Cs = op.region(prog.ws, op.aux + 3, (T + 1) * n * H)
    TC = op.region(prog.ws, op.aux + 4, T * n * H)
    m = n * H
    mg = n * G
    dh = S[:m]
    dc = S[m:2 * m]
    g = S[2 * m:2 * m + mg]
    k = int(prog.ops[i, F_K])
    zero = scalar(prog, 0.0)

    def cell(s):
        return Gv[(s - 1) * mg:s * mg], Cs[(s - 1) * m:s * m], TC[(s - 1) * m:s * m]

    if k == 0 or not op.seq:
        lo = 1 if k == 0 else max(1, T - k + 1)
        op.go(op.k.seed_dh, dH.size)(dA, dH, n, T, H, op.seq)
        if lo > 1:
            op.go(op.k.fill, (lo - 1) * mg)(dZ[:(lo - 1) * mg], zero)
        op.go(op.k.fill, m)(dc, zero)
        for t in range(T, lo - 1, -1):
            zt = dZ[(t - 1) * mg:t * mg]
            op.go(op.k.lstm_step_back, m)(dH[t * m:(t + 1) * m], dc, *cell(t), zt, n, H)
            if t > lo:
                gemm(zt.reshape(n, G), False, op.Whh, True, dH[(t - 1) * m:t * m].reshape(n, H), beta=1.0,
                     stream=prog.stream)
    else:
        op.go(op.k.fill, dH.size)(dH, zero)
        op.go(op.k.fill, dZ.size)(dZ, zero)
        for t in range(T, 0, -1):
            _column_block(op, dA, dh, t)
            op.go(op.k.fill, m)(dc, zero)
            lo = max(1, t - k + 1)
            for s in range(t, lo - 1, -1):
                op.go(op.k.lstm_trunc_step, m)(dh, dH[s * m:(s + 1) * m], dc, *cell(s), g, dZ[(s - 1) * mg:s * mg],
                                               n, H)
                if s > lo:
                    gemm(g.reshape(n, G), False, op.Whh, True, dh.reshape(n, H), stream=prog.stream)
    op.go(op.k.fill, m)(dH[:m], zero)
    _shared_products(op, Xt, Hs, dZ, dXt)


register(KIND_RNN, rnn_forward, rnn_backward)
register(KIND_LSTM, lstm_forward, lstm_backward)
