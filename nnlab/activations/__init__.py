"""The activation registry: every activation, its derivatives and its documented facts, in one place.

Each :class:`Entry` names an integer code of the compiled scalar math in
:mod:`nnlab.activations._math` (forward, dA/dZ, dA/dp for each hyperparameter), its hyperparameters
with defaults and which of them are learnable, and its documented facts as data (:class:`Facts`):
the tests assert them, ``docs/activations.md`` and ``nnlab activations`` print them.

>>> import nnlab as nl
>>> act = nl.activations.get("swish", beta=1.0)
>>> float(act.forward([0.0])[0])
0.0
>>> act.param_names
('beta',)

Users add their own with :func:`register` (a scalar Python function and its derivative, compiled by
Numba); a registered activation works everywhere a built-in one does.
"""

import math
import numbers
import threading
from dataclasses import dataclass, field

import numpy as np

from .. import _validate
from ..errors import ActivationCompileError, HyperparameterError, NonFiniteError, ShapeError, UnknownNameError
from . import _math as M

INF = math.inf

__all__ = [
    "Activation", "Entry", "Facts", "Param", "get", "names", "entry", "entries", "register",
    "unregister",
]


@dataclass(frozen=True)
class Param:
    """One hyperparameter of an activation: its slot in the scalar math, default, constraints."""

    name: str
    default: float
    learnable: bool = False
    positive: bool = False
    nonnegative: bool = False
    nonzero: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Facts:
    """Documented facts at the default hyperparameters; every field is asserted by the tests.

    ``range``/``deriv_range`` are (low, high) with ``*_closed`` saying whether each end is attained;
    ``deriv_values`` is the finite set f' takes (piecewise-linear activations); ``at_zero`` is
    (f(0), f'(0)) -- at a kink, the one-sided value used; ``limits`` is ((f(-inf), f'(-inf)),
    (f(+inf), f'(+inf))); ``minimum`` is (argmin, min); ``max_abs_deriv_at`` the z where |f'| peaks;
    ``kinks`` where f' jumps (finite differences avoid them); ``identities`` are stated relations,
    each checked by its own test.
    """

    range: tuple = (-INF, INF)
    range_closed: tuple = (False, False)
    deriv_range: tuple = None
    deriv_closed: tuple = (True, True)
    deriv_values: tuple = None
    at_zero: tuple = None
    limits: tuple = None
    minimum: tuple = None
    max_abs_deriv_at: tuple = None
    kinks: tuple = ()
    identities: tuple = ()


@dataclass(frozen=True)
class Entry:
    """A registry entry. ``code`` selects the compiled scalar math; ``params`` fill slots p0..p2."""

    name: str
    code: int
    formula: str
    derivative: str
    params: tuple = ()
    facts: Facts = field(default_factory=Facts)
    noise: str = None  # None, "uniform" (u ~ U(0,1), eval u = 0.5) or "normal" (u ~ N(0,1), eval 0)
    variants: dict = None  # option name -> {value: code}, e.g. gelu's approximate
    doc: str = ""
    custom: bool = False
    kernels: tuple = None  # custom entries: (forward, derivative, (param derivatives...)) dispatchers

    @property
    def param_names(self):
        return tuple(p.name for p in self.params)

    @property
    def eval_noise(self):
        return 0.5 if self.noise == "uniform" else 0.0


_P = Param
_SELU_ALPHA = 1.6732632423543772
_SELU_LAMBDA = 1.0507009873554805

