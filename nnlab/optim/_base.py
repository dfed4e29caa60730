"""The optimizer base class: validation, per-array state, the flat fast path, state_dict."""

import math
import numbers

import numpy as np

from .. import _validate
from ..errors import DTypeError, HyperparameterError, NonFiniteError, ShapeError, UnknownNameError
from ..kernels import optim_cpu as K

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

REGISTRY = {}
"""name -> optimizer class, filled by :func:`register` (the one place a new optimizer is added)."""


def register(cls):
    """Class decorator: add ``cls`` to :data:`REGISTRY` under ``cls.name``."""
    REGISTRY[cls.name] = cls
    return cls


def names():
    """Registered optimizer names (lower case), e.g. ``['sgd', 'adagrad', ...]``."""
    return list(REGISTRY)


def get(name, **hyperparams):
    """The optimizer called ``name`` (case-insensitive; ``'AdamW'`` or ``'adamw'``) built with
    ``hyperparams``; an :class:`Optimizer` instance is returned unchanged."""
    if isinstance(name, Optimizer):
        if hyperparams:
            raise HyperparameterError("hyperparameters cannot be given with an optimizer instance")
        return name
    if not isinstance(name, str) or name.lower() not in REGISTRY:
        raise UnknownNameError(f"unknown optimizer {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name.lower()](**hyperparams)


# ---------------------------------------------------------------- hyperparameter checks
def check_real(value, name, lo=None, hi=None, lo_open=False, hi_open=False):
    """A finite float in [lo, hi] (open ends where asked), else :class:`HyperparameterError`."""
    v = _validate.real_scalar(value, name)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise HyperparameterError(f"{name} must be {'>' if lo_open else '>='} {lo}; got {v}")
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise HyperparameterError(f"{name} must be {'<' if hi_open else '<='} {hi}; got {v}")
    return v


def check_eps(value, name="eps"):
    """ε > 0, finite: ε = 0 makes a zero gradient's step 0/0 = NaN."""
    v = _validate.real_scalar(value, name)
    if not v > 0.0:
        raise HyperparameterError(f"{name} must be > 0 (with {name} = 0 a zero gradient gives 0/0 = NaN); got {v}")
    return v


def check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise HyperparameterError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def check_pair(value, name):
    try:
        a, b = value
    except (TypeError, ValueError):
        raise HyperparameterError(f"{name} must be a pair of numbers; got {value!r}") from None
    return a, b


def check_betas(betas):
    b1, b2 = check_pair(betas, "betas")
    return (check_real(b1, "betas[0]", 0.0, 1.0, hi_open=True),
            check_real(b2, "betas[1]", 0.0, 1.0, hi_open=True))


def _shape_entry(k, entry):
    """One (shape, dtype) of a state_dict's 'shapes' list, validated."""
    try:
        shape, dtype = entry
        shape = tuple(int(n) for n in shape)
        if any(n < 0 for n in shape):
            raise ValueError
        dtype = np.dtype(dtype)
    except (TypeError, ValueError):
        raise ShapeError(f"state_dict: shapes[{k}] must be (shape, dtype) like ([3, 2], 'float32'); "
                         f"got {entry!r}") from None
    if dtype not in _FLOATS:
        raise DTypeError(f"state_dict: shapes[{k}] has dtype {dtype}; expected float32 or float64")
    return shape, dtype


# ---------------------------------------------------------------- the base class
class Optimizer:
    """Base class: ``step(params, grads)`` on any list of float arrays, ``step_flat(p, g)`` on one
    flat buffer, ``state_dict()`` / ``load_state_dict()``.

    Subclasses set ``name``, ``code`` (a :mod:`nnlab.kernels.optim_cpu` code) and ``hyper`` (the
    names of their hyperparameters, also the constructor keywords), and implement
    :meth:`_check` (validate, return nothing), :meth:`n_slots`, :meth:`_fill` (write the
    optimizer's slots of the per-step hyperparameter vector) and, where a state row does not start
    at 0, :meth:`_init_rows`.

    Every hyperparameter is a plain attribute (``opt.lr = 1e-4`` schedules the learning rate); it
    is validated again at each step, before anything is touched.
    """

    name = None
    code = None
    hyper = ()
    slot_names = ()

    def __init__(self, **hp):
        for k, v in hp.items():
            setattr(self, k, v)
        self.t = 0
        self._state = None          # list of (n_slots, size) arrays, one per parameter array
        self._shapes = None         # [(shape, dtype)] the state was created for
        self._scalars = {}          # scalar state besides t (NAdam's μ-product)
        self._pending = {}
        self._check()

    # -------------------------------------------------------------- to override
    def _check(self):
        check_real(self.lr, "lr", 0.0)

    def n_slots(self):
        """Rows of the state array (one row per element-wise state buffer)."""
        return len(self.slot_names)

    def _fill(self, hp, t):
        """Write this optimizer's slots hp[H_0:] for step ``t``; may set ``self._pending``."""

    def _init_rows(self, state):
        """Initial values of a fresh state array (zeros unless overridden)."""

    # -------------------------------------------------------------- shared options
    def _check_common(self):
        check_real(self.lr, "lr", 0.0)
        check_real(getattr(self, "weight_decay", 0.0), "weight_decay", 0.0)
        check_real(getattr(self, "l1", 0.0), "l1", 0.0)
        check_bool(getattr(self, "maximize", False), "maximize")

    def hyperparams(self):
        """The hyperparameters as a dict (what the constructor takes)."""
        return {k: getattr(self, k) for k in self.hyper}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({args})"

    def hyperparams_for_step(self, t, *, _checked=False):
        """The float64 vector ``hp`` the update kernel reads at step ``t`` (validated first).

        Layout: ``hp[H_LR]`` lr, ``hp[H_WD]`` coupled L2, ``hp[H_L1]`` L1, ``hp[H_DWD]`` decoupled
        weight decay, ``hp[H_MAX]`` maximize; the optimizer's own slots from ``H_0`` on.
        """
        if not _checked:
            self._check()
        hp = np.zeros(K.NHP)
        hp[K.H_LR] = self.lr
        hp[K.H_L1] = getattr(self, "l1", 0.0)
        hp[K.H_MAX] = 1.0 if getattr(self, "maximize", False) else 0.0
        wd = getattr(self, "weight_decay", 0.0)
        if self._decoupled():
            hp[K.H_DWD] = wd
        else:
            hp[K.H_WD] = wd
        self._pending = {}
        self._fill(hp, t)
        return hp

    def _still_valid(self):
        """Validate the hyperparameters unless they are exactly those :meth:`_check` accepted last
        time (the per-step fast path of :meth:`begin_flat`); raises as :meth:`_check` does.

        ``_check`` is a pure function of the public attributes, so skipping it when none changed
        (same names, same values, same types; no attribute added) gives the guarantee of running
        it. An optimizer with a mutable hyperparameter (a list) is validated at every step."""
        d = self.__dict__
        memo = d.get("_valid")
        if memo is not None and len(d) == memo[3]:
            cur = tuple(map(d.get, memo[0]))
            try:
                if cur == memo[1] and tuple(map(type, cur)) == memo[2]:
                    return True
            except (TypeError, ValueError):  # an attribute whose == is not a plain bool (an array)
                pass
        d["_valid"] = None
        self._check()
        keys = tuple(k for k in d if k[0] != "_" and k != "t")
        vals = tuple(map(d.get, keys))
        if not any(isinstance(v, (list, dict, set, bytearray, np.ndarray)) for v in vals):
            d["_valid"] = (keys, vals, tuple(map(type, vals)), len(d))
        return True

    def _decoupled(self):
        return bool(getattr(self, "decoupled_weight_decay", False))

    def _new_state(self, size, dtype):
        state = np.zeros((self.n_slots(), size), dtype=dtype)
        self._init_rows(state)
        return state

    # -------------------------------------------------------------- stepping
    def _check_arrays(self, params, grads, check_finite):
        """Validate everything; return [(p, p_flat, g_flat)] ready for the kernel."""
        if isinstance(params, np.ndarray):
            params = [params]
        if isinstance(grads, np.ndarray):
            grads = [grads]
        try:
            params, grads = list(params), list(grads)
        except TypeError:
            raise ShapeError("params and grads must be lists of arrays") from None
        if len(params) != len(grads):
            raise ShapeError(f"got {len(params)} parameter arrays but {len(grads)} gradient arrays")
        if not params:
            raise ShapeError("params is empty")
        work = []
        for i, (p, g) in enumerate(zip(params, grads)):
            if not isinstance(p, np.ndarray):
                raise DTypeError(f"params[{i}] must be a numpy array (updated in place); got {type(p).__name__}")
            if p.dtype not in _FLOATS:
                raise DTypeError(f"params[{i}] must be float32 or float64; got {p.dtype}")
            if not p.flags.writeable:
                raise DTypeError(f"params[{i}] is read-only")
            g = _validate.as_float_array(g, f"grads[{i}]", dtype=p.dtype, finite=False)
            if g.shape != p.shape:
                raise ShapeError(f"grads[{i}] has shape {g.shape} but params[{i}] has shape {p.shape}")
            g = g.reshape(-1)
            if check_finite and not K.all_finite(g):
                _validate.check_finite(g, f"grads[{i}]")
            pf = p.reshape(-1) if p.flags.c_contiguous else np.ascontiguousarray(p).reshape(-1)
            work.append((p, pf, g))
        if self._shapes is not None:
            shapes = [(p.shape, p.dtype) for p, _, _ in work]
            if shapes != self._shapes:
                raise ShapeError(
                    f"this optimizer's state belongs to {len(self._shapes)} arrays of shapes/dtypes "
                    f"{[(s, str(d)) for s, d in self._shapes]}; got {[(s, str(d)) for s, d in shapes]} "
                    "(use a new optimizer or call reset())")
        return work

    def step(self, params, grads, *, check_finite=True):
        """One update of every array in ``params`` (in place) from ``grads`` (same shapes).

        Each array keeps its own state (matched by position). Everything is validated first --
        list lengths, shapes, dtypes, hyperparameters and, with ``check_finite``, NaN/inf in the
        gradients -- so a step that raises changes neither the parameters nor the state.
        Gradients are converted to each parameter's dtype.
        """
        work = self._check_arrays(params, grads, check_finite)
        t = self.t + 1
        hp = self.hyperparams_for_step(t)
        self._check_rows()
        if self._state is None:
            state = [self._new_state(pf.size, pf.dtype) for _, pf, _ in work]
        else:
            state = self._state
        gmax = max(float(K.max_abs(g)) for _, _, g in work)
        safe = all(K.update_is_safe(hp, pf, gmax) for _, pf, _ in work)
        kept = None if safe else [(pf.copy(), s.copy()) for (_, pf, _), s in zip(work, state)]
        for (_, pf, g), s in zip(work, state):
            K.opt_update(self.code, hp, t, pf, g, s)
        if kept is not None:
            self._undo_if_nonfinite([pf for _, pf, _ in work], state, kept, gmax)
        for p, pf, _ in work:
            if not np.shares_memory(pf, p):
                p[...] = pf.reshape(p.shape)
        self._commit(state, [(p.shape, p.dtype) for p, _, _ in work])

    def _undo_if_nonfinite(self, flats, state, kept, gmax):
        """After an update that :func:`~nnlab.kernels.optim_cpu.update_is_safe` could not vouch for:
        if a parameter or a state entry came out non-finite, put every array back and raise."""
        for k, (pf, s) in enumerate(zip(flats, state)):
            if not (K.all_finite(pf) and K.all_finite(s.reshape(-1))):
                for (p0, s0), pf2, s2 in zip(kept, flats, state):
                    pf2[...] = p0
                    s2[...] = s0
                what = "parameters" if not K.all_finite(pf) else f"optimizer state ({self.name})"
                raise NonFiniteError(
                    f"this update would make the {what} of params[{k}] non-finite (largest |g| = {gmax:.3g}, "
                    f"lr = {self.lr!r}); parameters and state were left unchanged -- clip the gradients, or lower "
                    "lr or the weight decay")

    def step_flat(self, p, g, *, check_finite=True):
        """Fast path: one update of the 1-D contiguous float buffer ``p`` from ``g`` (same dtype,
        same size) -- e.g. a network's flat parameter buffer. Same checks as :meth:`step`."""
        if not (isinstance(p, np.ndarray) and isinstance(g, np.ndarray) and p.ndim == 1 and g.ndim == 1
                and p.flags.c_contiguous and g.flags.c_contiguous and p.dtype == g.dtype):
            return self.step([p], [g], check_finite=check_finite)
        if g.size != p.size:
            raise ShapeError(f"g has {g.size} elements but p has {p.size}")
        if check_finite and not K.all_finite(g):
            _validate.check_finite(g, "g")
        code, hp, t, state = self.begin_flat(p)
        if not K.opt_update_checked(code, hp, t, p, g, state, K.max_abs(g)):
            raise NonFiniteError(f"this update would make a parameter or the optimizer state ({self.name}) "
                                 f"non-finite (largest |g| = {float(K.max_abs(g)):.3g}); parameters and state "
                                 "were left unchanged -- clip the gradients, or lower lr or the weight decay")
        self.end_step()

    def begin_flat(self, p):
        """For a caller that runs the update inside its own compiled step (the Trainer):
        validate ``p`` (1-D contiguous float32/float64) and the hyperparameters and return
        ``(code, hp, t, state)`` for ``optim_cpu.opt_update(code, hp, t, p, g, state)``. Call
        :meth:`end_step` once that update has run; until then the optimizer is unchanged."""
        if not isinstance(p, np.ndarray) or p.dtype not in _FLOATS or p.ndim != 1 or not p.flags.c_contiguous:
            raise DTypeError("a flat buffer must be a 1-D C-contiguous float32/float64 numpy array")
        if not p.flags.writeable:
            raise DTypeError("the flat parameter buffer is read-only")
        if self._shapes is not None and self._shapes != [(p.shape, p.dtype)]:
            raise ShapeError(f"this optimizer's state belongs to {self._shapes}, not to a flat buffer of "
                             f"{p.size} {p.dtype} (use a new optimizer or call reset())")
        t = self.t + 1
        hp = self.hyperparams_for_step(t, _checked=self._still_valid())
        self._check_rows()
        if self._state is None:
            self._flat_new = [self._new_state(p.size, p.dtype)]
        else:
            self._flat_new = self._state
        self._flat_shape = [(p.shape, p.dtype)]
        return self.code, hp, t, self._flat_new[0]

    def _check_rows(self):
        if self._state is not None and self._state and self._state[0].shape[0] != self.n_slots():
            raise HyperparameterError(
                f"the options now need {self.n_slots()} state rows ({', '.join(self.slot_names_for())}) but the "
                f"state has {self._state[0].shape[0]}: an option that changes the state (momentum, centered, "
                "amsgrad) cannot be switched mid-run (call reset())")

    def end_step(self):
        """Record a step run through :meth:`begin_flat`."""
        self._commit(self._flat_new, self._flat_shape)

    def _commit(self, state, shapes):
        self._state = state
        self._shapes = shapes
        self._scalars.update(self._pending)
        self._pending = {}
        self.t += 1

    def reset(self):
        """Forget the state and the step count (hyperparameters are kept)."""
        self.t = 0
        self._state = None
        self._shapes = None
        self._scalars = {}

    # -------------------------------------------------------------- saving
    def state_dict(self):
        """``{'name', 'step', 'hyperparams', 'scalars', 'state'}``: plain Python values and copies
        of the numpy state arrays (one (n_slots, size) array per parameter array, rows named by
        ``slot_names``). :meth:`load_state_dict` on it resumes exactly."""
        return {
            "name": self.name,
            "step": int(self.t),
            "hyperparams": self.hyperparams(),
            "scalars": dict(self._scalars),
            "slot_names": list(self.slot_names_for()),
            "state": None if self._state is None else [s.copy() for s in self._state],
            "shapes": None if self._shapes is None else [(list(s), str(d)) for s, d in self._shapes],
        }

    def slot_names_for(self):
        """Names of the state rows actually allocated with the current options."""
        return self.slot_names[: self.n_slots()]

    def load_state_dict(self, sd):
        """Restore hyperparameters, step count and state saved by :meth:`state_dict` (validated
        first; on an error nothing changes)."""
        if not isinstance(sd, dict) or sd.get("name") != self.name:
            got = sd.get("name") if isinstance(sd, dict) else type(sd).__name__
            raise HyperparameterError(f"state_dict is for optimizer {got!r}, not {self.name!r}")
        old = self.hyperparams()
        try:
            missing = [k for k in ("hyperparams", "step") if k not in sd]
            if missing:
                raise HyperparameterError(f"state_dict is missing {', '.join(map(repr, missing))} "
                                          f"(it has {', '.join(map(repr, sd))})")
            if not isinstance(sd["hyperparams"], dict):
                raise HyperparameterError(f"state_dict['hyperparams'] must be a dict; got "
                                          f"{type(sd['hyperparams']).__name__}")
            for k, v in sd["hyperparams"].items():
                if k not in self.hyper:
                    raise HyperparameterError(f"unknown hyperparameter {k!r} for {self.name}")
                setattr(self, k, tuple(v) if isinstance(v, list) else v)
            self._check()
            step = sd["step"]
            if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step < 2 ** 53:
                raise HyperparameterError(f"state_dict: step must be an integer in [0, 2^53); got {step!r}")
            state, shapes = sd.get("state"), sd.get("shapes")
            if state is not None:
                if not isinstance(state, (list, tuple)):
                    raise ShapeError(f"state_dict['state'] must be a list of arrays; got {type(state).__name__}")
                if not isinstance(shapes, (list, tuple)) or len(shapes) != len(state):
                    raise ShapeError("state_dict: 'shapes' must list one (shape, dtype) per state array")
                shapes = [_shape_entry(k, e) for k, e in enumerate(shapes)]
                arrays = []
                for k, (s, (shape, dtype)) in enumerate(zip(state, shapes)):
                    s = _validate.as_float_array(s, f"state_dict: state[{k}]", dtype=dtype).copy()
                    size = int(np.prod(shape))
                    if s.shape != (self.n_slots(), size):
                        raise ShapeError(f"state_dict: state[{k}] has shape {s.shape}, expected "
                                         f"{(self.n_slots(), size)}")
                    arrays.append(s)
                state = arrays
            scalars = sd.get("scalars", {})
            if not isinstance(scalars, dict) or not all(
                    isinstance(v, numbers.Real) and not isinstance(v, bool) for v in scalars.values()):
                raise HyperparameterError(f"state_dict['scalars'] must map names to numbers; got {scalars!r}")
            scalars = {k: float(v) for k, v in scalars.items()}
            if not all(math.isfinite(v) for v in scalars.values()):
                raise NonFiniteError("state_dict: non-finite scalar state")
        except Exception:
            for k, v in old.items():
                setattr(self, k, v)
            raise
        self.t = int(step)
        self._state = state
        self._shapes = shapes if state is not None else None
        self._scalars = scalars
