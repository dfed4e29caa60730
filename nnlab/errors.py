"""Exceptions raised on bad input, always before any kernel runs.

Every class derives from :class:`NnlabError` and from the matching built-in (``ValueError`` or
``TypeError``), so ``except ValueError`` keeps working for users who do not know nnlab's types.
The CLI turns any :class:`NnlabError` into a one-line message and a non-zero exit.
"""


class NnlabError(Exception):
    """Base class of every error nnlab raises on purpose."""


class ShapeError(NnlabError, ValueError):
    """An array has the wrong number of dimensions or the wrong size."""


class DTypeError(NnlabError, TypeError):
    """An array has a dtype nnlab cannot use (complex, object, bool, strings, or a dtype mismatch)."""


class NonFiniteError(NnlabError, ValueError):
    """Input data contains NaN or infinity."""


class UnknownNameError(NnlabError, ValueError):
    """A name (activation, initializer, loss, layer, ...) is not registered."""


class HyperparameterError(NnlabError, ValueError):
    """A hyperparameter is out of its valid range, of the wrong type, or not accepted."""


class ActivationCompileError(NnlabError, ValueError):
    """A user-registered activation could not be compiled or evaluated by Numba."""


class ModelFileError(NnlabError, ValueError):
    """A saved model file is missing, corrupt, or not an nnlab model."""


class ResourceError(NnlabError, ValueError):
    """A run would need more memory than the machine has (or than a documented bound allows); raised
    before anything large is allocated, naming what to reduce."""


class DeviceError(NnlabError, RuntimeError):
    """A device was asked for that is not usable here (no GPU or driver, numba-cuda not installed)."""
