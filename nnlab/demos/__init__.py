"""Demos: each reproduces one claim of the source texts and returns a result object saying whether
it held (the CLI only prints it). ``nnlab.demos.vanishing.run()`` is ``nnlab demo vanishing``.

:data:`DEMOS` maps each command name to its module; every module has ``NAME``, ``CLAIM``,
``SUMMARY``, ``OPTIONS`` (the keyword arguments of ``run`` the command line exposes, besides
``seed``), ``run(...)`` (the result has ``claim``, ``held``, ``reason`` and ``to_dict()``),
``render(result, width)`` (the text the command prints) and ``plot(result, path)`` (a PNG through
matplotlib). ``nnlab demo NAME`` is built from that: a new demo is a new module and one line here
(see :mod:`nnlab.demos._common`).

>>> from nnlab import demos
>>> list(demos.DEMOS)[:3]
['vanishing', 'meanfield', 'exploding']
"""

from . import (
    batchnorm,
    dead_relu,
    ewa,
    exploding,
    init,
    lstm,
    meanfield,
    optimizers,
    phase,
    residual,
    selu,
    swish,
    vanishing,
)

DEMOS = {
    "vanishing": vanishing,
    "meanfield": meanfield,
    "exploding": exploding,
    "residual": residual,
    "batchnorm": batchnorm,
    "lstm": lstm,
    "dead-relu": dead_relu,
    "optimizers": optimizers,
    "selu": selu,
    "swish": swish,
    "init": init,
    "ewa": ewa,
    "phase": phase,
}

__all__ = ["DEMOS", "get", "names", *(m.__name__.rsplit(".", 1)[1] for m in DEMOS.values())]


def names():
    """The demo names, in the order ``nnlab demo --help`` lists them."""
    return list(DEMOS)


def get(name):
    """The module of demo ``name`` (raises :class:`~nnlab.errors.UnknownNameError`)."""
    from ..errors import UnknownNameError

    if name not in DEMOS:
        raise UnknownNameError(f"unknown demo {name!r}; known: {', '.join(DEMOS)}")
    return DEMOS[name]
