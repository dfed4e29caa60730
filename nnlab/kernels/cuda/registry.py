"""Launchers of the device executor, one pair per layer kind.

A kernel module registers its kind at import::

    register(KIND_BATCHNORM, forward, backward)

``forward(prog, i, n, training, store)`` runs op ``i`` of the program forward on an ``n``-row
batch and returns True when it stored its activation derivative for the backward pass (the CPU
executor's ``op_forward`` contract); ``backward(prog, i, n, stored)`` runs it backward. ``prog``
is a :class:`nnlab.kernels.cuda.program.DeviceProgram`.
"""

import importlib
import pkgutil

_LAUNCHERS = {}


def register(kind, forward, backward):
    """Make ``forward``/``backward`` the launchers of op kind ``kind`` (a ``KIND_*`` code)."""
    _LAUNCHERS[int(kind)] = (forward, backward)


def load_all():
    """Import every kernel module of the package (each registers its kinds); returns the table."""
    from . import __path__ as pkg_path

    for info in pkgutil.iter_modules(pkg_path):
        if not info.name.startswith("_") and info.name not in ("registry",):
            importlib.import_module(f"{__package__}.{info.name}")
    return dict(_LAUNCHERS)


def launchers(kind):
    """(forward, backward) of op kind ``kind``; KeyError names a kind without device kernels."""
    if int(kind) not in _LAUNCHERS:  # also after one kernel module was imported on its own
        load_all()
    try:
        return _LAUNCHERS[int(kind)]
    except KeyError:
        raise KeyError(f"no CUDA kernels for op kind {int(kind)}") from None
