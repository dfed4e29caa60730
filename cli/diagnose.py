"""``nnlab diagnose``: the gradient-health monitor on a saved model and a dataset."""

from .main import cli  # noqa: F401  (the group the command here attaches to)
