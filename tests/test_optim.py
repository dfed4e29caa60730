"""nnlab.optim against the naive NumPy references (tests/optim_naive.py), plus the list/flat paths,
state_dict, bad input, a convergence table and Hypothesis properties."""

import copy
import math
import re

import numpy as np
import optim_naive as naive  # tests/ is on sys.path (conftest.py)
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nnlab as nl
from nnlab.errors import DTypeError, HyperparameterError, NonFiniteError, ShapeError, UnknownNameError
from nnlab.kernels import optim_cpu as K

CASES, IDS, STEPS, make_params, grad_of = naive.CASES, naive.IDS, naive.STEPS, naive.make_params, naive.grad_of


def run_nnlab(name, hp, params, steps=STEPS, t0=0, opt=None):
    opt = opt or nl.optim.get(name, **hp)
    for t in range(t0 + 1, t0 + steps + 1):
        opt.step(params, [grad_of(p, t, k) for k, p in enumerate(params)])
    return opt


def run_naive(name, hp, params, steps=STEPS):
    refs = [naive.NAIVE[name](**copy.deepcopy(hp)) for _ in params]
    for t in range(1, steps + 1):
        for k, (p, r) in enumerate(zip(params, refs)):
            r.step(p, grad_of(p, t, k))


# ---------------------------------------------------------------- against the naive reference
@pytest.mark.parametrize(("name", "hp"), CASES, ids=IDS)
def test_matches_naive_float64(name, hp):
    ours, ref = make_params(), make_params()
    run_nnlab(name, hp, ours)
    run_naive(name, hp, ref)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("name", "hp"), CASES, ids=IDS)
def test_float32_close_to_naive_float64(name, hp):
    ours, ref = make_params(np.float32), [p.astype(np.float64) for p in make_params(np.float32)]
    run_nnlab(name, hp, ours)
    run_naive(name, hp, ref)
    for a, b in zip(ours, ref):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)


def test_ema_momentum_is_torch_momentum_with_scaled_lr():
    """SGD(lr=γ, β, 'ema') == SGD(lr=γ(1−β), β) step for step (docstring claim)."""
    for nesterov in (False, True):
        a, b = make_params(), make_params()
        run_nnlab("sgd", dict(lr=0.5, momentum=0.9, momentum_form="ema", nesterov=nesterov), a)
        run_nnlab("sgd", dict(lr=0.5 * (1 - 0.9), momentum=0.9, nesterov=nesterov), b)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def test_adamw_equals_adam_decoupled():
    a, b = make_params(), make_params()
    run_nnlab("adamw", dict(lr=0.01, weight_decay=0.1), a)
    run_nnlab("adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# ---------------------------------------------------------------- list path == flat path
@pytest.mark.parametrize(("name", "hp"), CASES, ids=IDS)
def test_list_step_equals_flat_step(name, hp):
    params = make_params()
    flat = np.concatenate([p.ravel() for p in params])
    opt_list, opt_flat = nl.optim.get(name, **hp), nl.optim.get(name, **hp)
    for t in range(1, 11):
        grads = [grad_of(p, t, k) for k, p in enumerate(params)]
        opt_list.step(params, grads)
        opt_flat.step_flat(flat, np.concatenate([g.ravel() for g in grads]))
        np.testing.assert_array_equal(flat, np.concatenate([p.ravel() for p in params]))


def test_begin_end_flat_is_step_flat():
    p1, p2 = np.linspace(-1, 1, 7), np.linspace(-1, 1, 7)
    a, b = nl.optim.Adam(lr=0.1), nl.optim.Adam(lr=0.1)
    for t in range(5):
        g = np.cos(p1 + t)
        a.step_flat(p1, g)
        code, hp, tt, state = b.begin_flat(p2)
        K.opt_update(code, hp, tt, p2, np.cos(p2 + t), state)
        b.end_step()
    np.testing.assert_array_equal(p1, p2)
    assert a.t == b.t == 5


def test_network_flat_buffer_and_views():
    """params() are views of net._flat: a list step through them is a flat step on the buffer."""
    net = nl.Sequential([nl.Dense(3, 4, activation="tanh"), nl.Dense(4, 1)], seed=0)
    X = np.random.default_rng(0).normal(size=(8, 3))
    y = X.sum(axis=1)
    before = net._flat.copy()
    _, grads = net.loss_and_grads(X, y)
    nl.optim.SGD(lr=0.1).step(net.params(), grads)
    flat_g = np.concatenate([g.ravel() for g in grads])
    np.testing.assert_allclose(net._flat, before - 0.1 * flat_g, rtol=1e-15)


def test_non_contiguous_param_updated_in_place():
    base = np.arange(12.0).reshape(3, 4)
    view = base[:, ::2]
    nl.optim.SGD(lr=1.0).step([view], [np.ones((3, 2))])
    np.testing.assert_array_equal(base[:, ::2], np.arange(12.0).reshape(3, 4)[:, ::2] - 1)
    np.testing.assert_array_equal(base[:, 1::2], np.arange(12.0).reshape(3, 4)[:, 1::2])


# ---------------------------------------------------------------- state_dict
@pytest.mark.parametrize(("name", "hp"), CASES, ids=IDS)
def test_state_dict_round_trip_resumes_identically(name, hp):
    straight = make_params()
    run_nnlab(name, hp, straight, steps=20)
    resumed = make_params()
    opt = run_nnlab(name, hp, resumed, steps=10)
    sd = opt.state_dict()
    sd_copy = copy.deepcopy(sd)
    run_nnlab(name, hp, make_params(), steps=3, opt=opt)  # mutating opt must not touch sd
    for s, c in zip(sd["state"], sd_copy["state"]):
        np.testing.assert_array_equal(s, c)
    fresh = type(opt)()
    fresh.load_state_dict(sd)
    assert fresh.hyperparams() == opt.hyperparams() and fresh.t == 10
    run_nnlab(name, hp, resumed, steps=10, t0=10, opt=fresh)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a, b)


