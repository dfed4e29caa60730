"""The recurrent layers' kernels: a simple RNN and an LSTM, forward and backward through time in
one compiled call each (no Python per time step).

RNN:  z_t = x_t W_ih + h_{t−1} W_hh + b,  h_t = a·θ(z_t)
LSTM: z_t = x_t W_ih + h_{t−1} W_hh + b = [z_i z_f z_g z_o] (torch's gate order),
      i = σ(z_i), f = σ(z_f), g = tanh(z_g), o = σ(z_o),  c_t = f⊙c_{t−1} + i⊙g,  h_t = o⊙tanh(c_t)

Layout of an op's tensors (``ws`` forward values, ``dws`` gradients; every auxiliary tensor is
time-major, row (t, r) at t·n + r):

* ``F_Z`` (T·n, G), G = H or 4H: the pre-activations z_t; in ``dws`` the gate gradients ∂L/∂z_t
  (the op's memoized error E_l).
* ``F_AUX`` + 0, Hs (T+1, n, H): h_0 .. h_T (h_0 the initial state); in ``dws`` the gradient
  reaching h_t (t = 1..T, index 0 holds 0: the initial state is a constant), which
  :func:`nnlab.diagnostics._time_norms` reads.
* ``F_AUX`` + 1, Xt (T, n, F): a time-major copy of the input, so one product gives x_t W_ih for
  every t; in ``dws`` the time-major input gradient before it is scattered to the batch-major
  (N, T·F) input tensor in the op's ``DX_*`` mode.
* RNN: ``F_AUX`` + 2, D (T, n, H): a·θ'(z_t), kept by the forward pass.
  LSTM: ``F_AUX`` + 2, the gate values i, f, g, o (T, n, 4H); + 3, Cs (T+1, n, H): c_0 .. c_T;
  + 4, tanh(c_t) (T, n, H).
* the last auxiliary tensor: backward scratch (its ``ws`` region).

The LSTM's backward pass keeps W_hhᵀ, stored contiguously, in the ``dws`` region of its gate
values (no gradient uses it) when T·n >= H.

The carry block (``F_CARRY``, in ``ws`` before the first tensor) keeps the final state between
windows of truncated BPTT in training (``hp[i, HP_CARRY]``: 0 start from zeros; 1 start from zeros
and keep the final state; 2 start from the kept state and keep the final one).

Backward (``F_K`` = 0: full BPTT, one sweep T..1): with dh_t the gradient reaching h_t,
RNN  ∂L/∂z_t = dh_t ⊙ a·θ'(z_t);  LSTM  dc_t = dc_{t+1}⊙f_{t+1} + dh_t⊙o⊙(1 − tanh²c_t),
∂L/∂z_i = dc_t⊙g⊙i(1−i), ∂L/∂z_f = dc_t⊙c_{t−1}⊙f(1−f), ∂L/∂z_g = dc_t⊙i⊙(1−g²),
∂L/∂z_o = dh_t⊙tanh(c_t)⊙o(1−o); then dh_{t−1} += ∂L/∂z_t W_hhᵀ. At the end one product each:
∂L/∂W_ih = Xtᵀ ∂L/∂Z, ∂L/∂W_hh = [h_0..h_{T−1}]ᵀ ∂L/∂Z, ∂L/∂b = Σ_rows ∂L/∂Z, dX = ∂L/∂Z W_ihᵀ
(the LSTM sums ∂L/∂b, the ∂L/∂W_ih of a narrow input and dX step by step during its sweep
instead, and runs a large layer in blocks of batch rows on several threads: see the LSTM section).

Truncation ``F_K`` = k (1 <= k < T; Williams & Peng's BPTT(h)): the loss term at step t reaches
the parameters and the inputs only through steps t−k+1 .. t. A sequence output runs, per t, a
sweep of at most k steps from the gradient of the output at t, accumulated into ∂L/∂z; the last
state alone (many-to-one) is the full sweep stopped after k steps.
"""

import numpy as np
from numba import carray, njit, prange, types

from .._config import JIT
from ..activations._math import TANH, act_d, act_f
from . import fastmath as FM
from .blas import address_table, blas_threads, call_i64, callback, gemm, gemm_acc, set_blas_threads
from .common import act_slots, tview
from .dense import fast_code, fast_forward
from .layout import (
    DX_SKIP,
    DX_WRITE,
    F_A,
    F_ACT,
    F_AUX,
    F_B,
    F_CARRY,
    F_DX,
    F_K,
    F_NIN,
    F_NOUT,
    F_SEQ,
    F_T,
    F_W,
    F_X,
    F_Z,
    HP_CARRY,
)


# ---------------------------------------------------------------- views and copies
@njit(**JIT)
def _region(buf, tens, t, n):
    """Tensor t of an n-row batch, flat."""
    off = tens[t, 0] * n
    return buf[off:off + n * tens[t, 1]]


@njit(**JIT)
def _mat(flat, start_row, rows, cols):
    """Rows [start_row, start_row + rows) of a flat C-order (·, cols) matrix, as a 2-D view."""
    return flat[start_row * cols:(start_row + rows) * cols].reshape((rows, cols))


@njit(**JIT)
def _carry(ws, ops, i, n, width):
    """The op's carry block for an n-row batch, (n, width)."""
    off = ops[i, F_CARRY] * n
    return ws[off:off + n * width].reshape((n, width))


@njit(**JIT)
def to_time_major(X, Xt, n, T, F):
    """Xt[t·n + r, j] = X[r, t·F + j]: the batch-major (n, T·F) input as (T·n, F)."""
    for r in range(n):
        for t in range(T):
            src = X[r, t * F:(t + 1) * F]
            dst = Xt[t * n + r]
            for j in range(F):
                dst[j] = src[j]


