"""CPU kernels (Numba ``@njit``): elementwise activation maps, losses, and the network executor.

Everything is a module-level function with ``cache=True`` (see :mod:`nnlab._config`), taking flat
arrays and integer tables only (layout in :mod:`nnlab.kernels.layout`), so a second process loads
it from cache and a ``numba.cuda`` twin can mirror each function one to one. The scalar math comes
from :mod:`nnlab.activations._math` through the integer-coded dispatchers ``act_f``, ``act_d`` and
``act_dp``; :func:`nnlab.kernels.kernels_for` rebinds those names to include user-registered
activations.

One call of :func:`loss_and_grad` runs the whole network: input copy, forward through every op,
loss and its gradient, backward through every op (memoizing the layer errors in ``dws``).
:func:`train_step` adds clipping and the optimizer update; :func:`train_epoch` runs an epoch of
them. A step allocates no array memory, except for the float64 products of a layer whose errors
went subnormal (see ``TINY_GEMM``), the monitor's small per-step buffer, the per-feature
float64 sums of the normalisation layers (2·F values per op), a float32 RNN's float64
bias-gradient accumulator and an LSTM's float64 per-block sums of ∂L/∂b (and of a narrow input's
∂L/∂W_ih).

Threading (a deliberate choice, measured on a 2-core machine; see
docs/performance-notes.md): the matrix products go to NumPy's OpenBLAS through
:func:`nnlab.kernels.blas.gemm` (``np.dot`` where that library is not found) and use its
two threads; every elementwise loop (bias, activation, derivative, loss, clipping, optimizer
update) runs on the calling thread, vectorised. ``prange`` halves an isolated 6.3M-parameter SGD
update (4.8 -> 1.9 ms), but inside the step it runs right after a BLAS call, whose worker thread
is still spinning for work: there the same parallel update took twice the serial time, and a
32k-element activation loop is slower with ``prange`` even alone (thread wake-up). BLAS threads
for the products and serial, vectorised loops for the rest was the faster combination in every
configuration measured inside the step. The exception is a large LSTM
(:mod:`nnlab.kernels.recurrent`): its batch rows never meet in the recurrence, so its sweeps over
time run in blocks of rows on Numba's threads, each block with one-thread products, the BLAS set
to one thread meanwhile.
"""

import math
from types import FunctionType

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._config import FASTMATH, JIT
from ..activations._math import act_d, act_dp, act_f, sigm
from .blas import address_table, c_signature, call_f64, callback
from .combine import add_backward, add_forward, gate_backward, gate_forward
from .common import DBL_MAX, act_slots, assign1, assign2, fill_noise, flag, tview
from .dense import dense_backward_stored, dense_forward_store, fast_code
from .dropout import alpha_dropout_backward, alpha_dropout_forward, dropout_backward, dropout_forward
from .layout import (
    F_A,
    F_ACT,
    F_AMASK,
    F_AP,
    F_B,
    F_BN,
    F_KIND,
    F_LEVEL,
    F_NOISE,
    F_NOUT,
    F_T,
    F_W,
    F_WN,
    F_Z,
    FLT_MIN,
    KIND_ADD,
    KIND_ALPHA_DROPOUT,
    KIND_BATCHNORM,
    KIND_DENSE,
    KIND_DROPOUT,
    KIND_GATE,
    KIND_LAYERNORM,
    KIND_LSTM,
    KIND_MAXOUT,
    KIND_RBF,
    KIND_RNN,
    LOSS_BCE,
    LOSS_MSE,
    LOSS_SOFTMAX_CE,
    S_A_MEAN,
    S_A_STD,
    S_B_GRAD_NORM,
    S_DEAD,
    S_ERR_NORM,
    S_GRAD_NORM,
    S_N_GRAD,
    S_NONFINITE,
    S_SATURATED,
    S_SUBNORMAL,
    S_UPDATE_NORM,
    S_W_NORM,
    S_Z_MEAN,
    S_Z_STD,
    S_ZERO_GRAD,
)
from .maxout import maxout_backward, maxout_forward
from .norm import batchnorm_backward, batchnorm_forward, layernorm_backward, layernorm_forward
from .optim_cpu import SQ_LO, clip_flat, norm_scales, opt_update, opt_update_checked
from .rbf import rbf_backward, rbf_forward
from .recurrent import lstm_backward, lstm_forward, rnn_backward, rnn_forward


# ---------------------------------------------------------------- elementwise maps
@njit(**JIT)
def act_map(what, code, z, out, p0, p1, p2, a, u):
    """out[i] = a·θ(z[i]) (what=0), a·θ'(z[i]) (1), a·∂θ/∂p_k (2+k), or θ(z[i]) = ∂(aθ)/∂a (5).

    ``u`` holds the noise sample per element, or a single value for all.
    """
    one_u = u.size == 1
    for i in range(z.size):
        ui = u[0] if one_u else u[i]
        if what == 0:
            out[i] = a * act_f(code, z[i], p0, p1, p2, ui)
        elif what == 1:
            out[i] = a * act_d(code, z[i], p0, p1, p2, ui)
        elif what == 5:
            out[i] = act_f(code, z[i], p0, p1, p2, ui)
        else:
            out[i] = a * act_dp(code, what - 2, z[i], p0, p1, p2, ui)



