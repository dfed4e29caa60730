"""Losses: values and gradients w.r.t. the logits, against PyTorch when it is
installed and against the NumPy reference (tests/reference.py) always; extreme logits stay finite.

The logits are fed through one identity Dense layer with W = I and b = 0, so the network output is
the logits themselves and ``layer_errors[0]`` is dL/d(logits).
"""

import math

import numpy as np
import pytest
import reference as ref  # tests/ is on sys.path (conftest.py)
from hypothesis import given, settings
from hypothesis import strategies as st

import nnlab as nl
from nnlab import losses
from nnlab.errors import UnknownNameError

LOSSES = ("mse", "softmax_cross_entropy", "bce")


def identity_net(k, loss, dtype="float64"):
    net = nl.Sequential([nl.Dense(k, k, activation="identity", init="zeros")], loss=loss, dtype=dtype)
    net.params()[0][...] = np.eye(k)
    return net


def loss_and_dlogits(logits, y, loss, dtype="float64"):
    """(L, dL/dlogits, grads) computed by nnlab through an identity layer."""
    logits = np.asarray(logits, dtype=dtype)
    net = identity_net(logits.shape[1], loss, dtype)
    L, grads = net.loss_and_grads(logits, y)
    assert L == net.loss(logits, y)  # the no-gradient path gives the same value
    return L, net.layer_errors[0], grads


@st.composite
def loss_cases(draw):
    loss = draw(st.sampled_from(LOSSES))
    n = draw(st.integers(1, 7))
    k = draw(st.integers(1, 6))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 60.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    logits = rng.normal(scale=scale, size=(n, k))
    if loss == "mse":
        y = rng.normal(size=(n, k))
    elif loss == "bce":
        y = rng.uniform(size=(n, k)) if draw(st.booleans()) else rng.integers(0, 2, (n, k)).astype(float)
    else:
        y = rng.integers(0, k, n)
    return loss, logits, y


# ---------------------------------------------------------------- against the reference (no torch)
@settings(deadline=None, max_examples=60)
@given(loss_cases())
def test_loss_and_output_error_match_reference(case):
    loss, logits, y = case
    L, E, grads = loss_and_dlogits(logits, y, loss)
    rL, rE = ref.loss_and_dout(loss, logits, y)
    # cancellation (log-sum-exp minus the label's logit; p - 1 for p ~ 1) costs a few ulps of the
    # inputs' scale in absolute terms, whichever way it is computed
    big = max(1.0, float(np.abs(logits).max()))
    assert L == pytest.approx(rL, rel=1e-12, abs=1e-14 * big)
    np.testing.assert_allclose(E, rE, rtol=1e-12, atol=1e-15 * max(1.0, np.abs(rE).max()))
    # through the identity layer: dW = logits^T E, db = sum_rows E
    np.testing.assert_allclose(grads[0], logits.T @ rE, rtol=1e-10, atol=1e-12 * max(1, np.abs(logits).max()))
    np.testing.assert_allclose(grads[1], rE.sum(axis=0), rtol=1e-10, atol=1e-15)


@settings(deadline=None, max_examples=30)
@given(loss_cases())
def test_output_error_is_the_derivative_of_the_loss(case):
    """dL/dlogits against central differences of the loss value (float64)."""
    loss, logits, y = case
    logits = logits / max(1.0, np.abs(logits).max() / 5)
    net = identity_net(logits.shape[1], loss)
    net.loss_and_grads(logits, y)
    E = net.layer_errors[0]
    res = nl.gradcheck.check(lambda x: net.loss(x, y), lambda x: E, logits, name=loss)
    assert res.ok, str(res)


def test_documented_formulas_on_small_examples():
    # mse = sum of squares / (2N)
    L, E, _ = loss_and_dlogits([[1.0, 2.0], [0.0, -1.0]], [[0.0, 0.0], [0.0, 0.0]], "mse")
    assert L == pytest.approx((1 + 4 + 0 + 1) / 4)
    np.testing.assert_allclose(E, [[0.5, 1.0], [0.0, -0.5]])
    # mse with K = 1 accepts (N,) targets
    L1, _, _ = loss_and_dlogits([[3.0], [1.0]], [1.0, 1.0], "mse")
    assert L1 == pytest.approx(4 / 4)
    # softmax CE of uniform logits is log K; the gradient (p - onehot)/N
    L, E, _ = loss_and_dlogits(np.zeros((2, 4)), [1, 3], "softmax_cross_entropy")
    assert L == pytest.approx(math.log(4))
    np.testing.assert_allclose(E, [[0.125, -0.375, 0.125, 0.125], [0.125, 0.125, 0.125, -0.375]])
    # bce on logit 0 is log 2 for any target; gradient (σ(x) - y)/(N K)
    L, E, _ = loss_and_dlogits(np.zeros((1, 2)), [[0.0, 1.0]], "bce")
    assert L == pytest.approx(math.log(2))
    np.testing.assert_allclose(E, [[0.25, -0.25]])


