"""The dense layer's kernels: Z = X W + b and A = a·θ(Z), and the backward pass
E = dA ⊙ a·θ'(Z), dW = Xᵀ E, db = Σ_rows E, dX = E Wᵀ.

The same op serves :class:`nnlab.Dense` (on 2-D data, or on every step of a sequence: the op acts
on n·T rows), the parts of a highway layer, a residual block's projection, and
:class:`nnlab.Activation` (``F_W = -1``: Z = X, no product). Matrix products go to
:func:`nnlab.kernels.blas.gemm`; the elementwise work is fused and vectorised (see the notes on
the specialised loops below).
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .._config import JIT
from ..activations._math import IDENTITY, LEAKY_RELU, RELU, SIGMOID, TANH, act_d, act_dp, act_f
from ..backend import _FTZ_DAZ, FTZ_SUPPORTED, _stmxcsr
from . import fastmath as FM
from .blas import gemm
from .common import act_slots, assign2, flag, put_dx, rview, scratch
from .layout import (
    DX_ADD,
    DX_SKIP,
    DX_WRITE,
    F_A,
    F_ACT,
    F_AMASK,
    F_AP,
    F_B,
    F_DX,
    F_NIN,
    F_NOISE,
    F_NOUT,
    F_T,
    F_W,
    F_X,
    F_Z,
)

# the two per-op entry points are inlined into the executor at the Numba IR level: compiled once
# with it rather than optimised again at each level (see the notes in nnlab.kernels.cpu)
INLINE = dict(JIT, inline="always")


# ---------------------------------------------------------------- specialised elementwise loops
# The general dense loops below call the integer-coded dispatchers act_f/act_d per element: the
# dispatch is a chain of compares, the math a libm call, and LLVM vectorises neither. The hot
# activations without learnable hyperparameters or noise (identity, relu, leaky_relu, sigmoid,
# tanh) take per-code loops instead, whose bodies are branch-free (selects) and, for sigmoid and
# tanh, use the vectorisable exp of nnlab.kernels.fastmath. In a training step the forward pass
# also writes the derivative a·θ'(Z) into the layer-error slot E of ``dws`` (σ and σ' share one
# exponential, tanh and tanh' too), and the backward pass turns it into E = dA ⊙ a·θ'(Z) in place:
# no transcendental in the backward pass and no extra memory.
@njit(**JIT)
def fast_code(ops, i):
    """Op i's activation code when its elementwise work takes a specialised loop, else -1."""
    code = ops[i, F_ACT]
    if ops[i, F_AMASK] != 0 or ops[i, F_NOISE] >= 0:
        return -1
    if code == IDENTITY or code == RELU or code == LEAKY_RELU or code == SIGMOID or code == TANH:
        return code
    return -1


def fast32(code, z, A, D, store):
    """The float32 loops of :func:`fast_forward` (sigmoid or tanh with slope and scale 1)."""


@overload(fast32, jit_options=JIT, prefer_literal=True)
def _fast32(code, z, A, D, store):
    # typed per dtype: a float64 network (which never takes these loops) does not compile them
    if z.dtype != types.float32:
        def never(code, z, A, D, store):
            return
        return never

    def f32(code, z, A, D, store):
        m = z.size
        if code == SIGMOID:
            if store:
                for k in range(m):
                    A[k], D[k] = FM.sigmoid32_d(z[k])
            else:
                for k in range(m):
                    A[k] = FM.sigmoid32_d(z[k])[0]
        elif store:
            for k in range(m):
                A[k], D[k] = FM.tanh32_d(z[k])
        else:
            for k in range(m):
                A[k] = FM.tanh32_d(z[k])[0]
    return f32


