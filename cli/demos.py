"""``nnlab demo ...`` commands beyond ``vanishing`` (which lives in main.py): each calls a demo
function of :mod:`nnlab.demos`, prints its result, and exits 0 when the demo's claim held."""

from .main import demo  # noqa: F401  (the group the commands here attach to)