def test_load_state_dict_rejects_other_optimizer_and_bad_shapes():
    sd = run_nnlab("adam", {}, make_params(), steps=2).state_dict()
    with pytest.raises(HyperparameterError):
        nl.optim.SGD().load_state_dict(sd)
    bad = copy.deepcopy(sd)
    bad["state"][0] = bad["state"][0][:, :3]
    opt = nl.optim.Adam(lr=0.5)
    with pytest.raises(ShapeError):
        opt.load_state_dict(bad)
    assert opt.lr == 0.5 and opt.t == 0  # nothing changed
    bad = copy.deepcopy(sd)
    bad["hyperparams"]["lr"] = float("nan")
    with pytest.raises(HyperparameterError):
        opt.load_state_dict(bad)
    assert opt.lr == 0.5


# ---------------------------------------------------------------- bad input and failed steps
def snapshot(opt, params):
    return [p.copy() for p in params], copy.deepcopy(opt.state_dict())


def assert_unchanged(opt, params, snap):
    ps, sd = snap
    for a, b in zip(params, ps):
        np.testing.assert_array_equal(a, b)
    now = opt.state_dict()
    assert now["step"] == sd["step"] and now["scalars"] == sd["scalars"]
    for a, b in zip(now["state"], sd["state"]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", nl.optim.names())
def test_failed_step_loses_no_state(name):
    params = make_params()
    opt = run_nnlab(name, {}, params, steps=3)
    snap = snapshot(opt, params)
    good = [grad_of(p, 4, k) for k, p in enumerate(params)]
    bad_nan = [good[0].copy(), good[1].copy()]
    bad_nan[1][2] = np.nan
    attempts = [
        (NonFiniteError, params, bad_nan),
        (ShapeError, params, good[:1]),                        # wrong list length
        (ShapeError, params, [good[0].T, good[1]]),            # shape mismatch
        (ShapeError, params[:1], good[:1]),                    # fewer arrays than the state
        (DTypeError, params, [good[0], good[1].astype(complex)]),
        (DTypeError, [params[0], params[1].tolist()], good),   # a parameter that is not an array
        (ShapeError, [], []),
    ]
    for exc, ps, gs in attempts:
        with pytest.raises(exc):
            opt.step(ps, gs)
        assert_unchanged(opt, params, snap)
    opt.lr = float("nan")
    with pytest.raises(HyperparameterError, match="lr"):
        opt.step(params, good)
    assert_unchanged(opt, params, snap)
    opt.lr = nl.optim.get(name).lr
    # the failures left no trace: the next step is the one an uninterrupted run takes
    ref = make_params()
    run_nnlab(name, {}, ref, steps=4)
    opt.step(params, good)
    for a, b in zip(params, ref):
        np.testing.assert_array_equal(a, b)


def test_step_flat_bad_input():
    opt = nl.optim.Adam()
    p = np.zeros(4)
    with pytest.raises(ShapeError):
        opt.step_flat(p, np.zeros(3))
    with pytest.raises(NonFiniteError):
        opt.step_flat(p, np.array([0.0, np.inf, 0.0, 0.0]))
    with pytest.raises(DTypeError):
        opt.step_flat(np.zeros(4, dtype=np.int64), np.zeros(4))
    assert opt.t == 0 and opt.state_dict()["state"] is None
    ro = np.zeros(4)
    ro.flags.writeable = False
    with pytest.raises(DTypeError, match="read-only"):
        opt.step([ro], [np.zeros(4)])


def test_nonfinite_check_can_be_turned_off():
    p = np.zeros(2)
    nl.optim.SGD(lr=1.0).step([p], [np.array([np.nan, 1.0])], check_finite=False)
    assert np.isnan(p[0]) and p[1] == -1.0


def test_switching_a_state_changing_option_mid_run_is_refused():
    params = make_params()
    opt = run_nnlab("adam", {}, params, steps=2)
    opt.amsgrad = True
    with pytest.raises(HyperparameterError, match="reset"):
        opt.step(params, [np.ones_like(p) for p in params])
    opt.reset()
    opt.step(params, [np.ones_like(p) for p in params])
    assert opt.t == 1


BAD_HYPERPARAMS = [
    ("sgd", dict(lr=-1.0)), ("sgd", dict(lr=float("nan"))), ("sgd", dict(lr="0.1")),
    ("sgd", dict(momentum=-0.1)), ("sgd", dict(nesterov=True)), ("sgd", dict(momentum=0.9, nesterov=True, dampening=0.1)),
    ("sgd", dict(momentum=1.0, momentum_form="ema")), ("sgd", dict(momentum_form="keras")),
    ("sgd", dict(weight_decay=-1e-3)), ("sgd", dict(l1=float("inf"))), ("sgd", dict(maximize=1)),
    ("adagrad", dict(eps=-1.0)), ("adagrad", dict(lr_decay=-0.1)), ("adagrad", dict(initial_accumulator_value=-1)),
    ("adadelta", dict(rho=1.5)), ("rmsprop", dict(alpha=-0.1)), ("rmsprop", dict(centered="yes")),
    ("adam", dict(betas=(1.0, 0.999))), ("adam", dict(betas=(0.9, -0.1))), ("adam", dict(betas=(0.9, float("nan")))),
    ("adam", dict(betas=0.9)), ("adam", dict(eps=-1e-8)), ("adamw", dict(weight_decay=-0.1)),
    ("nadam", dict(momentum_decay=-1.0)), ("adamax", dict(betas=(0.9,))),
    ("rprop", dict(etas=(1.5, 1.2))), ("rprop", dict(etas=(0.5, 0.9))), ("rprop", dict(step_sizes=(1.0, 0.1))),
    ("smorms3", dict(eps=-1.0)),
]


@pytest.mark.parametrize(("name", "hp"), BAD_HYPERPARAMS, ids=[f"{n}-{h}" for n, h in BAD_HYPERPARAMS])
def test_invalid_hyperparameters(name, hp):
    with pytest.raises(HyperparameterError):
        nl.optim.get(name, **hp)


def test_registry():
    assert nl.optim.names() == ["sgd", "adagrad", "adadelta", "rmsprop", "adam", "adamw", "nadam", "adamax",
                                "rprop", "smorms3"]
    assert isinstance(nl.optim.get("AdamW"), nl.optim.AdamW)
    opt = nl.optim.SGD()
    assert nl.optim.get(opt) is opt
    with pytest.raises(UnknownNameError):
        nl.optim.get("lamb")
    assert "Adam(lr=0.001" in repr(nl.optim.Adam())


@pytest.mark.parametrize("cls", list(nl.optim.REGISTRY.values()), ids=list(nl.optim.REGISTRY))
def test_every_optimizer_documents_its_rule(cls):
    doc = cls.__doc__
    assert re.search(r"p\s+←", doc) or "then the :class:`Adam` rule" in doc


# ---------------------------------------------------------------- convergence table
def quadratic(x):
    """f = ½·(1·(x₀ − 1)² + 4·(x₁ + ½)²), minimum at (1, −½)."""
    return np.array([1.0, 4.0]) * (x - np.array([1.0, -0.5]))


def rosenbrock(x):
    """f = (1 − x₀)² + 100·(x₁ − x₀²)², minimum at (1, 1)."""
    return np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])


