"""Slow, obvious float64 references for the activation tests.

Nothing here is clever: each activation is its textbook formula written with :mod:`math`, one scalar
at a time, and derivatives are checked against central finite differences. The tests compare
nnlab's compiled kernels with these, so a mistake has to be made twice, in two different ways, to
go unnoticed. The formulas are only meant for moderate inputs (|z| <= ~10, parameters of order 1):
they overflow or cancel outside that, which is exactly what the library's versions must not do.
"""

import math

import numpy as np


# ---------------------------------------------------------------- a user activation for the tests
# k·z/(c + |z|) with its derivative and both parameter derivatives: the custom activation the
# registry tests (CPU and device) register, k learnable and c fixed.
def scaled_softsign(z, k, c):
    return k * z / (c + abs(z))


def scaled_softsign_d(z, k, c):
    return k * c / (c + abs(z)) ** 2


def scaled_softsign_dk(z, k, c):
    return z / (c + abs(z))


def scaled_softsign_dc(z, k, c):
    return -k * z / (c + abs(z)) ** 2


# ---------------------------------------------------------------- finite differences

#: step of the 5-point central difference; the estimate at h/2 is also taken, and their
#: difference is the (generous) error estimate of the numeric value.
FD_STEP = 1e-3
#: tolerance of analytic vs numeric: |analytic - numeric| <= FD_ATOL + FD_RTOL*|numeric| + error
#: estimate. A 1% error in a derivative of size >= 1e-6 cannot hide in it.
FD_RTOL = 1e-6
FD_ATOL = 1e-9
#: an error estimate larger than this (relative to 1 + |numeric|) means the points straddle a kink
#: or the function is too steep for the step: the check refuses to judge instead of passing.
FD_UNRELIABLE = 1e-5


def five_point(f, x, h):
    """The 5-point central difference (f(x-2h) - 8f(x-h) + 8f(x+h) - f(x+2h)) / 12h, error O(h^4).

    ``f`` maps a float64 array to a float64 array of the same shape (or a scalar to a scalar).
    """
    x = np.asarray(x, dtype=np.float64)
    return (f(x - 2 * h) - 8 * f(x - h) + 8 * f(x + h) - f(x + 2 * h)) / (12 * h)


def numeric_derivative(f, x, h=FD_STEP):
    """(estimate, error estimate): the 5-point difference at h/2, and its distance to the one at h."""
    coarse = np.asarray(five_point(f, x, h), dtype=np.float64)
    fine = np.asarray(five_point(f, x, h / 2), dtype=np.float64)
    return fine, np.abs(coarse - fine)


def assert_close_to_numeric(analytic, numeric, err, where, *, rtol=FD_RTOL, atol=FD_ATOL, what="derivative"):
    """Assert |analytic - numeric| <= atol + rtol·|numeric| + err elementwise over the points ``where``.

    Refuses (fails) where the error estimate ``err`` itself is too large to judge; reports the
    worst point (where, analytic, numeric, error) on failure.
    """
    where = np.atleast_1d(np.asarray(where, dtype=np.float64))
    analytic = np.broadcast_to(np.asarray(analytic, dtype=np.float64), where.shape)
    numeric = np.broadcast_to(np.asarray(numeric, dtype=np.float64), where.shape)
    err = np.broadcast_to(np.asarray(err, dtype=np.float64), where.shape)
    assert np.all(np.isfinite(numeric)), (
        f"{what}: non-finite finite difference at {where[~np.isfinite(numeric)]}")
    unreliable = err > FD_UNRELIABLE * (1 + np.abs(numeric))
    assert not unreliable.any(), (
        f"{what}: finite differences unreliable (kink or too steep) at z={where[unreliable][:5]}, "
        f"error estimate {err[unreliable][:5]}")
    excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric) + err)
    i = int(np.argmax(excess))
    assert excess[i] <= 0, (
        f"{what} wrong at z={where[i]!r}: analytic {analytic[i]!r}, numeric {numeric[i]!r} "
        f"(error {abs(analytic[i] - numeric[i]):.3e}, fd error estimate {err[i]:.1e})")


def assert_matches_fd(analytic, f, x, *, h=FD_STEP, rtol=FD_RTOL, atol=FD_ATOL, what="derivative"):
    """Assert that ``analytic`` (array over ``x``) is the derivative of the elementwise ``f`` at ``x``."""
    numeric, err = numeric_derivative(f, x, h)
    assert_close_to_numeric(analytic, numeric, err, x, rtol=rtol, atol=atol, what=what)


# ---------------------------------------------------------------- generic activation checks
def rebuild(act, **changes):
    """A fresh Activation like ``act`` (same name, variant, values, scale) with ``changes`` applied,
    built through the public ``get`` -- how the parameter finite differences perturb a value."""
    import nnlab.activations as A

    values = dict(act.values)
    a = act.scale
    for k, v in changes.items():
        if k == "a":
            a = v
        else:
            values[k] = v
    if "a" in changes or act.scale != 1.0 or act.scale_learnable:
        return A.get("scaled", base=act.name, a=a, **act.variant, **values)
    return A.get(act.name, **act.variant, **values)


