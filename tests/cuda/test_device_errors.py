"""Asking for the device where it cannot run: a plain process (no simulator) on a machine without a
GPU gets DeviceError from the library and one line from the CLI; ``import nnlab`` never imports
numba.cuda."""

import os
import subprocess
import sys

import pytest


def _plain(code):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def _gpu_present():
    proc = _plain("from numba import cuda; print(cuda.is_available())")
    return proc.stdout.strip() == "True"


def test_import_nnlab_does_not_load_the_cuda_target():
    proc = _plain("import sys, nnlab; nnlab.Sequential([nnlab.Dense(2, 1)]); "
                  "print('numba.cuda' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_device_cuda_without_gpu_is_a_device_error():
    if _gpu_present():
        pytest.skip("a GPU is present here: device='cuda' is usable, so there is no error to check")
    proc = _plain("import nnlab as nl\n"
                  "try:\n    nl.Sequential([nl.Dense(2, 1)], device='cuda')\n"
                  "except nl.errors.DeviceError as e:\n    print('DeviceError:', e)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("DeviceError:") and "GPU" in proc.stdout
    cli = subprocess.run([sys.executable, "-m", "nnlab_cli.main", "demo", "vanishing", "--device", "cuda"],
                         capture_output=True, text=True, timeout=600,
                         env={k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"})
    assert cli.returncode != 0
    lines = [ln for ln in cli.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "GPU" in lines[0] and "Traceback" not in cli.stderr, cli.stderr
