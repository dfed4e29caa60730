"""Device twins of the RNN and LSTM against the CPU kernels: sequence and last-state outputs, full
and truncated BPTT, the three carry modes, every DX mode."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from layer_harness import Case  # noqa: E402

import nnlab as nl  # noqa: E402
from nnlab.kernels.layout import (  # noqa: E402
    DX_ADD,
    DX_SKIP,
    DX_WRITE,
    F_AUX,
    F_DX,
    F_KIND,
    HP_CARRY,
    KIND_LSTM,
    KIND_RNN,
)

T = 4
# (return_sequences, truncate, carry mode, DX mode, RNN activation)
CONFIGS = [
    (True, None, 1, DX_WRITE, "tanh"),
    (True, 2, 2, DX_ADD, "relu"),
    (False, 2, 0, DX_SKIP, "tanh"),
    (False, None, 2, DX_ADD, "softsign"),
]


def _run(layer, kind, dtype, carry, mode, scratch_aux, seed):
    net = nl.Sequential([layer], dtype=dtype)
    case = Case(net, 2, steps=T, seed=seed)
    i = int(np.flatnonzero(case.ops[:, F_KIND] == kind)[0])
    case.ops[i, F_DX] = mode
    case.hp[i, HP_CARRY] = carry
    case.upload()
    aux = int(case.ops[i, F_AUX])
    skip = {"ws": [case.region(aux + scratch_aux)]}  # the backward scratch
    if kind == KIND_LSTM:  # the CPU keeps W_hhᵀ in the dws region of the gate values
        skip["dws"] = [case.region(aux + 2)]
    case.forward(i, True, True)
    case.compare(skip=skip)
    case.backward(i)
    case.compare(skip=skip)
    return case


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seq,truncate,carry,mode,act", CONFIGS)
def test_rnn(dtype, seq, truncate, carry, mode, act):
    layer = nl.RNN(3, 3, activation=act, return_sequences=seq, truncate=truncate)
    _run(layer, KIND_RNN, dtype, carry, mode, 3, seed=carry + 3 * mode)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seq,truncate,carry,mode,act", CONFIGS)
def test_lstm(dtype, seq, truncate, carry, mode, act):
    layer = nl.LSTM(3, 3, return_sequences=seq, truncate=truncate)
    _run(layer, KIND_LSTM, dtype, carry, mode, 5, seed=carry + 3 * mode)
