"""The device optimizer updates against the CPU kernels (nnlab.kernels.optim_cpu) on the same inputs:
every optimizer code and its options, float32 and float64, plain and regularised, several steps
(bias corrections, NAdam's momentum product, Rprop's sign memory), several blocks and a partial one.

Run with ``NUMBA_ENABLE_CUDASIM=1`` (or on a GPU)."""

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
from nnlab.kernels import optim_cpu as K  # noqa: E402
from nnlab.kernels.cuda import optim as G  # noqa: E402

N = 11  # 3 blocks of 4 threads under the simulator (tests/cuda/conftest.py), the last one partial
STEPS = 3

# every optimizer code, with the options that take other branches of its rule
CONFIGS = {
    "sgd": lambda **r: nl.optim.SGD(lr=0.1, **r),
    "sgd_momentum_dampening": lambda **r: nl.optim.SGD(lr=0.1, momentum=0.9, dampening=0.3, **r),
    "sgd_nesterov": lambda **r: nl.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, **r),
    "sgd_ema_nesterov": lambda **r: nl.optim.SGD(lr=0.1, momentum=0.8, nesterov=True, momentum_form="ema", **r),
    "adagrad": lambda **r: nl.optim.Adagrad(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.2, **r),
    "adadelta": lambda **r: nl.optim.Adadelta(lr=1.0, **r),
    "rmsprop": lambda **r: nl.optim.RMSprop(lr=0.01, **r),
    "rmsprop_centered_momentum": lambda **r: nl.optim.RMSprop(lr=0.01, momentum=0.9, centered=True, **r),
    "rmsprop_centered": lambda **r: nl.optim.RMSprop(lr=0.01, centered=True, **r),
    "adam": lambda **r: nl.optim.Adam(lr=0.1, **r),
    "adam_amsgrad_no_bias_correction": lambda **r: nl.optim.Adam(lr=0.1, amsgrad=True, bias_correction=False, **r),
    "adamw_amsgrad": lambda **r: nl.optim.AdamW(lr=0.1, amsgrad=True, **r),
    "nadam": lambda **r: nl.optim.NAdam(lr=0.1, **r),
    "adamax": lambda **r: nl.optim.Adamax(lr=0.1, **r),
    "rprop": lambda **r: nl.optim.Rprop(lr=0.05, **r),
    "smorms3": lambda **r: nl.optim.SMORMS3(lr=0.1, **r),
}

REG = {"weight_decay": 0.05, "l1": 0.01, "maximize": True}


