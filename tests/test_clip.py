"""nnlab.clip: by value, by norm per tensor, by global norm (PyTorch semantics), transformations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnlab as nl
from nnlab.errors import DTypeError, HyperparameterError, NonFiniteError, UnknownNameError
from nnlab.kernels import optim_cpu as K

EPS = K.CLIP_EPS

arrays = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                    elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False))
grad_lists = st.lists(arrays, min_size=1, max_size=4)
max_norms = st.floats(1e-3, 1e3)


def norm(grads):
    """The float64 global norm, scaled by the largest |g| (no overflow or underflow)."""
    flat = np.concatenate([np.asarray(g, np.float64).ravel() for g in grads])
    m = float(np.max(np.abs(flat))) if flat.size else 0.0
    return m * float(np.sqrt(np.sum((flat / m) ** 2))) if m > 0 else 0.0


# ---------------------------------------------------------------- properties
@settings(deadline=None, max_examples=100)
@given(grads=grad_lists, max_norm=max_norms)
def test_global_norm_clip_bounds_the_norm_and_keeps_the_direction(grads, max_norm):
    before = [g.copy() for g in grads]
    total = nl.clip.by_global_norm(grads, max_norm)
    assert total == pytest.approx(norm(before), rel=1e-12, abs=1e-300)
    assert norm(grads) <= max_norm * (1 + 1e-12)
    coef = min(1.0, max_norm / (total + EPS))
    for a, b in zip(grads, before):  # one common factor in (0, 1]: the direction is kept
        np.testing.assert_allclose(a, coef * b, rtol=1e-14, atol=1e-300)
    if total <= max_norm - EPS:
        for a, b in zip(grads, before):
            np.testing.assert_array_equal(a, b)


@settings(deadline=None, max_examples=100)
@given(grads=grad_lists, max_norm=max_norms)
def test_clipping_twice_equals_clipping_once(grads, max_norm):
    """Exactly for clip-by-value; to a relative 10⁻⁶/max_norm for the norms (PyTorch's +1e-6)."""
    once = [g.copy() for g in grads]
    nl.clip.by_global_norm(once, max_norm)
    twice = [g.copy() for g in once]
    nl.clip.by_global_norm(twice, max_norm)
    for a, b in zip(once, twice):
        np.testing.assert_allclose(b, a, rtol=2 * EPS / max_norm, atol=1e-300)
    once = [g.copy() for g in grads]
    nl.clip.by_norm(once, max_norm)
    twice = [g.copy() for g in once]
    nl.clip.by_norm(twice, max_norm)
    for a, b in zip(once, twice):
        np.testing.assert_allclose(b, a, rtol=2 * EPS / max_norm, atol=1e-300)
    once = [g.copy() for g in grads]
    nl.clip.by_value(once, max_norm)
    twice = [g.copy() for g in once]
    nl.clip.by_value(twice, max_norm)
    for a, b in zip(once, twice):
        np.testing.assert_array_equal(a, b)


@settings(deadline=None, max_examples=60)
@given(grads=grad_lists, max_norm=max_norms)
def test_by_norm_clips_each_tensor_separately(grads, max_norm):
    before = [g.copy() for g in grads]
    norms = nl.clip.by_norm(grads, max_norm)
    for a, b, n in zip(grads, before, norms):
        assert n == pytest.approx(norm([b]), rel=1e-12, abs=1e-300)
        assert norm([a]) <= max_norm * (1 + 1e-12)
        np.testing.assert_allclose(a, min(1.0, max_norm / (n + EPS)) * b, rtol=1e-14, atol=1e-300)


@settings(deadline=None, max_examples=60)
@given(grads=grad_lists, c=st.floats(0, 1e3))
def test_by_value_is_numpy_clip(grads, c):
    expected = [np.clip(g, -c, c) for g in grads]
    nl.clip.by_value(grads, c)
    for a, b in zip(grads, expected):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- details
def test_float32_and_non_contiguous_in_place():
    base = np.full((4, 4), 3.0, dtype=np.float32)
    view = base[::2, ::2]  # non-contiguous: clipped through a copy, written back
    total = nl.clip.by_global_norm([view], 1.0)
    assert total == pytest.approx(6.0)
    np.testing.assert_allclose(base[::2, ::2], 3.0 / (6.0 + EPS), rtol=1e-6)
    assert base[1, 1] == 3.0 and base.dtype == np.float32


def test_norm_accumulates_in_float64():
    g = np.full(4, 1e20, dtype=np.float32)  # g² overflows float32
    assert nl.clip.by_global_norm([g], 1.0) == pytest.approx(2e20, rel=1e-6)
    assert np.all(np.isfinite(g)) and np.linalg.norm(g.astype(np.float64)) <= 1.0


def test_nonfinite_norm():
    g = [np.array([1.0, 2.0]), np.array([np.nan])]
    with pytest.raises(NonFiniteError):
        nl.clip.by_global_norm(g, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(g[0], [1.0, 2.0])  # nothing touched
    assert np.isnan(nl.clip.by_global_norm(g, 1.0))
    np.testing.assert_array_equal(g[0], [1.0, 2.0])  # left unchanged, the NaN norm is reported
    g = [np.array([np.inf, 3.0])]
    assert nl.clip.by_global_norm(g, 1.0) == np.inf
    nl.clip.by_value(g, 2.0)
    np.testing.assert_array_equal(g[0], [2.0, 2.0])


@pytest.mark.parametrize("bad", [[np.array([1, 2])], [[1.0, 2.0]], [np.array([1 + 1j])]])
def test_bad_grads(bad):
    with pytest.raises(DTypeError):
        nl.clip.by_global_norm(bad, 1.0)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "1", None, True])
