"""The compile settings and the kernel-cache guard: a cached kernel never runs old math after a
callee in another file changed, in the in-tree cache and in a user-set NUMBA_CACHE_DIR."""

import os
import shutil
import subprocess
import sys

import pytest

import nnlab
from nnlab import _config

TANH_D = "return 4.0 * e / ((1.0 + e) * (1.0 + e))"
PROBE = ("import numpy as np, nnlab; assert nnlab.__file__.startswith({root!r}), nnlab.__file__; "
         "print(repr(float(nnlab.activations.get('tanh').derivative(np.array([0.5]))[0])))")


def test_fastmath_never_drops_nan_or_inf_semantics():
    flags = set(_config.JIT["fastmath"])
    assert not flags & {"fast", "nnan", "ninf"}
    assert _config.JIT["cache"] is True


def test_the_stamp_covers_every_kernel_source_and_what_they_import():
    paths, _ = _config.kernel_sources()
    rel = {os.path.relpath(p, os.path.dirname(nnlab.__file__)) for p in paths}
    assert {"activations/_math.py", "kernels/cpu.py", "kernels/layout.py", "kernels/optim_cpu.py",
            "_config.py"} <= rel
    assert "trainer.py" not in rel and "network.py" not in rel  # no compiled code depends on them
    assert _config.kernel_stamp("1") != _config.kernel_stamp("2")  # an upgrade invalidates the cache


def test_cache_locations_are_numba_s_own(monkeypatch, tmp_path):
    from numba.core import caching, config

    root = os.path.dirname(nnlab.__file__)
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path))
    dirs = dict(_config.kernel_cache_dirs())
    sub = caching.UserProvidedCacheLocator.get_suitable_cache_subpath(os.path.join(root, "kernels", "cpu.py"))
    assert os.path.join(str(tmp_path), sub) in dirs and dirs[os.path.join(str(tmp_path), sub)] is True
    assert sub.startswith("kernels_") and len(sub) == len("kernels_") + 40  # <folder>_<sha1 of the folder>
    assert os.path.join(root, "kernels", "__pycache__") in dirs


def _copy_package(tmp_path):
    src = os.path.dirname(nnlab.__file__)
    root = tmp_path / "pkg"
    shutil.copytree(src, root / "nnlab", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.npz"))
    return str(root)


def _probe(root, cache_dir=None):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_DISABLE_JIT")}
    env["PYTHONPATH"] = root
    if cache_dir:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=root)], capture_output=True, text=True,
                         env=env, cwd=root, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


def _cached(folder):
    return [f for f in os.listdir(folder) if f.endswith(".nbi")] if os.path.isdir(folder) else []


def _edit(root, old, new):
    path = os.path.join(root, "nnlab", "activations", "_math.py")
    with open(path) as fh:
        text = fh.read()
    assert text.count(old) == 1
    with open(path, "w") as fh:
        fh.write(text.replace(old, new))


@pytest.mark.parametrize("where", ["in-tree", "NUMBA_CACHE_DIR"])
def test_editing_a_callee_takes_effect_with_a_filled_cache(tmp_path, where):
    """Fill the cache with the unchanged sources, multiply tanh's derivative (in activations/_math.py,
    inlined into a kernel of kernels/cpu.py) by 1.01, and run again on the filled cache."""
    root = _copy_package(tmp_path)
    cache_dir = str(tmp_path / "numba-cache") if where == "NUMBA_CACHE_DIR" else None
    before = _probe(root, cache_dir)
    if cache_dir:
        filled = [os.path.join(cache_dir, d) for d in os.listdir(cache_dir) if d.startswith("kernels_")]
        assert len(filled) == 1 and _cached(filled[0])
        assert not _cached(os.path.join(root, "nnlab", "kernels", "__pycache__"))
    else:
        assert _cached(os.path.join(root, "nnlab", "kernels", "__pycache__"))
    assert before == pytest.approx(1.0 - 0.4621171572600098 ** 2, rel=1e-12)  # 1 - tanh(0.5)^2
    _edit(root, TANH_D, "return 1.01 * (4.0 * e / ((1.0 + e) * (1.0 + e)))")
    after = _probe(root, cache_dir)
    assert after == pytest.approx(1.01 * before, rel=1e-12)
    _edit(root, "return 1.01 * (4.0 * e / ((1.0 + e) * (1.0 + e)))", TANH_D)  # and back again
    assert _probe(root, cache_dir) == before