def test_ce_labels_accepted_as_column_and_integral_floats():
    logits = np.random.default_rng(0).normal(size=(5, 3))
    labels = np.array([0, 2, 1, 1, 0])
    base = loss_and_dlogits(logits, labels, "ce")[0]
    assert loss_and_dlogits(logits, labels.reshape(-1, 1), "ce")[0] == base
    assert loss_and_dlogits(logits, labels.astype(float), "cross_entropy")[0] == base


def test_names_and_aliases():
    assert losses.names() == ["mse", "softmax_cross_entropy", "bce"]
    assert losses.canonical("ce") == losses.canonical("cross_entropy") == "softmax_cross_entropy"
    assert losses.canonical("binary_cross_entropy") == "bce"
    for bad in ("hinge", "", None, ["mse"]):
        with pytest.raises(UnknownNameError, match="unknown loss"):
            losses.canonical(bad)


# ---------------------------------------------------------------- stability
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_extreme_logits_give_finite_exact_losses(dtype):
    big = 1e4
    # CE: the right class at +1e4 costs 0; the wrong one costs 2e4 (log-sum-exp, no overflow)
    L, E, grads = loss_and_dlogits([[big, -big], [big, -big]], [0, 1], "softmax_cross_entropy", dtype)
    assert math.isfinite(L) and L == pytest.approx(big, rel=1e-6)  # (0 + 2e4)/2
    assert np.isfinite(E).all() and all(np.isfinite(g).all() for g in grads)
    np.testing.assert_allclose(E, [[0.0, 0.0], [0.5, -0.5]], atol=1e-7)
    # bce: logit +1e4 with target 1 costs 0, with target 0 costs 1e4
    L, E, grads = loss_and_dlogits([[big, -big, big, -big]], [[1.0, 0.0, 0.0, 1.0]], "bce", dtype)
    assert math.isfinite(L) and L == pytest.approx((0 + 0 + big + big) / 4, rel=1e-6)
    np.testing.assert_allclose(E, [[0.0, 0.0, 0.25, -0.25]], atol=1e-7)
    assert all(np.isfinite(g).all() for g in grads)
    # CE with all logits equal and huge is log K
    L, _, _ = loss_and_dlogits(np.full((1, 3), -big), [2], "softmax_cross_entropy", dtype)
    assert L == pytest.approx(math.log(3), rel=1e-6)


# ---------------------------------------------------------------- against PyTorch
@settings(deadline=None, max_examples=40)
@given(loss_cases())
def test_losses_match_torch(case):
    torch = pytest.importorskip("torch")
    loss, logits, y = case
    L, E, _ = loss_and_dlogits(logits, y, loss)
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    if loss == "mse":
        t = torch.nn.MSELoss(reduction="sum")(x, torch.tensor(y)) / (2 * logits.shape[0])
    elif loss == "bce":
        t = torch.nn.BCEWithLogitsLoss()(x, torch.tensor(y))
    else:
        t = torch.nn.CrossEntropyLoss()(x, torch.tensor(y, dtype=torch.int64))
    t.backward()
    assert L == pytest.approx(t.item(), rel=1e-12, abs=1e-14 * max(1.0, float(np.abs(logits).max())))
    # p - 1 for p ~ 1 cancels: an absolute error of a few ulps of 1 is all either side can promise
    np.testing.assert_allclose(E, x.grad.numpy(), rtol=1e-10, atol=1e-15 * max(1.0, np.abs(E).max()))


@pytest.mark.parametrize("big", [1e4, -1e4])
def test_extreme_logits_match_torch(big):
    torch = pytest.importorskip("torch")
    logits = np.array([[big, 0.0, -big], [0.5 * big, big, -big]])
    labels = np.array([2, 1])
    L, E, _ = loss_and_dlogits(logits, labels, "softmax_cross_entropy")
    x = torch.tensor(logits, requires_grad=True)
    t = torch.nn.CrossEntropyLoss()(x, torch.tensor(labels))
    t.backward()
    assert L == pytest.approx(t.item(), rel=1e-12)
    np.testing.assert_allclose(E, x.grad.numpy(), atol=1e-15)
    targets = np.array([[1.0, 0.0, 0.3], [0.0, 1.0, 1.0]])
    L, E, _ = loss_and_dlogits(logits, targets, "bce")
    x = torch.tensor(logits, requires_grad=True)
    t = torch.nn.BCEWithLogitsLoss()(x, torch.tensor(targets))
    t.backward()
    assert L == pytest.approx(t.item(), rel=1e-12)
    np.testing.assert_allclose(E, x.grad.numpy(), atol=1e-15)
