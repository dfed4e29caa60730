"""The cuBLAS matrix product's wiring, under the simulator with a stand-in for CuPy
(``fake_cupy.py``): which product runs (``set_gemm``, ``NNLAB_CUDA_GEMM``, ``info()``), the
transposes, beta accumulation, the stream handed over, and the errors. cuBLAS itself does not run
here: the stand-in computes with NumPy."""

import sys

import numpy as np
import pytest
from fake_cupy import FakeCupy

import nnlab as nl
from nnlab.errors import DeviceError, HyperparameterError
from nnlab.kernels.cuda import device as D
from nnlab.kernels.cuda import gemm as G
from nnlab.kernels.cuda.launches import count_launches

TILED = G._kernel(np.float64).__name__


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch):
    """Each test starts from the default request, and leaves the process as it found it."""
    monkeypatch.setattr(D, "_GEMM", [None])
    monkeypatch.setattr(D, "_GEMM_RESOLVED", [None])
    monkeypatch.setattr(G, "_streams", {})
    monkeypatch.delenv("NNLAB_CUDA_GEMM", raising=False)


@pytest.fixture
def cupy(monkeypatch):
    fake = FakeCupy()
    monkeypatch.setitem(sys.modules, "cupy", fake)
    return fake


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError


def _operands(rng, m, n, k, ta, tb, dtype):
    A = rng.normal(size=(k, m) if ta else (m, k)).astype(dtype)
    B = rng.normal(size=(n, k) if tb else (k, n)).astype(dtype)
    C = rng.normal(size=(m, n)).astype(dtype)
    return A, B, C


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_products_go_through_cublas_gemm_with_the_transposes_and_beta(cupy, dtype):
    from numba import cuda

    nl.backend.set_gemm("cublas")
    rng = np.random.default_rng(0)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    cases = [(ta, tb, beta) for ta in (False, True) for tb in (False, True) for beta in (0.0, 1.0)]
    for ta, tb, beta in cases:
        A, B, C = _operands(rng, 5, 3, 4, ta, tb, dtype)
        dA, dB, dC = cuda.to_device(A), cuda.to_device(B), cuda.to_device(C)
        with count_launches() as c:
            G.gemm(dA, ta, dB, tb, dC, beta=beta)
        want = (A.T if ta else A) @ (B.T if tb else B) + beta * C
        np.testing.assert_allclose(dC.copy_to_host(), want, **tol)
        assert c.by_kernel["cublas_gemm"] == 1 and c.by_kernel[TILED] == 0
        call = cupy.calls[-1]
        assert (call["transa"], call["transb"]) == ("T" if ta else "N", "T" if tb else "N")
        assert call["a"] == A.shape and call["b"] == B.shape and call["out"] == C.shape
        assert call["alpha"] == 1.0 and call["beta"] == beta
    assert len(cupy.calls) == len(cases)


def test_row_views_are_wrapped_without_a_copy(cupy):
    """Row slices of a larger device array (the workspace's tensors are such views): the product
    lands in the slice, the rows around it keep their values."""
    from numba import cuda

    nl.backend.set_gemm("cublas")
    rng = np.random.default_rng(1)
    big = rng.normal(size=(8, 3))
    A, B = rng.normal(size=(4, 2)), rng.normal(size=(2, 3))
    dbig = cuda.to_device(big)
    G.gemm(cuda.to_device(A), False, cuda.to_device(B), False, dbig[2:6])
    want = big.copy()
    want[2:6] = A @ B
    np.testing.assert_allclose(dbig.copy_to_host(), want, rtol=1e-12)


def test_cublas_runs_on_the_callers_stream(cupy):
    from numba import cuda

    class Stream:  # a numba stream's int() is its CUDA handle
        def __int__(self):
            return 4242

    nl.backend.set_gemm("cublas")
    A = cuda.to_device(np.ones((2, 2)))
    C = cuda.device_array((2, 2))
    G.gemm(A, False, A, False, C, stream=Stream())
    G.gemm(A, False, A, False, C, stream=Stream())
    G.gemm(A, False, A, False, C)
    assert [c["stream"] for c in cupy.calls] == [4242, 4242, 0]
    assert cupy.streams == [4242, 0]  # one ExternalStream per handle, reused