# (name, hyperparameters, steps, tolerance on max|x − x*|); docs/optim.md shows this table.
QUADRATIC_TABLE = [
    ("sgd", dict(lr=0.1), 300, 1e-5),
    ("sgd", dict(lr=0.05, momentum=0.9), 500, 1e-5),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True), 500, 1e-5),
    ("sgd", dict(lr=0.5, momentum=0.9, momentum_form="ema"), 500, 1e-5),
    ("adagrad", dict(lr=0.5), 500, 1e-5),
    ("adadelta", dict(lr=1.0, eps=1e-3), 500, 1e-5),
    ("rmsprop", dict(lr=0.01), 1000, 1e-5),
    ("rmsprop", dict(lr=0.01, centered=True), 1000, 1e-5),
    ("adam", dict(lr=0.05), 1000, 1e-5),
    ("adamw", dict(lr=0.05, weight_decay=0.0), 1000, 1e-5),
    ("nadam", dict(lr=0.05), 1000, 1e-5),
    ("adamax", dict(lr=0.05), 1000, 1e-5),
    ("rprop", dict(lr=0.01), 500, 1e-5),
    ("smorms3", dict(lr=0.05), 500, 1e-5),
]
ROSENBROCK_TABLE = [
    ("sgd", dict(lr=1e-3, momentum=0.9), 3000, 1e-2),
    ("sgd", dict(lr=1e-3, momentum=0.9, nesterov=True), 3000, 1e-2),
    ("sgd", dict(lr=1e-2, momentum=0.9, momentum_form="ema"), 3000, 1e-2),
    ("adagrad", dict(lr=1.0), 8000, 1e-2),
    ("adadelta", dict(lr=1.0, rho=0.999), 10000, 0.15),  # Adadelta crawls along the valley
    ("rmsprop", dict(lr=1e-4, momentum=0.9), 5000, 1e-2),
    ("rmsprop", dict(lr=1e-3, centered=True), 5000, 1e-2),
    ("adam", dict(lr=0.02), 4000, 1e-2),
    ("adamw", dict(lr=0.02, weight_decay=0.0), 4000, 1e-2),
    ("nadam", dict(lr=0.01), 5000, 1e-2),
    ("adamax", dict(lr=0.01), 6000, 1e-2),
    ("rprop", dict(lr=1e-3), 3000, 1e-2),
    ("smorms3", dict(lr=0.01), 3000, 1e-2),
]