@njit(**JIT)
def fast_forward(code, z, A, D, p0, a, store):
    """A = a·θ(z) and, with ``store``, D = a·θ'(z) elementwise over flat arrays, for a code
    accepted by :func:`fast_code` (values as act_f/act_d give them; NaN in gives NaN out).
    Flat 1-D loops: a row view per row would cost two reference-count calls each."""
    m = z.size
    # float32 network with the default slope/scale 1: σ and tanh in float32 arithmetic (twice the
    # lanes; :func:`fast32`). Otherwise float64, as the general path: rounding p0·z or a to float32
    # would cost up to |p0·z| ulps in σ's tail.
    if (z.itemsize == 4 and a == 1.0 and (code == SIGMOID and p0 == 1.0 or code == TANH)):  # (tanh: p0 slot 0)
        fast32(code, z, A, D, store)
        return
    # separate loops with and without the store of D: without it, D may alias z (run_forward
    # passes ws for dws), and a loop that only might store to D is not vectorised
    if code == SIGMOID:
        if store:
            for k in range(m):
                s, d = FM.sigmoid_d(p0 * z[k])
                A[k] = a * s
                D[k] = a * (p0 * d)
        else:
            for k in range(m):
                A[k] = a * FM.sigmoid_d(p0 * z[k])[0]
    elif code == TANH:
        if store:
            for k in range(m):
                t, d = FM.tanh_d(z[k])
                A[k] = a * t
                D[k] = a * d
        else:
            for k in range(m):
                A[k] = a * FM.tanh_d(z[k])[0]
    elif code == RELU:
        for k in range(m):
            v = z[k]
            A[k] = a * (0.0 if v <= 0 else v)
        if store:
            for k in range(m):
                v = z[k]
                D[k] = a * (v if v != v else (1.0 if v > 0 else 0.0))
    elif code == LEAKY_RELU:
        for k in range(m):
            v = z[k]
            A[k] = a * (v if not v <= 0 else (p0 * v if p0 != 0 else 0.0))
        if store:
            for k in range(m):
                v = z[k]
                D[k] = a * (v if v != v else (1.0 if v > 0 else p0))
    else:  # IDENTITY
        for k in range(m):
            A[k] = a * z[k]
        if store:
            for k in range(m):
                v = z[k]
                D[k] = a * (v if v != v else 1.0)


# ---------------------------------------------------------------- subnormal-safe matrix products
# Deep saturating float32 nets drive the layer errors E into the subnormal range (< 1.18e-38), and
# x86 CPUs run float32 arithmetic on subnormal operands or results through a microcode assist:
# the BLAS products dW = XᵀE and dX = EWᵀ of such a layer take ~50x longer (the 50-layer sigmoid
# net of the benchmark: 15 of its 16 ms per step). When E holds an entry with 0 < |e| < TINY_GEMM, the
# two products of that layer are computed in float64 instead -- where these values are normal
# numbers -- and rounded once to float32: faster by an order of magnitude, and at least as
# accurate as the float32 product (one rounding instead of a float32 accumulation losing bits in
# gradual underflow). Other layers, and every float64 network, use the float32/float64 BLAS call
# as before, and so does everything while flush-to-zero is on (nl.backend.set_flush_denormals).
TINY_GEMM = 2.0 ** -110  # ≈ 7.7e-34: its products with |w|, |x| > 2^-16 are normal float32 numbers


if FTZ_SUPPORTED:
    @njit(**JIT)
    def flushing():
        """True when this thread flushes subnormals to zero (MXCSR FTZ and DAZ set): then no
        product is slowed by them and the float32 BLAS call is kept."""
        return (_stmxcsr() & _FTZ_DAZ) == _FTZ_DAZ
else:
    @njit(**JIT)
    def flushing():
        """Flush-to-zero is not available on this CPU."""
        return False


@njit(**JIT)
def n_tiny(E):
    """Number of entries with 0 < |e| < TINY_GEMM (a vectorised integer count)."""
    Ef = E.reshape(-1)
    c = 0
    for k in range(Ef.size):
        v = abs(np.float64(Ef[k]))
        c += (v < TINY_GEMM) & (v > 0.0)
    return c


@njit(**JIT)
def products64(X, E, W, dW, dX, tmp, mode):
    """dW = XᵀE and (mode DX_WRITE) dX = EWᵀ or (DX_ADD) dX += EWᵀ through ``tmp``, computed in
    float64 and rounded once (the subnormal-safe path of :func:`dense_backward_stored`). A
    function of its own, outside the activation dispatch, so a kernel set with user activations
    links the cached compiled code instead of compiling it again."""
    E64 = E.astype(np.float64)
    dW64 = np.empty(dW.shape)
    gemm(X.astype(np.float64), True, E64, False, dW64)
    assign2(dW, dW64)
    if mode != DX_SKIP:
        dX64 = np.empty((E.shape[0], W.shape[0]))
        gemm(E64, False, W.astype(np.float64), True, dX64)
        if mode == DX_WRITE:
            assign2(dX, dX64)
        else:
            assign2(tmp, dX64)
            put_dx(dX, tmp, mode)  # (mode is DX_ADD here; a loop: see affine_backward)