_BUILTIN = [
    Entry("identity", M.IDENTITY, "z", "1",
          facts=Facts(deriv_range=(1.0, 1.0), deriv_values=(1.0,), at_zero=(0.0, 1.0),
                      limits=((-INF, 1.0), (INF, 1.0)))),
    Entry("sigmoid", M.SIGMOID, "1/(1+e^(-αz))", "ασ(1-σ)",
          (_P("alpha", 1.0, nonzero=True, doc="slope"),),
          Facts(range=(0.0, 1.0), deriv_range=(0.0, 0.25), deriv_closed=(False, True),
                at_zero=(0.5, 0.25), limits=((0.0, 0.0), (1.0, 0.0)), max_abs_deriv_at=(0.0,),
                identities=("0 < f' <= α/4, maximum at z = 0",)),
          doc="The logistic function; its derivative never exceeds α/4, the root of vanishing gradients."),
    Entry("tanh", M.TANH, "tanh z", "1 - tanh² z",
          facts=Facts(range=(-1.0, 1.0), deriv_range=(0.0, 1.0), deriv_closed=(False, True),
                      at_zero=(0.0, 1.0), limits=((-1.0, 0.0), (1.0, 0.0)), max_abs_deriv_at=(0.0,),
                      identities=("tanh z = 2σ(2z) - 1",))),
    Entry("relu", M.RELU, "max(0, z)", "1 if z > 0 else 0",
          facts=Facts(range=(0.0, INF), range_closed=(True, False), deriv_range=(0.0, 1.0),
                      deriv_values=(0.0, 1.0), at_zero=(0.0, 0.0), limits=((0.0, 0.0), (INF, 1.0)),
                      kinks=(0.0,), identities=("f'(0) = 0 (the value PyTorch uses)",))),
    Entry("leaky_relu", M.LEAKY_RELU, "z if z > 0 else αz", "1 if z > 0 else α",
          (_P("alpha", 0.01, doc="negative slope"),),
          Facts(deriv_range=(0.01, 1.0), deriv_values=(0.01, 1.0), at_zero=(0.0, 0.01),
                limits=((-INF, 0.01), (INF, 1.0)), kinks=(0.0,))),
    Entry("prelu", M.LEAKY_RELU, "z if z > 0 else αz, α learnable", "1 if z > 0 else α",
          (_P("alpha", 0.25, learnable=True, doc="learnable negative slope"),),
          Facts(deriv_range=(0.25, 1.0), deriv_values=(0.25, 1.0), at_zero=(0.0, 0.25),
                limits=((-INF, 0.25), (INF, 1.0)), kinks=(0.0,),
                identities=("dA/dα = min(z, 0)",))),
    Entry("rrelu", M.RRELU, "z if z > 0 else αz, α ~ U(lower, upper) in training",
          "1 if z > 0 else α",
          (_P("lower", 1 / 8, nonnegative=True), _P("upper", 1 / 3, nonnegative=True)),
          Facts(deriv_range=((1 / 8 + 1 / 3) / 2, 1.0), deriv_values=((1 / 8 + 1 / 3) / 2, 1.0),
                at_zero=(0.0, (1 / 8 + 1 / 3) / 2), limits=((-INF, (1 / 8 + 1 / 3) / 2), (INF, 1.0)),
                kinks=(0.0,), identities=("eval mode is deterministic: α = (lower + upper)/2",)),
          noise="uniform", doc="Facts are for eval mode."),
    Entry("noisy_relu", M.NOISY_RELU, "max(0, z + ε), ε ~ N(0, σ²) in training",
          "1 if z + ε > 0 else 0",
          (_P("sigma", 0.1, nonnegative=True, doc="noise standard deviation"),),
          Facts(range=(0.0, INF), range_closed=(True, False), deriv_range=(0.0, 1.0),
                deriv_values=(0.0, 1.0), at_zero=(0.0, 0.0), limits=((0.0, 0.0), (INF, 1.0)),
                kinks=(0.0,), identities=("eval mode is max(0, z); training noise is seeded",)),
          noise="normal", doc="Facts are for eval mode."),
    Entry("elu", M.ELU, "z if z > 0 else α(e^z - 1)", "1 if z > 0 else αe^z = f + α",
          (_P("alpha", 1.0, nonnegative=True),),
          Facts(range=(-1.0, INF), deriv_range=(0.0, 1.0), deriv_closed=(False, True),
                at_zero=(0.0, 1.0), limits=((-1.0, 0.0), (INF, 1.0)),
                identities=("f' = f + α for z < 0", "f >= -α"))),
    Entry("selu", M.SELU, "λ·elu(z; α)", "λ if z > 0 else λαe^z",
          (_P("alpha", _SELU_ALPHA), _P("lambda", _SELU_LAMBDA)),
          Facts(range=(-_SELU_ALPHA * _SELU_LAMBDA, INF),
                deriv_range=(0.0, _SELU_ALPHA * _SELU_LAMBDA), deriv_closed=(False, True),
                at_zero=(0.0, _SELU_ALPHA * _SELU_LAMBDA),
                limits=((-_SELU_ALPHA * _SELU_LAMBDA, 0.0), (INF, _SELU_LAMBDA)), kinks=(0.0,),
                identities=("self-normalizing: mean 0, variance 1 kept through LeCun-normal layers",))),
    Entry("celu", M.CELU, "max(0,z) + min(0, α(e^(z/α) - 1))", "1 if z > 0 else e^(z/α)",
          (_P("alpha", 1.0, positive=True),),
          Facts(range=(-1.0, INF), deriv_range=(0.0, 1.0), deriv_closed=(False, True),
                at_zero=(0.0, 1.0), limits=((-1.0, 0.0), (INF, 1.0)))),
    Entry("gelu", M.GELU, "z·Φ(z)", "Φ(z) + zφ(z)",
          facts=Facts(range=(-0.16997120747990366, INF), range_closed=(True, False),
                      deriv_range=(-0.12890414518252075, 1.1289041451825208),
                      at_zero=(0.0, 0.5), limits=((0.0, 0.0), (INF, 1.0)),
                      minimum=(-0.7517915184765723, -0.16997120747990366)),
          variants={"approximate": {"none": M.GELU, "tanh": M.GELU_TANH}},
          doc="approximate='tanh' gives 0.5z(1 + tanh(√(2/π)(z + 0.044715z³))), as PyTorch."),
    Entry("softplus", M.SOFTPLUS, "(1/β)·log(1 + e^(βz))", "σ(βz)",
          (_P("beta", 1.0, positive=True),),
          Facts(range=(0.0, INF), deriv_range=(0.0, 1.0), deriv_closed=(False, False),
                at_zero=(math.log(2.0), 0.5), limits=((0.0, 0.0), (INF, 1.0)),
                identities=("f' = σ(βz)", "f > max(0, z)", "f(0) = log 2 / β"))),
    Entry("swish", M.SWISH, "z·σ(βz)", "σ(βz) + βzσ(βz)(1 - σ(βz))",
          (_P("beta", 1.0, learnable=True),),
          Facts(range=(-0.2784645427610738, INF), range_closed=(True, False),
                deriv_range=(-0.09983932012852845, 1.0998393201285284),
                at_zero=(0.0, 0.5), limits=((0.0, 0.0), (INF, 1.0)),
                minimum=(-1.2784645426211074, -0.2784645427610738),
                identities=("β → 0: f → z/2", "β → ∞: f → relu(z)", "β = 1 is SiLU")),
          doc="β = 1 is SiLU."),
    Entry("mish", M.MISH, "z·tanh(softplus(z))", "tanh(sp) + z·sech²(sp)·σ(z)",
          facts=Facts(range=(-0.30884341301725043, INF), range_closed=(True, False),
                      deriv_range=(-0.11252612238875638, 1.0884981612515674),
                      at_zero=(0.0, math.tanh(math.log(2.0))), limits=((0.0, 0.0), (INF, 1.0)),
                      minimum=(-1.1924312137461113, -0.30884341301725043))),
    Entry("acon_c", M.ACON_C, "(p1 - p2)z·σ(β(p1 - p2)z) + p2·z",
          "(p1-p2)[σ(x) + xσ'(x)] + p2, x = β(p1-p2)z",
          (_P("p1", 1.0, learnable=True), _P("p2", 0.0, learnable=True),
           _P("beta", 1.0, learnable=True)),
          Facts(range=(-0.2784645427610738, INF), range_closed=(True, False),
                deriv_range=(-0.09983932012852845, 1.0998393201285284),
                at_zero=(0.0, 0.5), limits=((0.0, 0.0), (INF, 1.0)),
                minimum=(-1.2784645426211074, -0.2784645427610738),
                identities=("p1 = 1, p2 = 0 gives swish",))),
    Entry("softsign", M.SOFTSIGN, "z/(1 + |z|)", "1/(1 + |z|)²",
          facts=Facts(range=(-1.0, 1.0), deriv_range=(0.0, 1.0), deriv_closed=(False, True),
                      at_zero=(0.0, 1.0), limits=((-1.0, 0.0), (1.0, 0.0)),
                      max_abs_deriv_at=(0.0,))),
    Entry("hard_sigmoid", M.HARD_SIGMOID, "relu6(z + 3)/6", "1/6 if -3 < z < 3 else 0",
          facts=Facts(range=(0.0, 1.0), range_closed=(True, True), deriv_range=(0.0, 1 / 6),
                      deriv_values=(0.0, 1 / 6), at_zero=(0.5, 1 / 6),
                      limits=((0.0, 0.0), (1.0, 0.0)), kinks=(-3.0, 3.0))),
    Entry("hard_swish", M.HARD_SWISH, "z·relu6(z + 3)/6",
          "0 if z <= -3, 1 if z >= 3, else (2z + 3)/6",
          facts=Facts(range=(-0.375, INF), range_closed=(True, False), deriv_range=(-0.5, 1.5),
                      deriv_closed=(False, False),
                      at_zero=(0.0, 0.5), limits=((0.0, 0.0), (INF, 1.0)),
                      minimum=(-1.5, -0.375), kinks=(-3.0, 3.0))),
    Entry("gaussian", M.GAUSSIAN, "exp(-z²)", "-2z·exp(-z²)",
          facts=Facts(range=(0.0, 1.0), range_closed=(False, True),
                      deriv_range=(-math.sqrt(2.0) * math.exp(-0.5), math.sqrt(2.0) * math.exp(-0.5)),
                      at_zero=(1.0, 0.0), limits=((0.0, 0.0), (0.0, 0.0)),
                      max_abs_deriv_at=(-1 / math.sqrt(2.0), 1 / math.sqrt(2.0)))),
]

