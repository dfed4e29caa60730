"""User-registered activations: registration, compilation errors, and the same derivative checks as
the built-ins. (Their use inside networks is tested with the networks.)

Every registration made here is undone by a fixture, so the rest of the suite sees the built-in
registry only.
"""

import fractions
import math

import naive  # tests/ is on sys.path (conftest.py)
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnlab.activations as A
from nnlab.errors import ActivationCompileError, HyperparameterError, UnknownNameError

SETTINGS = settings(deadline=None, max_examples=50)


@pytest.fixture(scope="module")
def custom():
    """'my_sin' (no parameters) and 'scaled_softsign' (k learnable, c fixed), removed afterwards."""
    names = []
    try:
        A.register("my_sin", lambda z: math.sin(z), lambda z: math.cos(z), formula="sin z",
                   derivative_formula="cos z")
        names.append("my_sin")
        A.register("scaled_softsign", naive.scaled_softsign, naive.scaled_softsign_d, params={"k": 1.5, "c": 1.0},
                   learnable=("k",), param_derivatives={"k": naive.scaled_softsign_dk, "c": naive.scaled_softsign_dc},
                   kinks=(0.0,))
        names.append("scaled_softsign")
        yield names
    finally:
        for n in names:
            A.unregister(n)


@pytest.fixture
def temporary():
    """Names registered inside one test, unregistered after it whatever happens."""
    made = []
    yield made
    for n in made:
        if n in A.names():
            A.unregister(n)


def test_registered_names_and_entries(custom):
    names = A.names()
    assert "my_sin" in names and "scaled_softsign" in names
    assert names[-1] == "scaled"  # built-ins first, then user entries, then the wrapper
    ent = A.entry("scaled_softsign")
    assert ent.custom and ent.param_names == ("k", "c")
    assert A.get("scaled_softsign").param_names == ("k",)
    assert A.get("scaled_softsign", learnable=True).param_names == ("k", "c")
    assert A.entry("my_sin").formula == "sin z"