# ---------------------------------------------------------------- executor
# One branch per layer kind in each of the two dispatch functions; every kind's kernels take the
# same arguments (see nnlab.kernels.layout for the program tables).
#
# Compile time (see docs/performance.md, "Cold start"): Numba links every callee's code into its
# caller and optimises the whole module again, so each separately compiled level of the call tree
# costs a full optimisation of everything below it. The dispatch functions and the forward and
# backward loops are therefore inlined into their callers at the Numba IR level (``INLINE``: the
# same code, one optimisation fewer per level). And a program runs on an executor for the kinds it
# uses (:func:`nnlab.kernels.kernels_for`): the same entry points (``loss_and_grad``,
# ``train_step``, ...) compiled with a dispatch that has the branches of those kinds only
# (:func:`dispatch_source`), cached under their own names, so a dense network never compiles the
# recurrent kernels.
INLINE = dict(JIT, inline="always")

# STORE: the two forward passes give ``store`` as a constant (True in loss_and_grad, False in
# run_forward), which Numba types as a literal; through the inlined forward loop it reaches the
# dense op's elementwise loops (dense.fast_forward), which are then compiled with the loops of that
# pass only (the store of a·θ'(Z) or not). op_forward hands the other kinds a plain bool, so their
# kernels stay one compiled copy for both passes. The forward-only entry points (run_forward,
# loss_only, eval_chunks) each inline forward_store rather than call run_forward: one compiled
# level fewer for loss_only and eval_chunks, so Trainer.evaluate compiles no run_forward.
#
# kind -> (forward kernel, backward kernel) for the executors of a subset of the kinds; the dense
# forward kernel takes no ``training`` and returns whether it stored a·θ'(Z) (see op_forward).
KIND_KERNELS = {
    KIND_DENSE: ("dense_forward_store", "dense_backward_stored"),
    KIND_ADD: ("add_forward", "add_backward"),
    KIND_GATE: ("gate_forward", "gate_backward"),
    KIND_BATCHNORM: ("batchnorm_forward", "batchnorm_backward"),
    KIND_LAYERNORM: ("layernorm_forward", "layernorm_backward"),
    KIND_DROPOUT: ("dropout_forward", "dropout_backward"),
    KIND_ALPHA_DROPOUT: ("alpha_dropout_forward", "alpha_dropout_backward"),
    KIND_MAXOUT: ("maxout_forward", "maxout_backward"),
    KIND_RBF: ("rbf_forward", "rbf_backward"),
    KIND_RNN: ("rnn_forward", "rnn_backward"),
    KIND_LSTM: ("lstm_forward", "lstm_backward"),
}

# The executors besides the general one, smallest first: a program runs on the first whose kinds
# cover its own (a few fixed sets, so that the kernels are shared between programs and commands).
EXECUTOR_KINDS = (
    frozenset({KIND_DENSE}),
    frozenset({KIND_DENSE, KIND_RNN, KIND_LSTM}),
    frozenset(KIND_KERNELS) - {KIND_RNN, KIND_LSTM},
)

# LOSS_AND_GRAD: the training entry points (train_step and its per-optimizer copies, train_epoch,
# observe) and loss_and_grad_call (Sequential.loss_and_grads) do not link loss_and_grad's code:
# they call it through a C callback, compiled (and cached) once per executor and dtype
# (lg_callback: loss_and_grad's body behind a C signature), whose address sits in this table:
# slot 2·LG_EXECUTOR for float64, +1 for float32. Linked, loss_and_grad's code -- most of a
# step's -- was optimised again in every entry point that a process compiles. LG_EXECUTOR is this
# module's index (the general executor, after the kind groups); each kind group's executor has
# its own (kernels.kinds_set), and a kernel set of user-registered activations calls
# loss_and_grad directly (loss_and_grad_entry is rebound to lg_direct). ensure_loss_and_grad
# fills the slot before any entry point runs (the trainer, the monitor and loss_and_grads call
# it); an empty slot makes loss_and_grad_entry return NaN without touching anything.
LG_EXECUTOR = len(EXECUTOR_KINDS)
LG_TABLE, _lg_slot = address_table("nnlab_loss_and_grad_table", 2 * (len(EXECUTOR_KINDS) + 1))


def dispatch_source(kinds, suffix):
    """Source of ``op_forward`` + suffix and ``op_backward`` + suffix with the branches of ``kinds``
    only (the same calls as the general dispatch below, which has every kind)."""
    fwd = [f"def op_forward{suffix}(ops, hp, tens, params, ws, dws, i, n, training, store):",
           "    kind = ops[i, F_KIND]"]
    bwd = [f"def op_backward{suffix}(ops, hp, tens, params, grads, ws, dws, i, n, stored):",
           "    kind = ops[i, F_KIND]"]
    for k in sorted(kinds):
        f, b = KIND_KERNELS[k]
        if k == KIND_DENSE:
            fwd += [f"    if kind == {k}:", f"        return {f}(ops, hp, tens, params, ws, dws, i, n, store)",
                    "    store = store != 0"]
        else:
            fwd += [f"    if kind == {k}:", f"        {f}(ops, hp, tens, params, ws, dws, i, n, training, store)"]
        bwd += [f"    if kind == {k}:", f"        {b}(ops, hp, tens, params, grads, ws, dws, i, n, stored)"]
    return "\n".join(fwd + ["    return False", ""] + bwd + ["    return", ""])


