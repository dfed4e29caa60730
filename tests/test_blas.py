"""nnlab.kernels.blas.gemm: the compiled kernels' matrix products (NumPy's BLAS, np.dot fallback callbacks)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit

from nnlab.kernels import blas

SHAPES = [(1, 1, 1), (3, 5, 4), (17, 33, 9), (64, 64, 64), (2, 1, 7), (5, 8, 1)]


def _operands(rng, m, k, n, ta, tb, dtype):
    A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    ref = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64)
    return A, B, ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_matches_float64_products(dtype, ta, tb):
    rng = np.random.default_rng(0)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for m, k, n in SHAPES:
        A, B, ref = _operands(rng, m, k, n, ta, tb, dtype)
        C = np.full((m, n), np.nan, dtype)  # C is written, never read
        blas.gemm(A, ta, B, tb, C)
        assert C.dtype == dtype
        np.testing.assert_allclose(C, ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_fallback_branch_gives_the_same_products():
    """The np.dot callbacks in the table's product entries send the same compiled gemm to np.dot
    (SciPy's BLAS)."""
    rng = np.random.default_rng(1)
    saved = list(blas._TABLE)
    try:
        for ta in (False, True):
            for tb in (False, True):
                A, B, ref = _operands(rng, 6, 7, 5, ta, tb, np.float64)
                C1 = np.empty((6, 5))
                blas.gemm(A, ta, B, tb, C1)
                blas._TABLE[0], blas._TABLE[1] = blas.np_dot_entries()
                C2 = np.empty((6, 5))
                blas.gemm(A, ta, B, tb, C2)
                blas._TABLE[0], blas._TABLE[1] = saved[:2]
                np.testing.assert_allclose(C1, ref, rtol=1e-13)
                np.testing.assert_allclose(C2, ref, rtol=1e-13)
    finally:
        blas._TABLE[0], blas._TABLE[1] = saved[:2]


def test_empty_dimensions_and_shape_errors():
    C = np.full((3, 4), 7.0)
    blas.gemm(np.empty((3, 0)), False, np.empty((0, 4)), False, C)  # k = 0: the zero matrix
    assert np.array_equal(C, np.zeros((3, 4)))
    blas.gemm(np.empty((0, 2)), False, np.ones((2, 4)), False, np.empty((0, 4)))  # m = 0: nothing to do
    with pytest.raises(ValueError, match="shapes"):
        blas.gemm(np.ones((3, 2)), False, np.ones((3, 4)), False, np.empty((3, 4)))
    with pytest.raises(ValueError, match="shapes"):
        blas.gemm(np.ones((3, 2)), True, np.ones((3, 4)), False, np.empty((3, 4)))


def test_library_description():
    libs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(np.__file__))), "numpy.libs")
    bundled = os.path.isdir(libs) and any(f.startswith("libscipy_openblas64_") for f in os.listdir(libs))
    if bundled and os.environ.get("NNLAB_BLAS", "").lower() != "numba":
        assert blas.LIBRARY.startswith("NumPy's OpenBLAS") and blas._TABLE[0] not in (0, blas.np_dot_entries()[0])
    else:
        assert blas.LIBRARY.startswith("np.dot") and tuple(blas._TABLE[:2]) == blas.np_dot_entries()


def test_nnlab_blas_numba_selects_np_dot_and_trains_the_same():
    """NNLAB_BLAS=numba (a fresh process, sharing the kernel cache) gives np.dot's products: the
    same training step up to the two libraries' rounding."""
    code = ("import numpy as np, nnlab as nl\n"
            "from nnlab.kernels import blas\n"
            "net = nl.Sequential([nl.Dense(6, 9, activation='tanh'), nl.Dense(9, 3)],"
            " loss='softmax_cross_entropy', seed=0)\n"
            "rng = np.random.default_rng(0)\n"
            "X = rng.standard_normal((20, 6)); y = rng.integers(0, 3, 20)\n"
            "tr = nl.Trainer(net, nl.optim.SGD(lr=0.1, momentum=0.9))\n"
            "losses = [tr.step(X, y) for _ in range(5)]\n"
            "print(blas.LIBRARY.split(' ')[0], repr(losses))\n")
    out = {}
    for mode in ("numba", ""):
        env = dict(os.environ, NNLAB_BLAS=mode)
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        lib, losses = res.stdout.strip().split(" ", 1)
        out[mode] = (lib, eval(losses))
    assert out["numba"][0] == "np.dot"
    np.testing.assert_allclose(out["numba"][1], out[""][1], rtol=1e-12)


