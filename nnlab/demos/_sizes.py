"""What each demo needs in memory and work, from its options, checked before it allocates anything.

:func:`check` (called by every demo's ``run`` and by ``nnlab demo NAME`` before it) raises
:class:`~nnlab.errors.ResourceError` naming the options to reduce when the estimate (see
:mod:`nnlab.limits`) exceeds the memory available. Estimates err on the large side: each counts
the networks a demo holds at once (parameters, gradients, optimizer state, the workspace of its
batch), the gradient monitor's history over its steps and the per-step records it keeps. A demo
also refuses settings whose floating-point work exceeds :data:`WORK_LIMIT` (a demo is minutes, not
hours: beyond that, train with ``nnlab train`` or the library).

>>> from nnlab.demos import _sizes
>>> _sizes.estimate("dead-relu", dict(depth=6, width=32, steps=200)) < 2**30
True
"""

from .. import limits
from ..errors import ResourceError

MOONS = 400  # the moons demos' default size


def _mlp(depth, width, n_in, n_out, rows, steps=0, monitor=False, itemsize=8, runs=1, wide=2):
    """One trained MLP of ``depth`` hidden layers at a time, ``runs`` records of its steps kept.
    ``wide``: workspace elements per unit and row (2 for Dense; more for normalisation layers)."""
    sizes = [n_in] + [width] * depth + [n_out]
    ws = wide * limits.dense_workspace(sizes) // 2
    one = limits.network_bytes(limits.dense_params(sizes), ws, rows, itemsize,
                               monitor_layers=depth + 1 if monitor else 0, steps=steps)
    kept = runs * steps * (depth + 4) * 40  # losses and per-layer series as Python lists
    return one + kept


def estimate(name, o):
    """(bytes) that demo ``name`` needs with options ``o`` (a dict of its ``run`` arguments)."""
    g = o.get
    if name == "vanishing":
        return _mlp(g("depth", 20), g("width", 32), g("width", 32), 1, g("batch", 128))
    if name == "meanfield":
        return _mlp(g("depth", 30), g("width", 256), g("width", 256), 1, g("batch", 128))
    if name == "init":
        return _mlp(g("depth", 20), g("width", 128), g("width", 128), 1, g("batch", 256))
    if name == "selu":
        w = max(g("wide", 256), g("narrow", 64))
        return _mlp(g("depth", 32), w, w, 1, g("batch", 512))
    if name == "exploding":
        item = 4 if g("dtype", "float32") == "float32" else 8
        return 2 * _mlp(g("depth", 10), g("width", 32), g("width", 32), 1, g("batch", 256), g("steps", 100),
                        monitor=True, itemsize=item)
    if name == "dead-relu":
        return _mlp(g("depth", 6), g("width", 32), 2, 2, MOONS, g("steps", 200), monitor=True, runs=4)
    if name == "optimizers":
        return _mlp(g("depth", 10), g("width", 32), 2, 2, g("samples", 200), g("steps", 300), monitor=True,
                    runs=10)
    if name in ("batchnorm", "residual"):
        return _mlp(g("depth", 30), g("width", 32), 2, 2, g("samples", 200), g("steps", 200), monitor=True,
                    runs=4, wide=6)
    if name == "lstm":
        T, h, n = g("T", 50), g("hidden", 32), g("samples", 4000) + g("test", 1000)
        per_row = 2 * T * (2 + 16 * h) + 2 * T  # gates, states and their gradients per step
        data = 8 * n * (2 * T + 1) * 3
        return data + limits.network_bytes(4 * (h + 2) * h + 4 * h + h + 1, per_row, max(g("batch", 64), 64))
    return 0


WORK_LIMIT = 1e13  # floating-point operations: tens of minutes on two cores; more is not a demo


def work(name, o):
    """Floating-point operations (about 6 per parameter and row for a forward and backward pass)
    that demo ``name`` runs with options ``o``."""
    g = o.get

    def mlp(depth, width, n_in, rows, passes):
        return 6.0 * limits.dense_params([n_in] + [width] * depth + [2]) * rows * passes

    if name in ("vanishing", "meanfield", "init"):
        w = g("width", 32)
        return 8 * g("seeds", 1) * mlp(g("depth", 20), w, w, g("batch", 128), 1)
    if name == "selu":
        w = max(g("wide", 256), g("narrow", 64))
        return 4 * mlp(g("depth", 32), w, w, g("batch", 512), 1)
    if name == "exploding":
        return 2 * mlp(g("depth", 10), g("width", 32), g("width", 32), g("batch", 256), g("steps", 100))
    if name == "dead-relu":
        return 4 * mlp(g("depth", 6), g("width", 32), 2, MOONS, g("steps", 200))
    if name == "optimizers":
        return 10 * mlp(g("depth", 10), g("width", 32), 2, g("samples", 200), g("steps", 300))
    if name in ("batchnorm", "residual"):
        return 4 * mlp(g("depth", 30), g("width", 32), 2, g("samples", 200), g("steps", 200))
    if name == "lstm":
        h = g("hidden", 32)
        return 2 * 6.0 * 4 * (h + 2) * h * g("samples", 4000) * g("T", 50) * g("epochs", 15)
    return 0.0


_REDUCE = {
    "vanishing": "--depth, --width or --batch",
    "meanfield": "--depth, --width or --batch",
    "init": "--depth, --width or --batch",
    "selu": "--depth, --wide, --narrow or --batch",
    "exploding": "--depth, --width, --batch or --steps",
    "dead-relu": "--steps, --depth or --width",
    "optimizers": "--steps, --depth, --width or --samples",
    "batchnorm": "--steps, --depth, --width or --samples",
    "residual": "--steps, --depth, --width or --samples",
    "lstm": "--samples, --test, --T, --hidden or --batch",
}


def check(name, o):
    """Raise :class:`~nnlab.errors.ResourceError` when demo ``name`` with options ``o`` needs more
    memory than is available."""
    shown = ", ".join(f"{k}={v}" for k, v in o.items() if isinstance(v, int) and not isinstance(v, bool))
    reduce = _REDUCE.get(name, "its sizes")
    limits.require(estimate(name, o), f"demo {name} ({shown})", reduce)
    flops = work(name, o)
    if flops > WORK_LIMIT:
        raise ResourceError(f"demo {name} ({shown}) would run about {flops:.0e} floating-point operations, hours "
                            f"or more; a demo runs at most {WORK_LIMIT:.0e} (minutes); reduce {reduce}")