@njit(**JIT)
def from_time_major(dXt, dX, n, T, F, mode):
    """dX[r, t·F + j] = (or +=) dXt[t·n + r, j] in the op's DX mode."""
    for r in range(n):
        for t in range(T):
            src = dXt[t * n + r]
            dst = dX[r, t * F:(t + 1) * F]
            if mode == DX_WRITE:
                for j in range(F):
                    dst[j] = src[j]
            else:
                for j in range(F):
                    dst[j] += src[j]


@njit(**JIT)
def _add_bias(Z, params, b, G):
    if b < 0:
        return
    bias = params[b:b + G]
    for r in range(Z.shape[0]):
        z = Z[r]
        for j in range(G):
            z[j] = z[j] + bias[j]


@njit(**JIT)
def _add_into(dst, src):
    """dst += src, flat arrays of one size."""
    d = dst.reshape(-1)
    s = src.reshape(-1)
    for k in range(d.size):
        d[k] = d[k] + s[k]


@njit(**JIT)
def _sum_rows(E, acc):
    """acc = Σ_rows E (acc float64, or E's own dtype for a float64 network)."""
    acc[:] = 0.0
    for r in range(E.shape[0]):
        e = E[r]
        for j in range(E.shape[1]):
            acc[j] += e[j]


@njit(**JIT)
def _col_sums(E, db):
    """db = Σ_rows E over the T·n rows, accumulated in float64: in place for a float64 network; a
    float32 network sums into a small float64 array (the one allocation of the recurrent
    kernels) rounded once."""
    if db.itemsize == 8:
        _sum_rows(E, db)
    else:
        acc = np.empty(E.shape[1])
        _sum_rows(E, acc)
        for j in range(acc.size):
            db[j] = acc[j]


@njit(**JIT)
def _output(ops, tens, ws, i, n, Hs, T, H):
    """The op's output tensor: every h_t batch-major (n, T·H), or h_T alone (n, H)."""
    A = tview(ws, tens, ops[i, F_A], n)
    if ops[i, F_SEQ] != 0:
        for r in range(n):
            for t in range(T):
                src = Hs[(t + 1) * n + r]
                dst = A[r, t * H:(t + 1) * H]
                for j in range(H):
                    dst[j] = src[j]
    else:
        last = _mat(Hs.reshape(-1), T * n, n, H)
        for r in range(n):
            for j in range(H):
                A[r, j] = last[r, j]


@njit(**JIT)
def _seed_dh(ops, tens, dws, i, n, dH, T, H):
    """dH = the gradient of the op's output at each h_t (zero where the output does not see h_t)."""
    dA = tview(dws, tens, ops[i, F_A], n)
    dHf = dH.reshape(-1)
    for k in range(dHf.size):
        dHf[k] = 0.0
    if ops[i, F_SEQ] != 0:
        for r in range(n):
            for t in range(T):
                src = dA[r, t * H:(t + 1) * H]
                dst = dH[(t + 1) * n + r]
                for j in range(H):
                    dst[j] = src[j]
    else:
        for r in range(n):
            dst = dH[T * n + r]
            for j in range(H):
                dst[j] = dA[r, j]


@njit(**JIT)
def _shared_products(ops, tens, params, grads, ws, dws, i, n, T, F, H, G, Xt, Hs, dZ, dXt):
    """∂L/∂W_ih = Xtᵀ ∂L/∂Z, ∂L/∂W_hh = [h_0..h_{T−1}]ᵀ ∂L/∂Z, ∂L/∂b = Σ_rows ∂L/∂Z and the input
    gradient ∂L/∂Z W_ihᵀ, scattered to the batch-major input in the op's DX mode."""
    w = ops[i, F_W]
    Wih = params[w:w + F * G].reshape((F, G))
    dWih = grads[w:w + F * G].reshape((F, G))
    dWhh = grads[w + F * G:w + F * G + H * G].reshape((H, G))
    gemm(Xt, True, dZ, False, dWih)
    gemm(_mat(Hs.reshape(-1), np.int64(0), T * n, H), True, dZ, False, dWhh)
    b = ops[i, F_B]
    if b >= 0:
        _col_sums(dZ, grads[b:b + G])
    mode = ops[i, F_DX]
    if mode != DX_SKIP:
        gemm(dZ, False, Wih, True, dXt)
        from_time_major(dXt, tview(dws, tens, ops[i, F_X], n), n, T, F, mode)


# ---------------------------------------------------------------- RNN
@njit(**JIT)
def _rnn_act(code, fast, z, h, d, p0, p1, p2, a):
    """h = a·θ(z) and d = a·θ'(z) elementwise over flat arrays (the registry's values; tanh with
    a = 1 through the vectorisable fastmath forms, float32 arithmetic for a float32 network)."""
    m = z.size
    if code == TANH and a == 1.0:
        if z.itemsize == 4:
            for k in range(m):
                h[k], d[k] = FM.tanh32_d(z[k])
        else:
            for k in range(m):
                h[k], d[k] = FM.tanh_d(z[k])
    elif fast >= 0:  # store as the constant True: the copy loss_and_grad's dense ops compile anyway
        fast_forward(fast, z, h, d, p0, a, True)
    else:
        for k in range(m):
            h[k] = a * act_f(code, z[k], p0, p1, p2, 0.0)
            d[k] = a * act_d(code, z[k], p0, p1, p2, 0.0)


