"""Set-up of the device tests: small blocks under the simulator, so that tiny arrays run in several
blocks and partial blocks (32 threads, the smallest legal block, on a GPU)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the helpers beside these tests

from nnlab.kernels.cuda import device as D


@pytest.fixture(autouse=True, scope="package")
def small_blocks():
    old = D.set_threads_per_block(4 if D.simulated() else 32)
    yield
    D.set_threads_per_block(old)

collect_ignore = ["ptx_check.py"]  # a script the PTX tests run in a process of its own
