"""nl.backend: flush-to-zero (FTZ+DAZ in the MXCSR register) on, off, scoped, and a no-op off x86;
the BLAS thread count (set_num_threads, `nnlab --threads`)."""

import os

import numpy as np
import pytest
from numba import njit

import nnlab as nl
from nnlab import backend

x86_only = pytest.mark.skipif(not backend.FTZ_SUPPORTED, reason="flush-to-zero is an x86 (SSE MXCSR) setting")

TINY = np.float32(1e-20)  # TINY * TINY = 1e-40: a float32 subnormal


@njit(cache=False)
def _product(a, b):
    return a * b


@pytest.fixture(autouse=True)
def _restore():
    """Every test leaves the thread's setting as it found it."""
    before = backend.flush_denormals_enabled()
    yield
    backend.set_flush_denormals(before)


def _subnormal(x):
    x = np.float32(x)
    return 0 < abs(x) < np.finfo(np.float32).tiny


def test_default_is_off_and_products_are_subnormal():
    assert backend.flush_denormals_enabled() is False
    assert _subnormal(_product(TINY, TINY))
    assert _subnormal(np.multiply(np.array([TINY]), TINY)[0])


@x86_only
def test_enabling_flushes_subnormal_results_in_compiled_kernels_and_numpy():
    old = backend.set_flush_denormals(True)
    assert old is False and backend.flush_denormals_enabled() is True
    assert _product(TINY, TINY) == 0.0
    assert np.multiply(np.array([TINY]), TINY)[0] == 0.0
    assert np.float64(1e-200) * np.float64(1e-120) == 0.0  # float64 too (below 2.2e-308)
    # DAZ: a subnormal input reads as zero
    sub = np.frombuffer(np.uint32(1).tobytes(), dtype=np.float32)  # the smallest float32 subnormal
    assert (sub * np.float32(2.0))[0] == 0.0
    assert backend.set_flush_denormals(False) is True
    assert backend.flush_denormals_enabled() is False
    assert _subnormal(_product(TINY, TINY))


@x86_only
def test_normal_results_are_unchanged():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=1000), rng.normal(size=1000)
    plain = a * b
    with backend.flush_denormals():
        flushed = a * b
    np.testing.assert_array_equal(plain, flushed)


@x86_only
def test_context_manager_restores_the_previous_state_even_on_exceptions():
    with backend.flush_denormals() as supported:
        assert supported is True and backend.flush_denormals_enabled()
        with backend.flush_denormals(False):
            assert not backend.flush_denormals_enabled()
            assert _subnormal(_product(TINY, TINY))
        assert backend.flush_denormals_enabled()
    assert not backend.flush_denormals_enabled()
    with pytest.raises(RuntimeError):
        with backend.flush_denormals():
            raise RuntimeError("boom")
    assert not backend.flush_denormals_enabled()
    backend.set_flush_denormals(True)
    with pytest.raises(KeyError):
        with backend.flush_denormals(False):
            raise KeyError("x")
    assert backend.flush_denormals_enabled()


@x86_only
def test_flushing_changes_a_deep_float32_sigmoid_gradient_only_below_float32_tiny():
    widths = [2] + [32] * 48
    layers = [nl.Dense(widths[i], widths[i + 1], activation="sigmoid",
                       init=nl.init.get("uniform", low=-widths[i] ** -0.5, high=widths[i] ** -0.5))
              for i in range(len(widths) - 1)] + [nl.Dense(32, 2)]
    net = nl.Sequential(layers, loss="softmax_cross_entropy", seed=0, dtype="float32")
    X, y = nl.datasets.load("moons", n=64, seed=0)
    _, plain = net.loss_and_grads(X, y)
    with backend.flush_denormals():
        _, flushed = net.loss_and_grads(X, y)
    tiny = np.finfo(np.float32).tiny
    n_sub = sum(int(np.sum((np.abs(g) > 0) & (np.abs(g) < tiny))) for g in plain)
    assert n_sub > 0
    assert sum(int(np.sum((np.abs(g) > 0) & (np.abs(g) < tiny))) for g in flushed) == 0
    for g, h in zip(plain, flushed):
        big = np.abs(g) > 1e-30  # far from the subnormal range: the same up to float32 rounding
        np.testing.assert_allclose(g[big], h[big], rtol=1e-6)


def test_non_x86_is_a_documented_no_op(monkeypatch):
    if backend.FTZ_SUPPORTED:
        monkeypatch.setattr(backend, "FTZ_SUPPORTED", False)
    assert backend.set_flush_denormals(True) is False
    assert backend.flush_denormals_enabled() is False
    with backend.flush_denormals() as supported:
        assert supported is False
        assert backend.flush_denormals_enabled() is False


@pytest.mark.skipif(backend.FTZ_SUPPORTED, reason="this machine is x86: the no-op path is only reachable elsewhere")
def test_on_this_non_x86_machine_nothing_changes():
    assert backend.set_flush_denormals(True) is False
    assert _subnormal(_product(TINY, TINY)) or _product(TINY, TINY) == 0.0  # whatever the CPU does by itself


def test_the_monitor_records_the_setting():
    net = nl.Sequential([nl.Dense(2, 4, activation="tanh"), nl.Dense(4, 2)], loss="softmax_cross_entropy", seed=0)
    mon = nl.GradientMonitor(net)
    X, y = nl.datasets.load("moons", n=16, seed=0)
    mon.observe(X, y)
    with backend.flush_denormals():
        nl.Trainer(net, "sgd", monitor=mon).step(X, y)
    assert mon.flush_denormals == [False, backend.FTZ_SUPPORTED]
    assert mon.to_dict()["flush_denormals"] == mon.flush_denormals
    assert "flush-to-zero " in mon.report()


def test_blas_thread_count_round_trip():
    before = nl.backend.get_num_threads()
    try:
        nl.backend.set_num_threads(1)
        assert nl.backend.get_num_threads() in (1, None)  # None: not a bundled OpenBLAS here
        if before is not None:
            nl.backend.set_num_threads(2)
            assert nl.backend.get_num_threads() == 2
    finally:
        nl.backend.set_num_threads(before or 1)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(nl.errors.HyperparameterError, match="threads"):
            nl.backend.set_num_threads(bad)


def test_cli_threads_option_sets_the_blas_threads(monkeypatch):
    from click.testing import CliRunner

    from nnlab_cli.main import cli

    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "7")  # restored after the test
    before = nl.backend.get_num_threads()
    try:
        res = CliRunner().invoke(cli, ["--threads", "1", "activations", "--json"])
        assert res.exit_code == 0, res.output
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
        assert nl.backend.get_num_threads() in (1, None)
        bad = CliRunner().invoke(cli, ["--threads", "0", "activations"])
        assert bad.exit_code == 2 and "--threads" in bad.output
    finally:
        nl.backend.set_num_threads(before or 1)