@njit(**JIT)
def rnn_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """z_t = x_t W_ih + h_{t−1} W_hh + b and h_t = a·θ(z_t) for t = 1..T (one product for every
    x_t W_ih, one (n, H)·(H, H) product per step), keeping a·θ'(z_t) for the backward pass."""
    T = ops[i, F_T]
    F = ops[i, F_NIN]
    H = ops[i, F_NOUT]
    aux = ops[i, F_AUX]
    Hs = _region(ws, tens, aux, n)[:(T + 1) * n * H].reshape(((T + 1) * n, H))
    Xt = _region(ws, tens, aux + 1, n)[:T * n * F].reshape((T * n, F))
    D = _region(ws, tens, aux + 2, n)[:T * n * H]
    Z = _region(ws, tens, ops[i, F_Z], n).reshape((T * n, H))
    to_time_major(tview(ws, tens, ops[i, F_X], n), Xt, n, T, F)
    w = ops[i, F_W]
    Wih = params[w:w + F * H].reshape((F, H))
    Whh = params[w + F * H:w + F * H + H * H].reshape((H, H))
    gemm(Xt, False, Wih, False, Z)
    _add_bias(Z, params, ops[i, F_B], H)
    mode = int(hp[i, HP_CARRY])
    Hf = Hs.reshape(-1)
    h0 = Hf[:n * H]
    if mode == 2:
        h0[:] = _carry(ws, ops, i, n, H).reshape(-1)
    else:
        h0[:] = 0.0
    code = ops[i, F_ACT]
    fast = fast_code(ops, i)
    p0, p1, p2, a = act_slots(ops, hp, params, i)
    Zf = Z.reshape(-1)
    for t in range(T):
        hprev = _mat(Hf, t * n, n, H)
        hnext = _mat(Hf, (t + 1) * n, n, H)
        gemm(hprev, False, Whh, False, hnext)
        zt = Zf[t * n * H:(t + 1) * n * H]
        _add_into(zt, hnext)
        _rnn_act(code, fast, zt, hnext.reshape(-1), D[t * n * H:(t + 1) * n * H], p0, p1, p2, a)
    if mode >= 1:
        _carry(ws, ops, i, n, H)[:, :] = _mat(Hf, T * n, n, H)
    _output(ops, tens, ws, i, n, Hs, T, H)


@njit(**JIT)
def _rnn_step_back(delta, Dt, g):
    """g = δ ⊙ a·θ'(z_t), flat."""
    for k in range(g.size):
        g[k] = delta[k] * Dt[k]


@njit(**JIT)
def rnn_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """Backpropagation through time (full or truncated, see the module docstring), then one product
    each for ∂L/∂W_ih, ∂L/∂W_hh and the input gradient."""
    T = ops[i, F_T]
    F = ops[i, F_NIN]
    H = ops[i, F_NOUT]
    aux = ops[i, F_AUX]
    Hs = _region(ws, tens, aux, n)[:(T + 1) * n * H].reshape(((T + 1) * n, H))
    dH = _region(dws, tens, aux, n)[:(T + 1) * n * H].reshape(((T + 1) * n, H))
    Xt = _region(ws, tens, aux + 1, n)[:T * n * F].reshape((T * n, F))
    dXt = _region(dws, tens, aux + 1, n)[:T * n * F].reshape((T * n, F))
    D = _region(ws, tens, aux + 2, n)[:T * n * H]
    dZ = _region(dws, tens, ops[i, F_Z], n).reshape((T * n, H))
    S = _region(ws, tens, aux + 3, n)
    w = ops[i, F_W]
    Whh = params[w + F * H:w + F * H + H * H].reshape((H, H))
    m = n * H
    tmp = _mat(S, np.int64(0), n, H)
    dHf = dH.reshape(-1)
    dZf = dZ.reshape(-1)
    k = ops[i, F_K]
    seq = ops[i, F_SEQ] != 0
    if k == 0 or not seq:
        # one sweep T..1: dH[t] is complete when step t is reached (k > 0: stop after k steps)
        _seed_dh(ops, tens, dws, i, n, dH, T, H)
        lo = 1 if k == 0 else max(1, T - k + 1)
        if lo > 1:
            dZf[:(lo - 1) * m] = 0.0
        for t in range(T, lo - 1, -1):
            g = dZf[(t - 1) * m:t * m]
            _rnn_step_back(dHf[t * m:(t + 1) * m], D[(t - 1) * m:t * m], g)
            if t > lo:
                gemm(g.reshape((n, H)), False, Whh, True, tmp)
                _add_into(dHf[(t - 1) * m:t * m], tmp)
    else:
        # BPTT(k) with a gradient at every step: per t, a sweep over steps t..t−k+1
        dA = tview(dws, tens, ops[i, F_A], n)
        delta = _mat(S, n, n, H)
        g2 = _mat(S, 2 * n, n, H)
        dHf[:] = 0.0
        dZf[:] = 0.0
        for t in range(T, 0, -1):
            for r in range(n):
                src = dA[r, (t - 1) * H:t * H]
                dst = delta[r]
                for j in range(H):
                    dst[j] = src[j]
            lo = max(1, t - k + 1)
            for s in range(t, lo - 1, -1):
                _add_into(dHf[s * m:(s + 1) * m], delta)
                _rnn_step_back(delta.reshape(-1), D[(s - 1) * m:s * m], g2.reshape(-1))
                _add_into(dZf[(s - 1) * m:s * m], g2)
                if s > lo:
                    gemm(g2, False, Whh, True, delta)
    dHf[:m] = 0.0
    _shared_products(ops, tens, params, grads, ws, dws, i, n, T, F, H, H, Xt, Hs, dZ, dXt)