def test_forward_derivative_param_derivative(custom):
    z = np.linspace(-6, 6, 101)
    sinus = A.get("my_sin")
    np.testing.assert_allclose(sinus.forward(z), np.sin(z), rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(sinus.derivative(z), np.cos(z), rtol=1e-15, atol=1e-16)
    act = A.get("scaled_softsign", k=2.0, c=0.5)
    np.testing.assert_allclose(act.forward(z), 2.0 * z / (0.5 + np.abs(z)), rtol=1e-15)
    np.testing.assert_allclose(act.derivative(z), 2.0 * 0.5 / (0.5 + np.abs(z)) ** 2, rtol=1e-15)
    np.testing.assert_allclose(act.param_derivative(z, "k"), z / (0.5 + np.abs(z)), rtol=1e-15)
    np.testing.assert_allclose(act.param_derivative(z, "c"), -2.0 * z / (0.5 + np.abs(z)) ** 2, rtol=1e-15)
    out32 = act.forward(z.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, act.forward(z.astype(np.float32).astype(np.float64)), rtol=1e-6)
    assert np.isnan(sinus.forward(np.array([np.nan]))).all()


def test_custom_inside_scaled(custom):
    z = np.linspace(-3, 3, 31)
    act = A.get("scaled", base="my_sin", a=3.0, learnable=True)
    np.testing.assert_allclose(act.forward(z), 3.0 * np.sin(z), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(act.param_derivative(z, "a"), np.sin(z), rtol=1e-15, atol=1e-16)
    naive.check_activation_derivatives(act, z[np.abs(z) > 0.05])


@SETTINGS
@given(z=st.lists(st.floats(-8.0, 8.0), min_size=1, max_size=12).map(np.array),
       k=st.floats(-3.0, 3.0), c=st.floats(0.3, 3.0))
def test_same_derivative_checks_as_builtins(custom, z, k, c):
    naive.check_activation_derivatives(A.get("my_sin"), z)
    act = A.get("scaled_softsign", k=k, c=c)
    keep = naive.away_from(z, A.entry("scaled_softsign").facts.kinks, 0.05)
    if keep.any():
        naive.check_activation_derivatives(act, z[keep])


def test_planted_wrong_derivative_is_caught(temporary):
    """The generic check is not a rubber stamp: a derivative off by 1% fails it."""
    A.register("sinus_wrong", lambda z: math.sin(z), lambda z: 1.01 * math.cos(z))
    temporary.append("sinus_wrong")
    A.register("softsign_wrong_dp", naive.scaled_softsign, naive.scaled_softsign_d, params={"k": 1.0, "c": 1.0},
               learnable=("k",), param_derivatives={"k": lambda z, k, c: 1.01 * z / (c + abs(z))})
    temporary.append("softsign_wrong_dp")
    with pytest.raises(AssertionError, match=r"dθ/dz wrong at z="):
        naive.check_activation_derivatives(A.get("sinus_wrong"), np.linspace(-3, 3, 13))
    with pytest.raises(AssertionError, match=r"dθ/dk \(at k=1\.0\) wrong at z="):
        naive.check_activation_derivatives(A.get("softsign_wrong_dp"), np.array([-2.0, -0.5, 0.7, 3.0]))


# ---------------------------------------------------------------- functions Numba cannot compile
_LOOKUP = {"scale": 2.0}


def _helper(x):  # a plain Python function: Numba cannot call it
    return x


def _uses_dict(z, p):
    return z * _LOOKUP["scale"]


def _calls_python(z, p):
    return _helper(z)


def _uses_fractions(z, p):
    return float(fractions.Fraction(z))


def _returns_tuple(z, p):
    return (z, p)


@pytest.mark.parametrize("bad, hint", [(_uses_dict, "_LOOKUP"), (_calls_python, "_helper"),
                                       (_uses_fractions, "Fraction"), (_returns_tuple, "real scalar")])
@pytest.mark.parametrize("slot", ["forward", "derivative", "param_derivative"])
def test_uncompilable_function_raises_clear_error(bad, hint, slot):
    good = lambda z, p: z * p  # noqa: E731
    kw = {"forward": good, "derivative": good, "params": {"p": 1.0}}
    if slot == "param_derivative":
        kw.update(learnable=("p",), param_derivatives={"p": bad})
    else:
        kw[slot] = bad
    before = A.names()
    with pytest.raises(ActivationCompileError) as exc:
        A.register("broken", **kw)
    msg = str(exc.value)
    assert "broken" in msg and hint in msg, msg
    assert ("could not be compiled by Numba" in msg) or ("must return a real scalar" in msg)
    assert isinstance(exc.value, ValueError)
    assert A.names() == before  # nothing half-registered


def test_non_callable_raises(temporary):
    with pytest.raises(ActivationCompileError, match="callable"):
        A.register("not_callable", 3.0, lambda z: 1.0)
    assert "not_callable" not in A.names()


# ---------------------------------------------------------------- registry hygiene
@pytest.mark.parametrize("name", ["tanh", "relu", "scaled"])
def test_builtin_names_cannot_be_registered(name):
    with pytest.raises(HyperparameterError, match="already registered"):
        A.register(name, lambda z: z, lambda z: 1.0)
    with pytest.raises(HyperparameterError, match="already registered"):
        A.register(name, lambda z: z, lambda z: 1.0, replace=True)


def test_duplicate_and_replace(temporary):
    A.register("twice", lambda z: 2.0 * z, lambda z: 2.0)
    temporary.append("twice")
    code = A.entry("twice").code
    with pytest.raises(HyperparameterError, match="already registered"):
        A.register("twice", lambda z: 3.0 * z, lambda z: 3.0)
    assert A.entry("twice").kernels[0](1.5) == 3.0  # unchanged by the refused registration
    A.register("twice", lambda z: 3.0 * z, lambda z: 3.0, replace=True)
    assert A.entry("twice").code == code
    assert A.get("twice").forward(np.array([1.5]))[0] == 4.5  # the kernels see the replacement
    assert A.names().count("twice") == 1


def test_unregister(temporary):
    A.register("temp_act", lambda z: z * z, lambda z: 2.0 * z)
    temporary.append("temp_act")
    assert "temp_act" in A.names()
    A.unregister("temp_act")
    assert "temp_act" not in A.names()
    with pytest.raises(UnknownNameError):
        A.get("temp_act")
    with pytest.raises(UnknownNameError):
        A.unregister("temp_act")
    with pytest.raises(HyperparameterError, match="built-in"):
        A.unregister("tanh")
    # the name is free again, and a fresh registration works (the kernels see the new one)
    A.register("temp_act", lambda z: -z, lambda z: -1.0)
    assert A.get("temp_act").forward(np.array([2.0]))[0] == -2.0
    assert A.get("temp_act").derivative(np.array([2.0]))[0] == -1.0


@pytest.mark.parametrize("kwargs", [
    {"name": "1abc"}, {"name": "has space"}, {"name": 3},
    {"params": {"q": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}},  # more than 3
    {"params": {"q": 1.0}, "learnable": ("q",)},  # learnable without its derivative
    {"params": {"q": 1.0}, "learnable": ("b",), "param_derivatives": {"b": lambda z, q: 0.0}},
    {"params": {"q": 1.0}, "param_derivatives": {"b": lambda z, q: 0.0}},  # derivative of nothing
    {"params": {"q": math.nan}}, {"params": {"q": "1"}},
    {"params": {"a": 1.0}}, {"params": {"learnable": 1.0}}, {"params": {"base": 1.0}},  # reserved
    {"params": {"not ok": 1.0}},
])
def test_invalid_registrations(kwargs):
    kw = {"name": "bad_reg", "forward": lambda z, *p: z, "derivative": lambda z, *p: 1.0}
    kw.update(kwargs)
    before = A.names()
    with pytest.raises(HyperparameterError):
        A.register(kw.pop("name"), kw.pop("forward"), kw.pop("derivative"), **kw)
    assert A.names() == before