def _converge(fn, x0, xstar, name, hp, steps):
    opt = nl.optim.get(name, **hp)
    x = np.array(x0)
    for _ in range(steps):
        opt.step_flat(x, fn(x))
    return float(np.abs(x - xstar).max())


@pytest.mark.parametrize(("name", "hp", "steps", "tol"), QUADRATIC_TABLE,
                         ids=[f"{n}-{h}" for n, h, _, _ in QUADRATIC_TABLE])
def test_converges_on_quadratic(name, hp, steps, tol):
    assert _converge(quadratic, [3.0, -2.0], np.array([1.0, -0.5]), name, hp, steps) < tol


@pytest.mark.parametrize(("name", "hp", "steps", "tol"), ROSENBROCK_TABLE,
                         ids=[f"{n}-{h}" for n, h, _, _ in ROSENBROCK_TABLE])
def test_converges_on_rosenbrock(name, hp, steps, tol):
    assert _converge(rosenbrock, [-1.2, 1.0], np.array([1.0, 1.0]), name, hp, steps) < tol


def test_every_optimizer_is_in_the_convergence_tables():
    for table in (QUADRATIC_TABLE, ROSENBROCK_TABLE):
        assert {n for n, *_ in table} == set(nl.optim.names())


# ---------------------------------------------------------------- properties
@settings(deadline=None, max_examples=60)
@given(log_scale=st.floats(-8, 8), seed=st.integers(0, 2**16), lr=st.floats(1e-4, 1.0),
       amsgrad=st.booleans())
