"""Every kernel of the executor, activations, dense layer, losses, noise and copies compiles to
PTX for compute capability 8.0 at the launchers' signatures (a plain process: no simulator, no GPU
needed), and the float32 kernels that evaluate no activation and sum no loss hold no float64
instruction."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

# float32 kernels that compute in float64 on purpose: the activations' scalar math (as on the CPU)
# and the float64 loss and hyperparameter-gradient sums
F64_BY_DESIGN = {"activations.act_map", "dense.forward", "dense.errors", "dense.param_grads", "losses.rows"}


@pytest.fixture(scope="module")
def report():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "ptx_check.py")], capture_output=True, text=True,
                          env=env, timeout=900)
    if proc.returncode != 0 and "libNVVM" in proc.stderr or "NVVM" in proc.stderr[-2000:]:
        pytest.skip(f"the CUDA toolkit's NVVM compiler is missing here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_every_kernel_compiles_for_both_dtypes(report):
    names = {k.rsplit(".", 1)[0] for k in report}
    assert {"dense.forward", "dense.col_sum", "elementwise.put", "losses.rows", "noise.uniform",
            "executor.gather", "activations.act_map", "gemm.tiled"} <= names
    for name in names:
        for dt in ("float32", "float64"):
            assert report[f"{name}.{dt}"]["entry"], (name, dt)


def test_float32_kernels_stay_float32(report):
    for key, facts in report.items():
        name, dt = key.rsplit(".", 1)
        if dt != "float32":
            continue
        assert facts["st_f32"], key  # (every float32 kernel writes float32 results)
        if name not in F64_BY_DESIGN:
            assert not facts["f64"], f"{key} has float64 instructions"