@njit(**INLINE)
def op_forward(ops, hp, tens, params, ws, dws, i, n, training, store):
    """Run op i forward. ``store``: this pass is followed by a backward pass (dense ops keep
    a·θ'(Z); batch normalisation updates its running statistics). Returns True when op i stored
    its activation derivative for :func:`op_backward`."""
    kind = ops[i, F_KIND]
    if kind == KIND_DENSE:
        return dense_forward_store(ops, hp, tens, params, ws, dws, i, n, store)
    store = store != 0  # (a plain bool: see STORE)
    if kind == KIND_ADD:
        add_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    elif kind == KIND_GATE:
        gate_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    elif kind == KIND_BATCHNORM:
        batchnorm_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    elif kind == KIND_LAYERNORM:
        layernorm_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    elif kind == KIND_DROPOUT:
        dropout_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    elif kind == KIND_ALPHA_DROPOUT:
        alpha_dropout_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    elif kind == KIND_MAXOUT:
        maxout_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    elif kind == KIND_RBF:
        rbf_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    elif kind == KIND_RNN:
        rnn_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    elif kind == KIND_LSTM:
        lstm_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    return False


@njit(**INLINE)
def op_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """Run op i backward: dws at its output holds dL/dA; it writes its parameter gradients and the
    gradients of its inputs (each in its DX_* mode)."""
    kind = ops[i, F_KIND]
    if kind == KIND_DENSE:
        dense_backward_stored(ops, hp, tens, params, grads, ws, dws, i, n, stored)
    elif kind == KIND_ADD:
        add_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)
    elif kind == KIND_GATE:
        gate_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)
    elif kind == KIND_BATCHNORM:
        batchnorm_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)
    elif kind == KIND_LAYERNORM:
        layernorm_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)
    elif kind == KIND_DROPOUT:
        dropout_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)
    elif kind == KIND_ALPHA_DROPOUT:
        alpha_dropout_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)
    elif kind == KIND_MAXOUT:
        maxout_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)
    elif kind == KIND_RBF:
        rbf_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)
    elif kind == KIND_RNN:
        rnn_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)
    elif kind == KIND_LSTM:
        lstm_backward(ops, hp, tens, params, grads, ws, dws, i, n, stored)


@njit(**INLINE)
def forward_store(ops, hp, tens, params, ws, dws, X, training, seed, store):
    """Copy X into tensor 0 and run every op forward (with ``store`` for a pass that a backward
    pass follows: see :func:`op_forward`). Returns the output tensor id."""
    n = X.shape[0]
    assign2(tview(ws, tens, np.int64(0), n), X)  # (not a literal 0: see flag)
    if seed >= 0:
        np.random.seed(seed)
    for i in range(ops.shape[0]):
        if ops[i, F_NOISE] >= 0:
            fill_noise(ops, tens, ws, i, n, training)
        op_forward(ops, hp, tens, params, ws, dws, i, n, training, store)
    return ops[ops.shape[0] - 1, F_A]


@njit(**JIT)
def run_forward(ops, hp, tens, params, ws, X, training, seed):
    """Copy X into tensor 0 and run every op forward. Returns the output tensor id."""
    return forward_store(ops, hp, tens, params, ws, ws, X, training, seed, False)  # (a literal: see STORE)


@njit(**INLINE)
def backward_stored(ops, hp, tens, params, grads, ws, dws, n, stored):
    """Backward through every op in reverse; dws at the output tensor must hold dL/dA_L. With
    ``stored`` the forward pass ran with ``store``. Every gradient slot is written (dW by the
    matrix product, db and the activation hyperparameters zeroed first), so ``grads`` is not
    cleared as a whole."""
    for i in range(ops.shape[0]):
        mask = ops[i, F_AMASK]
        ap = ops[i, F_AP]
        j = 0
        for bit in range(4):
            if mask & (1 << bit):
                grads[ap + j] = 0.0
                j += 1
    for i in range(ops.shape[0] - 1, -1, -1):
        op_backward(ops, hp, tens, params, grads, ws, dws, i, n,
                    stored and ops[i, F_KIND] == KIND_DENSE and fast_code(ops, i) >= 0)


@njit(**JIT)
def run_backward(ops, hp, tens, params, grads, ws, dws, n):
    """Backward through every op in reverse; dws at the output tensor must hold dL/dA_L."""
    backward_stored(ops, hp, tens, params, grads, ws, dws, n, flag(0))


@njit(**JIT)
def out_rows(tens, out, n):
    """Rows of the loss for an n-row batch: n·steps of the output tensor (a sequence output is
    judged step by step)."""
    return n * tens[out, 2]