def all_param_names(act):
    """Every hyperparameter with a derivative: the entry's (learnable or not), plus 'a' if scaled."""
    extra = ("a",) if (act.scale != 1.0 or act.scale_learnable) else ()
    return tuple(act.entry.param_names) + extra


def check_activation_derivatives(act, z, noise=None, *, h=FD_STEP):
    """dθ/dz and dθ/dp for every hyperparameter p of ``act`` against 5-point central differences
    of ``act.forward`` at the points ``z`` (which must keep away from kinks by more than 2h)."""
    z = np.atleast_1d(np.asarray(z, dtype=np.float64))
    label = repr(act)
    assert_matches_fd(act.derivative(z, noise=noise), lambda x: act.forward(x, noise=noise), z, h=h,
                      what=f"{label} dθ/dz")
    for p in all_param_names(act):
        v = act.scale if p == "a" else act.values[p]
        numeric, err = numeric_derivative(lambda t, p=p: rebuild(act, **{p: t}).forward(z, noise=noise),
                                          v, h)
        assert_close_to_numeric(act.param_derivative(z, p, noise=noise), numeric, err, z,
                                what=f"{label} dθ/d{p} (at {p}={v!r})")


def away_from(z, points, margin):
    """The entries of ``z`` farther than ``margin`` from every point in ``points`` (broadcast)."""
    z = np.asarray(z, dtype=np.float64)
    keep = np.ones(z.shape, dtype=bool)
    for p in points:
        keep &= np.abs(z - p) > margin
    return keep


# ---------------------------------------------------------------- textbook formulas, scalar
def _sig(x):
    return 1.0 / (1.0 + math.exp(-x))


def _phi(x):  # standard normal density
    return math.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _Phi(x):  # standard normal cdf
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _gelu_tanh(z):
    k = math.sqrt(2 / math.pi)
    return 0.5 * z * (1 + math.tanh(k * (z + 0.044715 * z ** 3)))


def _gelu_tanh_d(z):
    k = math.sqrt(2 / math.pi)
    t = math.tanh(k * (z + 0.044715 * z ** 3))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * k * (1 + 3 * 0.044715 * z * z)


def _mish_d(z):
    sp = math.log(1 + math.exp(z))
    t = math.tanh(sp)
    return t + z * (1 - t * t) * _sig(z)


def _acon(z, p1, p2, beta):
    d = p1 - p2
    return d * z * _sig(beta * d * z) + p2 * z


def _acon_d(z, p1, p2, beta):
    d = p1 - p2
    s = _sig(beta * d * z)
    x = beta * d * z
    return d * (s + x * s * (1 - s)) + p2


