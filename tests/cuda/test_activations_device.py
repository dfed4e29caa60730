"""Every activation of the registry on the device (built-in, their variants, and user-registered
ones): forward, derivative, parameter derivatives and the unscaled value, against the CPU's
elementwise map on the same inputs, in float32 and float64, over several blocks."""

import math

import naive  # tests/ is on sys.path (tests/conftest.py)
import numpy as np
import pytest

from nnlab import activations as A
from nnlab.kernels import kernels_for
from nnlab.kernels.cuda import activations as DA
from nnlab.kernels.cuda.device import cuda, simulated

Z = [-math.inf, -30.0, -3.0, -1.0, -0.5, -1e-3, 0.0, 0.25, 1.0, 2.5, 30.0, math.inf, math.nan]
# Compiled device code types the scalar functions as the CPU's compiled code does (a float32 z meets
# float64 constants and hyperparameters and the arithmetic is float64); the simulator runs them on
# NumPy float32 scalars, which stay float32 in mixed arithmetic, so a few float32 values (e.g. celu's
# ∂/∂α near 0) differ by more than float32 rounding there. The PTX tests check the compiled typing.
TOL = {np.float32: dict(rtol=1e-4 if simulated() else 1e-6, atol=1e-30),
       np.float64: dict(rtol=1e-12, atol=1e-300)}


@pytest.fixture(scope="module")
def custom():
    """A user activation with one learnable and one fixed parameter, removed afterwards."""
    A.register("dev_softsign", naive.scaled_softsign, naive.scaled_softsign_d, params={"k": 1.5, "c": 1.0},
               learnable=("k",), param_derivatives={"k": naive.scaled_softsign_dk, "c": naive.scaled_softsign_dc})
    A.register("dev_atan", lambda z: math.atan(z), lambda z: 1.0 / (1.0 + z * z))
    try:
        yield ["dev_softsign", "dev_atan"]
    finally:
        A.unregister("dev_softsign")
        A.unregister("dev_atan")


def _cases():
    out = []
    for ent in A.entries():
        if ent.custom:
            continue
        codes = {ent.code}
        for variant in (ent.variants or {}).values():
            codes |= set(variant.values())
        for code in sorted(codes):
            out.append((ent.name, code))
    return out


def _compare(code, params, nparams):
    c = cuda()
    ks = kernels_for([code])
    rng = np.random.default_rng(code)
    for dtype in (np.float32, np.float64):
        z = np.array(Z, dtype)
        u = rng.uniform(size=z.size).astype(dtype)
        dz, du = c.to_device(z), c.to_device(u)
        p0, p1, p2 = (list(params) + [0.0, 0.0, 0.0])[:3]
        a = 1.25
        for what in [0, 1, 5] + [2 + k for k in range(nparams)]:
            want = np.empty_like(z)
            ks.act_map(what, code, z, want, p0, p1, p2, a, u)
            dout = c.device_array(z.size, dtype)
            DA.act_map(what, code, dz, dout, p0, p1, p2, a, du)
            got = dout.copy_to_host()
            assert np.isnan(got).tolist() == np.isnan(want).tolist(), (what, got, want)
            np.testing.assert_allclose(got, want, err_msg=f"code {code} what {what} {dtype.__name__}",
                                       **TOL[dtype])


@pytest.mark.parametrize("name,code", _cases())
def test_builtin_activation_on_device(name, code):
    ent = next(e for e in A.entries() if e.name == name)
    params = [p.default for p in ent.params]
    _compare(code, params, len(params))


# (the simulator runs the user's functions on NumPy scalars, which warn at z = ±inf where compiled
# code is silent; the values are compared all the same)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_registered_activation_on_device(custom):
    for name in custom:
        ent = next(e for e in A.entries() if e.name == name)
        _compare(ent.code, [p.default for p in ent.params], len(ent.params))