# ---------------------------------------------------------------- LSTM
# Rows of a batch never meet in the recurrence: row r's states depend on row r's inputs only. So a
# large LSTM runs its sweeps over time in P blocks of batch rows, one per thread (``prange``), each
# block with its own single-threaded products; the BLAS is set to one thread meanwhile (its thread
# count is process-wide) and set back after, so that no BLAS worker thread competes with them for
# a core. The products over all steps (the input projection; after the backward sweeps ∂L/∂W_hh)
# are split the same way, by blocks of rows or of columns. Small layers (and one thread) run the
# same functions over all rows on the calling thread.
#
# The parallel functions are not called directly by the kernels: code that contains ``prange`` must
# find Numba's threading layer started when it is loaded from Numba's cache, and starting it at
# ``import nnlab`` would load an OpenMP runtime into every process (one that loads PyTorch after it
# then shares that runtime, and its steps ran 1.5-4x slower in the measurement). They are compiled
# (or loaded) as C callbacks the first time a network with an LSTM is built
# (:func:`enable_lstm_threads`), and the kernels call them through the addresses in a table, as the
# BLAS (:mod:`nnlab.kernels.blas`); until then, and where they are not available, every LSTM runs
# on the calling thread.
# The gate math may contract a·b + c into one fused multiply-add (LLVM's "contract" alone: no other
# reassociation, NaN and Inf as without it): 22% faster (13.1 against 16.9 µs per step of 32 rows of
# 128 units, float32), within an ulp of the separately rounded forms.
CELL_JIT = dict(JIT, fastmath=set(JIT["fastmath"]) | {"contract"})
PAR_MIN_MACS = 1 << 22  # multiply-adds of the recurrent products T·n·H·4H below which one thread runs it all
PAR_MIN_ROWS = 8        # batch rows per block at least

# 0: the threads of Numba's pool an LSTM may use (0: not enabled); 1, 2: the forward and backward
# entries for float32, 3, 4: for float64 (0: not compiled)
_LSTM_TABLE, _lstm_entry = address_table("nnlab_lstm_table", 5)