@njit(**JIT)
def as_rows(A, rows):
    """A 2-D C-contiguous (n, steps·k) array as (rows, k)."""
    return A.reshape((rows, A.size // rows))


@njit(**JIT)
def loss_sum(loss_code, Yhat, Y, dY, need_grad, total):
    """``total`` plus the float64 sum of the loss terms of the rows of Yhat (n, k) against Y;
    with ``need_grad`` writes dL/dYhat of this batch's mean loss into dY. The loss is the sum
    divided by n (mse, softmax_cross_entropy) or n·k (bce); see :func:`loss_fwd_bwd`."""
    n, k = Yhat.shape
    if loss_code == LOSS_MSE:
        for r in range(n):
            for j in range(k):
                diff = Yhat[r, j] - Y[r, j]
                total += 0.5 * diff * diff
                if need_grad:
                    dY[r, j] = diff / n
        return total
    if loss_code == LOSS_SOFTMAX_CE:
        for r in range(n):
            m = Yhat[r, 0]
            for j in range(1, k):
                if Yhat[r, j] > m:
                    m = Yhat[r, j]
            s = 0.0
            for j in range(k):
                e = math.exp(Yhat[r, j] - m)
                s += e
                if need_grad:
                    dY[r, j] = e  # kept (exactly: e has dY's dtype) for p below, not recomputed
            label = int(Y[r, 0])
            # (m - ŷ_label) + log s rather than (m + log s) - ŷ_label, and p = e^(ŷ_j - m)/s rather
            # than e^(ŷ_j - lse): no rounding to the scale of m when the loss or 1 - p is tiny
            total += (m - Yhat[r, label]) + math.log(s)
            if need_grad:
                for j in range(k):
                    p = dY[r, j] / s
                    dY[r, j] = ((p - 1.0) if j == label else p) / n
        return total
    # LOSS_BCE
    for r in range(n):
        for j in range(k):
            x = Yhat[r, j]
            y = Y[r, j]
            total += max(x, 0.0) - x * y + math.log1p(math.exp(-abs(x)))
            if need_grad:
                dY[r, j] = (sigm(x) - y) / (n * k)
    return total


@njit(**INLINE)  # (a few lines around loss_sum: no compiled level of its own)
def loss_fwd_bwd(loss_code, Yhat, Y, dY, need_grad):
    """The loss (float64) of predictions Yhat (n, k) against Y; writes dL/dYhat into dY.

    mse: Σ‖ŷ - y‖²/(2n); softmax_cross_entropy: Y[:, 0] holds integer labels, mean over rows,
    log-sum-exp stabilised; bce: on logits, mean over all n·k elements.
    """
    n, k = Yhat.shape
    total = loss_sum(loss_code, Yhat, Y, dY, need_grad, 0.0)
    return total / (n * k) if loss_code == LOSS_BCE else total / n


@njit(**JIT)
def eval_chunks(ops, hp, tens, params, ws, X, Y, loss_code, chunk, out):
    """Eval-mode loss over all rows of (X, Y), the forward pass run ``chunk`` rows at a time
    through ``ws`` (sized for ``chunk`` rows); the network outputs go to ``out`` (n, n_out). With
    n <= chunk it is the computation of :func:`loss_only` on the whole batch (the same bits); the
    loss sum runs on across chunks in row order, so chunking changes only the matrix products."""
    n = X.shape[0]
    total = 0.0
    steps = 1
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        o = forward_store(ops, hp, tens, params, ws, ws, X[lo:lo + m], flag(0), np.int64(-1), False)  # see STORE
        rows = out_rows(tens, o, m)
        steps = tens[o, 2]
        Yhat = as_rows(tview(ws, tens, o, m), rows)
        total = loss_sum(loss_code, Yhat, as_rows(Y[lo:lo + m], rows), Yhat, flag(0), total)
        assign2(out[lo:lo + m], tview(ws, tens, o, m))
    return total / (n * out.shape[1]) if loss_code == LOSS_BCE else total / (n * steps)


@njit(**JIT)
def loss_and_grad(ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed):
    """One compiled call: forward, loss, backward. Returns the loss; fills ``grads`` and ``dws``."""
    n = X.shape[0]
    out = forward_store(ops, hp, tens, params, ws, dws, X, training, seed, True)  # (a literal: see STORE)
    rows = out_rows(tens, out, n)
    loss = loss_fwd_bwd(loss_code, as_rows(tview(ws, tens, out, n), rows), as_rows(Y, rows),
                        as_rows(tview(dws, tens, out, n), rows), flag(1))
    backward_stored(ops, hp, tens, params, grads, ws, dws, n, flag(1))
    return loss


@njit(**INLINE)
def loss_and_grad_entry(ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed):
    """loss_and_grad through this executor's C callback for the dtype of ``params`` (see
    LOSS_AND_GRAD); NaN, with nothing touched, while the callback is not loaded."""
    fn = _lg_slot(2 * LG_EXECUTOR + (params.itemsize == 4))
    if fn == 0:
        return np.nan
    return call_f64(fn, (ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed))


@njit(**JIT)
def loss_and_grad_call(ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed):
    """loss_and_grad through this executor's callback (see LOSS_AND_GRAD): what
    ``Sequential.loss_and_grads`` calls, so that a process compiles loss_and_grad's code once, in
    the callback, whether it trains, inspects gradients, or both."""
    return loss_and_grad_entry(ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed)


@njit(**INLINE)
def lg_direct(ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed):
    """loss_and_grad_entry of a kernel set without callbacks (user-registered activations): the
    direct call."""
    return loss_and_grad(ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed)


def lg_callback(ops, ops_r, ops_c, hp, hp_r, hp_c, tens, tens_r, tens_c, params, params_n, grads, grads_n,
                ws, ws_n, dws, dws_n, X, X_r, X_c, Y, Y_r, Y_c, loss_code, training, seed):
    """The C callback behind loss_and_grad_entry (the arguments as ``blas.call_f64`` passes them):
    loss_and_grad's body itself, over the rebuilt arrays -- neither a call to loss_and_grad, which
    would link it (one more optimisation of all its code), nor an inlined copy (Numba's IR inlining
    of a function that size took longer than compiling it). tests/test_loss_and_grad_callback.py
    holds the two to the same bits."""
    ops, hp, tens = carray(ops, (ops_r, ops_c)), carray(hp, (hp_r, hp_c)), carray(tens, (tens_r, tens_c))
    params, grads = carray(params, params_n), carray(grads, grads_n)
    ws, dws = carray(ws, ws_n), carray(dws, dws_n)
    X, Y = carray(X, (X_r, X_c)), carray(Y, (Y_r, Y_c))
    n = X_r
    out = forward_store(ops, hp, tens, params, ws, dws, X, training != 0, seed, True)  # (a literal: see STORE)
    rows = out_rows(tens, out, n)
    loss = loss_fwd_bwd(loss_code, as_rows(tview(ws, tens, out, n), rows), as_rows(Y, rows),
                        as_rows(tview(dws, tens, out, n), rows), flag(1))
    backward_stored(ops, hp, tens, params, grads, ws, dws, n, flag(1))
    return loss


@njit(**JIT)
def loss_only(ops, hp, tens, params, ws, dws, X, Y, loss_code, training, seed):
    """Forward and loss without the backward pass (finite differences, evaluation)."""
    n = X.shape[0]
    out = forward_store(ops, hp, tens, params, ws, ws, X, training, seed, False)  # (a literal: see STORE)
    rows = out_rows(tens, out, n)
    return loss_fwd_bwd(loss_code, as_rows(tview(ws, tens, out, n), rows), as_rows(Y, rows),
                        as_rows(tview(dws, tens, out, n), rows), flag(0))


# ---------------------------------------------------------------- batch checks (Trainer.step's fast path)
# A batch already in the network's dtype and layout is checked here in one compiled pass; False
# sends the caller to the full validation, which raises the precise error. The counts are integer
# reductions (no floating-point reassociation needed), so the loops vectorise.
@njit(**JIT)
def n_nonfinite(X):
    """Number of NaN/±inf entries of the 2-D array X."""
    bad = 0
    for r in range(X.shape[0]):
        for j in range(X.shape[1]):
            bad += not (abs(np.float64(X[r, j])) <= DBL_MAX)
    return bad


@njit(**JIT)
def labels_ok(X, y, Y, n_out):
    """X finite and the integer labels y in [0, n_out); writes them as floats into Y (N,)."""
    if n_nonfinite(X):
        return False
    bad = 0
    for r in range(y.size):
        c = y[r]
        bad += (c < 0) | (c >= n_out)
        Y[r] = c
    return bad == 0


@njit(**JIT)
def targets_ok(X, Y, unit):
    """X and the float targets Y finite (and with ``unit``, as bce needs, every Y in [0, 1])."""
    if n_nonfinite(X) or n_nonfinite(Y):
        return False
    if unit:
        bad = 0
        for r in range(Y.shape[0]):
            for j in range(Y.shape[1]):
                v = Y[r, j]
                bad += (v < 0.0) | (v > 1.0)
        return bad == 0
    return True


# ---------------------------------------------------------------- gradient-health statistics
# The statistics kernels may reassociate their float64 sums ("reassoc" only: NaN and inf keep their
# IEEE meaning), so LLVM vectorizes them; every sum is still the exact float64 sum of the same
# terms up to the order of addition. Finiteness and magnitude tests are branch-free.
STATS_JIT = dict(JIT, fastmath=set(FASTMATH) | {"reassoc"})


@njit(**STATS_JIT)
def _sq_count(x):
    """(Σ x² in float64, count of non-finite, count of float32-subnormal, count of exact zeros)."""
    s = 0.0
    bad = 0
    sub = 0
    zero = 0
    for k in range(x.size):
        v = np.float64(x[k])
        s += v * v  # a NaN/inf entry makes the norm NaN/inf, as it should
        a = abs(v)
        bad += not (a <= DBL_MAX)
        zero += a == 0.0
        sub += (a < FLT_MIN) & (a > 0.0)
    return s, bad, sub, zero


@njit(**JIT)
def _norm(s, x, y):
    """sqrt(s) for s = Σ (x − y)² (y = None: Σ x²), recomputed with scaling when the float64 sum
    overflowed or underflowed (as ``optim_cpu.norm_from_sq``): the norm is inf only for an
    infinite entry and 0 only when every entry is 0."""
    if SQ_LO <= s <= DBL_MAX:
        return math.sqrt(s)
    if s != s:
        return s
    big = 0.0
    for k in range(x.size):
        v = np.float64(x[k]) - (0.0 if y is None else np.float64(y[k]))
        if not abs(v) <= DBL_MAX:
            return abs(v)
        big = max(big, abs(v))
    if big == 0.0:
        return 0.0
    s1, s2, e = norm_scales(big)
    t = 0.0
    for k in range(x.size):
        v = ((np.float64(x[k]) - (0.0 if y is None else np.float64(y[k]))) * s1) * s2
        t += v * v
    return math.ldexp(math.sqrt(t), e)


@njit(**STATS_JIT)
def _count_nonfinite(x):
    bad = 0
    for k in range(x.size):
        bad += not (abs(np.float64(x[k])) <= DBL_MAX)
    return bad


@njit(**STATS_JIT)
def _first_finite(Z, A):
    """(z, a) of the first entry where both are finite (the shifts of the one-pass variance)."""
    Zf = Z.reshape(-1)
    Af = A.reshape(-1)
    for k in range(Zf.size):
        z = np.float64(Zf[k])
        a = np.float64(Af[k])
        if abs(z) <= DBL_MAX and abs(a) <= DBL_MAX:
            return z, a
    return 0.0, 0.0


@njit(**STATS_JIT)
def _moments(s, sq, cnt, shift):
    """(mean, std) of ``cnt`` values from Σ(x − shift) and Σ(x − shift)² (the shifted one-pass
    variance: no cancellation when the shift is near the mean); NaN when cnt = 0."""
    if cnt == 0:
        return np.nan, np.nan
    m = s / cnt
    return shift + m, math.sqrt(max(sq / cnt - m * m, 0.0))


@njit(**STATS_JIT)
def _activation_pass(Z, A, kz, ka, zs, alive):
    """Σ(z−kz), Σ(z−kz)², Σ(a−ka), Σ(a−ka)² over entries where Z and A are finite, their count,
    the non-finite count, and (zs > 0) the count of |z| > zs; ``alive[j]`` is set for units with a
    non-finite entry or (zs > 0) an entry with |z| <= zs."""
    n, nout = Z.shape
    zsum = 0.0
    zsq = 0.0
    asum = 0.0
    asq = 0.0
    cnt = 0
    n_sat = 0
    by_z = zs > 0.0
    for r in range(n):
        for j in range(nout):
            z = np.float64(Z[r, j])
            a = np.float64(A[r, j])
            ok = (abs(z) <= DBL_MAX) & (abs(a) <= DBL_MAX)
            dz = z - kz if ok else 0.0
            da = a - ka if ok else 0.0
            zsum += dz
            zsq += dz * dz
            asum += da
            asq += da * da
            cnt += ok
            far = abs(z) > zs
            n_sat += ok & far & by_z
            alive[j] |= (not ok) | (by_z & (not far))
    return zsum, zsq, asum, asq, cnt, n * nout - cnt, n_sat


@njit(**STATS_JIT)
def _flat_moments(x):
    """(Σ(v−k), Σ(v−k)², count, shift k, non-finite count) over the finite entries of flat x."""
    k = 0.0
    for j in range(x.size):
        v = np.float64(x[j])
        if abs(v) <= DBL_MAX:
            k = v
            break
    s = 0.0
    sq = 0.0
    cnt = 0
    for j in range(x.size):
        v = np.float64(x[j])
        ok = abs(v) <= DBL_MAX
        d = v - k if ok else 0.0
        s += d
        sq += d * d
        cnt += ok
    return s, sq, cnt, k, x.size - cnt


@njit(**JIT)
def _region(buf, tens, t, n):
    """Tensor t of an n-row batch, flat."""
    off = tens[t, 0] * n
    return buf[off:off + n * tens[t, 1]]


@njit(**JIT)
def grad_stats(ops, hp, tens, params, grads, ws, dws, n, sat, stats):
    """Fill the gradient columns of ``stats`` (row ``F_LEVEL`` of every op with weights) from the
    last backward pass.

    The weights W_l are the op's block at ``F_W`` (``F_WN`` elements), its bias the block at
    ``F_B``, E_l the ``dws`` region of its Z tensor. For dense ops, ``sat`` (n_ops, 3) gives
    [1 if the op's activation saturates, threshold t on |a·θ'(z)|, z_sat]: an entry is saturated
    when |a·θ'(z)| < t (t is a documented fraction of the activation's maximum derivative); when
    z_sat > 0 the derivative falls with |z| (sigmoid, tanh, softsign) and z_sat is where it
    crosses t, so |z| > z_sat decides it without evaluating θ'. A unit is dead when a·θ'(z) is
    exactly 0 for every row of the batch (a non-finite entry counts as alive). Other kinds
    report no dead or saturated units.
    """
    width = 1
    for i in range(ops.shape[0]):
        width = max(width, ops[i, F_NOUT])
    alive = np.zeros(width, np.bool_)
    for i in range(ops.shape[0]):
        l = ops[i, F_LEVEL]
        if l < 0:
            continue
        w = ops[i, F_W]
        wn = ops[i, F_WN]
        gs, gbad, gsub, gzero = _sq_count(grads[w:w + wn])
        Ef = _region(dws, tens, ops[i, F_Z], n)
        es, ebad, esub, _ = _sq_count(Ef)
        wbad = _count_nonfinite(params[w:w + wn])
        b = ops[i, F_B]
        bn = ops[i, F_BN]
        bs = 0.0
        if b >= 0:
            bs = _sq_count(grads[b:b + bn])[0]
        dead = 0
        n_sat = 0
        saturating = False
        if ops[i, F_KIND] == KIND_DENSE:
            nout = ops[i, F_NOUT]
            rows = n * ops[i, F_T]
            Z = _region(ws, tens, ops[i, F_Z], n).reshape((rows, nout))
            A = _region(ws, tens, ops[i, F_A], n).reshape((rows, nout))
            saturating = sat[i, 0] > 0
            thr = sat[i, 1]
            zs = sat[i, 2] if saturating else 0.0
            al = alive[:nout]
            al[:] = False
            kz, ka = _first_finite(Z, A)
            zsum, zsq, asum, asq, cnt, zbad, n_sat = _activation_pass(Z, A, kz, ka, zs, al)
            code = ops[i, F_ACT]
            p0, p1, p2, a = act_slots(ops, hp, params, i)
            has_noise = ops[i, F_NOISE] >= 0
            U = _region(ws, tens, ops[i, F_NOISE] if has_noise else ops[i, F_Z], n).reshape((rows, nout))
            if saturating and zs <= 0.0:  # the derivative itself decides saturation: every entry
                for r in range(rows):
                    for j in range(nout):
                        z = Z[r, j]
                        if not (abs(np.float64(z)) <= DBL_MAX and abs(np.float64(A[r, j])) <= DBL_MAX):
                            continue
                        d = abs(a * act_d(code, z, p0, p1, p2, U[r, j] if has_noise else 0.0))
                        n_sat += d < thr
                        if d != 0.0:
                            al[j] = True
            else:  # a unit is alive at its first row with a non-zero derivative
                for j in range(nout):
                    if al[j]:
                        continue
                    for r in range(rows):
                        z = Z[r, j]
                        if a * act_d(code, z, p0, p1, p2, U[r, j] if has_noise else 0.0) != 0.0:
                            al[j] = True
                            break
            for j in range(nout):
                dead += not al[j]
            stats[l, S_DEAD] = dead / nout
            stats[l, S_Z_MEAN], stats[l, S_Z_STD] = _moments(zsum, zsq, cnt, kz)
            stats[l, S_A_MEAN], stats[l, S_A_STD] = _moments(asum, asq, cnt, ka)
            total = rows * nout
            stats[l, S_SATURATED] = n_sat / total if saturating else 0.0
        else:
            zsum, zsq, cnt, kz, zbad = _flat_moments(_region(ws, tens, ops[i, F_Z], n))
            asum, asq, acnt, ka, abad = _flat_moments(_region(ws, tens, ops[i, F_A], n))
            zbad += abad
            stats[l, S_DEAD] = 0.0
            stats[l, S_SATURATED] = 0.0
            stats[l, S_Z_MEAN], stats[l, S_Z_STD] = _moments(zsum, zsq, cnt, kz)
            stats[l, S_A_MEAN], stats[l, S_A_STD] = _moments(asum, asq, acnt, ka)
        stats[l, S_GRAD_NORM] = _norm(gs, grads[w:w + wn], None)
        stats[l, S_ERR_NORM] = _norm(es, Ef, None)
        stats[l, S_B_GRAD_NORM] = _norm(bs, grads[b:b + bn], None) if b >= 0 else 0.0
        stats[l, S_NONFINITE] = gbad + ebad + wbad + zbad
        stats[l, S_SUBNORMAL] = gsub + esub
        stats[l, S_ZERO_GRAD] = gzero
        stats[l, S_N_GRAD] = wn + Ef.size


@njit(**STATS_JIT)
def _norm_and_diff(x, y):
    """(Σ x², Σ (x − y)²) in float64."""
    s = 0.0
    d = 0.0
    for k in range(x.size):
        v = np.float64(x[k])
        dv = v - np.float64(y[k])
        s += v * v
        d += dv * dv
    return s, d


@njit(**JIT)
def update_stats(ops, params, prev, stats):
    """Fill ‖W_l‖ and ‖W_l − W_l(prev)‖ of every op with weights."""
    for i in range(ops.shape[0]):
        l = ops[i, F_LEVEL]
        if l < 0:
            continue
        w = ops[i, F_W]
        m = ops[i, F_WN]
        s, d = _norm_and_diff(params[w:w + m], prev[w:w + m])
        stats[l, S_W_NORM] = _norm(s, params[w:w + m], None)
        stats[l, S_UPDATE_NORM] = _norm(d, params[w:w + m], prev[w:w + m])


@njit(**JIT)
def train_step(ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed,
               clip_kind, clip_value, offsets, opt_code, opt_hp, t, state, skip_nonfinite, out,
               record, prev, sat, stats):
    """One fused training step: forward, loss, backward, clipping, optimizer update.

    ``out`` receives (loss, pre-clip global gradient norm, 1.0 if the update was applied). With
    ``skip_nonfinite`` a non-finite loss or gradient norm, or an update that would make a weight or
    an optimizer state entry non-finite, leaves ``params`` and ``state`` untouched.
    Regularisation rides in ``opt_hp`` (coupled L2, L1, decoupled decay slots of the optimizer).
    With ``record`` the gradient-health statistics go to ``stats`` (gradients before clipping,
    weights after the update; ``prev`` receives the weights before it).

    ``params`` is the parameter store: the ``grads.size`` parameters, then the buffers (running
    statistics), which the forward pass updates and which a skipped update restores as well.
    """
    n = X.shape[0]
    npar = grads.size
    P = params[:npar]
    nbuf = params.size - npar
    kept = params[npar:].copy() if nbuf > 0 and skip_nonfinite else params[:0]
    loss = loss_and_grad_entry(ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed)
    if record:
        assign1(prev, P)
        grad_stats(ops, hp, tens, params, grads, ws, dws, n, sat, stats)
    norm = clip_flat(clip_kind, clip_value, grads, offsets)
    out[0] = loss
    out[1] = norm
    out[2] = 0.0
    if not skip_nonfinite:
        opt_update(opt_code, opt_hp, t, P, grads, state)
        out[2] = 1.0
    elif math.isfinite(loss) and math.isfinite(norm) and opt_update_checked(opt_code, opt_hp, t, P, grads, state,
                                                                            norm):
        out[2] = 1.0  # (an update that would leave non-finite weights or state is undone: not applied)
    elif kept.size > 0:
        assign1(params[npar:], kept)
    if record:
        update_stats(ops, params, prev, stats)
    return loss


def _inlined(fn, name):
    """``fn``'s function under ``name``, compiled inlined into its callers (``INLINE``)."""
    py = fn.py_func
    g = FunctionType(py.__code__, py.__globals__, name, py.__defaults__, py.__closure__)
    g.__qualname__ = name
    g.__doc__ = py.__doc__
    return njit(g, **INLINE)


# train_epoch runs this copy of train_step, inlined: one compiled level fewer, so a process that
# trains with fit compiles (and LLVM optimises) the step's code once, not once for train_step and
# again for the train_epoch that links it (see the compile-time note at the executor)
train_step_inline = _inlined(train_step, "train_step_inline")
LG = (LG_EXECUTOR, lg_callback, "loss_and_grad")
"""(slot index, callback function, name) of this kernel set's loss_and_grad callback: what
:func:`ensure_loss_and_grad` compiles (a tuple, so that wrappers forwarding a kernel set's
callables pass it through unchanged)."""


_LG_CALLBACKS = []  # the compiled callbacks, kept alive for the life of the process


def lg_signature(dtype):
    """The C signature of lg_callback for parameters of ``dtype``."""
    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    i2, f1, f2 = types.int64[:, ::1], f[::1], f[:, ::1]
    return c_signature((i2, types.float64[:, ::1], i2, f1, f1, f1, f1, f2, f2, types.int64, types.boolean,
                        types.int64))


def ensure_loss_and_grad(ks, dtype):
    """Load (or compile and cache) kernel set ``ks``'s loss_and_grad callback for ``dtype`` and put
    its address in the table, once per process: before ``ks``'s training entry points run (see
    LOSS_AND_GRAD). A kernel set without one (user-registered activations, a device executor)
    needs nothing. Returns ``ks``."""
    lg = getattr(ks, "LG", None)
    if not isinstance(lg, tuple):
        return ks
    index, fn, name = lg
    slot = 2 * index + (np.dtype(dtype) == np.float32)
    if LG_TABLE[slot]:
        return ks
    from .._compile_notice import describe

    what = describe(name, (None, None, None, types.Array(
        types.float32 if np.dtype(dtype) == np.float32 else types.float64, 1, "C")))[0]
    cb = callback(fn, lg_signature(dtype), what)
    _LG_CALLBACKS.append(cb)
    LG_TABLE[slot] = cb.address
    return ks


@intrinsic
def cycle_count(typingctx):
    """The CPU's cycle counter (``llvm.readcyclecounter``: RDTSC on x86, 0 where unsupported)."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


@njit(**JIT)
def train_epoch(ops, hp, tens, params, grads, ws, dws, X, Y, order, batch, xb, yb, loss_code, training, seeds,
                clip_kind, clip_value, offsets, opt_code, opt_hps, t0, state, skip_nonfinite, outs, cycles):
    """The steps of one epoch of :meth:`nnlab.Trainer.fit` in one compiled call.

    Step s gathers the rows ``order[s*batch : (s+1)*batch]`` of (X, Y) into the front of (xb, yb)
    and runs :func:`train_step` on them with noise seed ``seeds[s]``, optimizer hyperparameters
    ``opt_hps[s]`` and step number ``t0 + s`` -- exactly the call the per-step path makes, so the
    results are the same bits. ``outs[s]`` receives (loss, norm, applied) and ``cycles[s]`` the
    step's cycle count; the loop stops after the first step whose update was not applied.
    ``ws``/``dws`` must hold ``batch`` rows (a smaller last batch uses their front). Returns the
    number of steps run.
    """
    n = order.size
    k = X.shape[1]
    kout = Y.shape[1]
    prev = np.zeros(1, params.dtype)
    sat = np.zeros((1, 2))
    stats = np.zeros((1, 1))
    record = outs.shape[0] < 0  # False, typed bool, as the per-step path passes it
    for s in range(opt_hps.shape[0]):
        lo = s * batch
        m = min(batch, n - lo)
        for r in range(m):
            src = order[lo + r]
            for j in range(k):
                xb[r, j] = X[src, j]
            for j in range(kout):
                yb[r, j] = Y[src, j]
        c0 = cycle_count()
        train_step_inline(ops, hp, tens, params, grads, ws, dws, xb[:m], yb[:m], loss_code, training, seeds[s],
                          clip_kind, clip_value, offsets, opt_code, opt_hps[s], t0 + s, state, skip_nonfinite,
                          outs[s], record, prev, sat, stats)
        cycles[s] = cycle_count() - c0
        if outs[s, 2] == 0.0:
            return s + 1
    return opt_hps.shape[0]


@njit(**JIT)
def observe(ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed, sat, stats):
    """loss_and_grad plus the gradient-health statistics, without an update (‖ΔW‖ = 0)."""
    n = X.shape[0]
    loss = loss_and_grad_entry(ops, hp, tens, params, grads, ws, dws, X, Y, loss_code, training, seed)
    grad_stats(ops, hp, tens, params, grads, ws, dws, n, sat, stats)
    update_stats(ops, params, params, stats)
    return loss


_variants = {}


def __getattr__(name):
    """The per-optimizer training entry points of the general executor (``train_step_o0``, ...:
    :mod:`nnlab.kernels.variants`), made on first use."""
    from .variants import variant

    if name.startswith("__"):
        raise AttributeError(name)
    return variant(globals(), name, _variants)
