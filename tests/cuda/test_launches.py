"""Counting the kernel launches of a device training step (``count_launches``)."""

import numpy as np
import pytest

import nnlab as nl
from nnlab.kernels.cuda import gemm, launches
from nnlab.kernels.cuda.launches import count_launches, note
from nnlab.kernels.layout import F_KIND, KIND_DENSE

GEMM = gemm._kernel(np.float64).__name__  # the tiled product's kernel


def _net(depth):
    layers = [nl.Dense(3, 4, activation="tanh")] + [nl.Dense(4, 4, activation="tanh") for _ in range(depth - 2)]
    return nl.Sequential(layers + [nl.Dense(4, 1)], seed=0, device="cuda")


def _step_counts(depth, steps=3):
    net = _net(depth)
    X = np.random.default_rng(0).normal(size=(6, 3))
    y = X.sum(axis=1)
    tr = nl.Trainer(net, nl.optim.Adam(lr=0.01))
    counts = []
    for _ in range(steps):
        with count_launches() as c:
            tr.step(X, y)
        counts.append(c)
    dense_ops = int(np.sum(net._program(1).ops[:, F_KIND] == KIND_DENSE))
    return counts, dense_ops


def test_step_launches_are_the_same_every_step_and_grow_per_layer():
    totals = {}
    per_kernel = {}
    for depth in (2, 3, 4):
        counts, dense_ops = _step_counts(depth)
        assert dense_ops == depth
        assert all(c.total > 0 for c in counts)
        assert len({c.total for c in counts}) == 1, counts  # the same launches every step
        assert all(c.by_kernel == counts[0].by_kernel for c in counts)
        # one product forward and one for the weight gradient per dense op, one for the layer
        # error of every op but the first (the network's input needs none)
        assert counts[0].by_kernel[GEMM] == 3 * dense_ops - 1
        totals[depth] = counts[0].total
        per_kernel[depth] = counts[0].by_kernel
    # each dense layer adds the same launches; the rest of the step (input copy, loss, norm,
    # optimizer) does not depend on the depth
    per_layer = totals[3] - totals[2]
    assert per_layer > 0
    assert totals[4] - totals[3] == per_layer
    assert totals[2] - 2 * per_layer == totals[4] - 4 * per_layer
    grew = per_kernel[3] - per_kernel[2]
    assert grew == per_kernel[4] - per_kernel[3]
    assert grew[GEMM] == 3


def test_blocks_nest_and_the_launch_path_is_restored():
    net = _net(2)
    X = np.random.default_rng(1).normal(size=(4, 3))
    with count_launches() as outer:
        net.forward(X)
        with count_launches() as inner:
            net.forward(X)
            note("cublas_gemm")
        owner, attr, original = launches._restore[0]
        assert getattr(owner, attr) is not original
    assert getattr(owner, attr) is original and not launches._restore
    assert inner.by_kernel["cublas_gemm"] == outer.by_kernel["cublas_gemm"] == 1
    assert outer.total == 2 * inner.total - 1 > 1
    with count_launches() as after:
        pass
    net.forward(X)  # outside every block: counted nowhere
    assert after.total == 0 and outer.total == 2 * inner.total - 1


def test_a_block_closes_on_an_exception():
    with pytest.raises(RuntimeError):
        with count_launches():
            owner, attr, original = launches._restore[0]
            raise RuntimeError("inside")
    assert getattr(owner, attr) is original and not launches._restore and not launches._active