#: name -> (forward(z, **params), derivative(z, **params)). Noise u is a keyword for rrelu and
#: noisy_relu; hyperparameter names are the registry's; at kinks, the one-sided value PyTorch uses.
FORMULAS = {
    "identity": (lambda z: z, lambda z: 1.0),
    "sigmoid": (lambda z, alpha=1.0: 1 / (1 + math.exp(-alpha * z)),
                lambda z, alpha=1.0: alpha * _sig(alpha * z) * (1 - _sig(alpha * z))),
    "tanh": (lambda z: (math.exp(z) - math.exp(-z)) / (math.exp(z) + math.exp(-z)),
             lambda z: 1 - math.tanh(z) ** 2),
    "relu": (lambda z: max(0.0, z), lambda z: 1.0 if z > 0 else 0.0),
    "leaky_relu": (lambda z, alpha=0.01: z if z > 0 else alpha * z,
                   lambda z, alpha=0.01: 1.0 if z > 0 else alpha),
    "prelu": (lambda z, alpha=0.25: z if z > 0 else alpha * z,
              lambda z, alpha=0.25: 1.0 if z > 0 else alpha),
    "rrelu": (lambda z, lower=1 / 8, upper=1 / 3, u=0.5: z if z > 0 else (lower + (upper - lower) * u) * z,
              lambda z, lower=1 / 8, upper=1 / 3, u=0.5: 1.0 if z > 0 else lower + (upper - lower) * u),
    "noisy_relu": (lambda z, sigma=0.1, u=0.0: max(0.0, z + sigma * u),
                   lambda z, sigma=0.1, u=0.0: 1.0 if z + sigma * u > 0 else 0.0),
    "elu": (lambda z, alpha=1.0: z if z > 0 else alpha * (math.exp(z) - 1),
            lambda z, alpha=1.0: 1.0 if z > 0 else alpha * math.exp(z)),
    "selu": (lambda z, alpha=1.6732632423543772, **kw: kw.get("lambda", 1.0507009873554805)
             * (z if z > 0 else alpha * (math.exp(z) - 1)),
             lambda z, alpha=1.6732632423543772, **kw: kw.get("lambda", 1.0507009873554805)
             * (1.0 if z > 0 else alpha * math.exp(z))),
    "celu": (lambda z, alpha=1.0: max(0.0, z) + min(0.0, alpha * (math.exp(z / alpha) - 1)),
             lambda z, alpha=1.0: 1.0 if z > 0 else math.exp(z / alpha)),
    "gelu": (lambda z: z * _Phi(z), lambda z: _Phi(z) + z * _phi(z)),
    "gelu_tanh": (_gelu_tanh, _gelu_tanh_d),
    "softplus": (lambda z, beta=1.0: math.log(1 + math.exp(beta * z)) / beta,
                 lambda z, beta=1.0: 1 / (1 + math.exp(-beta * z))),
    "swish": (lambda z, beta=1.0: z / (1 + math.exp(-beta * z)),
              lambda z, beta=1.0: _sig(beta * z) + beta * z * _sig(beta * z) * (1 - _sig(beta * z))),
    "mish": (lambda z: z * math.tanh(math.log(1 + math.exp(z))), _mish_d),
    "acon_c": (lambda z, p1=1.0, p2=0.0, beta=1.0: _acon(z, p1, p2, beta),
               lambda z, p1=1.0, p2=0.0, beta=1.0: _acon_d(z, p1, p2, beta)),
    "softsign": (lambda z: z / (1 + abs(z)), lambda z: 1 / (1 + abs(z)) ** 2),
    "hard_sigmoid": (lambda z: min(max(z + 3, 0.0), 6.0) / 6,
                     lambda z: 1 / 6 if -3 < z < 3 else 0.0),
    "hard_swish": (lambda z: z * min(max(z + 3, 0.0), 6.0) / 6,
                   lambda z: 0.0 if z <= -3 else (1.0 if z >= 3 else (2 * z + 3) / 6)),
    "gaussian": (lambda z: math.exp(-z * z), lambda z: -2 * z * math.exp(-z * z)),
}


def formula_key(name, variant=None):
    """The key in :data:`FORMULAS` for a registry name and its variant options (gelu's approximate)."""
    if name == "gelu" and (variant or {}).get("approximate") == "tanh":
        return "gelu_tanh"
    return name


def naive_forward(key, z, **params):
    """The textbook forward, elementwise over an array ``z`` (``u`` may be an array too)."""
    return _apply(FORMULAS[key][0], z, params)


def naive_derivative(key, z, **params):
    """The textbook dθ/dz, elementwise over an array ``z``."""
    return _apply(FORMULAS[key][1], z, params)


def _apply(fn, z, params):
    z = np.asarray(z, dtype=np.float64)
    u = params.pop("u", None)
    if u is None:
        return np.array([fn(float(v), **params) for v in z.ravel()]).reshape(z.shape)
    u = np.broadcast_to(np.asarray(u, dtype=np.float64), z.shape)
    out = [fn(float(v), u=float(w), **params) for v, w in zip(z.ravel(), u.ravel())]
    return np.array(out).reshape(z.shape)


# ---------------------------------------------------------------- the sigmoid chain of the seed text
def sigmoid_chain(x, w, b, y, sigmoid, sigmoid_prime):
    """A chain of scalar units a_k = σ(w_k u_k + b_k), u_1 = x, u_{k+1} = a_k; L = (y - a_d)²/2.

    Returns (L, a_d, dL/du, dL/dz): ``du[k]`` is ∂L/∂u_{k+1} (the input of unit k+1, 0-based) and
    ``dz[k]`` is ∂L/∂z_{k+1} for the pre-activation z_k = w_k u_k + b_k, by the chain rule written
    out term by term. ``sigmoid``/``sigmoid_prime`` are scalar functions (the library's, in the tests).
    """
    d = len(w)
    u = [float(x)]
    z = []
    for k in range(d):
        z.append(w[k] * u[k] + b[k])
        u.append(sigmoid(z[k]))
    a = u[d]
    loss = 0.5 * (y - a) ** 2
    dz = [0.0] * d
    du = [0.0] * d
    g = a - y  # dL/da_d
    for k in range(d - 1, -1, -1):
        dz[k] = g * sigmoid_prime(z[k])
        du[k] = dz[k] * w[k]
        g = du[k]  # dL/da_{k} = dL/du_{k+1}
    return loss, a, np.array(du), np.array(dz)


def chain_loss_from(k, uk, w, b, y, sigmoid):
    """L as a function of the input u_{k+1} of unit k+1 (0-based k), the later units unchanged."""
    a = uk
    for j in range(k, len(w)):
        a = sigmoid(w[j] * a + b[j])
    return 0.5 * (y - a) ** 2