@njit(**JIT)
def _lstm_blocks(n, T, H, G, itemsize):
    """How many blocks of batch rows (threads) an LSTM of this size runs in: 1 for a small layer or
    before :func:`enable_lstm_threads`, else the smaller of Numba's pool size and the BLAS's thread
    count (``nl.backend``'s; 1 where it is unknown), at most n / PAR_MIN_ROWS."""
    threads = _lstm_entry(0)
    if threads <= 1 or T * n * H * G < PAR_MIN_MACS or _lstm_entry(1 if itemsize == 4 else 3) == 0:
        return 1
    p = min(threads, blas_threads(), n // PAR_MIN_ROWS)
    return max(1, p)


@njit(**CELL_JIT)
def _sigmoid_into(z, out):
    """out = σ(z) elementwise (flat): the registry's values through the vectorisable fastmath form
    (with fused multiply-adds: CELL_JIT), float32 arithmetic for float32 arrays."""
    if z.itemsize == 4:
        for k in range(z.size):
            out[k] = FM.sigmoid32_d(z[k])[0]
    else:
        for k in range(z.size):
            out[k] = FM.sigmoid_d(z[k])[0]


@njit(**CELL_JIT)
def _tanh_into(z, out):
    """out = tanh(z) elementwise (flat), as :func:`_sigmoid_into`."""
    if z.itemsize == 4:
        for k in range(z.size):
            out[k] = FM.tanh32_d(z[k])[0]
    else:
        for k in range(z.size):
            out[k] = FM.tanh_d(z[k])[0]


@njit(**CELL_JIT)
def _cell_state(gv, cp, cn, H):
    """c_t = f ⊙ c_{t−1} + i ⊙ g for one row (gate values gv = [i f g o])."""
    for j in range(H):
        cn[j] = gv[H + j] * cp[j] + gv[j] * gv[2 * H + j]


@njit(**CELL_JIT)
def _hidden(gv, tc, hn, H):
    """h_t = o ⊙ tanh(c_t) for one row."""
    for j in range(H):
        hn[j] = gv[3 * H + j] * tc[j]


@njit(**CELL_JIT)
def _lstm_cell(Zt, Gt, cprev, cnext, tct, hnext, n, H):
    """Gate values, c_t and h_t of one step from its pre-activations Zt (n, 4H). Short loops over
    two or three arrays each: LLVM vectorises them (one loop over all seven arrays it does not,
    for the run-time alias checks it would need)."""
    for r in range(n):
        z = Zt[r]
        gv = Gt[r]
        _sigmoid_into(z[:2 * H], gv[:2 * H])
        _tanh_into(z[2 * H:3 * H], gv[2 * H:3 * H])
        _sigmoid_into(z[3 * H:], gv[3 * H:])
        _cell_state(gv, cprev[r], cnext[r], H)
    _tanh_into(cnext.reshape(-1), tct.reshape(-1))
    for r in range(n):
        _hidden(Gt[r], tct[r], hnext[r], H)


@njit(**JIT)
def _lstm_project(ops, tens, params, ws, i, n, q0, q1):
    """Z = x_t W_ih + b for the time-major rows q0..q1 of all steps (one product)."""
    T = ops[i, F_T]
    F = ops[i, F_NIN]
    G = 4 * ops[i, F_NOUT]
    Xt = _region(ws, tens, ops[i, F_AUX] + 1, n)[:T * n * F]
    Zf = _region(ws, tens, ops[i, F_Z], n)
    w = ops[i, F_W]
    Z = _mat(Zf, q0, q1 - q0, G)
    gemm(_mat(Xt, q0, q1 - q0, F), False, params[w:w + F * G].reshape((F, G)), False, Z)
    _add_bias(Z, params, ops[i, F_B], G)


@njit(**JIT)
def _lstm_forward_rows(ops, hp, tens, params, ws, i, n, r0, r1):
    """The recurrence for batch rows r0..r1 over t = 1..T (Z already holds x_t W_ih + b): per step
    z_t += h_{t−1} W_hh (the BLAS's beta = 1; skipped at t = 1 from the zero state), then the
    gates, c_t and h_t; the carried state in and out as ``hp[i, HP_CARRY]`` says."""
    T = ops[i, F_T]
    F = ops[i, F_NIN]
    H = ops[i, F_NOUT]
    G = 4 * H
    aux = ops[i, F_AUX]
    Hf = _region(ws, tens, aux, n)[:(T + 1) * n * H]
    Gv = _region(ws, tens, aux + 2, n)[:T * n * G]
    Cs = _region(ws, tens, aux + 3, n)[:(T + 1) * n * H]
    TC = _region(ws, tens, aux + 4, n)[:T * n * H]
    Zf = _region(ws, tens, ops[i, F_Z], n)
    w = ops[i, F_W]
    Whh = params[w + F * G:w + F * G + H * G].reshape((H, G))
    m = r1 - r0
    mode = int(hp[i, HP_CARRY])
    h0 = _mat(Hf, r0, m, H)
    c0 = _mat(Cs, r0, m, H)
    if mode == 2:
        kept = _carry(ws, ops, i, n, 2 * H)
        h0[:, :] = kept[r0:r1, :H]
        c0[:, :] = kept[r0:r1, H:]
    else:
        h0[:, :] = 0.0
        c0[:, :] = 0.0
    for t in range(T):
        zt = _mat(Zf, t * n + r0, m, G)
        if t > 0 or mode == 2:
            gemm_acc(_mat(Hf, t * n + r0, m, H), False, Whh, False, zt)
        _lstm_cell(zt, _mat(Gv, t * n + r0, m, G), _mat(Cs, t * n + r0, m, H), _mat(Cs, (t + 1) * n + r0, m, H),
                   _mat(TC, t * n + r0, m, H), _mat(Hf, (t + 1) * n + r0, m, H), m, H)
    if mode >= 1:
        kept = _carry(ws, ops, i, n, 2 * H)
        kept[r0:r1, :H] = _mat(Hf, T * n + r0, m, H)
        kept[r0:r1, H:] = _mat(Cs, T * n + r0, m, H)


@njit(parallel=True, **JIT)
def _lstm_project_par(P, ops, tens, params, ws, i, n):
    rows = ops[i, F_T] * n
    for k in prange(P):
        _lstm_project(ops, tens, params, ws, i, n, rows * k // P, rows * (k + 1) // P)


@njit(parallel=True, **JIT)
def _lstm_forward_par(P, ops, hp, tens, params, ws, i, n):
    for k in prange(P):
        _lstm_forward_rows(ops, hp, tens, params, ws, i, n, n * k // P, n * (k + 1) // P)


@njit(**JIT)
def lstm_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """The LSTM recurrence for t = 1..T: one product for every x_t W_ih, one (n, H)·(H, 4H) product
    per step accumulated into z_t, the gates, c_t and h_t in vectorised loops per step; in blocks
    of batch rows on several threads for a large layer (see above)."""
    T = ops[i, F_T]
    F = ops[i, F_NIN]
    H = ops[i, F_NOUT]
    G = 4 * H
    aux = ops[i, F_AUX]
    Hs = _region(ws, tens, aux, n)[:(T + 1) * n * H].reshape(((T + 1) * n, H))
    Xt = _region(ws, tens, aux + 1, n)[:T * n * F].reshape((T * n, F))
    to_time_major(tview(ws, tens, ops[i, F_X], n), Xt, n, T, F)
    P = _lstm_blocks(n, T, H, G, ws.itemsize)
    if P > 1:
        before = blas_threads()
        set_blas_threads(1)
        call_i64(_lstm_entry(1 if ws.itemsize == 4 else 3),
                 (P, ops.ctypes.data, ops.shape[0], ops.shape[1], hp.ctypes.data, hp.shape[0], hp.shape[1],
                  tens.ctypes.data, tens.shape[0], tens.shape[1], params.ctypes.data, params.size,
                  ws.ctypes.data, ws.size, i, n))
        set_blas_threads(before)
    else:
        _lstm_project(ops, tens, params, ws, i, n, np.int64(0), T * n)  # (not a literal 0: common.flag)
        _lstm_forward_rows(ops, hp, tens, params, ws, i, n, np.int64(0), n)  # (the blocks' compiled copy)
    _output(ops, tens, ws, i, n, Hs, T, H)


@njit(**CELL_JIT)
def _dc_total(dh, dc, gv, tc, H):
    """dc ← dc + dh ⊙ o ⊙ (1 − tanh² c_t) for one row: the total gradient reaching c_t."""
    for j in range(H):
        t = tc[j]
        dc[j] = dc[j] + dh[j] * gv[3 * H + j] * (1.0 - t * t)


@njit(**CELL_JIT)
def _gate_grads(dh, dc, gv, cp, tc, d, H):
    """∂L/∂z_t = [∂z_i ∂z_f ∂z_g ∂z_o] for one row from dc_t (total) and dh_t."""
    for j in range(H):
        ig = gv[j]
        d[j] = dc[j] * gv[2 * H + j] * (ig * (1.0 - ig))
    for j in range(H):
        fg = gv[H + j]
        d[H + j] = dc[j] * cp[j] * (fg * (1.0 - fg))
    for j in range(H):
        gg = gv[2 * H + j]
        d[2 * H + j] = dc[j] * gv[j] * (1.0 - gg * gg)
    for j in range(H):
        og = gv[3 * H + j]
        d[3 * H + j] = dh[j] * tc[j] * (og * (1.0 - og))


@njit(**CELL_JIT)
def _dc_back(dc, gv, H):
    """dc ← dc_t ⊙ f_t: the part of the gradient at c_t that reaches c_{t−1}."""
    for j in range(H):
        dc[j] = dc[j] * gv[H + j]


@njit(**CELL_JIT)
def _lstm_step_back(dh, dc, Gt, cprev, tct, dz, n, H):
    """One step back: from dh (gradient reaching h_t) and dc (gradient reaching c_t from step t+1)
    write ∂L/∂z_t into dz (n, 4H) and leave dc_t ⊙ f_t (the gradient reaching c_{t−1}) in dc.
    Short loops over few arrays, so that LLVM vectorises them."""
    for r in range(n):
        gv = Gt[r]
        dcr = dc[r]
        _dc_total(dh[r], dcr, gv, tct[r], H)
        _gate_grads(dh[r], dcr, gv, cprev[r], tct[r], dz[r], H)
        _dc_back(dcr, gv, H)


@njit(**JIT)
def _transpose_into(W, WT):
    """WT = Wᵀ (both C-contiguous), in tiles of 16 x 16."""
    R, C = W.shape
    for a0 in range(0, R, 16):
        a1 = min(a0 + 16, R)
        for j0 in range(0, C, 16):
            j1 = min(j0 + 16, C)
            for j in range(j0, j1):
                row = WT[j]
                for a in range(a0, a1):
                    row[a] = W[a, j]


SMALL_IN = 4  # inputs per step up to which ∂L/∂W_ih is summed step by step beside ∂L/∂b (else one product)


@njit(**JIT)
def _step_sums(dz, x, acc, small):
    """Add one step's share to a block's float64 sums ``acc``: Σ_rows ∂L/∂z_t into acc[:G] (∂L/∂b)
    and, for a small input (``small``), Σ_rows x_f ∂L/∂z_t into acc[G(1+f):G(2+f)] (∂L/∂W_ih row
    f). dz (m, G), x (m, F): the block's rows of one step, read while they are in the cache."""
    m, G = dz.shape
    F = x.shape[1]
    db = acc[:G]
    for r in range(m):
        d = dz[r]
        for j in range(G):
            db[j] += d[j]
        if small:
            for f in range(F):
                xv = np.float64(x[r, f])
                a = acc[G * (1 + f):G * (2 + f)]
                for j in range(G):
                    a[j] += xv * d[j]


@njit(**JIT)
def _lstm_backward_rows(ops, hp, tens, params, ws, dws, i, n, r0, r1, Wb, tb, acc):
    """Backpropagation through time for batch rows r0..r1 (full or truncated, see the module
    docstring): ∂L/∂z_t into dZ, the gradient reaching each h_t into dH, and per step the rows'
    input gradient ∂L/∂z_t W_ihᵀ (time-major, scattered by the caller) and their float64 sums
    (:func:`_step_sums`) into ``acc``. The step back to h_{t−1} is ∂L/∂z_t W_hhᵀ, written into dH
    (added, the BLAS's beta = 1, where the output's own gradient is there), with op(Wb) = W_hhᵀ:
    Wb is W_hhᵀ stored contiguously (tb False) or W_hh itself (tb True)."""
    T = ops[i, F_T]
    F = ops[i, F_NIN]
    H = ops[i, F_NOUT]
    G = 4 * H
    aux = ops[i, F_AUX]
    dHf = _region(dws, tens, aux, n)[:(T + 1) * n * H]
    Xt = _region(ws, tens, aux + 1, n)[:T * n * F]
    dXt = _region(dws, tens, aux + 1, n)[:T * n * F]
    Gv = _region(ws, tens, aux + 2, n)[:T * n * G]
    Cs = _region(ws, tens, aux + 3, n)[:(T + 1) * n * H]
    TC = _region(ws, tens, aux + 4, n)[:T * n * H]
    dZf = _region(dws, tens, ops[i, F_Z], n)
    S = _region(ws, tens, aux + 5, n)
    w = ops[i, F_W]
    Wih = params[w:w + F * G].reshape((F, G))
    m = r1 - r0
    dh = _mat(S, r0, m, H)
    dc = _mat(S, n + r0, m, H)
    g = _mat(S, 2 * n, 4 * n, H).reshape((n, G))[r0:r1]
    dA = tview(dws, tens, ops[i, F_A], n)
    k = ops[i, F_K]
    seq = ops[i, F_SEQ] != 0
    small = F <= SMALL_IN
    dx = ops[i, F_DX] != DX_SKIP
    if k == 0 or not seq:
        # one sweep T..lo: dH[t] is complete when step t is reached
        lo = 1 if k == 0 else max(1, T - k + 1)
        if seq:
            for t in range(1, T + 1):
                _mat(dHf, t * n + r0, m, H)[:, :] = dA[r0:r1, (t - 1) * H:t * H]
        else:  # the output sees h_T alone: the steps below write their dH before it is read
            _mat(dHf, T * n + r0, m, H)[:, :] = dA[r0:r1, :]
        for t in range(lo):
            _mat(dHf, t * n + r0, m, H)[:, :] = 0.0
        for t in range(1, lo):
            _mat(dZf, (t - 1) * n + r0, m, G)[:, :] = 0.0
            if dx:
                _mat(dXt, (t - 1) * n + r0, m, F)[:, :] = 0.0
        dc[:, :] = 0.0
        for t in range(T, lo - 1, -1):
            zt = _mat(dZf, (t - 1) * n + r0, m, G)
            _lstm_step_back(_mat(dHf, t * n + r0, m, H), dc, _mat(Gv, (t - 1) * n + r0, m, G),
                            _mat(Cs, (t - 1) * n + r0, m, H), _mat(TC, (t - 1) * n + r0, m, H), zt, m, H)
            if t > lo:
                if seq:
                    gemm_acc(zt, False, Wb, tb, _mat(dHf, (t - 1) * n + r0, m, H))
                else:
                    gemm(zt, False, Wb, tb, _mat(dHf, (t - 1) * n + r0, m, H))
            _step_sums(zt, _mat(Xt, (t - 1) * n + r0, m, F), acc, small)
            if dx:
                gemm(zt, False, Wih, True, _mat(dXt, (t - 1) * n + r0, m, F))
    else:
        # BPTT(k) with a gradient at every step: per t, a sweep over steps t..t−k+1
        for t in range(T + 1):
            _mat(dHf, t * n + r0, m, H)[:, :] = 0.0
        for t in range(T):
            _mat(dZf, t * n + r0, m, G)[:, :] = 0.0
        for t in range(T, 0, -1):
            dh[:, :] = dA[r0:r1, (t - 1) * H:t * H]
            dc[:, :] = 0.0
            lo = max(1, t - k + 1)
            for s in range(t, lo - 1, -1):
                _add_into(_mat(dHf, s * n + r0, m, H), dh)
                _lstm_step_back(dh, dc, _mat(Gv, (s - 1) * n + r0, m, G), _mat(Cs, (s - 1) * n + r0, m, H),
                                _mat(TC, (s - 1) * n + r0, m, H), g, m, H)
                _add_into(_mat(dZf, (s - 1) * n + r0, m, G), g)
                if s > lo:
                    gemm(g, False, Wb, tb, dh)
        for t in range(1, T + 1):  # ∂L/∂z_t is complete only now
            zt = _mat(dZf, (t - 1) * n + r0, m, G)
            _step_sums(zt, _mat(Xt, (t - 1) * n + r0, m, F), acc, small)
            if dx:
                gemm(zt, False, Wih, True, _mat(dXt, (t - 1) * n + r0, m, F))
    _mat(dHf, r0, m, H)[:, :] = 0.0  # h_0 is a constant


@njit(**JIT)
def _lstm_products(ops, hp, tens, grads, ws, dws, i, n, c0, c1):
    """After the backward sweeps, for the gate columns c0..c1: ∂L/∂W_hh = [h_0..h_{T−1}]ᵀ ∂L/∂Z
    (without the rows of a zero h_0) and, for an input wider than SMALL_IN, ∂L/∂W_ih = Xtᵀ ∂L/∂Z."""
    T = ops[i, F_T]
    F = ops[i, F_NIN]
    H = ops[i, F_NOUT]
    G = 4 * H
    aux = ops[i, F_AUX]
    rows = T * n
    Hs = _region(ws, tens, aux, n)[:(T + 1) * n * H]
    dZ = _region(dws, tens, ops[i, F_Z], n)[:rows * G].reshape((rows, G))
    w = ops[i, F_W]
    if c1 <= c0:
        return
    skip = 0 if int(hp[i, HP_CARRY]) == 2 else n  # h_0 = 0 adds nothing
    gemm(_mat(Hs, skip, rows - skip, H), True, dZ[skip:, c0:c1], False,
         grads[w + F * G:w + F * G + H * G].reshape((H, G))[:, c0:c1])
    if F > SMALL_IN:
        Xt = _region(ws, tens, aux + 1, n)[:rows * F].reshape((rows, F))
        gemm(Xt, True, dZ[:, c0:c1], False, grads[w:w + F * G].reshape((F, G))[:, c0:c1])


@njit(parallel=True, **JIT)
def _lstm_backward_par(P, ops, hp, tens, params, ws, dws, i, n, Wb, tb, acc):
    for k in prange(P):
        _lstm_backward_rows(ops, hp, tens, params, ws, dws, i, n, n * k // P, n * (k + 1) // P, Wb, tb, acc[k])


@njit(parallel=True, **JIT)
def _lstm_products_par(P, ops, hp, tens, grads, ws, dws, i, n):
    G = 4 * ops[i, F_NOUT]
    for k in prange(P):
        c0 = (G * k // P) // 16 * 16
        c1 = G if k == P - 1 else (G * (k + 1) // P) // 16 * 16
        _lstm_products(ops, hp, tens, grads, ws, dws, i, n, c0, c1)


@njit(**JIT)
def lstm_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """Backpropagation through time for the LSTM (full or truncated, see the module docstring),
    then the products over all steps: ∂L/∂W_hh (and ∂L/∂W_ih of a wide input) in one product;
    ∂L/∂b (and ∂L/∂W_ih of a narrow input) summed in float64 step by step, and the input gradient
    step by step, during the sweeps. In blocks of batch rows (the sweeps) and of gate columns (the
    products) on several threads for a large layer (see above)."""
    T = ops[i, F_T]
    F = ops[i, F_NIN]
    H = ops[i, F_NOUT]
    G = 4 * H
    aux = ops[i, F_AUX]
    w = ops[i, F_W]
    Whh = params[w + F * G:w + F * G + H * G].reshape((H, G))
    # the per-step product ∂L/∂z_t W_hhᵀ reads W_hhᵀ stored contiguously (a faster product than
    # the transposed operand) in the unused gradient region of the gate values, when it fits
    spare = _region(dws, tens, aux + 2, n)
    if spare.size >= H * G:
        Wb = spare[:H * G].reshape((G, H))
        _transpose_into(Whh, Wb)
        tb = False
    else:
        Wb = Whh
        tb = True
    small = F <= SMALL_IN
    P = _lstm_blocks(n, T, H, G, ws.itemsize)
    acc = np.zeros((P, G * (1 + F) if small else G))  # per block: Σ ∂L/∂z_t, and Σ x ∂L/∂z_t (narrow input)
    if P > 1:
        before = blas_threads()
        set_blas_threads(1)
        call_i64(_lstm_entry(2 if ws.itemsize == 4 else 4),
                 (P, ops.ctypes.data, ops.shape[0], ops.shape[1], hp.ctypes.data, hp.shape[0], hp.shape[1],
                  tens.ctypes.data, tens.shape[0], tens.shape[1], params.ctypes.data, params.size,
                  grads.ctypes.data, grads.size, ws.ctypes.data, ws.size, dws.ctypes.data, dws.size, i, n,
                  Wb.ctypes.data, Wb.shape[0], Wb.shape[1], 1 if tb else 0, acc.ctypes.data, acc.shape[0],
                  acc.shape[1]))
        set_blas_threads(before)
    else:
        _lstm_backward_rows(ops, hp, tens, params, ws, dws, i, n, np.int64(0), n, Wb, tb, acc[0])
        _lstm_products(ops, hp, tens, grads, ws, dws, i, n, np.int64(0), G)
    for k in range(1, P):  # the blocks' sums, in block order
        for j in range(acc.shape[1]):
            acc[0, j] += acc[k, j]
    b = ops[i, F_B]
    if b >= 0:
        db = grads[b:b + G]
        for j in range(G):
            db[j] = acc[0, j]
    if small:
        dWih = grads[w:w + F * G]
        for j in range(F * G):
            dWih[j] = acc[0, G + j]
    mode = ops[i, F_DX]
    if mode != DX_SKIP:
        dXt = _region(dws, tens, aux + 1, n)[:T * n * F].reshape((T * n, F))
        from_time_major(dXt, tview(dws, tens, ops[i, F_X], n), n, T, F, mode)


# ---------------------------------------------------------------- the LSTM's threaded entries
def _forward_entry(P, ops_p, ops_r, ops_c, hp_p, hp_r, hp_c, tens_p, tens_r, tens_c, params_p, params_n, ws_p,
                   ws_n, i, n):
    """The input projection and the forward sweeps of an LSTM in P blocks (a C callback: arrays as
    data pointers and sizes)."""
    ops = carray(ops_p, (ops_r, ops_c))
    hp = carray(hp_p, (hp_r, hp_c))
    tens = carray(tens_p, (tens_r, tens_c))
    params = carray(params_p, params_n)
    ws = carray(ws_p, ws_n)
    _lstm_project_par(P, ops, tens, params, ws, i, n)
    _lstm_forward_par(P, ops, hp, tens, params, ws, i, n)


def _backward_entry(P, ops_p, ops_r, ops_c, hp_p, hp_r, hp_c, tens_p, tens_r, tens_c, params_p, params_n, grads_p,
                    grads_n, ws_p, ws_n, dws_p, dws_n, i, n, wb_p, wb_r, wb_c, tb, acc_p, acc_r, acc_c):
    """The backward sweeps and the products for ∂L/∂W_hh of an LSTM in P blocks (a C callback)."""
    ops = carray(ops_p, (ops_r, ops_c))
    hp = carray(hp_p, (hp_r, hp_c))
    tens = carray(tens_p, (tens_r, tens_c))
    params = carray(params_p, params_n)
    grads = carray(grads_p, grads_n)
    ws = carray(ws_p, ws_n)
    dws = carray(dws_p, dws_n)
    Wb = carray(wb_p, (wb_r, wb_c))
    acc = carray(acc_p, (acc_r, acc_c))
    _lstm_backward_par(P, ops, hp, tens, params, ws, dws, i, n, Wb, tb != 0, acc)
    _lstm_products_par(P, ops, hp, tens, grads, ws, dws, i, n)


_ENTRIES = []  # the compiled callbacks, kept alive for the life of the process


def _entry_signatures(ftype):
    i64, f64 = types.int64, types.float64
    pi, pf, pd = types.CPointer(i64), types.CPointer(ftype), types.CPointer(f64)
    head = (i64, pi, i64, i64, pd, i64, i64, pi, i64, i64, pf, i64)
    fwd = types.void(*head, pf, i64, i64, i64)
    bwd = types.void(*head, pf, i64, pf, i64, pf, i64, i64, i64, pf, i64, i64, i64, pd, i64, i64)
    return fwd, bwd


def _compile_entries(dtypes=("float32", "float64")):
    """Compile (or load from Numba's cache) the threaded forward and backward entries of ``dtypes``
    and put their addresses in the kernels' table (each dtype once). A network compiles its own
    dtype's only: each pair is ~10 compiled functions of parallel loops, a third of an LSTM
    network's cold start."""
    for slot, ftype in ((1, types.float32), (3, types.float64)):
        if str(ftype) not in dtypes or _LSTM_TABLE[slot]:
            continue
        fwd, bwd = _entry_signatures(ftype)
        for k, (fn, sig, way) in enumerate(((_forward_entry, fwd, "forward"), (_backward_entry, bwd, "backward"))):
            cb = callback(fn, sig, f"the LSTM's threaded {way} sweeps ({ftype})")
            _ENTRIES.append(cb)
            _LSTM_TABLE[slot + k] = cb.address


def enable_lstm_threads(dtype=None):
    """Let large LSTMs of ``dtype`` ("float32" or "float64"; None: both) run in blocks of rows on
    Numba's threads (see the LSTM section above): start Numba's threading layer, compile (or load
    from Numba's cache) the threaded entries of that dtype and put their addresses in the kernels'
    table. Called when a network with an LSTM is built; compiles each dtype's entries once, and
    leaves the LSTM on one thread where Numba's pool has one thread or is the ``workqueue`` layer
    (which aborts the process when two threads start parallel work at once). Returns the threads
    an LSTM may use."""
    dtypes = ("float32", "float64") if dtype is None else (str(np.dtype(dtype)),)
    if not _LSTM_TABLE[0]:
        import numba

        threads = int(numba.get_num_threads())  # starts the threading layer
        if threads <= 1 or numba.threading_layer() == "workqueue":
            _LSTM_TABLE[0] = 1
            return 1
        _LSTM_TABLE[0] = threads
    if _LSTM_TABLE[0] > 1:
        _compile_entries(dtypes)
    return int(_LSTM_TABLE[0])