def test_adam_step_is_bounded_by_lr_whatever_the_gradient_scale(log_scale, seed, lr, amsgrad):
    """|Δp| ≤ lr·max(1, (1−β₁)/√(1−β₂)) (Kingma & Ba §2.1) for gradients of any magnitude, and for
    magnitudes well above ε the steps do not depend on the magnitude at all."""
    rng = np.random.default_rng(seed)
    b1, b2 = 0.9, 0.999
    bound = lr * max(1.0, (1 - b1) / math.sqrt(1 - b2)) * (1 + 1e-9)
    raw = rng.normal(size=(20, 6)) * rng.uniform(0.2, 5.0, size=(20, 1))
    p1, p2 = np.zeros(6), np.zeros(6)
    o1, o2 = nl.optim.Adam(lr=lr, amsgrad=amsgrad), nl.optim.Adam(lr=lr, amsgrad=amsgrad)
    scale = 10.0 ** log_scale
    for g in raw:
        before = p1.copy()
        o1.step_flat(p1, g * scale)
        o2.step_flat(p2, g)
        assert np.all(np.abs(p1 - before) <= bound)
    if scale >= 1e-3:
        np.testing.assert_allclose(p1, p2, rtol=1e-3, atol=lr * 1e-3)


@settings(deadline=None, max_examples=60)
@given(grads=st.lists(st.lists(st.floats(-1e3, 1e3), min_size=3, max_size=3), min_size=1, max_size=15),
       lr_decay=st.sampled_from([0.0, 0.1]), init=st.sampled_from([0.0, 0.5]))
def test_adagrad_effective_learning_rate_never_increases(grads, lr_decay, init):
    opt = nl.optim.Adagrad(lr=0.1, lr_decay=lr_decay, initial_accumulator_value=init)
    p = np.zeros(3)
    prev = np.full(3, np.inf)
    for g in grads:
        opt.step_flat(p, np.array(g))
        sd = opt.state_dict()
        t = sd["step"]
        eff = opt.lr / (1 + (t - 1) * lr_decay) / (np.sqrt(sd["state"][0][0]) + opt.eps)
        assert np.all(eff <= prev)
        prev = eff