@contextlib.contextmanager
def quiet_overflow():
    """The simulator's NumPy scalars warn on overflow, in the kernel's threads (np.errstate is per
    thread; the warnings filter is not)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def make(name, regularised):
    opt = CONFIGS[name]()
    if regularised:
        opt = CONFIGS[name](**{k: v for k, v in REG.items() if k in opt.hyper})
    return opt


def tolerances(dtype):
    # float64: the CPU's arithmetic (the simulator runs it as is; a GPU may fuse a multiply-add);
    # float32: float32 arithmetic on the device against float64 arithmetic rounded once on the CPU
    return dict(rtol=1e-12, atol=1e-14) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)


def test_every_code_is_covered():
    codes = {CONFIGS[name]().code for name in CONFIGS}
    assert codes == {K.SGD, K.ADAGRAD, K.ADADELTA, K.RMSPROP, K.ADAM, K.NADAM, K.ADAMAX, K.RPROP, K.SMORMS3}
    assert set(G.kernels(np.float64)) == codes
    assert {type(CONFIGS[name]()).name for name in CONFIGS} == set(nl.optim.names())


@pytest.mark.parametrize("regularised", [False, True], ids=["plain", "regularised"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_update_matches_cpu(name, dtype, regularised):
    rng = np.random.default_rng(abs(hash((name, regularised))) % 2**32)
    opt = make(name, regularised)
    p_cpu = rng.standard_normal(N).astype(dtype)
    p_cpu[3] = 0.0  # sign(0) = 0 in the L1 term
    d_p = cuda.to_device(p_cpu)
    d_state = None
    for step in range(STEPS):
        g = rng.standard_normal(N).astype(dtype) * (1.0 if step % 2 == 0 else -0.5)
        g[5] = 0.0
        code, hp, t, state = opt.begin_flat(p_cpu)
        assert t == step + 1
        if d_state is None:
            d_state = cuda.to_device(state)  # the fresh state (initial rows) before the first update
        K.opt_update(code, hp, t, p_cpu, g, state)
        opt.end_step()
        G.opt_update(code, hp, t, d_p, cuda.to_device(g), d_state)
        np.testing.assert_allclose(d_p.copy_to_host(), p_cpu, **tolerances(dtype), err_msg=f"params, step {t}")
        np.testing.assert_allclose(d_state.copy_to_host(), state, **tolerances(dtype), err_msg=f"state, step {t}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", ["adam", "adagrad", "sgd_nesterov", "smorms3"])
def test_checked_overflow_changes_nothing(name, dtype):
    """An update that would overflow the state (g² beyond the dtype's range) or the parameters is
    not applied on the device, as on the CPU; P and state keep their bits."""
    rng = np.random.default_rng(1)
    opt = make(name, False)
    p = rng.standard_normal(N).astype(dtype)
    huge = np.finfo(dtype).max / 4
    g = rng.standard_normal(N).astype(dtype)
    g[7] = huge  # g² overflows; lr·g too for SGD-like rules with momentum
    code, hp, t, state = opt.begin_flat(p)
    if name == "sgd_nesterov":
        hp = hp.copy()
        hp[K.H_LR] = 8.0  # p − lr·(g + μm) overflows
    d_p, d_s = cuda.to_device(p), cuda.to_device(state)
    norm = float(K.norm2(g))
    p_cpu, s_cpu = p.copy(), state.copy()
    assert not K.opt_update_checked(code, hp, t, p_cpu, g, s_cpu, norm)
    with quiet_overflow():
        assert not G.opt_update_checked(code, hp, t, d_p, cuda.to_device(g), d_s, norm)
    assert np.array_equal(d_p.copy_to_host(), p)
    assert np.array_equal(d_s.copy_to_host(), state)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_checked_large_but_finite_is_applied(dtype):
    """Beyond the safe bound but finite: the dry run finds nothing, the update runs (= the CPU)."""
    rng = np.random.default_rng(2)
    opt = nl.optim.SGD(lr=0.5, momentum=0.9, weight_decay=0.1)
    p = rng.standard_normal(N).astype(dtype)
    g = rng.standard_normal(N).astype(dtype) * (2.0 ** 30 if dtype == np.float32 else 2.0 ** 250)
    code, hp, t, state = opt.begin_flat(p)
    norm = float(K.norm2(g))
    assert not K.update_is_safe(hp, p, norm)
    d_p, d_s = cuda.to_device(p), cuda.to_device(state)
    p_cpu, s_cpu = p.copy(), state.copy()
    assert K.opt_update_checked(code, hp, t, p_cpu, g, s_cpu, norm)
    assert G.opt_update_checked(code, hp, t, d_p, cuda.to_device(g), d_s, norm)
    np.testing.assert_allclose(d_p.copy_to_host(), p_cpu, **tolerances(dtype))
    np.testing.assert_allclose(d_s.copy_to_host(), s_cpu, **tolerances(dtype))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_safety_bound_matches_cpu(dtype):
    """update_is_safe on the device (max |P| reduced there when a coupled decay needs it) = the CPU's."""
    rng = np.random.default_rng(3)
    p = rng.standard_normal(N).astype(dtype)
    p[9] = -(2.0 ** 20)
    hp = np.zeros(K.NHP)
    hp[K.H_LR] = 1.0
    d_p = cuda.to_device(p)
    for wd in (0.0, 1.0, 2.0 ** 9):
        hp[K.H_WD] = wd
        for gnorm in (1.0, 2.0 ** 27, 2.0 ** 29, np.inf, np.nan):
            assert G.update_is_safe(hp, d_p, gnorm) == K.update_is_safe(hp, p, gnorm), (wd, gnorm)


def test_nonfinite_parameter_already_there_on_the_unsafe_path():
    """A parameter that is already inf makes the checked update refuse, on both sides."""
    p = np.linspace(-1, 1, N)
    p[2] = np.inf
    g = np.full(N, 1e300)
    opt = nl.optim.SGD(lr=0.1)
    code, hp, t, state = opt.begin_flat(p)
    d_p = cuda.to_device(p)
    assert not K.opt_update_checked(code, hp, t, p.copy(), g, state.copy(), float(K.norm2(g)))
    with quiet_overflow():
        assert not G.opt_update_checked(code, hp, t, d_p, cuda.to_device(g), cuda.to_device(state),
                                        float(K.norm2(g)))
    assert np.array_equal(d_p.copy_to_host(), p)