# "scaled" is a wrapper, not a code: a·θ(z) around any activation θ (see get()).
SCALED_DOC = ("scaled", "a·θ(z)", "a·θ'(z)", "wraps any activation θ; a fixed or learnable (the 'a > 1' "
              "reparametrisation). get('scaled', base='tanh', a=1.7159, learnable=True)")

_lock = threading.RLock()
_REGISTRY = {e.name: e for e in _BUILTIN}
_CUSTOM = {}  # code -> Entry
_version = [0]  # bumped on every register/unregister: kernel sets keyed on it


def names():
    """All registered activation names (built-in first, then user-registered), plus 'scaled'."""
    return list(_REGISTRY) + ["scaled"]


def entry(name):
    """The :class:`Entry` for ``name``; :class:`UnknownNameError` lists the known names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownNameError(
            f"unknown activation {name!r}; known: {', '.join(names())}"
        ) from None


def entries():
    """All registry entries, built-in first."""
    return list(_REGISTRY.values())


def custom_entries():
    """User-registered entries by code (what the custom kernel set dispatches to)."""
    return dict(_CUSTOM)


def registry_version():
    return _version[0]


# ---------------------------------------------------------------- the Activation object
class Activation:
    """An activation with bound hyperparameters: elementwise ``forward``/``derivative`` on arrays.

    The math runs in compiled kernels (float32 stays float32, everything else becomes float64).
    ``param_names`` lists the learnable hyperparameters (those a network trains);
    ``hyperparams`` all of them, plus the output scale ``a`` (1 unless wrapped by 'scaled').
    """

    def __init__(self, ent, values, learnable, code=None, scale=1.0, scale_learnable=False,
                 variant=None):
        self.entry = ent
        self.code = ent.code if code is None else code
        self.values = dict(values)
        self.learnable = tuple(learnable)
        self.scale = float(scale)
        self.scale_learnable = bool(scale_learnable)
        self.variant = dict(variant or {})

    # identity and description
    @property
    def name(self):
        return self.entry.name

    @property
    def label(self):
        """A short unique description: 'tanh', 'gelu(approximate=tanh)', 'scaled(tanh, a=1.7159)'."""
        text = self.name + "".join(f"({k}={v})" for k, v in self.variant.items())
        if self.scale != 1.0 or self.scale_learnable:
            text = f"scaled({text}, a={self.scale:g}{', learnable' if self.scale_learnable else ''})"
        return text

    @property
    def param_names(self):
        """Learnable hyperparameters, in slot order ('a' last when scaled with a learnable a)."""
        return self.learnable + (("a",) if self.scale_learnable else ())

    @property
    def hyperparams(self):
        out = dict(self.values)
        if self.scale != 1.0 or self.scale_learnable:
            out["a"] = self.scale
        return out

    def __repr__(self):
        args = ", ".join(f"{k}={v:g}" for k, v in self.hyperparams.items())
        args += "".join(f", {k}={v!r}" for k, v in self.variant.items())
        return f"Activation({self.name!r}{', ' if args and args[0] != ',' else ''}{args.lstrip(', ')})"

    def slots(self):
        """(p0, p1, p2, a): the values the scalar kernels take."""
        p = [self.values[pp.name] for pp in self.entry.params] + [0.0] * (3 - len(self.entry.params))
        return p[0], p[1], p[2], self.scale

    def learnable_mask(self):
        """Bit k set when slot k is learnable (bit 3 is the scale a)."""
        mask = 0
        for k, p in enumerate(self.entry.params):
            if p.name in self.learnable:
                mask |= 1 << k
        if self.scale_learnable:
            mask |= 8
        return mask

    def set_value(self, name, value):
        """Set a hyperparameter, validated as :func:`get` validates it (sigmoid's α must be
        nonzero, softplus's β positive, ...; the scale ``a`` any finite number). Writing back the
        value it already has is always accepted (training may have moved a learned value outside
        the range a user may choose, as :func:`from_config` explains)."""
        self._set_learned(name, self.check_value(name, value))

    def check_value(self, name, value):
        """``value`` as a float if :meth:`set_value` accepts it for ``name``, else the error it raises."""
        if name == "a":
            v = _validate.real_scalar(value, f"{self.name}.a")
            return v
        for p in self.entry.params:
            if p.name == name:
                v = _check_value_or_none(value)
                if v is not None and v == self.values[name]:
                    return v
                return _check_value(p, value, self.name)
        raise UnknownNameError(f"activation {self.name!r} has no parameter {name!r}; it has "
                               f"{list(self.values) + ['a']}")

    def _set_learned(self, name, value):
        """Set a value without the checks of :meth:`set_value` (a network writing back what it learned)."""
        if name == "a":
            self.scale = float(value)
        else:
            self.values[name] = float(value)

    def copy(self):
        """An independent copy (a layer owns its activation: learned values are written back into it)."""
        return Activation(self.entry, self.values, self.learnable, code=self.code, scale=self.scale,
                          scale_learnable=self.scale_learnable, variant=self.variant)

    def config(self):
        """A JSON-able description from which :func:`from_config` rebuilds this activation."""
        return {"name": self.name, "values": dict(self.values), "learnable": list(self.learnable),
                "scale": self.scale, "scale_learnable": self.scale_learnable,
                "variant": dict(self.variant)}

    # elementwise evaluation
    def _run(self, what, z, training, seed, noise):
        from ..kernels import kernels_for

        arr = _validate.as_float_array(z, "z", finite=False)
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
        flat = arr.reshape(-1)
        out = np.empty_like(flat)
        u = self._noise(flat.size, training, seed, noise)
        p0, p1, p2, a = self.slots()
        kernels_for((self.code,)).act_map(what, self.code, flat, out, p0, p1, p2, a, u)
        if not np.isfinite(out).all() and np.isfinite(u).all():
            # a moderate finite input never gives a silent inf/NaN (there the hyperparameters
            # overflow it); beyond |z| = OVERFLOW_Z results overflow as IEEE arithmetic does
            bad_at = ~np.isfinite(out) & (np.abs(flat) <= OVERFLOW_Z)
            if not bad_at.any():
                return out.reshape(arr.shape if np.ndim(z) else ())
            bad = int(np.flatnonzero(bad_at)[0])
            values = ", ".join(f"{k}={v!r}" for k, v in {**self.values, "a": a}.items())
            raise NonFiniteError(f"{self.name}({values}) overflows at the finite z={float(flat[bad])!r} "
                                 f"(result {float(out[bad])!r} in {out.dtype}); use smaller hyperparameters")
        return out.reshape(arr.shape if np.ndim(z) else ())  # a scalar in gives a 0-d array out

    def _noise(self, n, training, seed, noise):
        if seed is not None:
            seed = _validate.positive_int(seed, "seed", minimum=0)
        if noise is not None:
            u = _validate.as_float_array(noise, "noise", dtype=np.float64).reshape(-1)
            if u.size not in (1, n):
                raise ShapeError(f"noise must have 1 or {n} entries; got {u.size}")
            return u
        if self.entry.noise is None or not training:
            return np.full(1, self.entry.eval_noise)
        rng = np.random.default_rng(seed)
        return rng.random(n) if self.entry.noise == "uniform" else rng.standard_normal(n)

    def forward(self, z, training=False, seed=None, noise=None):
        """f(z) elementwise. ``training`` draws the noise of rrelu/noisy_relu (seeded by ``seed``);
        ``noise`` passes the noise sample u explicitly (U(0,1) for rrelu, N(0,1) for noisy_relu).

        A result that is not finite for a finite ``z`` with ``|z| <= OVERFLOW_Z`` (1e30) raises
        NonFiniteError naming the hyperparameters that overflow it (e.g. leaky_relu with α = 1e308);
        beyond that, results overflow to ±inf as IEEE arithmetic does (the closure of the range).
        The same holds for :meth:`derivative` and :meth:`param_derivative`."""
        return self._run(0, z, training, seed, noise)

    __call__ = forward

    def derivative(self, z, training=False, seed=None, noise=None):
        """df/dz elementwise (at kinks, the documented one-sided value)."""
        return self._run(1, z, training, seed, noise)

    def param_derivative(self, z, name, training=False, seed=None, noise=None):
        """df/dp elementwise for hyperparameter ``name`` (learnable or not, or 'a')."""
        if name == "a":
            return self._run(5, z, training, seed, noise)
        for k, p in enumerate(self.entry.params):
            if p.name == name:
                return self._run(2 + k, z, training, seed, noise)
        raise UnknownNameError(
            f"activation {self.name!r} has no parameter {name!r}; it has {list(self.values) + ['a']}"
        )


OVERFLOW_Z = 1e30  # |z| up to which a finite z must give a finite result (Activation.forward)


def _check_value_or_none(value):
    """``value`` as a float when it is a real number that converts, else None."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (OverflowError, ValueError, TypeError):
        return None


def _check_value(p, value, ent_name):
    v = _validate.real_scalar(value, f"{ent_name}.{p.name}", positive=p.positive,
                              nonnegative=p.nonnegative)
    if p.nonzero and v == 0:
        raise HyperparameterError(f"{ent_name}.{p.name} must be nonzero; got 0")
    if ent_name == "softplus" and p.name == "beta" and v < 1e-300:
        # f(0) = log(2)/β: beyond this every output overflows
        raise HyperparameterError(f"softplus.beta must be >= 1e-300 (f(0) = log(2)/beta overflows); got {v}")
    return v


def get(name, *, learnable=None, **params):
    """Return an :class:`Activation` for ``name`` with hyperparameters ``params``.

    ``learnable``: None keeps the registry's default, True/False sets all hyperparameters, or give
    an iterable of names. ``get("gelu", approximate="tanh")`` selects the tanh approximation;
    ``get("scaled", base="tanh", a=1.7159, learnable=True)`` wraps any activation as a·θ(z).
    An :class:`Activation` passed as ``name`` is returned unchanged.
    """
    if isinstance(name, Activation):
        if params or learnable is not None:
            raise HyperparameterError("pass hyperparameters to get() only with a name, not an Activation")
        return name
    if name == "scaled":
        return _get_scaled(learnable=learnable, **params)
    ent = entry(name)
    code, variant = ent.code, {}
    for opt, choices in (ent.variants or {}).items():
        if opt in params:
            val = params.pop(opt)
            key = {True: "tanh", False: "none"}.get(val, val) if isinstance(val, bool) else val
            if not isinstance(key, str) or key not in choices:
                raise HyperparameterError(
                    f"{name}.{opt} must be one of {sorted(choices)}; got {val!r}")
            code, variant[opt] = choices[key], key
    known = ent.param_names
    unknown = set(params) - set(known)
    if unknown:
        raise HyperparameterError(
            f"activation {name!r} takes {list(known) + list(ent.variants or [])}; "
            f"unknown: {sorted(unknown)}")
    values = {p.name: _check_value(p, params.get(p.name, p.default), name) for p in ent.params}
    if name == "rrelu" and values["lower"] > values["upper"]:
        raise HyperparameterError(f"rrelu needs lower <= upper; got {values['lower']} > {values['upper']}")
    if learnable is None:
        learn = tuple(p.name for p in ent.params if p.learnable)
    elif learnable is True or learnable is False:
        learn = known if learnable else ()
    else:
        learn = tuple(learnable)
        bad = set(learn) - set(known)
        if bad:
            raise HyperparameterError(f"activation {name!r} has no parameters {sorted(bad)}")
        learn = tuple(n for n in known if n in learn)
    return Activation(ent, values, learn, code=code, variant=variant)


def _get_scaled(base="tanh", a=1.0, learnable=False, **base_params):
    inner = get(base, **base_params)
    a = _validate.real_scalar(a, "scaled.a")
    if learnable is None:  # get()'s default: a fixed scale
        learnable = False
    if not isinstance(learnable, bool):
        raise HyperparameterError("scaled.learnable must be True or False (it refers to a)")
    return Activation(inner.entry, inner.values, inner.learnable, code=inner.code, scale=a,
                      scale_learnable=learnable, variant=inner.variant)


def from_config(cfg):
    """Rebuild an :class:`Activation` from :meth:`Activation.config`.

    The values of learnable hyperparameters are learned data, restored as they were saved (any
    finite number): training may move them outside the range :func:`get` accepts from a user (a
    softplus β driven below 0), and the network computed with that value -- so loading it gives
    back the same network. Fixed hyperparameters are validated as :func:`get` validates them."""
    ent = entry(cfg["name"])
    learnable = tuple(cfg.get("learnable", ()))
    values = dict(cfg.get("values", {}))
    learned = {k: values.pop(k) for k in list(values) if k in learnable}
    act = get(cfg["name"], learnable=learnable, **cfg.get("variant", {}), **values)
    for k, v in learned.items():
        v = float(v)
        if not math.isfinite(v):
            raise HyperparameterError(f"{cfg['name']}.{k}: the saved learned value {v} is not finite")
        act._set_learned(k, v)
    act.scale = float(cfg.get("scale", 1.0))
    act.scale_learnable = bool(cfg.get("scale_learnable", False))
    assert act.entry is ent
    return act


# ---------------------------------------------------------------- user-registered activations
def _compile(fn, what, name, nparams):
    from numba import njit
    from numba.core.registry import CPUDispatcher

    if not callable(fn):
        raise ActivationCompileError(f"activation {name!r}: {what} must be callable; got {fn!r}")
    disp = fn if isinstance(fn, CPUDispatcher) else njit(cache=False)(fn)
    args64 = (0.5,) + (0.7,) * nparams
    for args in (args64, tuple(np.float32(x) for x in args64)):
        try:
            val = disp(*args)
        except Exception as exc:  # numba's TypingError and friends, or an error in the function
            # Numba's first line is only "Failed in nopython mode pipeline ..."; the cause follows
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            causes = [ln for ln in lines if not ln.startswith("Failed in ")]
            first = (causes or lines or [type(exc).__name__])[0]
            raise ActivationCompileError(
                f"activation {name!r}: {what} could not be compiled by Numba ({type(exc).__name__}: {first})"
            ) from None
        if not isinstance(val, (float, int, np.floating, np.integer)) or isinstance(val, bool):
            raise ActivationCompileError(
                f"activation {name!r}: {what} must return a real scalar; got {type(val).__name__}")
    return disp


_RESERVED_PARAM_NAMES = frozenset({"a", "learnable", "base"})


def register(name, forward, derivative, *, params=None, param_derivatives=None, learnable=(),
             formula="", derivative_formula="", facts=None, kinks=(), doc="", replace=False):
    """Register a user activation ``name`` from scalar Python functions, compiled by Numba.

    ``forward(z, *p)`` and ``derivative(z, *p)`` take the pre-activation and the hyperparameters in
    the order of ``params`` (a dict name -> default, at most 3; the names 'a', 'learnable' and
    'base' are reserved by ``get``/'scaled'); ``param_derivatives`` maps a
    hyperparameter name to ``dθ/dp(z, *p)`` (required for every name in ``learnable``). Once
    registered it works in networks, ``nnlab gradcheck`` and the registry-wide tests. Raises
    :class:`ActivationCompileError` if Numba cannot compile a function.

    >>> import math, nnlab as nl
    >>> e = nl.activations.register("sinus", lambda z: math.sin(z), lambda z: math.cos(z))
    >>> round(float(nl.activations.get("sinus").derivative([0.0])[0]), 6)
    1.0
    >>> nl.activations.unregister("sinus")
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise HyperparameterError(f"activation name must be an identifier string; got {name!r}")
    params = dict(params or {})
    for k in params:  # 'a' is the scaled wrapper's output scale; get() takes learnable= and base=
        if not isinstance(k, str) or not k.isidentifier() or k in _RESERVED_PARAM_NAMES:
            raise HyperparameterError(
                f"activation {name!r}: parameter names must be identifiers other than "
                f"{sorted(_RESERVED_PARAM_NAMES)}; got {k!r}")
    if len(params) > 3:
        raise HyperparameterError(f"activation {name!r}: at most 3 hyperparameters; got {len(params)}")
    pspecs = tuple(Param(k, _validate.real_scalar(v, f"{name}.{k}"), learnable=k in learnable)
                   for k, v in params.items())
    if set(learnable) - set(params):
        raise HyperparameterError(f"activation {name!r}: learnable names {sorted(set(learnable) - set(params))} are not in params")
    param_derivatives = dict(param_derivatives or {})
    missing = [k for k in learnable if k not in param_derivatives]
    if missing:
        raise HyperparameterError(f"activation {name!r}: learnable {missing} need param_derivatives")
    extra = set(param_derivatives) - set(params)
    if extra:
        raise HyperparameterError(f"activation {name!r}: param_derivatives for unknown {sorted(extra)}")
    with _lock:
        if name == "scaled":
            raise HyperparameterError("activation 'scaled' is already registered (built-in wrapper)")
        if name in _REGISTRY and (not replace or not _REGISTRY[name].custom):
            raise HyperparameterError(
                f"activation {name!r} is already registered" + ("" if _REGISTRY[name].custom else " (built-in)"))
        n = len(params)
        f = _compile(forward, "forward", name, n)
        d = _compile(derivative, "derivative", name, n)
        dps = tuple(_compile(param_derivatives[k], f"param_derivatives[{k!r}]", name, n)
                    if k in param_derivatives else None for k in params)
        old = _REGISTRY.get(name)
        code = old.code if old is not None else M.CUSTOM_BASE + _next_code()
        ent = Entry(name, code, formula or f"user: {getattr(forward, '__name__', 'forward')}",
                    derivative_formula or "user", pspecs,
                    facts if facts is not None else Facts(kinks=tuple(kinks)), doc=doc, custom=True,
                    kernels=(f, d, dps))
        _REGISTRY[name] = ent
        _CUSTOM[code] = ent
        _version[0] += 1
    return ent


def _next_code():
    used = {c - M.CUSTOM_BASE for c in _CUSTOM}
    i = 0
    while i in used:
        i += 1
    return i


def unregister(name):
    """Remove a user-registered activation (built-ins cannot be removed)."""
    with _lock:
        ent = entry(name)
        if not ent.custom:
            raise HyperparameterError(f"activation {name!r} is built-in and cannot be unregistered")
        del _REGISTRY[name]
        del _CUSTOM[ent.code]
        _version[0] += 1

