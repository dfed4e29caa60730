"""Helpers every layer kernel shares: views of the program's tensors, the activation slots, noise,
and writing an input gradient in the op's ``DX_*`` mode.

All module-level ``@njit`` functions over flat arrays and integer tables (see
:mod:`nnlab.kernels.layout`), so a ``numba.cuda`` twin can mirror each one.
"""

import numpy as np
from numba import carray, njit, types

from .._config import JIT
from .blas import address_table, call_i64, callback
from .layout import DX_ADD, DX_WRITE, F_AMASK, F_AP, F_NKIND, F_NOISE, F_SCRATCH, F_T, NOISE_UNIFORM

DBL_MAX = 1.7976931348623157e308  # abs(x) <= DBL_MAX is False exactly for NaN and ±inf


# dst[:] = src as explicit loops: Numba's assignment of an array to a slice compiles an error message
# formatted from both shapes, and with it Numba's string machinery (joins, repr, concatenation:
# about a tenth of a cold executor compile); a constant message says the same here, where the
# shapes agree by construction.
@njit(**JIT)
def assign1(dst, src):
    """dst[:] = src for 1-D arrays of one size."""
    if dst.shape != src.shape:
        raise ValueError("assign1: the shapes differ")
    for k in range(dst.shape[0]):
        dst[k] = src[k]


@njit(**JIT)
def assign2(dst, src):
    """dst[:, :] = src for 2-D arrays of one shape."""
    if dst.shape != src.shape:
        raise ValueError("assign2: the shapes differ")
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] = src[r, j]


@njit(**JIT)
def flag(x):
    """``x != 0`` as a plain bool. A jitted call with a constant True/False (or -1) argument is
    typed with a literal type, and Numba compiles a separate copy of the callee -- and of its whole
    call tree -- per literal value; the kernels pass ``flag(0)``/``flag(1)`` instead, so each
    executor function is compiled once (it branches on the flag at run time, outside the loops)."""
    return x != 0


@njit(**JIT)
def tview(buf, tens, t, n):
    """Tensor ``t`` of a batch of ``n`` rows as an (n, width) view of the flat buffer."""
    off = tens[t, 0] * n
    w = tens[t, 1]
    return buf[off:off + n * w].reshape((n, w))