def test_bad_thresholds(value):
    g = [np.ones(3)]
    for fn in (nl.clip.by_value, nl.clip.by_norm, nl.clip.by_global_norm):
        with pytest.raises(HyperparameterError):
            fn(g, value)
    np.testing.assert_array_equal(g[0], 1.0)


def test_read_only_grads():
    g = np.ones(3)
    g.flags.writeable = False
    with pytest.raises(DTypeError, match="read-only"):
        nl.clip.by_value([g], 0.5)


# ---------------------------------------------------------------- transformations
def test_get_and_transformations():
    assert nl.clip.get(None) is None
    t = nl.clip.get(("global_norm", 1.0))
    assert isinstance(t, nl.clip.ClipByGlobalNorm) and t.kind == K.CLIP_GLOBAL_NORM and t.value == 1.0
    assert nl.clip.get(t) is t
    assert isinstance(nl.clip.get(("value", 0.5)), nl.clip.ClipByValue)
    assert isinstance(nl.clip.get(("by_norm", 2)), nl.clip.ClipByNorm)
    with pytest.raises(UnknownNameError):
        nl.clip.get(("spectral", 1.0))
    with pytest.raises(HyperparameterError):
        nl.clip.get("global_norm")
    with pytest.raises(HyperparameterError):
        nl.clip.get(("value", -1))
    assert nl.clip.names() == ["value", "norm", "global_norm"]


def test_chain_and_last_norm():
    g = [np.array([10.0, 0.0]), np.array([0.0, -10.0])]
    chain = nl.clip.Chain(("value", 3.0), nl.clip.ClipByGlobalNorm(1.0))
    out = chain(g)
    assert out is g
    assert chain.last_norm == pytest.approx(np.sqrt(200.0))
    np.testing.assert_allclose(np.concatenate(g), [1 / np.sqrt(2), 0, 0, -1 / np.sqrt(2)], rtol=1e-5)


@pytest.mark.parametrize("spec", [("value", 0.3), ("norm", 0.5), ("global_norm", 0.5)])
def test_clip_flat_kernel_matches_list_functions(spec):
    """The fused-step kernel over a flat buffer with tensor offsets = the list functions."""
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=s) for s in ((3, 4), (4,), (4, 2))]
    flat = np.concatenate([g.ravel() for g in grads])
    offsets = np.cumsum([0] + [g.size for g in grads]).astype(np.int64)
    t = nl.clip.get(spec)
    total = K.clip_flat(t.kind, t.value, flat, offsets)
    t(grads)
    assert total == pytest.approx(t.last_norm, rel=1e-14)
    np.testing.assert_allclose(flat, np.concatenate([g.ravel() for g in grads]), rtol=1e-15)