def _both_branches(fn):
    """Run ``fn()`` through the BLAS and again through the np.dot callbacks."""
    saved = list(blas._TABLE)
    try:
        first = fn()
        blas._TABLE[0], blas._TABLE[1] = blas.np_dot_entries()
        second = fn()
    finally:
        for i, v in enumerate(saved):
            blas._TABLE[i] = v
    return first, second


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_acc_adds_to_c_in_both_branches(dtype, ta, tb):
    rng = np.random.default_rng(2)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for m, k, n in SHAPES:
        A, B, ref = _operands(rng, m, k, n, ta, tb, dtype)
        C0 = rng.standard_normal((m, n)).astype(dtype)

        def run(A=A, B=B, C0=C0):
            C = C0.copy()
            blas.gemm_acc(A, ta, B, tb, C)
            return C

        for C in _both_branches(run):
            assert C.dtype == dtype
            np.testing.assert_allclose(C, C0 + ref, rtol=tol, atol=tol * (np.abs(ref).max() + np.abs(C0).max()))
    C = np.full((3, 4), 7.0, dtype)
    blas.gemm_acc(np.empty((3, 0), dtype), False, np.empty((0, 4), dtype), False, C)  # k = 0: adds nothing
    assert np.array_equal(C, np.full((3, 4), 7.0, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("acc", [False, True])
def test_row_strided_views_in_both_branches(dtype, acc):
    """Column blocks of wider matrices (``Z[:, lo:hi]``) as A, B and C: the BLAS takes them through
    its leading dimensions, as do the np.dot callbacks; nothing outside C's block changes."""
    rng = np.random.default_rng(3)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    for ta in (False, True):
        for tb in (False, True):
            m, k, n = 6, 9, 5
            Abig = rng.standard_normal((k + 3, m + 4) if ta else (m + 3, k + 4)).astype(dtype)
            Bbig = rng.standard_normal((n + 2, k + 5) if tb else (k + 2, n + 5)).astype(dtype)
            A = Abig[1:1 + k, 2:2 + m] if ta else Abig[1:1 + m, 2:2 + k]
            B = Bbig[2:2 + n, 3:3 + k] if tb else Bbig[2:2 + k, 3:3 + n]
            ref = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64)
            Cbig0 = rng.standard_normal((m + 2, n + 7)).astype(dtype)

            def run(A=A, B=B, ta=ta, tb=tb, Cbig0=Cbig0, m=m, n=n):
                Cbig = Cbig0.copy()
                (blas.gemm_acc if acc else blas.gemm)(A, ta, B, tb, Cbig[1:1 + m, 4:4 + n])
                return Cbig

            for Cbig in _both_branches(run):
                inside = Cbig[1:1 + m, 4:4 + n]
                expect = ref + (Cbig0[1:1 + m, 4:4 + n] if acc else 0.0)
                np.testing.assert_allclose(inside, expect, rtol=tol, atol=tol * np.abs(expect).max())
                outside = Cbig.copy()
                outside[1:1 + m, 4:4 + n] = 0.0
                reference = Cbig0.copy()
                reference[1:1 + m, 4:4 + n] = 0.0
                assert np.array_equal(outside, reference)



@njit
def _np_dot_reference(A, ta, B, tb, C, acc):
    """np.dot inside @njit on the contiguous operands, as written plainly."""
    a = np.ascontiguousarray(A.T) if ta else A
    b = np.ascontiguousarray(B.T) if tb else B
    if acc:
        C += np.dot(a, b)
    else:
        np.dot(a, b, C)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_np_dot_branch_is_np_dot_bit_for_bit(dtype):
    """Through the np.dot callbacks the products are np.dot's exactly -- with transposed operands,
    with accumulation, and for a row or a column -- however the callback packs its operands."""
    rng = np.random.default_rng(5)
    saved = list(blas._TABLE)
    try:
        blas._TABLE[0], blas._TABLE[1] = blas.np_dot_entries()
        for m, k, n in ((5, 3, 7), (1, 4, 6), (6, 4, 1), (1, 5, 1), (33, 29, 17)):
            for ta in (False, True):
                for tb in (False, True):
                    A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
                    B = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
                    for acc in (False, True):
                        C0 = rng.standard_normal((m, n)).astype(dtype)
                        got, want = C0.copy(), C0.copy()
                        (blas.gemm_acc if acc else blas.gemm)(A, ta, B, tb, got)
                        _np_dot_reference(A, ta, B, tb, want, acc)
                        assert got.tobytes() == want.tobytes(), (m, k, n, ta, tb, acc)
    finally:
        for i, v in enumerate(saved):
            blas._TABLE[i] = v

def test_views_the_blas_cannot_take_are_refused():
    """A column with an element stride along its row (``X[:, ::2]``) is not a BLAS operand: gemm
    refuses it with a message (the kernels pass contiguous arrays and column blocks only), and C
    is left as it was."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((5, 8))
    B = rng.standard_normal((4, 3))
    Cbig = np.full((5, 6), 3.0)
    for A, C in ((X[:, ::2], np.empty((5, 3))), (np.ascontiguousarray(X[:, ::2]), Cbig[:, ::2])):
        for fn in (blas.gemm, blas.gemm_acc):
            with pytest.raises(ValueError, match="element stride"):
                fn(A, False, B, False, C)
    assert np.all(Cbig == 3.0)


def test_thread_count_from_compiled_code():
    """blas_threads / set_blas_threads read and set the thread count that nl.backend reports."""
    import nnlab as nl

    before = nl.backend.get_num_threads()
    if before is None:
        assert blas.blas_threads() == 0
        blas.set_blas_threads(1)  # nothing to set: does nothing
        return
    try:
        assert blas.blas_threads() == before
        blas.set_blas_threads(1)
        assert blas.blas_threads() == 1 and nl.backend.get_num_threads() == 1
    finally:
        blas.set_blas_threads(before)
    assert nl.backend.get_num_threads() == before
