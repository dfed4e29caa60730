"""Every layer kernel compiles to PTX (compute capability 8.0) at the float32 and float64
signatures its launcher uses, and the float32 kernels compute in float32: no float64 type in their
PTX, except the kernels that use float64 on purpose as the CPU does (the normalisation statistics;
the RNN's general activation, the registry's float64 scalar math) -- and those must use it."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def ptx_report():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "ptx_layers.py")], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    if "missing" in report:
        pytest.skip(f"cuda.compile_ptx needs {report['missing']}")
    return report


def _on_purpose():
    from nnlab.kernels.cuda import norm, recurrent

    return {f"norm.{k}" for k in norm.FLOAT64_ON_PURPOSE} | {f"recurrent.{k}" for k in recurrent.FLOAT64_ON_PURPOSE}


def test_every_kernel_compiles(ptx_report):
    errors = {k: v for k, d in ptx_report.items() for v in d.values() if not isinstance(v, bool)}
    assert not errors
    assert len(ptx_report) >= 35
    assert all(set(d) == {"float32", "float64"} for d in ptx_report.values())
    assert all(d["float64"] is True for d in ptx_report.values())  # float64 kernels compute in float64


def test_float32_kernels_stay_in_float32(ptx_report):
    on_purpose = _on_purpose()
    assert on_purpose <= set(ptx_report)
    leaks = sorted(k for k, d in ptx_report.items() if d["float32"] is True and k not in on_purpose)
    assert leaks == []
    assert sorted(k for k in on_purpose if ptx_report[k]["float32"] is not True) == []
