"""Device twins of the dropout kinds and of the program's noise against the CPU kernels."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from layer_harness import CUDA, Case, noisy_ops  # noqa: E402

import nnlab as nl  # noqa: E402
from nnlab.kernels import common, cpu  # noqa: E402
from nnlab.kernels.cuda import dropout as dd  # noqa: E402
from nnlab.kernels.cuda import noise  # noqa: E402
from nnlab.kernels.layout import (  # noqa: E402
    DX_ADD,
    DX_SKIP,
    DX_WRITE,
    F_DX,
    F_KIND,
    F_NOISE,
    KIND_ALPHA_DROPOUT,
    KIND_DROPOUT,
)

# the SplitMix64 stream multiplies uint64 values modulo 2^64 on purpose; the simulator runs it with
# NumPy scalars, which warn about that wrap-around
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

DTYPES = ["float32", "float64"]


def _net(dtype, p=0.3):
    return nl.Sequential([nl.Dense(3, 5, activation="rrelu"), nl.Dropout(p), nl.Dense(5, 4, activation="noisy_relu"),
                          nl.AlphaDropout(0.2), nl.Dense(4, 2)], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_stream_matches_cpu_bit_for_bit(dtype):
    key = np.uint64(0x2F3A5B7C9D1E4F60)
    host = np.empty(11, dtype)
    common.uniform_stream(host, key)
    d = CUDA.to_device(np.zeros(11, dtype))
    noise.kernel(dtype)[3, 4](d, key)
    got = d.copy_to_host()
    np.testing.assert_array_equal(got, host)
    assert 0.0 <= got.min() and got.max() < 1.0 and len(set(got.tolist())) == 11


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
def test_noise_of_a_pass_matches_cpu_forward(dtype, training):
    """noise.fill_pass gives every noisy op the noise the CPU's forward pass draws (uniform and
    normal noise interleaved in op order), bit for bit."""
    net = _net(dtype)
    n, seed = 3, 1234
    case = Case(net, n)
    X = np.random.default_rng(1).standard_normal((n, 3)).astype(dtype)
    cpu.run_forward(case.ops, case.hp, case.tens, case.store, case.ws, X, training, seed)
    noise.fill_pass(case.dev, n, training, seed)
    ops = noisy_ops(case.ops)
    assert len(ops) == 4
    ws = case.dev.ws.copy_to_host()
    for i in ops:
        lo, hi = case.region(case.ops[i, F_NOISE])
        np.testing.assert_array_equal(ws[lo:hi], case.ws[lo:hi])
    if training:  # the two dropout ops got different streams (a key per op)
        drop = [case.region(case.ops[i, F_NOISE]) for i in ops
                if case.ops[i, F_KIND] in (KIND_DROPOUT, KIND_ALPHA_DROPOUT)]
        assert len(drop) == 2
        (a0, a1), (b0, b1) = drop
        m = min(a1 - a0, b1 - b0)
        assert not np.array_equal(ws[a0:a0 + m], ws[b0:b0 + m])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", [KIND_DROPOUT, KIND_ALPHA_DROPOUT])
def test_dropout_forward_backward(dtype, kind):
    net = _net(dtype, p=0.3)
    for mode in (DX_WRITE, DX_ADD, DX_SKIP):
        for training, store in ((True, True), (True, False), (False, True), (False, False)):
            case = Case(net, 3, seed=mode)
            i = int(np.flatnonzero(case.ops[:, F_KIND] == kind)[0])
            case.ops[i, F_DX] = mode
            case.upload()
            case.noise(i, training, 77)
            assert case.forward(i, training, store) is False
            # the mask and the multipliers bit for bit; A within a rounding (the CPU rounds x·s once
            # from float64)
            case.compare(exact=("dws", "grads", "params"))
            if store:
                case.backward(i)
                case.compare(exact=("grads", "params"))


def test_threshold_is_the_float64_comparison():
    for p in (0.1, 0.3, 0.5, 1 / 3, 0.7, 0.9):
        t = dd.threshold(p, np.float32)
        below = np.nextafter(t, np.float32(0))
        assert float(t) >= p > float(below)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_without_noise_is_the_identity(dtype):
    """p = 0 lowers an op without a noise tensor: A = X and dX = dA in both modes."""
    net = nl.Sequential([nl.Dense(3, 4), nl.Dropout(0.0), nl.AlphaDropout(0.0), nl.Dense(4, 2)], dtype=dtype)
    for mode, training in ((DX_WRITE, True), (DX_ADD, False)):
        case = Case(net, 3, seed=mode)
        ops = [int(i) for i in np.flatnonzero(np.isin(case.ops[:, F_KIND], (KIND_DROPOUT, KIND_ALPHA_DROPOUT)))]
        assert len(ops) == 2 and (case.ops[ops, F_NOISE] < 0).all()
        for i in ops:
            case.ops[i, F_DX] = mode
        case.upload()
        for i in ops:
            case.forward(i, training, True)
        case.compare(exact=("ws", "dws", "grads", "params"))
        for i in ops[::-1]:
            case.backward(i)
        case.compare(exact=("ws", "dws", "grads", "params"))