def tiny_products(X, E, W, dW, dX, tmp, mode):
    """For a float32 E holding entries below TINY_GEMM (and no flush-to-zero): :func:`products64`,
    returning True; else False, nothing done."""


@overload(tiny_products, jit_options=JIT)
def _tiny_products(X, E, W, dW, dX, tmp, mode):
    # typed per dtype: a float64 network does not compile the float64 path of float32 products
    if E.dtype != types.float32:
        def never(X, E, W, dW, dX, tmp, mode):
            return False
        return never

    def f32(X, E, W, dW, dX, tmp, mode):
        if flushing() or n_tiny(E) == 0:
            return False
        products64(X, E, W, dW, dX, tmp, mode)
        return True
    return f32


# ---------------------------------------------------------------- dense layer
@njit(**INLINE)
def dense_forward_store(ops, hp, tens, params, ws, dws, i, n, store):
    """Z = X W + b (Z = X without weights) and A = a·θ(Z) on the op's n·T rows; with ``store``
    (and a :func:`fast_code` activation) also a·θ'(Z) into the slot of E in ``dws``. Returns True
    when it stored the derivative."""
    steps = ops[i, F_T]
    m = n * steps
    nin = ops[i, F_NIN]
    nout = ops[i, F_NOUT]
    X = rview(ws, tens, ops[i, F_X], n, steps)
    Z = rview(ws, tens, ops[i, F_Z], n, steps)
    A = rview(ws, tens, ops[i, F_A], n, steps)
    w = ops[i, F_W]
    if w >= 0:
        W = params[w:w + nin * nout].reshape((nin, nout))
        gemm(X, False, W, False, Z)
    else:
        assign2(Z, X)
    b = ops[i, F_B]
    code = ops[i, F_ACT]
    p0, p1, p2, a = act_slots(ops, hp, params, i)
    fast = fast_code(ops, i)
    if fast >= 0:
        if b >= 0:  # (indexing a slice, not params[b + j]: LLVM then vectorises the loop, 3x faster)
            bias = params[b:b + nout]
            for r in range(m):
                for j in range(nout):
                    Z[r, j] = Z[r, j] + bias[j]
        fast_forward(fast, Z.reshape(-1), A.reshape(-1), rview(dws, tens, ops[i, F_Z], n, steps).reshape(-1),
                     p0, a, store)
        return store
    has_noise = ops[i, F_NOISE] >= 0
    U = rview(ws, tens, ops[i, F_NOISE] if has_noise else ops[i, F_Z], n, steps)
    for r in range(m):
        for j in range(nout):
            z = Z[r, j]
            if b >= 0:
                z += params[b + j]
                Z[r, j] = z
            u = U[r, j] if has_noise else 0.0
            A[r, j] = a * act_f(code, z, p0, p1, p2, u)
    return False


@njit(**JIT)
def dense_forward(ops, hp, tens, params, ws, i, n):
    """Z = X W + b and A = a·θ(Z), bias and activation fused in one pass."""
    dense_forward_store(ops, hp, tens, params, ws, ws, i, n, flag(0))


