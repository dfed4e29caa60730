"""Collection rules for the whole repository: the device tests (tests/cuda) and the doctests of the
device kernels (nnlab/kernels/cuda) run only where they can -- under Numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` in the environment, in a pytest process of their own) or with a usable
GPU. The default ``python -m pytest`` on a machine without a GPU skips collecting them."""

import os

# The first `nnlab demo` on an empty kernel cache starts a background warm-up (nnlab.warmup): never
# from the tests, whose commands must not leave processes behind; tests/test_warmup.py turns it on
# where it checks it.
os.environ["NNLAB_WARMUP"] = "0"


def _device_usable():
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return True
    try:
        from numba import cuda

        return bool(cuda.is_available())
    except Exception:  # noqa: BLE001 - numba-cuda missing or no driver: no device tests
        return False


collect_ignore_glob = [] if _device_usable() else ["tests/cuda/*", "nnlab/kernels/cuda/*"]
