"""Gradient clipping, in place on any list of float arrays, by compiled kernels.

* :func:`by_value`: g ← clip(g, −c, c) elementwise (``torch.nn.utils.clip_grad_value_``).
* :func:`by_norm`: each tensor separately, g ← g·min(1, c/(‖g‖ + 10⁻⁶)).
* :func:`by_global_norm`: all tensors together, N = √(Σ_k ‖g_k‖²), g ← g·min(1, c/(N + 10⁻⁶))
  (``torch.nn.utils.clip_grad_norm_``): the direction is kept, the pre-clip N is returned.

Norms are accumulated in float64 whatever the dtype, and scaled where the plain sum of squares
would overflow or underflow (as BLAS ``nrm2``): gradients of 1e200 or 1e-300 have their true norm,
never inf or 0. Because of the 10⁻⁶ (PyTorch's), a clipped
gradient's norm is c·N/(N + 10⁻⁶), just under c, and clipping again shrinks it by a further
relative ≈10⁻⁶/c: clipping is idempotent only to that accuracy.

Non-finite gradients: ``by_global_norm(..., error_if_nonfinite=True)`` raises
:class:`~nnlab.errors.NonFiniteError` before changing anything; with ``False`` the non-finite norm
is returned and the gradients are left *unchanged* (PyTorch would multiply them by NaN or 0, which
destroys the finite entries too; nnlab keeps them so the caller, e.g. a monitor, can decide).

The same operations as composable transformations, for a training loop
(``clip=("global_norm", 1.0)``):

>>> import numpy as np, nnlab as nl
>>> grads = [np.array([3.0, 0.0]), np.array([[4.0]])]
>>> clip = nl.clip.get(("global_norm", 1.0))
>>> clip
ClipByGlobalNorm(max_norm=1.0, error_if_nonfinite=False)
>>> _ = clip(grads); clip.last_norm
5.0
>>> [g.round(6).tolist() for g in grads]
[[0.6, 0.0], [[0.8]]]
"""

import math

import numpy as np

from . import _validate
from .errors import DTypeError, HyperparameterError, NonFiniteError, ShapeError, UnknownNameError
from .kernels import optim_cpu as K

__all__ = ["by_value", "by_norm", "by_global_norm", "global_norm", "Transform", "ClipByValue", "ClipByNorm",
           "ClipByGlobalNorm", "Chain", "get", "names"]


def _flat_views(grads):
    """Validate ``grads`` (an array or a list of writable float arrays); return [(g, g_flat)]."""
    if isinstance(grads, np.ndarray):
        grads = [grads]
    try:
        grads = list(grads)
    except TypeError:
        raise ShapeError("grads must be a list of arrays") from None
    out = []
    for i, g in enumerate(grads):
        if not isinstance(g, np.ndarray):
            raise DTypeError(f"grads[{i}] must be a numpy array (clipped in place); got {type(g).__name__}")
        if g.dtype not in (np.float32, np.float64):
            raise DTypeError(f"grads[{i}] must be float32 or float64; got {g.dtype}")
        if not g.flags.writeable:
            raise DTypeError(f"grads[{i}] is read-only")
        flat = g.reshape(-1) if g.flags.c_contiguous else np.ascontiguousarray(g).reshape(-1)
        out.append((g, flat))
    return out


def _write_back(pairs):
    for g, flat in pairs:
        if not np.shares_memory(g, flat):
            g[...] = flat.reshape(g.shape)


def _threshold(value, name):
    return _validate.real_scalar(value, name, nonnegative=True)


def _global(flats):
    """√(Σ_k ‖g_k‖²) of flat arrays without overflow or underflow: the plain float64 sum when it is
    in range, else the sum of squares scaled by a power of two near max|g| (the bits of the fused
    step's ``optim_cpu.global_from_sq``)."""
    total = 0.0
    for f in flats:
        total += K.sq_norm(f)
    if K.sq_in_range(total) or total != total:
        return float(np.sqrt(total))
    big = max((float(K.max_abs(f)) for f in flats), default=0.0)
    if big == 0.0 or not big <= K.DBL_MAX:
        return big
    s1, s2, e = K.norm_scales(big)
    t = 0.0
    for f in flats:
        t += K.scaled_sq(f, s1, s2)
    return math.ldexp(math.sqrt(t), e)


def global_norm(grads):
    """√(Σ_k ‖g_k‖²) over a list of arrays (float64 accumulation, scaled: no overflow or
    underflow); no change to ``grads``."""
    return _global([f for _, f in _flat_views(grads)])


def by_value(grads, clip_value):
    """Clamp every element to [−clip_value, clip_value] in place (NaN stays NaN). Returns None."""
    c = _threshold(clip_value, "clip_value")
    pairs = _flat_views(grads)
    for _, f in pairs:
        K.clamp_inplace(f, c)
    _write_back(pairs)


def by_norm(grads, max_norm):
    """Scale each array separately to L2 norm ≤ ``max_norm`` (g ← g·min(1, c/(‖g‖ + 10⁻⁶)));
    returns the list of pre-clip norms. An array with a non-finite norm is left unchanged."""
    c = _threshold(max_norm, "max_norm")
    pairs = _flat_views(grads)
    norms = []
    for _, f in pairs:
        n = float(K.norm2(f))
        s = K.clip_coef(n, c)
        if s < 1.0:
            K.scale_inplace(f, s)
        norms.append(n)
    _write_back(pairs)
    return norms


