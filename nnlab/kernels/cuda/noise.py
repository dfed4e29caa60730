"""Training noise on the device, the same numbers as on the CPU.

The CPU executor (:func:`nnlab.kernels.common.fill_noise`) seeds Numba's generator once per call
and draws, for each noisy op in order, one 62-bit key (uniform noise, then expanded by the
SplitMix64 stream :func:`nnlab.kernels.common.uniform_stream`) or one normal number per element.
Here a small compiled CPU function (:func:`draw`) makes exactly those draws from the same
generator, so the keys and the normal numbers are the CPU's; the uniform stream is then expanded
on the device by :func:`uniform`, the same integer arithmetic as the CPU's (the masks agree bit for
bit), and the normal numbers are copied. :func:`fill_pass` does all of it for one forward pass of
a device program (the executor calls it before running the ops); in eval each noise tensor gets
the CPU's eval value (0.5 uniform, 0 normal).
"""

import warnings

import numpy as np
from numba import cuda, njit

from ..._config import JIT
from ..layout import F_NKIND, F_NOISE, NOISE_UNIFORM
from . import elementwise
from .device import blocks, simulated, threads_per_block

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S40 = np.uint64(40)
_S11 = np.uint64(11)


@njit(**JIT)
def draw(seed, kinds, sizes, keys, normals):
    """The draws of one call's noisy ops in order (as ``fill_noise`` makes them): ``seed`` >= 0
    reseeds Numba's generator first; op j (``kinds[j]``) gets ``keys[j]`` (uniform) or
    ``sizes[j]`` normal numbers, written one op after the other into ``normals``."""
    if seed >= 0:
        np.random.seed(seed)
    o = 0
    for j in range(kinds.size):
        if kinds[j] == NOISE_UNIFORM:
            keys[j] = np.random.randint(0, 1 << 62)
        else:
            for k in range(sizes[j]):
                normals[o + k] = np.random.standard_normal()
            o += sizes[j]


@cuda.jit
def _uniform32(U, key):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for k in range(start, U.size, stride):
        z = key + np.uint64(k + 1) * _GAMMA
        z = (z ^ (z >> _S30)) * _MIX1
        z = (z ^ (z >> _S27)) * _MIX2
        z = z ^ (z >> _S31)
        U[k] = np.float32(z >> _S40) * np.float32(5.9604644775390625e-08)


@cuda.jit
def _uniform64(U, key):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for k in range(start, U.size, stride):
        z = key + np.uint64(k + 1) * _GAMMA
        z = (z ^ (z >> _S30)) * _MIX1
        z = (z ^ (z >> _S27)) * _MIX2
        z = z ^ (z >> _S31)
        U[k] = np.float64(z >> _S11) * 1.1102230246251565e-16


def uniform(U, key, stream=0):
    """U[k] = the (k+1)-th output of SplitMix64 from state ``key`` as a uniform number in [0, 1)
    (the twin of ``common.uniform_stream``; flat device array U)."""
    tpb = threads_per_block()
    k = _uniform32 if U.dtype == np.float32 else _uniform64
    if simulated():  # the simulator runs the kernel on NumPy scalars, which warn where uint64 wraps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            k[blocks(U.size, tpb), tpb, stream](U, np.uint64(key))
        return
    k[blocks(U.size, tpb), tpb, stream](U, np.uint64(key))


def fill_pass(prog, n, training, seed):
    """Every noise tensor of the device program ``prog`` for one forward pass of an ``n``-row batch,
    as the CPU's ``forward_store`` fills them (``seed`` < 0 leaves the generator unseeded)."""
    ops = prog.ops
    noisy = [i for i in range(ops.shape[0]) if ops[i, F_NOISE] >= 0]
    if not noisy:
        return
    kinds = np.array([ops[i, F_NKIND] for i in noisy], np.int64)
    sizes = np.array([prog.flat(prog.ws, int(ops[i, F_NOISE]), n).size for i in noisy], np.int64)
    if not training:
        for i, kind in zip(noisy, kinds):
            elementwise.fill(prog.flat(prog.ws, int(ops[i, F_NOISE]), n), 0.5 if kind == NOISE_UNIFORM else 0.0,
                             prog.stream)
        return
    keys = np.zeros(len(noisy), np.int64)
    normals = np.zeros(int(sizes[kinds != NOISE_UNIFORM].sum()), prog.dtype)
    draw(np.int64(seed), kinds, sizes, keys, normals)
    o = 0
    for j, i in enumerate(noisy):
        U = prog.flat(prog.ws, int(ops[i, F_NOISE]), n)
        if kinds[j] == NOISE_UNIFORM:
            uniform(U, int(keys[j]), prog.stream)
        else:
            U.copy_to_device(normals[o:o + sizes[j]], stream=prog.stream)
            o += int(sizes[j])


def signatures(dtype):
    t = "float32" if np.dtype(dtype) == np.float32 else "float64"
    return {"uniform": f"void({t}[::1], uint64)"}


def kernel(dtype):
    return _uniform32 if np.dtype(dtype) == np.float32 else _uniform64
