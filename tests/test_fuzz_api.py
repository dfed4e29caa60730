"""Hypothesis fuzzing of the public API with hostile input: shapes, dtypes, layouts (non-contiguous,
Fortran, reversed, 0-d, empty), special floats, hostile hyperparameters and state dicts.

The contract every call is held to: either a result -- identical to the result on the clean
(C-contiguous float) version of the same input, and finite when the input was finite and moderate --
or an :mod:`nnlab.errors` exception whose message names the offending argument; never a bare
Python/NumPy/Numba error, and parameters and optimizer state unchanged after any exception.

``NNLAB_FUZZ_EXAMPLES`` sets Hypothesis's ``max_examples`` per test (default 12: a few seconds in
all); ``NNLAB_FUZZ_REPORT=path`` writes the counts of inputs tried, refused and accepted as JSON.
"""

import json
import math
import os
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import nnlab as nl
from nnlab.errors import NnlabError

N_EXAMPLES = int(os.environ.get("NNLAB_FUZZ_EXAMPLES", "12"))
FUZZ = settings(deadline=None, max_examples=N_EXAMPLES, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
COUNTS = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    summary = dict(COUNTS, max_examples=N_EXAMPLES)
    print(f"\nfuzz: {summary}")
    path = os.environ.get("NNLAB_FUZZ_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(summary, fh, indent=1)


# ---------------------------------------------------------------- the contract
class Refused:
    def __init__(self, exc):
        self.exc = exc


def _snap(obj):
    """A deep copy of arrays / lists / dicts for comparison."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, dict):
        return {k: _snap(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_snap(v) for v in obj]
    return obj


def _same(a, b):
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def attempt(call, names, state=lambda: None, kind="call"):
    """Run ``call``: return its result, or a :class:`Refused` for an nnlab error whose message names
    one of ``names`` with ``state()`` unchanged; anything else fails the test."""
    COUNTS["tried"] += 1
    COUNTS[f"tried:{kind}"] += 1
    before = _snap(state())
    try:
        out = call()
    except NnlabError as exc:
        msg = str(exc).lower()
        assert any(n.lower() in msg for n in names), \
            f"unclear {type(exc).__name__} (names none of {names}): {exc}"
        assert _same(before, _snap(state())), f"state changed by a refused call: {exc}"
        COUNTS["refused"] += 1
        return Refused(exc)
    except AssertionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the point: no bare error may escape
        raise AssertionError(f"bare {type(exc).__name__} from {kind}: {exc}") from exc
    COUNTS["accepted"] += 1
    return out


def assert_finite(x, what):
    arr = np.asarray(x, dtype=np.float64) if not isinstance(x, (list, tuple)) else \
        np.concatenate([np.asarray(v, np.float64).ravel() for v in x]) if len(x) else np.zeros(0)
    assert np.isfinite(arr).all(), f"silent non-finite {what} from finite input"


# ---------------------------------------------------------------- hostile values
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, 1e-310, 1e39,
           3.5e38, 1e-45, 1e-300, 1e300]
SCALARS = st.one_of(
    st.sampled_from(SPECIAL),
    st.sampled_from([0, -1, 1, 2, 2 ** 70, 10 ** 400, -(10 ** 400), True, False, None, "1", "abc", [1.0], (1.0, 2.0),
                     np.float32(0.5), np.int64(3), np.float64(np.nan), complex(1, 1), np.array([1.0, 2.0]),
                     np.array(0.25)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 5),
)
DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.uint8, np.bool_, np.complex128]


def _floats_for(dtype, bound):
    if np.dtype(dtype).kind == "f":
        w = np.dtype(dtype).itemsize * 8
        return st.floats(-bound, bound, width=w) if bound else st.floats(width=w)
    if np.dtype(dtype).kind == "c":
        return st.complex_numbers(max_magnitude=10)
    if np.dtype(dtype).kind == "b":
        return st.booleans()
    info = np.iinfo(dtype)
    return st.integers(max(info.min, -1000), min(info.max, 1000))


@st.composite
def layouts(draw, arr):
    """``arr`` (a C-contiguous array) in a hostile layout with the same values: Fortran order, a
    strided view or reversed axes (a view of a bigger buffer)."""
    how = draw(st.sampled_from(["c", "f", "strided", "reversed"]))
    if how == "f" or arr.ndim == 0:
        return np.asfortranarray(arr)
    if how == "strided":
        big = np.zeros(arr.shape[:-1] + (arr.shape[-1] * 2,), arr.dtype)
        big[..., ::2] = arr
        return big[..., ::2]
    if how == "reversed":
        rev = np.ascontiguousarray(arr[..., ::-1])
        return rev[..., ::-1]
    return arr


@st.composite
def hostile_arrays(draw, shape=None, finite=False, bound=None):
    """An array of any dtype/shape/layout (or, with ``shape``, that shape), special floats included."""
    dtype = draw(st.sampled_from(DTYPES)) if not finite else draw(st.sampled_from([np.float64, np.float32]))
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    if finite:
        elems = _floats_for(dtype, bound or 1e3)
    elif np.dtype(dtype).kind == "f":
        elems = st.one_of(_floats_for(dtype, None), st.sampled_from(SPECIAL).map(lambda v: v))
    else:
        elems = _floats_for(dtype, None)
    with np.errstate(over="ignore", invalid="ignore"):
        arr = draw(hnp.arrays(dtype, shape, elements=elems if np.dtype(dtype).kind != "f" else
                              elems.filter(lambda v: np.isfinite(np.dtype(dtype).type(v)) or not np.isfinite(v))))
    return draw(layouts(arr))


NOT_ARRAYS = st.sampled_from([None, "x", [[1.0, 2.0], [3.0]], [1.0, "a"], 3.0, {"a": 1}, object(),
                              np.array([1.0, None], dtype=object)])


def anything_array(**kw):
    return st.one_of(hostile_arrays(**kw), NOT_ARRAYS)


@st.composite
def xy_pairs(draw, n_in=3, n_out=2):
    """(X, y): half the time well-shaped (any dtype, layout and values), else anything."""
    if draw(st.booleans()):
        n = draw(st.integers(1, 5))
        return draw(hostile_arrays(shape=(n, n_in))), draw(hostile_arrays(shape=(n, n_out)))
    return draw(anything_array()), draw(anything_array())


def _is_clean_finite(a, bound=1e3):
    return (isinstance(a, np.ndarray) and a.dtype.kind in "iuf" and a.size > 0
            and np.isfinite(a.astype(np.float64)).all() and np.abs(a.astype(np.float64)).max() <= bound)


# ---------------------------------------------------------------- activations
ACT_NAMES = [n for n in nl.activations.names() if n != "scaled"]


@FUZZ
@given(name=st.sampled_from(ACT_NAMES), z=anything_array(), data=st.data())
def test_activations_forward_and_derivatives(name, z, data):
    act = nl.activations.get(name)
    for what in ("forward", "derivative"):
        out = attempt(lambda what=what: getattr(act, what)(z), ["z"], kind=f"activation.{what}")
        if isinstance(out, Refused):
            continue
        za = np.asarray(z)
        clean = getattr(act, what)(np.array(za, dtype=np.float64 if za.dtype.kind != "f" else za.dtype, order="C"))
        assert np.array_equal(out, clean, equal_nan=True), "layout or dtype changed the result"
        if _is_clean_finite(z, 1e3):
            assert_finite(out, f"{name}.{what}")
    pname = data.draw(st.sampled_from(list(act.param_names) + ["a", "nope", 3, None]))
    out = attempt(lambda: act.param_derivative(z, pname), ["z", "parameter", "name", str(pname)],
                  kind="activation.param_derivative")
    if not isinstance(out, Refused) and _is_clean_finite(z, 1e3):
        assert_finite(out, f"{name} d/d{pname}")


@FUZZ
@given(name=st.sampled_from(ACT_NAMES), value=SCALARS, data=st.data())
def test_activation_hyperparameters_and_set_value(name, value, data):
    params = [p.name for p in nl.activations.entry(name).params]
    if params:
        p = data.draw(st.sampled_from(params))
        act = attempt(lambda: nl.activations.get(name, **{p: value}), [p], kind="activations.get")
        if not isinstance(act, Refused):
            z = np.linspace(-5, 5, 11)
            assert_finite(act.forward(z), f"{name}({p}={value!r})")
        target = nl.activations.get(name)
        attempt(lambda: target.set_value(p, value), [p], state=lambda: dict(target.hyperparams),
                kind="activation.set_value")
    attempt(lambda: nl.activations.get(name, **{"bogus": value}), ["bogus"], kind="activations.get")
    act = nl.activations.get(name)
    seed = data.draw(SCALARS)
    attempt(lambda: act.forward(np.ones(3), training=True, seed=seed), ["seed"], kind="activation.seed")


# ---------------------------------------------------------------- Sequential
def _net(dtype="float64", act="tanh"):
    return nl.Sequential([nl.Dense(3, 4, activation=act), nl.Dense(4, 2)], loss="mse", seed=0, dtype=dtype)


def _params(net):
    return [p.copy() for p in net.params()]


@FUZZ
@given(dtype=st.sampled_from(["float64", "float32"]), xy=xy_pairs(),
       act=st.sampled_from(["tanh", "relu", "sigmoid", "elu", "softplus", "prelu"]))
def test_sequential_forward_and_loss_and_grads(dtype, xy, act):
    X, y = xy
    net = _net(dtype, act)
    state = lambda: _params(net)  # noqa: E731
    out = attempt(lambda: net.forward(X), ["X"], state, kind="Sequential.forward")
    if not isinstance(out, Refused):
        clean = net.forward(np.ascontiguousarray(X, dtype=np.float64))
        assert np.array_equal(out, clean, equal_nan=True), "layout or dtype changed forward's result"
        if _is_clean_finite(X):
            assert_finite(out, "forward")
    res = attempt(lambda: net.loss_and_grads(X, y), ["X", "y", "target", "label"], state,
                  kind="Sequential.loss_and_grads")
    if not isinstance(res, Refused):
        loss, grads = res
        loss2, grads2 = net.loss_and_grads(np.ascontiguousarray(X, dtype=np.float64),
                                           np.ascontiguousarray(y, dtype=np.float64))
        assert _same(float(loss), float(loss2)) and _same(grads, grads2), "layout changed loss_and_grads"
        if _is_clean_finite(X) and _is_clean_finite(y):
            assert_finite([loss] + grads, "loss_and_grads")


@FUZZ
@given(dtype=st.sampled_from(["float64", "float32"]), k=st.integers(0, 3), value=anything_array(),
       n=st.integers(0, 6))
def test_sequential_set_params(dtype, k, value, n):
    net = _net(dtype, nl.activations.get("prelu", learnable=True))
    arrays = net.params()[:n] if n != 4 else net.params()
    if k < len(arrays):
        arrays[k] = value
    out = attempt(lambda: net.set_params(arrays), ["parameter", "set_params", "alpha"], lambda: _params(net),
                  kind="Sequential.set_params")
    if not isinstance(out, Refused):
        assert_finite(net.params(), "parameters after set_params")


# ---------------------------------------------------------------- optimizers
OPT_HYPER = {name: nl.optim.get(name).hyper for name in nl.optim.names()}


@FUZZ
@given(name=st.sampled_from(nl.optim.names()), data=st.data())
def test_optimizer_hyperparameters(name, data):
    hp = data.draw(st.sampled_from(OPT_HYPER[name]))
    value = data.draw(st.one_of(SCALARS, st.sampled_from(["ema", "torch", (0.9, 0.999), (0.9, 1.0), (0.5,)])))
    opt = attempt(lambda: nl.optim.get(name, **{hp: value}), [hp], kind="optim.get")
    if isinstance(opt, Refused):
        return
    p = np.linspace(-1, 1, 5)
    out = attempt(lambda: opt.step([p], [np.linspace(0.5, -0.5, 5)]), [hp, "update", "grads"],
                  lambda: [p, opt.state_dict()], kind="optimizer.step")
    if not isinstance(out, Refused):
        assert_finite(p, f"{name}({hp}={value!r}) parameters")
        st_ = opt.state_dict()["state"]
        assert_finite(st_[0] if st_ else np.zeros(0), f"{name}({hp}={value!r}) state")


@FUZZ
@given(name=st.sampled_from(nl.optim.names()), g=anything_array(), pdt=st.sampled_from([np.float64, np.float32]),
       scale=st.sampled_from([1.0, 1e20, 1e40, 1e160, 1e300, 1e-300]))
def test_optimizer_step_with_hostile_gradients(name, g, pdt, scale):
    opt = nl.optim.get(name)
    p = np.linspace(-1, 1, 6).astype(pdt).reshape(2, 3)
    opt.step([p], [np.full((2, 3), 0.1, pdt)])
    if isinstance(g, np.ndarray) and g.dtype.kind == "f" and g.size:
        with np.errstate(over="ignore", invalid="ignore"):  # hostile data on purpose (inf * 0)
            g = (g * scale).astype(g.dtype)
    out = attempt(lambda: opt.step([p], [g]), ["grads", "params", "update"], lambda: [p, opt.state_dict()],
                  kind="optimizer.step")
    if not isinstance(out, Refused):
        assert_finite(p, f"{name} parameters")
        assert_finite(opt.state_dict()["state"][0], f"{name} state")
    flat = np.linspace(-1, 1, 6).astype(pdt)
    attempt(lambda: opt.step_flat(flat, g), ["g", "grads", "update", "flat", "params", "p "],
            lambda: [flat, opt.state_dict()], kind="optimizer.step_flat")


@st.composite
def hostile_state_dicts(draw, sd):
    sd = {k: _snap(v) for k, v in sd.items()}
    key = draw(st.sampled_from(["name", "step", "hyperparams", "scalars", "state", "shapes", "slot_names", "extra",
                                "drop"]))
    if key == "drop":
        sd.pop(draw(st.sampled_from(sorted(sd))))
        return sd
    if key == "state" and sd.get("state") and sd["state"][0].size and draw(st.booleans()):
        arr = sd["state"][0]
        arr.reshape(-1)[draw(st.integers(0, arr.size - 1))] = draw(st.sampled_from([math.nan, math.inf, 1e300]))
        return sd
    if key == "hyperparams" and draw(st.booleans()):
        hp = dict(sd["hyperparams"])
        hp[draw(st.sampled_from(sorted(hp) + ["bogus"]))] = draw(SCALARS)
        sd["hyperparams"] = hp
        return sd
    sd[key] = draw(st.one_of(SCALARS, st.sampled_from([[], [None], [([3], "float64")], [np.ones((2, 3))],
                                                        {"mu_product": "x"}, {}])))
    return sd


@FUZZ
@given(name=st.sampled_from(nl.optim.names()), data=st.data())
def test_optimizer_load_state_dict(name, data):
    src = nl.optim.get(name)
    src.step([np.ones(3)], [np.array([0.1, -0.2, 0.3])])
    bad = data.draw(hostile_state_dicts(src.state_dict()))
    dst = nl.optim.get(name)
    dst.step([np.ones(3)], [np.ones(3)])
    out = attempt(lambda: dst.load_state_dict(bad), ["state_dict", "step", "hyperparameter", "eps", "lr", "betas",
                                                     "state", "shapes", "scalars"] + list(OPT_HYPER[name]),
                  lambda: dst.state_dict(), kind="optimizer.load_state_dict")
    if not isinstance(out, Refused):
        p = np.ones(3)
        res = attempt(lambda: dst.step([p], [np.array([0.1, 0.2, 0.3])]), ["state", "shape", "update"],
                      lambda: [p, dst.state_dict()], kind="optimizer.step after load")
        if not isinstance(res, Refused):
            assert_finite(p, "parameters after a loaded state")


# ---------------------------------------------------------------- clipping
@FUZZ
@given(grads=st.lists(anything_array(), min_size=0, max_size=3), c=SCALARS,
       fn=st.sampled_from(["by_value", "by_norm", "by_global_norm", "global_norm"]))
def test_clip_functions(grads, c, fn):
    call = (lambda: nl.clip.global_norm(grads)) if fn == "global_norm" else \
        (lambda: getattr(nl.clip, fn)(grads, c))
    out = attempt(call, ["grads", "clip_value", "max_norm", "norm"], lambda: list(grads), kind=f"clip.{fn}")
    if isinstance(out, Refused):
        return
    if all(_is_clean_finite(g, 1e300) for g in grads) and grads:
        if fn == "global_norm":
            assert_finite(out, "global norm")
        if fn != "by_value":
            assert_finite(grads, "clipped gradients")


@FUZZ
@given(spec=st.one_of(SCALARS, st.tuples(st.sampled_from(["value", "norm", "global_norm", "by_norm", "bogus"]),
                                        SCALARS)))
def test_clip_specs(spec):
    attempt(lambda: nl.clip.get(spec), ["clip", "clip_value", "max_norm"], kind="clip.get")


# ---------------------------------------------------------------- Trainer
@FUZZ
@given(opt=st.sampled_from(nl.optim.names()), xy=xy_pairs(),
       clip=st.sampled_from([None, ("global_norm", 1.0), ("norm", 0.5), ("value", 0.1)]),
       scale=st.sampled_from([1.0, 1e20, 1e150, 1e-200]), dtype=st.sampled_from(["float64", "float32"]))
def test_trainer_step(opt, xy, clip, scale, dtype):
    X, y = xy
    net = _net(dtype)
    tr = nl.Trainer(net, opt, clip=clip)
    if isinstance(y, np.ndarray) and y.dtype.kind == "f" and y.size:
        with np.errstate(over="ignore", invalid="ignore"):  # hostile data on purpose (inf * 0)
            y = (y * scale).astype(y.dtype)
    out = attempt(lambda: tr.step(X, y), ["X", "y", "target", "non-finite"],
                  lambda: [_params(net), tr.optimizer.state_dict()], kind="Trainer.step")
    if not isinstance(out, Refused):
        assert_finite(net.params(), "parameters after a step")
        sd = tr.optimizer.state_dict()["state"]
        if sd:
            assert_finite(sd[0], "optimizer state after a step")


FIT_ARGS = {"epochs": SCALARS, "batch_size": SCALARS, "seed": SCALARS, "validation_split": SCALARS,
            "shuffle": SCALARS, "tbptt": SCALARS, "callback": SCALARS, "step_callback": SCALARS,
            "validation_data": st.one_of(SCALARS, st.tuples(anything_array(), anything_array()),
                                         st.lists(anything_array(), max_size=3))}


@FUZZ
@given(data=st.data(), arg=st.sampled_from(sorted(FIT_ARGS)))
def test_trainer_fit_arguments(data, arg):
    net = _net()
    tr = nl.Trainer(net, "adam")
    value = data.draw(FIT_ARGS[arg])
    X = np.random.default_rng(0).standard_normal((8, 3))
    y = np.random.default_rng(1).standard_normal((8, 2))
    names = [arg] + (["x", "y", "shape", "target"] if arg == "validation_data" else [])
    kwargs = {"epochs": 1, "batch_size": 4, arg: value}
    out = attempt(lambda: tr.fit(X, y, **kwargs), names,
                  lambda: [_params(net), tr.optimizer.state_dict()], kind="Trainer.fit")
    if not isinstance(out, Refused):
        assert_finite(net.params(), "parameters after fit")


@FUZZ
@given(kw=st.sampled_from(["clip", "regularizer", "on_nonfinite", "optimizer", "monitor"]), value=SCALARS)
def test_trainer_constructor(kw, value):
    net = _net()
    args = {"optimizer": "sgd", kw: value}
    attempt(lambda: nl.Trainer(net, **args), [kw, "clip", "optimizer", "regularizer", "monitor"],
            lambda: _params(net), kind="Trainer()")


# ---------------------------------------------------------------- gradcheck
@FUZZ
@given(eps=SCALARS, atol=SCALARS, rtol=SCALARS, ret=st.sampled_from(["scalar", "vector", "str", "none", "nan"]),
       x=anything_array())
def test_gradcheck_check(eps, atol, rtol, ret, x):
    def f(v):
        return {"scalar": float(np.sum(v ** 2)), "vector": v * 2, "str": "loss", "none": None,
                "nan": math.nan}[ret]

    out = attempt(lambda: nl.gradcheck.check(f, lambda v: 2 * v, x, eps=eps, atol=atol, rtol=rtol),
                  ["eps", "atol", "rtol", "f must", "x"], kind="gradcheck.check")
    if not isinstance(out, Refused) and ret == "scalar" and _is_clean_finite(x):
        assert bool(out), "a correct gradient failed"
        if out.atol <= 0.1 and out.rtol <= 0.1:  # an error far beyond the tolerances never passes
            wrong = nl.gradcheck.check(f, lambda v: 2 * v + 1.0 + 20 * np.abs(v), x, eps=eps, atol=atol, rtol=rtol)
            assert not bool(wrong), "a wrong gradient passed"


@FUZZ
@given(net=st.sampled_from([None, "net", 3, object(), nl.Dense(3, 2)]), eps=SCALARS)
def test_gradcheck_check_network_and_activation(net, eps):
    attempt(lambda: nl.gradcheck.check_network(net, np.ones((2, 3)), np.ones((2, 2))), ["Sequential"],
            kind="gradcheck.check_network")
    attempt(lambda: nl.gradcheck.check_activation("tanh", eps=eps), ["eps"], kind="gradcheck.check_activation")


# ---------------------------------------------------------------- GradientMonitor
@FUZZ
@given(ratio=SCALARS, xy=xy_pairs(), training=SCALARS)
def test_gradient_monitor(ratio, xy, training):
    X, y = xy
    net = _net()
    attempt(lambda: nl.GradientMonitor(net, saturation_ratio=ratio), ["saturation_ratio"], kind="GradientMonitor()")
    attempt(lambda: nl.GradientMonitor(ratio), ["Sequential"], kind="GradientMonitor()")
    mon = nl.GradientMonitor(net)
    out = attempt(lambda: mon.observe(X, y), ["X", "y", "target"], lambda: _params(net),
                  kind="GradientMonitor.observe")
    if not isinstance(out, Refused) and _is_clean_finite(X) and _is_clean_finite(y):
        assert math.isfinite(out)
        assert [v.name for v in mon.verdicts()] == nl.diagnostics.VERDICT_NAMES