def test_a_network_on_cublas_matches_the_cpu(cupy):
    """Every product of a training step (forward, weight gradients, layer errors; the RNN's
    recurrent products accumulate with beta = 1) through the cuBLAS path."""
    nl.backend.set_gemm("cublas")
    layers = lambda: [nl.RNN(2, 3, return_sequences=True), nl.Dense(3, 2, activation="tanh"),  # noqa: E731
                      nl.Dense(2, 1)]
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3, 4, 2))
    y = rng.normal(size=(3, 4, 1))
    a = nl.Sequential(layers(), loss="mse", seed=1)
    b = nl.Sequential(layers(), loss="mse", seed=1, device="cuda")
    with count_launches() as c:
        lb, gb = b.loss_and_grads(X, y)
    la, ga = a.loss_and_grads(X, y)
    np.testing.assert_allclose(lb, la, rtol=1e-11)
    for name, p, q in zip(a.param_names(), ga, gb):
        np.testing.assert_allclose(q, p, rtol=1e-10, atol=1e-12, err_msg=name)
    assert c.by_kernel[TILED] == 0 and c.by_kernel["cublas_gemm"] == len(cupy.calls) > 0
    assert any(call["beta"] == 1.0 for call in cupy.calls)  # the recurrent accumulation
    assert any(call["transa"] == "T" for call in cupy.calls) and any(call["transb"] == "T" for call in cupy.calls)
    assert nl.backend.info()["cuda"]["gemm"].startswith("cuBLAS through CuPy")


def test_selection(monkeypatch, cupy):
    assert D.gemm_mode() == "auto"
    assert D.gemm_backend() == "tiled"  # the simulator's arrays are host memory: auto keeps the tiled kernel
    info = nl.backend.info()["cuda"]
    assert info["gemm"].startswith("nnlab tiled kernel") and info["gemm_mode"] == "auto"
    monkeypatch.setattr(D, "simulated", lambda: False)  # as on a GPU, with CuPy importable
    D._GEMM_RESOLVED[0] = None
    assert D.gemm_backend() == "cublas"
    assert nl.backend.set_gemm("TILED") == "auto"  # names are case-insensitive
    assert D.gemm_backend() == "tiled"
    assert D.gemm_mode() == "tiled"
    assert nl.backend.set_gemm("auto") == "tiled"
    assert D.gemm_backend() == "cublas"


def test_auto_without_cupy_is_the_tiled_kernel(monkeypatch, no_cupy):
    monkeypatch.setattr(D, "simulated", lambda: False)
    assert D.gemm_backend() == "tiled"


def test_asking_for_cublas_without_cupy(no_cupy):
    with pytest.raises(DeviceError, match="pip install cupy-cuda12x"):
        nl.backend.set_gemm("cublas")
    assert D.gemm_mode() == "auto"  # the failed call changed nothing


def test_bad_names(monkeypatch):
    with pytest.raises(HyperparameterError, match="'blas'"):
        nl.backend.set_gemm("blas")
    with pytest.raises(HyperparameterError, match="gemm must be one of 'auto', 'cublas', 'tiled'"):
        nl.backend.set_gemm(3)
    monkeypatch.setenv("NNLAB_CUDA_GEMM", "fast")
    with pytest.raises(HyperparameterError, match="NNLAB_CUDA_GEMM .*'fast'"):
        D.gemm_mode()


def test_environment_variable(monkeypatch, cupy):
    monkeypatch.setenv("NNLAB_CUDA_GEMM", "cublas")
    assert D.gemm_mode() == "cublas" and D.gemm_backend() == "cublas"


def test_environment_asks_for_cublas_without_cupy(monkeypatch, no_cupy):
    """The network is refused when it moves to the device, before any kernel runs."""
    monkeypatch.setenv("NNLAB_CUDA_GEMM", "cublas")
    net = nl.Sequential([nl.Dense(2, 1)], seed=0)
    with pytest.raises(DeviceError, match="pip install cupy-cuda12x"):
        net.to("cuda")
    assert net.device == "cpu"
    assert nl.backend.info()["cuda"]["gemm"].startswith("unusable: the cuBLAS matrix product needs CuPy")