def by_global_norm(grads, max_norm, error_if_nonfinite=False):
    """PyTorch ``clip_grad_norm_``: N = √(Σ‖g_k‖²); if c/(N + 10⁻⁶) < 1 every array is multiplied
    by it. Returns the pre-clip N (a float). A non-finite N raises
    :class:`~nnlab.errors.NonFiniteError` with ``error_if_nonfinite`` (nothing changed), and is
    otherwise returned with the gradients left unchanged."""
    c = _threshold(max_norm, "max_norm")
    if not isinstance(error_if_nonfinite, (bool, np.bool_)):
        raise HyperparameterError(f"error_if_nonfinite must be True or False; got {error_if_nonfinite!r}")
    pairs = _flat_views(grads)
    n = _global([f for _, f in pairs])
    if not np.isfinite(n):
        if error_if_nonfinite:
            raise NonFiniteError(f"the total norm of the gradients is {n}; they were not clipped")
        return n
    s = K.clip_coef(n, c)
    if s < 1.0:
        for _, f in pairs:
            K.scale_inplace(f, s)
        _write_back(pairs)
    return n


# ---------------------------------------------------------------- transformations
class Transform:
    """A gradient transformation: ``t(grads)`` changes ``grads`` in place and returns them.

    ``kind`` and ``value`` describe it for a fused compiled step (``optim_cpu.clip_flat``);
    ``last_norm`` is the pre-clip global norm of the last call (None before).
    """

    kind = K.CLIP_NONE
    value = 0.0

    def __init__(self):
        self.last_norm = None

    def __call__(self, grads):
        raise NotImplementedError


class ClipByValue(Transform):
    """g ← clip(g, −clip_value, clip_value); see :func:`by_value`."""

    kind = K.CLIP_VALUE

    def __init__(self, clip_value):
        super().__init__()
        self.value = self.clip_value = _threshold(clip_value, "clip_value")

    def __repr__(self):
        return f"ClipByValue(clip_value={self.clip_value!r})"

    def __call__(self, grads):
        self.last_norm = global_norm(grads)
        by_value(grads, self.clip_value)
        return grads


class ClipByNorm(Transform):
    """Each array to norm ≤ max_norm; see :func:`by_norm`."""

    kind = K.CLIP_NORM

    def __init__(self, max_norm):
        super().__init__()
        self.value = self.max_norm = _threshold(max_norm, "max_norm")

    def __repr__(self):
        return f"ClipByNorm(max_norm={self.max_norm!r})"

    def __call__(self, grads):
        norms = by_norm(grads, self.max_norm)
        self.last_norm = float(math.hypot(*norms))
        return grads


class ClipByGlobalNorm(Transform):
    """All arrays together to norm ≤ max_norm, direction kept; see :func:`by_global_norm`."""

    kind = K.CLIP_GLOBAL_NORM

    def __init__(self, max_norm, error_if_nonfinite=False):
        super().__init__()
        self.value = self.max_norm = _threshold(max_norm, "max_norm")
        if not isinstance(error_if_nonfinite, (bool, np.bool_)):
            raise HyperparameterError(f"error_if_nonfinite must be True or False; got {error_if_nonfinite!r}")
        self.error_if_nonfinite = bool(error_if_nonfinite)

    def __repr__(self):
        return f"ClipByGlobalNorm(max_norm={self.max_norm!r}, error_if_nonfinite={self.error_if_nonfinite!r})"

    def __call__(self, grads):
        self.last_norm = by_global_norm(grads, self.max_norm, self.error_if_nonfinite)
        return grads


class Chain(Transform):
    """Apply transformations in order: ``Chain(ClipByValue(5), ClipByGlobalNorm(1))``."""

    kind = None  # not one fused kernel

    def __init__(self, *transforms):
        super().__init__()
        self.transforms = [get(t) for t in transforms]

    def __repr__(self):
        return f"Chain({', '.join(map(repr, self.transforms))})"

    def __call__(self, grads):
        for k, t in enumerate(self.transforms):
            t(grads)
            if k == 0:
                self.last_norm = t.last_norm
        return grads


_NAMES = {"value": ClipByValue, "norm": ClipByNorm, "global_norm": ClipByGlobalNorm}


def names():
    """The names :func:`get` accepts: ``['value', 'norm', 'global_norm']``."""
    return list(_NAMES)


def get(spec):
    """A transformation from ``("global_norm", 1.0)``, ``("value", 0.5)``, ``("norm", 1.0)``
    (``by_`` prefixes accepted), a :class:`Transform` (returned as is) or None (None)."""
    if spec is None or isinstance(spec, Transform):
        return spec
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], str):
        name = spec[0].lower().removeprefix("by_")
        if name not in _NAMES:
            raise UnknownNameError(f"unknown clipping {spec[0]!r}; known: {', '.join(_NAMES)}")
        return _NAMES[name](spec[1])
    raise HyperparameterError(
        f"clip must be None, a clip transformation or a (name, value) pair like ('global_norm', 1.0); got {spec!r}")
