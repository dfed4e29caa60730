"""The losses' and the dense layer's pieces on the device against their CPU kernels (float32 and
float64, several blocks and partial blocks), and the registry's coverage of the layer kinds."""

import numpy as np
import pytest

from nnlab.kernels import cpu
from nnlab.kernels import layout as L
from nnlab.kernels.cuda import elementwise, registry
from nnlab.kernels.cuda import losses as DL
from nnlab.kernels.cuda.device import cuda
from nnlab.kernels.cuda.gemm import gemm

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("code", [L.LOSS_MSE, L.LOSS_SOFTMAX_CE, L.LOSS_BCE])
def test_loss_twin(dtype, code):
    c = cuda()
    rng = np.random.default_rng(code)
    n, k = 5, 3
    Yhat = (3 * rng.normal(size=(n, k))).astype(dtype)
    if code == L.LOSS_SOFTMAX_CE:
        Y = rng.integers(0, k, size=(n, 1)).astype(dtype)
    elif code == L.LOSS_BCE:
        Y = rng.uniform(size=(n, k)).astype(dtype)
    else:
        Y = rng.normal(size=(n, k)).astype(dtype)
    dY = np.zeros_like(Yhat)
    want = cpu.loss_fwd_bwd(code, Yhat, Y, dY, True)
    dd = c.to_device(np.zeros(n * k, dtype))
    total = DL.loss_sum(c, code, c.to_device(Yhat.reshape(-1)), c.to_device(Y.reshape(-1)), dd, True, 0.0, n)
    got = DL.mean(code, total, n, k)
    # float32: the terms come from float32 exponentials and logarithms, whose last bit may differ
    # between implementations (libm, libdevice, the simulator's Python math)
    np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-13)
    tol = dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dd.copy_to_host().reshape(n, k), dY, **tol)
    # without the gradient the loss is the same and dY is left alone
    untouched = c.to_device(np.full(n * k, 7, dtype))
    again = DL.loss_sum(c, code, c.to_device(Yhat.reshape(-1)), c.to_device(Y.reshape(-1)), untouched, False, 1.0, n)
    np.testing.assert_allclose(again, 1.0 + total, rtol=1e-15)
    assert (untouched.copy_to_host() == 7).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_put_dx_modes_and_fill(dtype):
    c = cuda()
    rng = np.random.default_rng(1)
    src = rng.normal(size=11).astype(dtype)
    base = rng.normal(size=11).astype(dtype)
    for mode, want in ((L.DX_WRITE, src), (L.DX_ADD, base + src), (L.DX_SKIP, base)):
        d = c.to_device(base)
        elementwise.put_dx(d, c.to_device(src), mode)
        np.testing.assert_array_equal(d.copy_to_host(), want)
    d = c.to_device(base)
    elementwise.mul(d, c.to_device(src))
    np.testing.assert_array_equal(d.copy_to_host(), base * src)
    elementwise.fill(d, 0.5)
    assert (d.copy_to_host() == dtype(0.5)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_accumulates_with_beta(dtype):
    """dX += E Wᵀ in one product (the DX_ADD mode of the affine ops)."""
    c = cuda()
    rng = np.random.default_rng(2)
    E = rng.normal(size=(5, 3)).astype(dtype)
    W = rng.normal(size=(4, 3)).astype(dtype)
    C0 = rng.normal(size=(5, 4)).astype(dtype)
    dC = c.to_device(C0)
    gemm(c.to_device(E), False, c.to_device(W), True, dC, beta=1.0)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(dC.copy_to_host(), C0 + E @ W.T, **tol)


def test_registry_covers_every_layer_kind():
    """Every KIND_* of the network program has device launchers (the kinds missing are named)."""
    kinds = {name: getattr(L, name) for name in dir(L) if name.startswith("KIND_")}
    table = registry.load_all()
    missing = sorted(name for name, k in kinds.items() if k not in table)
    assert not missing, f"layer kinds without device kernels: {', '.join(missing)}"
