"""The gradient-health statistics on the device (nnlab.kernels.cuda.stats) against cpu.grad_stats /
cpu.update_stats: a small network is run on the CPU (GradientMonitor.observe), its buffers are copied
to a DeviceProgram and every S_* column is compared. Run with ``NUMBA_ENABLE_CUDASIM=1``."""

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

import nnlab as nl  # noqa: E402
from nnlab.kernels import cpu  # noqa: E402
from nnlab.kernels import layout as L  # noqa: E402
from nnlab.kernels.cuda import stats as GS  # noqa: E402
from nnlab.kernels.cuda.program import DeviceProgram  # noqa: E402

COUNTS = [L.S_NONFINITE, L.S_SUBNORMAL, L.S_ZERO_GRAD, L.S_N_GRAD]
ROWS = 5


@contextlib.contextmanager
def quiet_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def network(dtype):
    """Dense ops with a saturating activation decided by |z| (sigmoid), one decided by θ' itself
    (hard_sigmoid), a dead unit (relu), a learnable slot read from the parameters (prelu), noise
    (rrelu); LayerNorm and Maxout as ops with weights of other kinds."""
    net = nl.Sequential([
        nl.Dense(3, 5, activation="sigmoid"),
        nl.LayerNorm(5),
        nl.Dense(5, 6, activation="relu"),
        nl.Dense(6, 4, activation="prelu"),
        nl.Dense(4, 5, activation="hard_sigmoid"),
        nl.Dense(5, 3, activation="rrelu"),
        nl.Maxout(3, 2, k=2),
    ], loss="mse", dtype=dtype, seed=3)
    ps = net.params()
    ps[0][...] *= 6.0    # large pre-activations: saturated sigmoid entries
    ps[3][2] = -50.0     # relu unit 2 never fires: dead
    ps[8][...] *= 5.0    # hard_sigmoid: some entries on the flat parts
    return net


def data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((ROWS, 3)).astype(dtype), rng.standard_normal((ROWS, 2)).astype(dtype)


def device_program(net, X, grads):
    prog = net._prog_for(X)
    ws, dws = net._workspace(X.shape[0], prog.width)
    return DeviceProgram(cuda, prog.ops, prog.hp, prog.tens, cuda.to_device(net._store), cuda.to_device(grads),
                         cuda.to_device(ws), cuda.to_device(dws))


def compare(got, want):
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[:, COUNTS], want[:, COUNTS])
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-300, equal_nan=True)


@pytest.fixture(scope="module", params=["float64", "float32"])
def observed(request):
    dtype = request.param
    net = network(dtype)
    X, Y = data(dtype)
    mon = nl.GradientMonitor(net)
    with quiet_overflow():
        mon.observe(X, Y, training=True)
    return net, mon, X, Y


def test_grad_stats_match_cpu(observed):
    net, mon, X, _ = observed
    want = mon._stats.copy()
    dp = device_program(net, X, mon._grads)
    got = np.zeros_like(want)
    GS.grad_stats(dp, X.shape[0], mon._sat, got)
    GS.update_stats(dp, dp.params, got)  # what observe records: no update
    # the network does what it was built for, so every column compares something
    levels = {int(i): int(dp.ops[i, L.F_LEVEL]) for i in range(dp.ops.shape[0]) if dp.ops[i, L.F_LEVEL] >= 0}
    kinds = [int(dp.ops[i, L.F_KIND]) for i in levels]
    assert L.KIND_LAYERNORM in kinds and L.KIND_MAXOUT in kinds
    assert want[:, L.S_DEAD].max() > 0
    sat = mon._sat
    by_z = [i for i in levels if sat[i, 0] > 0 and sat[i, 2] > 0]          # sigmoid: |z| > z_sat decides
    by_derivative = [i for i in levels if sat[i, 0] > 0 and sat[i, 2] <= 0]  # hard_sigmoid: θ' decides
    assert by_z and by_derivative
    assert all(want[levels[i], L.S_SATURATED] > 0 for i in by_z + by_derivative)
    assert np.all(want[:, L.S_GRAD_NORM] > 0) and np.all(want[:, L.S_W_NORM] > 0)
    compare(got, want)


