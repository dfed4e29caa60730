"""Device twins of the maxout and RBF layers against the CPU kernels."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from layer_harness import Case  # noqa: E402

import nnlab as nl  # noqa: E402
from nnlab.kernels.layout import DX_ADD, DX_SKIP, DX_WRITE, F_B, F_DX, F_KIND, F_W, F_Z, KIND_MAXOUT, KIND_RBF  # noqa: E402


def _case(net, kind, mode, seed, n=5, **kw):
    case = Case(net, n, seed=seed, **kw)
    i = int(np.flatnonzero(case.ops[:, F_KIND] == kind)[0])
    case.ops[i, F_DX] = mode
    case.upload()
    return case, i


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_maxout(dtype):
    """Every DX mode (DX_ADD through the op's scratch tensor), with ties (forward and backward) and
    a NaN piece."""
    net = nl.Sequential([nl.Dense(3, 4), nl.Maxout(4, 3, k=3), nl.Dense(3, 2)], dtype=dtype)
    for mode in (DX_WRITE, DX_ADD, DX_SKIP):
        case, i = _case(net, KIND_MAXOUT, mode, seed=mode, scratch=4)
        W = case.store[case.ops[i, F_W]:case.ops[i, F_W] + 4 * 9].reshape(4, 9)
        W[:, 1] = W[:, 0]  # unit 0: pieces 0 and 1 tie on every row (the first wins)
        b = case.store[case.ops[i, F_B]:case.ops[i, F_B] + 9]
        b[:] = 0.0
        case.upload()
        case.forward(i, True, False)
        lo, _ = case.region(case.ops[i, F_Z])
        assert (case.ws[lo:lo + 45:9] == case.ws[lo + 1:lo + 45:9]).all()
        lo, _ = case.region(case.ops[i, F_Z])
        z = case.ws[lo:lo + 9]  # row 0: unit 0 ties, unit 1 has a NaN piece (the CPU wrote these)
        z[1] = z[2] = z[0] + 1
        z[4] = np.nan
        case.dev.ws.copy_to_device(case.ws)
        case.compare()
        case.backward(i)
        case.compare()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("learnable", [False, True])
def test_rbf(dtype, learnable):
    net = nl.Sequential([nl.Dense(3, 4), nl.RBF(4, 5, learnable_gamma=learnable), nl.Dense(5, 2)], dtype=dtype)
    for mode in ((DX_WRITE, DX_ADD) if learnable else (DX_SKIP, DX_WRITE)):
        case, i = _case(net, KIND_RBF, mode, seed=mode)
        w = case.ops[i, F_W]
        case.store[w:w + 20] *= 0.5  # centres near the inputs: A well away from 0
        case.upload()
        case.forward(i, True, True)
        case.compare()
        case.backward(i)
        case.compare()
