"""Device twins of batch and layer normalisation against the CPU kernels."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from layer_harness import Case  # noqa: E402

import nnlab as nl  # noqa: E402
from nnlab.kernels.layout import DX_ADD, DX_SKIP, DX_WRITE, F_DX, F_KIND, KIND_BATCHNORM, KIND_LAYERNORM  # noqa: E402


def _case(net, kind, mode, seed, n=5, steps=1):
    case = Case(net, n, steps=steps, seed=seed)
    i = int(np.flatnonzero(case.ops[:, F_KIND] == kind)[0])
    case.ops[i, F_DX] = mode
    case.upload()
    return case, i


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batchnorm(dtype):
    """Batch statistics (training, with and without the running-statistics update) and running
    statistics (eval), every DX mode; 5 rows and 6 features over blocks of 4 threads."""
    net = nl.Sequential([nl.Dense(3, 6), nl.BatchNorm(6), nl.Dense(6, 2)], dtype=dtype)
    for mode, training, store in [(DX_WRITE, True, True), (DX_ADD, True, False), (DX_SKIP, False, True),
                                  (DX_ADD, False, False)]:
        case, i = _case(net, KIND_BATCHNORM, mode, seed=mode + 3 * training + 7 * store)
        before = case.store.copy()
        case.forward(i, training, store)
        case.compare()
        assert (case.store != before).any() == (training and store)  # the running statistics moved
        case.backward(i)
        case.compare()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batchnorm_on_sequence_rows(dtype):
    """Statistics over the N·T rows of a sequence."""
    net = nl.Sequential([nl.LSTM(2, 3, return_sequences=True), nl.BatchNorm(3)], dtype=dtype)
    case, i = _case(net, KIND_BATCHNORM, DX_WRITE, seed=5, n=2, steps=3)
    case.forward(i, True, True)
    case.compare()
    case.backward(i)
    case.compare()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layernorm(dtype):
    net = nl.Sequential([nl.Dense(3, 7), nl.LayerNorm(7), nl.Dense(7, 2)], dtype=dtype)
    for mode, training in [(DX_WRITE, True), (DX_ADD, False), (DX_SKIP, True)]:
        case, i = _case(net, KIND_LAYERNORM, mode, seed=mode)
        case.forward(i, training, True)
        case.compare()
        case.backward(i)
        case.compare()