@njit(**JIT)
def rview(buf, tens, t, n, steps):
    """Tensor ``t`` of an ``n``-row batch as (n·steps, width/steps): one row per (batch row, step)."""
    off = tens[t, 0] * n
    w = tens[t, 1]
    return buf[off:off + n * w].reshape((n * steps, w // steps))


@njit(**JIT)
def op_rows(ops, i, n):
    """Rows a row-wise op acts on: n batch rows times its steps."""
    return n * ops[i, F_T]


@njit(**JIT)
def act_slots(ops, hp, params, i):
    """(p0, p1, p2, a) of op i: fixed values from ``hp``, learnable ones from ``params``."""
    mask = ops[i, F_AMASK]
    ap = ops[i, F_AP]
    j = 0
    p0 = hp[i, 0]
    if mask & 1:
        p0 = params[ap + j]
        j += 1
    p1 = hp[i, 1]
    if mask & 2:
        p1 = params[ap + j]
        j += 1
    p2 = hp[i, 2]
    if mask & 4:
        p2 = params[ap + j]
        j += 1
    a = hp[i, 3]
    if mask & 8:
        a = params[ap + j]
    return p0, p1, p2, a


_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64: the state's increment and the output mix
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(**JIT)
def uniform_stream(U, key):
    """U[k] = the (k+1)-th output of SplitMix64 started at state ``key`` (state += γ, output =
    mix(state)), as a uniform number in [0, 1): its top 24 bits for float32 (exact, never 1.0),
    53 for float64. One counter per element and no state carried between them, so the loop is
    vectorised (~10x faster than drawing each number from Numba's Mersenne Twister)."""
    if U.itemsize == 4:
        for k in range(U.size):
            z = key + np.uint64(k + 1) * _GAMMA
            z = (z ^ (z >> np.uint64(30))) * _MIX1
            z = (z ^ (z >> np.uint64(27))) * _MIX2
            z = z ^ (z >> np.uint64(31))
            U[k] = np.float32(z >> np.uint64(40)) * np.float32(5.9604644775390625e-08)
    else:
        for k in range(U.size):
            z = key + np.uint64(k + 1) * _GAMMA
            z = (z ^ (z >> np.uint64(30))) * _MIX1
            z = (z ^ (z >> np.uint64(27))) * _MIX2
            z = z ^ (z >> np.uint64(31))
            U[k] = np.float64(z >> np.uint64(11)) * 1.1102230246251565e-16


# The noise of rrelu/noisy_relu and the dropout masks is drawn by a C callback, not by code compiled
# into the executors: most networks draw none, and the generator code (Numba's Mersenne Twister,
# its normal numbers, uniform_stream) linked into every executor cost ~7% of each one's first
# compile (the first float32 Trainer.step 19.5 -> 18.4 s, nnlab demo vanishing 9.8 -> 9.1 s). The
# callback is compiled (or loaded from Numba's cache) when a network with noise is built
# (:func:`enable_noise`), and the kernels find its address in a table, as the BLAS's
# (:mod:`nnlab.kernels.blas`). It draws from the same generator state as compiled code (Numba's
# per-thread NumPy-compatible state, seeded by the executor for each call): the same numbers.
# the callbacks for float32 and float64 noise tensors (0: not loaded)
_NOISE_TABLE, _noise_entry = address_table("nnlab_noise_table", 2)
_NOISE_CALLBACKS = {}


@njit(**JIT)
def draw_noise(U, uniform, training):
    """Fill the flat array U with an op's noise: in training U(0,1) (``uniform``) or N(0,1), else
    its eval value (0.5 or 0). Uniform noise: one 62-bit key from Numba's generator (seeded by the
    caller for the call), then :func:`uniform_stream`; normal noise: each number from Numba's
    generator."""
    if training:
        if uniform:
            uniform_stream(U, np.uint64(np.random.randint(0, 1 << 62)))
        else:
            for k in range(U.size):
                U[k] = np.random.standard_normal()
    else:
        fill = 0.5 if uniform else 0.0
        for k in range(U.size):
            U[k] = fill


def _noise_callback(U, size, uniform, training):
    """The C callback ``void f(T* U, int64 size, int64 uniform, int64 training)`` over :func:`draw_noise`."""
    draw_noise(carray(U, (size,)), uniform != 0, training != 0)


def enable_noise(dtype):
    """Compile (or load from Numba's cache) the noise callback for noise tensors of ``dtype``
    ("float32" or "float64") and put its address in the kernels' table; once per dtype and process.
    Called when a network whose program draws noise is built."""
    dt = str(np.dtype(dtype))
    if dt not in _NOISE_CALLBACKS:
        ftype = types.float32 if dt == "float32" else types.float64
        cb = callback(_noise_callback, types.void(types.CPointer(ftype), types.int64, types.int64, types.int64),
                      f"the noise generator ({dt})")
        _NOISE_CALLBACKS[dt] = cb
        _NOISE_TABLE[0 if dt == "float32" else 1] = cb.address


@njit(**JIT)
def fill_noise(ops, tens, ws, i, n, training):
    """Draw op i's noise (:func:`draw_noise`) into its noise tensor, through the callback of
    :func:`enable_noise`."""
    U = tview(ws, tens, ops[i, F_NOISE], n).reshape(-1)
    fn = _noise_entry(0 if U.itemsize == 4 else 1)
    if fn == 0:
        raise RuntimeError("the noise generator is not loaded: nnlab.kernels.common.enable_noise(dtype)")
    call_i64(fn, (U.ctypes.data, np.int64(U.size), np.int64(ops[i, F_NKIND] == NOISE_UNIFORM), np.int64(training)))


@njit(**JIT)
def put_dx(dst, src, mode):
    """dst = src (DX_WRITE) or dst += src (DX_ADD), flat arrays of one size; nothing for DX_SKIP."""
    d = dst.reshape(-1)
    s = src.reshape(-1)
    if mode == DX_WRITE:
        for k in range(d.size):
            d[k] = s[k]
    elif mode == DX_ADD:
        for k in range(d.size):
            d[k] += s[k]


@njit(**JIT)
def scratch(ops, tens, dws, i, n, size):
    """The first ``size`` elements of op i's scratch region (for a DX_ADD product), flat."""
    s = tens[ops[i, F_SCRATCH], 0] * n
    return dws[s:s + size]


@njit(**JIT)
def dx_target(dws, tens, x, n, mode, ops, i, size):
    """Where an op writes its input gradient before :func:`put_dx`-style accumulation: dws at
    tensor ``x`` itself for DX_WRITE, the op's scratch region for DX_ADD (flat, ``size``)."""
    if mode == DX_ADD:
        return scratch(ops, tens, dws, i, n, size)
    off = tens[x, 0] * n
    return dws[off:off + size]