# ---------------------------------------------------------------- Adam's float32 step (adam_rule32)
def test_sqrt32_is_the_rounded_square_root_everywhere():
    from nnlab.kernels.optim_cpu import sqrt32

    rng = np.random.default_rng(0)
    v = np.concatenate([[0.0, 5e-324, 1e-320, 1e-300, 1e-45, 1.17e-38, 1.0, 2.0, 1e38, 3.4e38, 1e39, 1e77, 1e300,
                         1.79e308, np.inf],
                        10.0 ** rng.uniform(-320, 308, 4000), rng.uniform(0, 10, 1000)])
    got = np.array([sqrt32(x) for x in v], dtype=np.float64)
    with np.errstate(over="ignore"):
        want = np.sqrt(v).astype(np.float32)  # the correctly rounded float32 root (0 / inf out of range)
    ulp = np.spacing(np.where(np.isinf(want), np.float32(0), want)).astype(np.float64)
    fin = np.isfinite(want)
    assert np.all(np.abs(got[fin] - want[fin].astype(np.float64)) <= ulp[fin]), "sqrt32: more than one ulp off"
    assert np.all(np.isinf(got[~fin])), "a root beyond float32's range must be inf"
    assert np.isinf(sqrt32(np.inf)) and sqrt32(0.0) == 0.0 and np.isnan(sqrt32(np.nan))


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("eps", [1e-8, 1e-40])
def test_float32_adam_step_is_the_float64_step_up_to_float32_rounding(amsgrad, weight_decay, eps):
    """The float32 kernel computes Adam's step in float32 (speed); against the same update with the
    float64 step, each weight differs by at most one ulp of the result plus float32 rounding of
    the step, and the moment buffers are the same bits."""
    from nnlab.kernels import optim_cpu as OK

    rng = np.random.default_rng(3)
    n = 5000
    p0 = (rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 2, n)).astype(np.float32)
    # |g| from float32 subnormals (vanishing gradients) to > 1.8e19 (g² beyond float32)
    g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-44, 25, n)).astype(np.float32)
    opt = nl.optim.Adam(lr=1e-3, amsgrad=amsgrad, weight_decay=weight_decay, eps=eps)
    code, hp, t, state = opt.begin_flat(p0.copy())
    p32, s32 = p0.copy(), state.copy()
    OK.opt_update(code, hp, t, p32, g, s32)
    # the reference: adam_rule (float64 step), element by element, as the float64 kernel computes it
    p64, s64 = p0.copy(), state.copy()
    b1, b2, eps = hp[OK.H_0], hp[OK.H_0 + 1], hp[OK.H_0 + 2]
    step_size, bc2_sqrt = hp[OK.H_0 + 4], hp[OK.H_0 + 5]
    mx, wd, l1, decay = OK.common(hp)
    with np.errstate(over="ignore"):  # v of a |g| > 1.8e19 overflows its float32 slot, as in the kernel
        for i in range(n):
            pi, gi = OK.prologue(p64[i], g[i], mx, wd, l1, decay)
            vmax = s64[2, i] if amsgrad else 0.0
            delta, s64[0, i], s64[1, i], vmax = OK.adam_rule(gi, s64[0, i], s64[1, i], vmax, b1, b2, eps, amsgrad,
                                                             step_size, bc2_sqrt)
            if amsgrad:
                s64[2, i] = vmax
            p64[i] = pi - delta
    np.testing.assert_array_equal(s32, s64)
    if eps < 2.0 ** -100:  # a tiny epsilon keeps the float64 step: the same bits
        np.testing.assert_array_equal(p32, p64)
    step = np.abs(p64.astype(np.float64) - p0.astype(np.float64))
    bound = np.spacing(np.abs(p64)).astype(np.float64) + 2.0 ** -22 * step
    assert np.all(np.isfinite(p32))
    assert np.all(np.abs(p32.astype(np.float64) - p64.astype(np.float64)) <= bound)


@pytest.mark.parametrize("make", [lambda: nl.optim.Adagrad(lr=1e-2), lambda: nl.optim.RMSprop(lr=1e-3),
                                  lambda: nl.optim.Adam(lr=1e-3), lambda: nl.optim.Adam(lr=1e-3, amsgrad=True),
                                  lambda: nl.optim.AdamW(lr=1e-3, weight_decay=0.01),
                                  lambda: nl.optim.Adam(lr=1e-3, weight_decay=1e-4)],
                         ids=["adagrad", "rmsprop", "adam", "adam-amsgrad", "adamw", "adam-l2"])
def test_float32_adaptive_steps_match_the_float64_kernel(make):
    """On float32 buffers Adagrad, RMSprop and Adam compute 1/(√v + ε) in float32 (inv_root32): from
    the same float32-representable state, the states after one step are the float64 kernel's rounded
    to float32, and each weight is within one ulp plus 2^-22 of its step of the float64 kernel's."""
    from nnlab.kernels import optim_cpu as OK

    rng = np.random.default_rng(7)
    n = 4000
    p0 = (rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 2, n)).astype(np.float32)
    g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-44, 15, n)).astype(np.float32)
    opt32, opt64 = make(), make()
    code, hp, t, st32 = opt32.begin_flat(p0.copy())
    _, hp64, _, st64 = opt64.begin_flat(p0.astype(np.float64))
    init = (np.abs(rng.standard_normal(st32.shape)) * 10.0 ** rng.uniform(-40, 2, st32.shape)).astype(np.float32)
    st32[...] = init
    st64[...] = init.astype(np.float64)
    p32, p64 = p0.copy(), p0.astype(np.float64)
    with np.errstate(over="ignore"):
        OK.opt_update(code, hp, t, p32, g, st32)
        OK.opt_update(code, hp64, t, p64, g.astype(np.float64), st64)
        np.testing.assert_array_equal(st32, st64.astype(np.float32))
        ref = p64.astype(np.float32).astype(np.float64)
    step = np.abs(p64 - p0.astype(np.float64))
    bound = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64) + 2.0 ** -22 * step
    assert np.all(np.abs(p32.astype(np.float64) - p64) <= bound + np.abs(ref - p64))


