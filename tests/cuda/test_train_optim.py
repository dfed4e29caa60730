"""Training steps on the device through the executor -- clipping, regularisation, the optimizer update
and the monitor's statistics -- against the same steps on the CPU. Run with ``NUMBA_ENABLE_CUDASIM=1``."""

import numpy as np
import pytest

from nnlab.errors import DeviceError
from nnlab.kernels.cuda.device import cuda as find_cuda

try:
    find_cuda()
except DeviceError as exc:
    pytest.skip(f"the device kernels need a GPU or NUMBA_ENABLE_CUDASIM=1: {exc}", allow_module_level=True)

import nnlab as nl  # noqa: E402
from nnlab.kernels.layout import S_UPDATE_NORM  # noqa: E402

STEPS = 3
CASES = {
    "adam_amsgrad_global_norm_l2": (lambda: nl.optim.Adam(lr=0.05, amsgrad=True), ("global_norm", 0.5), ("l2", 1e-2)),
    "rmsprop_centered_norm_l1": (lambda: nl.optim.RMSprop(lr=0.01, momentum=0.5, centered=True), ("norm", 0.3),
                                 ("l1", 1e-2)),
    "nadam_value_decoupled": (lambda: nl.optim.NAdam(lr=0.05), ("value", 0.05), ("decoupled", 0.1)),
}


def tolerance(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else dict(rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(CASES))
def test_monitored_steps_match_cpu(case, dtype):
    make_opt, clip, reg = CASES[case]
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3)).astype(dtype)
    y = rng.standard_normal((5, 2)).astype(dtype)
    runs = []
    for device in ("cpu", "cuda"):
        net = nl.Sequential([nl.Dense(3, 5, activation="tanh"), nl.Dense(5, 2)], seed=1, dtype=dtype)
        mon = nl.GradientMonitor(net)
        tr = nl.Trainer(net, make_opt(), clip=clip, regularizer=reg, monitor=mon, device=device)
        losses = [tr.step(X, y) for _ in range(STEPS)]
        runs.append((net, mon, losses))
    (a, ma, la), (b, mb, lb) = runs
    assert b.device == "cuda"
    np.testing.assert_allclose(lb, la, **tolerance(dtype))
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_allclose(q, p, **tolerance(dtype))
    assert ma.steps == mb.steps == STEPS
    np.testing.assert_allclose(mb.grad_norm_total, ma.grad_norm_total, **tolerance(dtype))
    rows_a, rows_b = np.stack(ma._rows), np.stack(mb._rows)
    assert np.all(rows_a[:, :, S_UPDATE_NORM] > 0)  # the updates moved the weights (‖ΔW‖ compared too)
    np.testing.assert_allclose(rows_b, rows_a, **tolerance(dtype), equal_nan=True)