@njit(**INLINE)
def dense_backward_stored(ops, hp, tens, params, grads, ws, dws, i, n, stored):
    """E = dA ⊙ a·θ'(Z) (memoized in dws at Z), dW = Xᵀ E, db = Σ_rows E, dX = E Wᵀ (dX = E
    without weights), and the gradients of the learnable activation hyperparameters
    Σ dA ⊙ ∂(aθ)/∂p. With ``stored`` the slot of E already holds a·θ'(Z) (written by
    :func:`dense_forward_store`)."""
    steps = ops[i, F_T]
    m = n * steps
    nin = ops[i, F_NIN]
    nout = ops[i, F_NOUT]
    X = rview(ws, tens, ops[i, F_X], n, steps)
    Z = rview(ws, tens, ops[i, F_Z], n, steps)
    dA = rview(dws, tens, ops[i, F_A], n, steps)
    E = rview(dws, tens, ops[i, F_Z], n, steps)
    b = ops[i, F_B]
    if stored:  # E = dA ⊙ D in place (flat), then db = Σ_rows E (rows in order)
        Ef = E.reshape(-1)
        dAf = dA.reshape(-1)
        for k in range(Ef.size):
            Ef[k] = dAf[k] * Ef[k]
    else:
        code = ops[i, F_ACT]
        p0, p1, p2, a = act_slots(ops, hp, params, i)
        mask = ops[i, F_AMASK]
        has_noise = ops[i, F_NOISE] >= 0
        U = rview(ws, tens, ops[i, F_NOISE] if has_noise else ops[i, F_Z], n, steps)
        # np.int64(k) below, not a bare k: a literal argument would compile act_dp once per value
        g0 = 0.0
        g1 = 0.0
        g2 = 0.0
        ga = 0.0
        for r in range(m):
            for j in range(nout):
                z = Z[r, j]
                u = U[r, j] if has_noise else 0.0
                d = dA[r, j]
                E[r, j] = d * a * act_d(code, z, p0, p1, p2, u)
                if mask:
                    if mask & 1:
                        g0 += d * a * act_dp(code, np.int64(0), z, p0, p1, p2, u)
                    if mask & 2:
                        g1 += d * a * act_dp(code, np.int64(1), z, p0, p1, p2, u)
                    if mask & 4:
                        g2 += d * a * act_dp(code, np.int64(2), z, p0, p1, p2, u)
                    if mask & 8:
                        ga += d * act_f(code, z, p0, p1, p2, u)
        if mask:
            ap = ops[i, F_AP]
            j = 0
            if mask & 1:
                grads[ap + j] += g0
                j += 1
            if mask & 2:
                grads[ap + j] += g1
                j += 1
            if mask & 4:
                grads[ap + j] += g2
                j += 1
            if mask & 8:
                grads[ap + j] += ga
    if b >= 0:
        db = grads[b:b + nout]  # a slice, not grads[b + j]: the loop vectorises
        for j in range(nout):
            db[j] = 0.0
        for r in range(m):
            for j in range(nout):
                db[j] += E[r, j]
    mode = ops[i, F_DX]
    w = ops[i, F_W]
    if w < 0:  # an activation alone: dX = E
        put_dx(rview(dws, tens, ops[i, F_X], n, steps), E, mode)
        return
    W = params[w:w + nin * nout].reshape((nin, nout))
    dW = grads[w:w + nin * nout].reshape((nin, nout))
    affine_backward(X, E, W, dW, rview(dws, tens, ops[i, F_X], n, steps),
                    scratch(ops, tens, dws, i, n, m * nin).reshape((m, nin)) if mode == DX_ADD else E, mode)


@njit(**JIT)
def affine_backward(X, E, W, dW, dX, tmp, mode):
    """dW = Xᵀ E and dX = E Wᵀ (DX_WRITE), dX += E Wᵀ through ``tmp`` (DX_ADD) or no dX
    (DX_SKIP): the products of every op with an affine map (dense, maxout). A float32 E holding
    entries below TINY_GEMM takes :func:`products64`."""
    if tiny_products(X, E, W, dW, dX, tmp, mode):  # see TINY_GEMM: the two products in float64
        return
    gemm(X, True, E, False, dW)
    if mode == DX_WRITE:
        gemm(E, False, W, True, dX)
    elif mode == DX_ADD:
        gemm(E, False, W, True, tmp)
        put_dx(dX, tmp, mode)  # dX += tmp as a loop: an array += compiles NumPy's in-place ufunc code


@njit(**JIT)
def dense_backward(ops, hp, tens, params, grads, ws, dws, i, n):
    """E = dA ⊙ a·θ'(Z) (memoized in dws at Z), dW = Xᵀ E, db = Σ_rows E, dX = E Wᵀ, and the
    gradients of the learnable activation hyperparameters Σ dA ⊙ ∂(aθ)/∂p."""
    dense_backward_stored(ops, hp, tens, params, grads, ws, dws, i, n, flag(0))
