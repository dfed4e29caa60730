"""Whole programs made of the layer kinds with device twins, run op by op with the device launchers
(noise drawn with ``noise.fill_pass``, every op forward, the loss gradient of the CPU's
pass as the seed, every op backward in reverse) against the CPU executor's ``loss_and_grad``: the
DX modes, scratch use and buffers as the program builder lowers them, not set by hand."""

import importlib
import os
import sys

import numpy as np
import pytest
from numba.core import sigutils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from layer_harness import CUDA, TOL, LaunchTypes  # noqa: E402

import nnlab as nl  # noqa: E402
from nnlab.kernels.cuda import noise, registry  # noqa: E402
from nnlab.kernels.cuda.program import DeviceProgram  # noqa: E402
from nnlab.kernels.layout import F_A, F_KIND, F_NOISE, F_X, F_Z  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # SplitMix64's wrap-around


def _nets(dtype):
    return {
        "rows": nl.Sequential([nl.BatchNorm(3), nl.Dropout(0.25), nl.Residual([nl.LayerNorm(3)]),
                               nl.RBF(3, 4, learnable_gamma=True), nl.AlphaDropout(0.2), nl.Maxout(4, 2, k=2)],
                              dtype=dtype, seed=1),
        "sequence": nl.Sequential([nl.LSTM(2, 3, return_sequences=True, truncate=2), nl.BatchNorm(3),
                                   nl.RNN(3, 2)], dtype=dtype, seed=2),
    }


def _compare(name, got, want, tol, regions):
    for lo, hi in regions:
        np.testing.assert_allclose(got[lo:hi], want[lo:hi], err_msg=f"{name}[{lo}:{hi}]", **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("which", ["rows", "sequence"])
def test_program_matches_cpu_executor(dtype, which):
    """... and every kernel launched gets exactly the argument types of the signature the PTX test
    compiles (float32 scalars for a float32 kernel, contiguous 1-D arrays)."""
    rec = LaunchTypes()
    try:
        _program_matches_cpu_executor(dtype, which)
    finally:
        rec.restore()
    assert len(rec.seen) >= (16 if which == "rows" else 12)
    wrong = []
    for (module, name, dt), launched in sorted(rec.seen.items()):
        template = importlib.import_module(f"nnlab.kernels.cuda.{module}").SIGNATURES[name]
        args, _ = sigutils.normalize_signature(template.replace("F", dt))
        wrong += [(module, name, dt, types) for types in launched if types != tuple(args)]
    assert wrong == []


def _program_matches_cpu_executor(dtype, which):
    net = _nets(dtype)[which]
    rng = np.random.default_rng(0)
    n = 4
    if which == "rows":
        X = rng.standard_normal((n, 3)).astype(dtype)
        prog = net._program(1, wrt_input=True)
    else:
        X = rng.standard_normal((n, 3 * 2)).astype(dtype)  # 3 steps of 2 features, batch-major
        prog = net._program(3, wrt_input=True)
    Y = rng.standard_normal((n, int(prog.tens[prog.out, 1]))).astype(dtype)
    ops, hp, tens = prog.ops, prog.hp, prog.tens
    width = int(prog.width)
    seed = 99
    store0 = net._store.copy()

    store = store0.copy()
    grads = np.zeros(net._flat.size, dtype)
    ws = np.zeros(n * width, dtype)
    dws = np.zeros(n * width, dtype)
    net._kernels.loss_and_grad(ops, hp, tens, store, grads, ws, dws, X, Y, net._loss_code, True, seed)

    d = DeviceProgram(CUDA, ops, hp, tens, CUDA.to_device(store0), CUDA.to_device(np.zeros_like(grads)),
                      CUDA.to_device(np.zeros_like(ws)), CUDA.to_device(np.zeros_like(dws)))
    d.flat(d.ws, 0, n).copy_to_device(X.reshape(-1))
    noise.fill_pass(d, n, True, seed)
    for i in range(ops.shape[0]):
        assert registry.launchers(ops[i, F_KIND])[0](d, i, n, True, True) is False
    out = d.flat(d.dws, prog.out, n)
    lo = int(tens[prog.out, 0]) * n
    out.copy_to_device(dws[lo:lo + out.size])  # the loss gradient dL/dA of the CPU's pass
    for i in range(ops.shape[0] - 1, -1, -1):
        registry.launchers(ops[i, F_KIND])[1](d, i, n, False)

    tol = TOL[np.dtype(dtype)]
    np.testing.assert_allclose(d.params.copy_to_host(), store, err_msg="parameters and running statistics", **tol)
    assert (store != store0).any()  # the running statistics moved
    np.testing.assert_allclose(d.grads.copy_to_host(), grads, err_msg="gradients", **tol)
    tensors = sorted({int(ops[i, c]) for i in range(ops.shape[0]) for c in (F_X, F_Z, F_A, F_NOISE)} - {-1})
    regions = [(int(tens[t, 0]) * n, int(tens[t, 0] + tens[t, 1]) * n) for t in tensors]
    _compare("ws", d.ws.copy_to_host(), ws, tol, regions)
    _compare("dws", d.dws.copy_to_host(), dws, tol, regions)  # the memoized errors and ∂L/∂X


def test_every_layer_kind_is_found_after_one_module_was_imported():
    """The executor imports the dropout module for the noise first; the registry still loads the
    launchers of every other kind when one is asked for."""
    import subprocess

    code = ("from nnlab.kernels.cuda import dropout, registry\n"
            "from nnlab.kernels import layout as L\n"
            "kinds = [L.KIND_BATCHNORM, L.KIND_LAYERNORM, L.KIND_DROPOUT, L.KIND_ALPHA_DROPOUT, L.KIND_ADD,\n"
            "         L.KIND_GATE, L.KIND_MAXOUT, L.KIND_RBF, L.KIND_RNN, L.KIND_LSTM]\n"
            "print(' '.join(registry.launchers(k)[0].__name__ for k in kinds))\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["batchnorm_forward", "layernorm_forward", "dropout_forward", "alpha_dropout_forward",
                                   "add_forward", "gate_forward", "maxout_forward", "rbf_forward", "rnn_forward",
                                   "lstm_forward"]