_SGD_WD = lambda **kw: nl.optim.SGD(lr=1e-2, momentum=0.9, weight_decay=5e-4, **kw)  # noqa: E731
_SGD_M = lambda **kw: nl.optim.SGD(lr=1e-2, momentum=0.9, **kw)  # noqa: E731
_SGD_MD = lambda **kw: nl.optim.SGD(lr=1e-2, momentum=0.9, dampening=0.1, **kw)  # noqa: E731
_SGD_WDD = lambda **kw: nl.optim.SGD(lr=1e-2, momentum=0.9, dampening=0.2, weight_decay=5e-4, **kw)  # noqa: E731
_SGD_NWD = lambda **kw: nl.optim.SGD(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=1e-3, **kw)  # noqa: E731
_ADAMW = lambda **kw: nl.optim.AdamW(lr=1e-3, weight_decay=0.01, **kw)  # noqa: E731
_ADAM_L2 = lambda **kw: nl.optim.Adam(lr=1e-3, weight_decay=1e-4, **kw)  # noqa: E731
_RMS_CM = lambda **kw: nl.optim.RMSprop(lr=1e-3, centered=True, momentum=0.9, **kw)  # noqa: E731
_RMS_C = lambda **kw: nl.optim.RMSprop(lr=1e-3, centered=True, **kw)  # noqa: E731
_RMS_M = lambda **kw: nl.optim.RMSprop(lr=1e-3, momentum=0.9, **kw)  # noqa: E731


# AdamW in float32 is not here: its fast loop's float32 step is adam_rule32 (tested above against
# the float64 kernel), while the general loop keeps the float64 rule
@pytest.mark.parametrize("make,dtype", [(_SGD_M, np.float32), (_SGD_M, np.float64), (_SGD_MD, np.float32),
                                        (_SGD_MD, np.float64), (_SGD_WDD, np.float32),
                                        (_SGD_WD, np.float32), (_SGD_WD, np.float64), (_SGD_NWD, np.float32),
                                        (_SGD_NWD, np.float64), (_ADAMW, np.float64), (_ADAM_L2, np.float64),
                                        (_RMS_CM, np.float32), (_RMS_CM, np.float64), (_RMS_C, np.float32),
                                        (_RMS_M, np.float32)],
                         ids=["sgd-momentum-f32", "sgd-momentum-f64", "sgd-dampening-f32", "sgd-dampening-f64",
                              "sgd-wd-dampening-f32", "sgd-wd-f32", "sgd-wd-f64", "sgd-nesterov-wd-f32", "sgd-nesterov-wd-f64", "adamw-f64",
                              "adam-l2-f64", "rmsprop-centered-momentum-f32", "rmsprop-centered-momentum-f64",
                              "rmsprop-centered-f32", "rmsprop-momentum-f32"])
def test_weight_decay_loops_are_the_general_loop_bit_for_bit(make, dtype):
    """SGD with momentum (with and without coupled weight decay), Adam with either weight decay, and RMSprop's centered/momentum
    variants run their own vectorised loops; maximize=True on -g takes the general loop (the
    prologue negates g exactly), so the two must agree to the bit."""
    from nnlab.kernels import optim_cpu as OK

    rng = np.random.default_rng(11)
    n = 3000
    p0 = (rng.standard_normal(n) * 3).astype(dtype)
    fast, general = make(), make(maximize=True)
    pf, pg = p0.copy(), p0.copy()
    for _ in range(4):
        g = rng.standard_normal(n).astype(dtype)
        code, hp, t, st = fast.begin_flat(pf)
        OK.opt_update(code, hp, t, pf, g, st)
        fast.end_step()
        code, hp, t, st = general.begin_flat(pg)
        OK.opt_update(code, hp, t, pg, -g, st)
        general.end_step()
    np.testing.assert_array_equal(pf, pg)
    np.testing.assert_array_equal(fast._state[0], general._state[0])
