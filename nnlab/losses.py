"""Losses: names, conventions and target validation. The math is compiled in
:func:`nnlab.kernels.cpu.loss_fwd_bwd`.

| name | L | dL/dŷ | targets |
|---|---|---|---|
| ``mse`` | Σ‖ŷ−y‖² / (2N) (the 1/2 of the source texts, mean over the batch) | (ŷ−y)/N | float (N, K), or (N,) when K = 1 |
| ``softmax_cross_entropy`` | mean over rows of logsumexp(ŷ) − ŷ[label] | (softmax(ŷ) − onehot)/N | integer labels (N,) in [0, K) |
| ``bce`` | mean over all N·K of max(x,0) − x·y + log(1+e^(−\\|x\\|)), x the logit | (σ(x) − y)/(NK) | floats in [0, 1], (N, K) |

``bce`` matches ``torch.nn.BCEWithLogitsLoss``; ``softmax_cross_entropy`` matches
``torch.nn.CrossEntropyLoss`` on logits; ``mse`` is half of ``torch.nn.MSELoss(reduction='sum')/N``.
"""

import numpy as np

from . import _validate
from .errors import DTypeError, ShapeError, UnknownNameError
from .kernels.layout import LOSS_BCE, LOSS_MSE, LOSS_SOFTMAX_CE

CODES = {"mse": LOSS_MSE, "softmax_cross_entropy": LOSS_SOFTMAX_CE, "bce": LOSS_BCE}
ALIASES = {"cross_entropy": "softmax_cross_entropy", "ce": "softmax_cross_entropy",
           "binary_cross_entropy": "bce"}


def names():
    return list(CODES)


def canonical(name):
    if not isinstance(name, str):
        raise UnknownNameError(f"unknown loss {name!r}; known: {', '.join(names())}")
    name = ALIASES.get(name, name)
    if name not in CODES:
        raise UnknownNameError(f"unknown loss {name!r}; known: {', '.join(names())}")
    return name


def prepare_targets(name, y, n_rows, n_out, dtype):
    """Validate targets for loss ``name`` and return them as the (N, K') float array the kernels take."""
    if name == "softmax_cross_entropy":
        try:
            arr = np.asarray(y)
        except Exception as exc:  # ragged lists and the like
            raise ShapeError(f"y could not be read as an array: {exc}") from None
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim != 1:
            raise ShapeError(f"softmax_cross_entropy needs integer labels of shape (N,); got {arr.shape}")
        if arr.dtype.kind == "f":
            _validate.check_finite(arr, "y (class labels)")
            if (arr != np.round(arr)).any():
                raise DTypeError("softmax_cross_entropy needs integer class labels; got non-integer floats")
        elif arr.dtype.kind not in "iu":
            raise DTypeError(f"softmax_cross_entropy needs integer class labels; got dtype {arr.dtype}")
        if arr.shape[0] != n_rows:
            raise ShapeError(f"y has {arr.shape[0]} labels but X has {n_rows} rows")
        if arr.size and (arr.min() < 0 or arr.max() >= n_out):
            raise ShapeError(f"labels must lie in [0, {n_out}); got range [{arr.min()}, {arr.max()}]")
        return np.ascontiguousarray(arr.reshape(-1, 1), dtype=dtype)
    arr = _validate.as_float_array(y, "y", dtype=dtype)
    if arr.ndim == 1 and n_out == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape != (n_rows, n_out):
        raise ShapeError(f"y must have shape ({n_rows}, {n_out}) for loss {name!r}; got {arr.shape}")
    if name == "bce" and arr.size and (arr.min() < 0 or arr.max() > 1):
        raise ShapeError("bce targets must lie in [0, 1]")
    return arr
