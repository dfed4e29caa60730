"""Demos: each reproduces one claim of the source texts and returns a result object saying whether
it held (the CLI only prints it). ``nnlab.demos.vanishing.run()`` is ``nnlab demo vanishing``."""

from . import vanishing

__all__ = ["vanishing"]
