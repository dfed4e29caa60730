"""Device gradient clipping (nnlab.kernels.cuda.clip.clip_flat) against optim_cpu.clip_flat: every kind,
float32 and float64, ordinary, huge (near the dtype's largest value) and tiny (subnormal) gradients,
an infinite and a NaN entry; several blocks and partial blocks. Run with ``NUMBA_ENABLE_CUDASIM=1``."""

import contextlib
import warnings

import numpy as np
import pytest

from nnlab.errors import DeviceError
from nnlab.kernels.cuda.device import cuda as find_cuda

try:
    cuda = find_cuda()
except DeviceError as exc:
    pytest.skip(f"the device kernels need a GPU or NUMBA_ENABLE_CUDASIM=1: {exc}", allow_module_level=True)

from nnlab.kernels import optim_cpu as K  # noqa: E402
from nnlab.kernels.cuda import clip as GC  # noqa: E402
from nnlab.kernels.cuda import reduce as GR  # noqa: E402

OFFSETS = np.array([0, 3, 10, 11, 19], np.int64)  # tensors of 3, 7, 1 and 8 entries
KINDS = {"none": K.CLIP_NONE, "value": K.CLIP_VALUE, "norm": K.CLIP_NORM, "global_norm": K.CLIP_GLOBAL_NORM}


@contextlib.contextmanager
def quiet_overflow():
    """The simulator's NumPy scalars warn on overflow in the kernel's threads (squares of an inf)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def gradients(scale, dtype, seed=0):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(OFFSETS[-1]) * scale
    g[4] = 0.0
    return g.astype(dtype)


def scales(dtype):
    info = np.finfo(dtype)
    return {
        "ordinary": 3.0,
        "huge": float(info.max) / 8,           # Σg² overflows float64 for float64, and its squares do
        "tiny": float(info.smallest_subnormal) * 8 if dtype == np.float64 else 1e-40,  # Σg² underflows
        "mixed_huge_and_small": None,
    }


def run_both(kind, value, g):
    g_cpu = g.copy()
    with quiet_overflow():
        n_cpu = K.clip_flat(kind, value, g_cpu, OFFSETS)
    d = cuda.to_device(g)
    with quiet_overflow():
        n_dev = GC.clip_flat(kind, value, d, OFFSETS)
    return n_cpu, n_dev, g_cpu, d.copy_to_host()


def close(a, b, dtype):
    # float64: the same terms added in another order; float32: one extra float32 rounding of a
    # scaled entry (the coefficient is rounded to float32 before the product)
    np.testing.assert_allclose(a, b, rtol=1e-13 if dtype == np.float64 else 2.5e-7, atol=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("which", ["ordinary", "huge", "tiny", "mixed_huge_and_small"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_clip_matches_cpu(kind, which, dtype):
    s = scales(dtype)[which]
    if s is None:  # one tensor of huge entries, the others ordinary: only the scaled pass is exact
        g = gradients(1.0, dtype)
        g[OFFSETS[1]:OFFSETS[2]] *= float(np.finfo(dtype).max) / 16
    else:
        g = gradients(s, dtype)
    value = 0.5 if which == "ordinary" else (float(np.finfo(dtype).max) / 1e3 if s is None or s > 1 else 1e-300)
    n_cpu, n_dev, g_cpu, g_dev = run_both(KINDS[kind], value, g)
    assert np.isfinite(n_cpu) and n_cpu > 0  # the scaled second pass: neither inf nor 0
    np.testing.assert_allclose(n_dev, n_cpu, rtol=1e-13)
    close(g_dev, g_cpu, dtype)
    if kind == "none":
        assert np.array_equal(g_dev, g)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_clipping_changes_what_it_should(kind, dtype):
    """Ordinary gradients above the threshold are clipped (so the comparison above compares work done)."""
    g = gradients(3.0, dtype)
    n_cpu, n_dev, g_cpu, g_dev = run_both(KINDS[kind], 0.5, g)
    if kind == "none":
        assert np.array_equal(g_dev, g)
    else:
        assert not np.array_equal(g_dev, g)
    if kind == "value":
        assert np.max(np.abs(g_dev)) == np.float32(0.5)
    if kind == "global_norm":
        assert abs(np.sqrt(np.sum(g_dev.astype(np.float64) ** 2)) - 0.5) < 1e-5


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("kind", list(KINDS))
def test_nonfinite_entry(kind, bad, dtype):
    """An inf entry gives an infinite norm (a NaN entry a NaN norm) on both; a norm clip leaves the
    gradient alone (coefficient 1), value clipping still clamps."""
    g = gradients(3.0, dtype)
    g[12] = bad
    n_cpu, n_dev, g_cpu, g_dev = run_both(KINDS[kind], 0.5, g)
    if np.isnan(bad):
        assert np.isnan(n_cpu) and np.isnan(n_dev)
    else:
        assert n_cpu == n_dev == np.inf
    close(g_dev, g_cpu, dtype)  # (per-tensor clipping still scales the finite tensors)
    if kind in ("global_norm", "none"):
        assert np.array_equal(g_dev, g, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_norms_of_extreme_segments(dtype):
    """The per-tensor norms, each from the device reductions with the CPU's rule, = norm2 per tensor."""
    info = np.finfo(dtype)
    g = gradients(1.0, dtype)
    g[0:3] = [info.max / 2, -info.max / 3, 0.0]
    g[3:10] *= info.smallest_subnormal * 4
    g[10] = 0.0
    d = cuda.to_device(g)
    with quiet_overflow():
        sq = GR.seg_sq(d, OFFSETS)
        norms = GR.norms_from_sq(sq, d, OFFSETS)
    want = [K.norm2(g[a:b]) for a, b in zip(OFFSETS[:-1], OFFSETS[1:])]
    np.testing.assert_allclose(norms, want, rtol=1e-14)
    assert norms[2] == 0.0 and np.all(np.isfinite(norms)) and np.all(norms[[0, 1, 3]] > 0)
    assert GR.max_abs(d) == np.float64(info.max / 2).astype(dtype)


def test_empty_offsets_and_value_clip_outside():
    """No tensors: norm 0; value clipping clamps the whole buffer, as on the CPU."""
    g = np.array([3.0, -4.0, 0.25])
    d = cuda.to_device(g)
    g_cpu = g.copy()
    assert K.clip_flat(K.CLIP_VALUE, 1.0, g_cpu, np.zeros(1, np.int64)) == 0.0
    assert GC.clip_flat(K.CLIP_VALUE, 1.0, d, np.zeros(1, np.int64)) == 0.0
    assert np.array_equal(d.copy_to_host(), g_cpu)
