"""Device twins of the residual sum and the highway gate against the CPU kernels."""

import itertools
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from layer_harness import Case  # noqa: E402

import nnlab as nl  # noqa: E402
from nnlab.kernels.layout import DX_ADD, DX_SKIP, DX_WRITE, F_DX, F_DX2, F_DX3, F_KIND, KIND_ADD, KIND_GATE  # noqa: E402

MODES = (DX_SKIP, DX_WRITE, DX_ADD)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_add(dtype):
    net = nl.Sequential([nl.Residual([nl.Dense(3, 3, activation="tanh")]), nl.Dense(3, 2)], dtype=dtype)
    for m1, m2 in itertools.product(MODES, MODES):
        case = Case(net, 3, seed=3 * m1 + m2)
        i = int(np.flatnonzero(case.ops[:, F_KIND] == KIND_ADD)[0])
        case.ops[i, F_DX], case.ops[i, F_DX2] = m1, m2
        case.upload()
        case.forward(i, True, True)
        case.compare(exact=("ws", "dws", "grads", "params"))  # a sum: the same rounding
        case.backward(i)
        case.compare(exact=("ws", "dws", "grads", "params"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gate(dtype):
    net = nl.Sequential([nl.Highway(3), nl.Dense(3, 2)], dtype=dtype)
    for m1, m2, m3 in [(DX_WRITE, DX_ADD, DX_ADD), (DX_ADD, DX_WRITE, DX_SKIP), (DX_SKIP, DX_SKIP, DX_WRITE),
                       (DX_ADD, DX_ADD, DX_ADD)]:
        case = Case(net, 3, seed=m1 + 3 * m2 + 9 * m3)
        i = int(np.flatnonzero(case.ops[:, F_KIND] == KIND_GATE)[0])
        case.ops[i, F_DX], case.ops[i, F_DX2], case.ops[i, F_DX3] = m1, m2, m3
        case.upload()
        case.forward(i, False, False)
        case.compare()
        case.backward(i)
        case.compare()
