"""The compile settings and the stale-kernel-cache guard."""

import os

import nnlab
from nnlab import _config


def test_fastmath_never_drops_nan_or_inf_semantics():
    flags = set(_config.JIT["fastmath"])
    assert not flags & {"fast", "nnan", "ninf"}
    assert _config.JIT["cache"] is True


def test_guard_removes_cached_kernels_when_sources_change(tmp_path):
    cache = os.path.join(os.path.dirname(nnlab.kernels.__file__), "__pycache__")
    os.makedirs(cache, exist_ok=True)
    stamp = os.path.join(cache, "nnlab-kernels.stamp")
    fake = os.path.join(cache, "zz_guard_test.nbi")
    with open(fake, "w") as fh:
        fh.write("stale")
    with open(stamp, "w") as fh:
        fh.write("a stamp from other sources")
    _config.guard_kernel_cache()
    assert not os.path.exists(fake)
    with open(stamp) as fh:
        good = fh.read()
    assert len(good) == 64 and good != "a stamp from other sources"
    # an unchanged tree keeps its cache
    with open(fake, "w") as fh:
        fh.write("fresh")
    _config.guard_kernel_cache()
    assert os.path.exists(fake)
    os.remove(fake)
