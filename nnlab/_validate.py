"""Input checks shared by every public entry point (they run before any kernel)."""

import math
import numbers

import numpy as np

from .errors import DTypeError, HyperparameterError, NonFiniteError, ShapeError


def as_float_array(x, name, dtype=None, ndim=None, finite=True):
    """Return ``x`` as a C-contiguous float array (``dtype`` or float64), checking kind and shape.

    Integers and floats are accepted and converted; bool, complex, object and string data raise
    :class:`DTypeError`; NaN/Inf raise :class:`NonFiniteError` when ``finite``.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ShapeError(f"{name} could not be read as an array: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise DTypeError(
            f"{name} must hold real numbers (int or float); got dtype {arr.dtype}"
        )
    if ndim is not None and arr.ndim != ndim:
        raise ShapeError(f"{name} must be {ndim}-D; got shape {arr.shape}")
    src = arr
    with np.errstate(over="ignore", invalid="ignore"):  # an overflowing cast is reported below
        arr = np.ascontiguousarray(arr, dtype=dtype or (arr.dtype if arr.dtype.kind == "f" else np.float64))
    narrowed = arr.dtype.kind == "f" and (src.dtype.kind != "f" or src.dtype.itemsize > arr.dtype.itemsize)
    if finite:
        check_finite(arr, name, src if narrowed else None)
    elif narrowed and arr.size and not np.isfinite(arr).all():
        _check_cast(arr, src, name)
    return arr


def _where(bad):
    where = tuple(int(i) for i in bad)
    return where if len(where) > 1 else (where[0] if where else "()")


def _check_cast(arr, src, name):
    """Raise when a finite entry of ``src`` became ±inf in ``arr`` (a narrowing cast overflowed)."""
    over = np.isinf(arr) & np.isfinite(src)
    if over.any():
        bad = np.argwhere(over)[0] if arr.ndim else ()
        raise NonFiniteError(
            f"{name} has the finite value {src[tuple(bad)]!r} at index {_where(bad)}, which overflows {arr.dtype} "
            f"when cast (the largest {arr.dtype} is {np.finfo(arr.dtype).max:.7g}): rescale it or use float64")


def check_finite(arr, name, src=None):
    """Raise :class:`NonFiniteError` naming the first NaN/Inf entry of ``arr``; with ``src`` (the
    data ``arr`` was cast from), an entry that was finite before the cast is reported as an
    overflowing cast."""
    if arr.size and not np.isfinite(arr).all():
        if src is not None:
            _check_cast(arr, src, name)
        bad = np.argwhere(~np.isfinite(arr))[0] if arr.ndim else ()
        raise NonFiniteError(
            f"{name} contains a non-finite value ({arr[tuple(bad)]}) at index {_where(bad)}"
        )


def real_scalar(value, name, *, positive=False, nonnegative=False):
    """Return ``value`` as a finite float, or raise :class:`HyperparameterError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise HyperparameterError(f"{name} must be a real number; got {value!r}")
    try:
        v = float(value)
    except (OverflowError, ValueError, TypeError):  # an int beyond float range, an odd Real subclass
        raise HyperparameterError(f"{name} must be a finite real number; got {value!r:.60}") from None
    if not math.isfinite(v):
        raise HyperparameterError(f"{name} must be finite; got {v}")
    if positive and v <= 0:
        raise HyperparameterError(f"{name} must be > 0; got {v}")
    if nonnegative and v < 0:
        raise HyperparameterError(f"{name} must be >= 0; got {v}")
    return v


def positive_int(value, name, minimum=1):
    """Return ``value`` as an int >= ``minimum``, or raise :class:`HyperparameterError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise HyperparameterError(f"{name} must be an integer; got {value!r}")
    if value < minimum:
        raise HyperparameterError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def device(value, name="device"):
    """'cpu' or 'cuda' (case-insensitive); anything else raises HyperparameterError."""
    v = value.lower() if isinstance(value, str) else value
    if v not in ("cpu", "cuda"):
        raise HyperparameterError(f"{name} must be 'cpu' or 'cuda'; got {value!r}")
    return v


def resolve_dtype(dtype):
    """Map 'float32'/'float64' (or the numpy dtypes) to a numpy dtype; anything else raises."""
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        # (not dt = None: np.dtype(...) == None is True for float64, so None would pass the check)
        raise DTypeError(f"dtype must be 'float32' or 'float64'; got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise DTypeError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    return dt