def test_nonfinite_and_subnormal_entries(observed):
    """An inf weight, a NaN pre-activation and subnormal gradient entries are counted as on the CPU."""
    net, mon, X, _ = observed
    dtype = net._store.dtype
    prog = net._prog_for(X)
    ws, dws = net._workspace(X.shape[0], prog.width)
    store, grads, ws, dws = net._store.copy(), mon._grads.copy(), ws.copy(), dws.copy()
    ops = prog.ops
    first = [i for i in range(ops.shape[0]) if ops[i, L.F_LEVEL] >= 0][0]
    store[ops[first, L.F_W] + 1] = np.inf
    grads[ops[first, L.F_W] + 2] = np.finfo(np.float32).smallest_subnormal * 3
    grads[ops[first, L.F_W] + 3] = 0.0
    z_off = prog.tens[ops[first, L.F_Z], 0] * X.shape[0]
    ws[z_off + 1] = np.nan
    dws[z_off + 2] = np.finfo(np.float32).tiny / 4
    sat = mon._sat.copy()
    want = np.zeros_like(mon._stats)
    with quiet_overflow():
        cpu.grad_stats(ops, prog.hp, prog.tens, store, grads, ws, dws, X.shape[0], sat, want)
        cpu.update_stats(ops, store, store, want)
    dp = DeviceProgram(cuda, ops, prog.hp, prog.tens, cuda.to_device(store), cuda.to_device(grads),
                       cuda.to_device(ws), cuda.to_device(dws))
    got = np.zeros_like(want)
    with quiet_overflow():
        GS.grad_stats(dp, X.shape[0], sat, got)
        GS.update_stats(dp, dp.params, got)
    lv = ops[first, L.F_LEVEL]
    assert want[lv, L.S_NONFINITE] >= 2 and want[lv, L.S_SUBNORMAL] >= 2 and want[lv, L.S_ZERO_GRAD] >= 1
    assert dtype in (np.float32, np.float64)
    compare(got, want)


def test_update_stats_with_a_step(observed):
    net, mon, X, _ = observed
    dp = device_program(net, X, mon._grads)
    rng = np.random.default_rng(5)
    prev = (net._store + rng.standard_normal(net._store.size) * 1e-3).astype(net._store.dtype)
    want = np.zeros_like(mon._stats)
    cpu.update_stats(dp.ops, net._store, prev, want)
    got = np.zeros_like(want)
    GS.update_stats(dp, cuda.to_device(prev), got)
    assert np.all(want[:, L.S_UPDATE_NORM] > 0)
    compare(got, want)


def test_update_stats_beyond_the_float64_range():
    """‖W‖ and ‖ΔW‖ of weights near 1e300 (Σw² overflows) and near 1e-310 (Σw² underflows): the
    scaled second pass on the device, as on the CPU -- finite and non-zero."""
    net = nl.Sequential([nl.Dense(3, 4, activation="tanh"), nl.Dense(4, 2)], dtype="float64", seed=1)
    X, _ = data(np.float64)
    prog = net._prog_for(X)
    for scale in (1e300, 1e-310):
        store = net._store * scale
        prev = -store
        want = np.zeros((2, L.NS))
        with quiet_overflow():
            cpu.update_stats(prog.ops, store, prev, want)
        ws, dws = net._workspace(X.shape[0], prog.width)
        dp = DeviceProgram(cuda, prog.ops, prog.hp, prog.tens, cuda.to_device(store),
                           cuda.to_device(np.zeros_like(net._flat)), cuda.to_device(ws), cuda.to_device(dws))
        got = np.zeros_like(want)
        with quiet_overflow():
            GS.update_stats(dp, cuda.to_device(prev), got)
        cols = [L.S_W_NORM, L.S_UPDATE_NORM]
        assert np.all(np.isfinite(want[:, cols])) and np.all(want[:, cols] > 0)
        np.testing.assert_allclose(got[:, cols], want[:, cols], rtol=1e-13)


def test_registered_activation_dead_units():
    """A user-registered activation: the registry's device act_d decides dead units, as the CPU's
    extended dispatcher does (the statistics read any buffers: Z, A and E are filled directly)."""
    from nnlab.kernels import kernels_for

    A = nl.activations
    A.register("stats_hinge", lambda z: max(z, 0.0), lambda z: 1.0 if z > 0 else 0.0)
    try:
        net = nl.Sequential([nl.Dense(3, 4, activation="stats_hinge"), nl.Dense(4, 2)], seed=2)
        X, _ = data(np.float64, seed=4)
        prog = net._prog_for(X)
        ws, dws = (b.copy() for b in net._workspace(X.shape[0], prog.width))
        rng = np.random.default_rng(6)
        ws[:] = rng.standard_normal(ws.size)
        dws[:] = rng.standard_normal(dws.size)
        grads = rng.standard_normal(net._flat.size)
        z_off = prog.tens[prog.ops[0, L.F_Z], 0] * X.shape[0]
        ws[z_off + 1:z_off + 4 * X.shape[0]:4] = -1.0  # unit 1 below 0 in every row: dead
        sat = nl.GradientMonitor(net)._sat
        want = np.zeros((2, L.NS))
        ks = kernels_for([int(prog.ops[0, L.F_ACT])])
        ks.grad_stats(prog.ops, prog.hp, prog.tens, net._store, grads, ws, dws, X.shape[0], sat, want)
        dp = DeviceProgram(cuda, prog.ops, prog.hp, prog.tens, cuda.to_device(net._store), cuda.to_device(grads),
                           cuda.to_device(ws), cuda.to_device(dws))
        got = np.zeros_like(want)
        GS.grad_stats(dp, X.shape[0], sat, got)
        assert want[0, L.S_DEAD] == 0.25
        compare(got, want)
    finally:
        A.unregister("stats_hinge")
