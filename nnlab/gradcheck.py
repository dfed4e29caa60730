"""Gradient checking: central finite differences in float64, reporting the worst element.

An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``; the worst element is
the one with the largest ratio ``|analytic - numeric| / (atol + rtol * |numeric|)`` (> 1 fails).
The numeric derivative is ``(f(x + eps) - f(x - eps)) / (2 eps)``: truncation error O(eps²·f'''),
rounding error O(ε_machine·|f| / eps); the defaults ``eps=1e-6, atol=1e-8, rtol=1e-5`` keep both
well below the tolerance for float64 values of order 1 and catch a derivative that is 0.1% off.

>>> import numpy as np, nnlab as nl
>>> r = nl.gradcheck.check(lambda x: (x ** 3).sum(), lambda x: 3 * x ** 2, np.array([1.0, -2.0]))
>>> r.ok
True
>>> nl.gradcheck.check(lambda x: (x ** 3).sum(), lambda x: 3.03 * x ** 2, np.array([1.0, -2.0])).ok
False
"""

import math
from dataclasses import dataclass

import numpy as np

from . import _validate, activations

EPS = 1e-6
ATOL = 1e-8
RTOL = 1e-5


@dataclass
class CheckResult:
    """Outcome of a gradient check: ``ok`` and the worst element (``bool(result)`` is ``ok``)."""

    name: str
    ok: bool
    n_checked: int
    index: tuple = None
    analytic: float = float("nan")
    numeric: float = float("nan")
    abs_error: float = 0.0
    rel_error: float = 0.0
    eps: float = EPS
    atol: float = ATOL
    rtol: float = RTOL
    where: str = ""

    def __bool__(self):
        return bool(self.ok)

    def __str__(self):
        status = "ok  " if self.ok else "FAIL"
        if self.index is None:
            return f"{status} {self.name}: nothing to check"
        loc = f"{self.where}{list(self.index)}" if self.where else f"{list(self.index)}"
        return (f"{status} {self.name}: worst at {loc}: analytic {self.analytic:.10g}, numeric "
                f"{self.numeric:.10g}, abs err {self.abs_error:.3g}, rel err {self.rel_error:.3g} "
                f"({self.n_checked} checked; eps={self.eps:g}, atol={self.atol:g}, rtol={self.rtol:g})")


def _tolerances(eps, atol, rtol):
    """(eps, atol, rtol) as floats: eps > 0, atol >= 0, rtol >= 0, not both tolerances 0, all finite
    (a negative or NaN tolerance would pass a wrong gradient; eps = 0 divides by zero)."""
    eps = _validate.real_scalar(eps, "eps", positive=True)
    atol = _validate.real_scalar(atol, "atol", nonnegative=True)
    rtol = _validate.real_scalar(rtol, "rtol", nonnegative=True)
    if atol == 0.0 and rtol == 0.0:
        raise _validate.HyperparameterError("atol and rtol are both 0: no numeric derivative matches exactly; "
                                            "give a positive atol or rtol")
    return eps, atol, rtol


def _scalar(value, name):
    """``value`` (what the user's function returned) as a float, or a clear error."""
    if isinstance(value, (bool, np.bool_)):
        raise _validate.DTypeError(f"{name} must return a real number; got {value!r}")
    try:
        arr = np.asarray(value)
    except Exception:
        raise _validate.DTypeError(f"{name} must return a real number; got {type(value).__name__}") from None
    if arr.dtype.kind not in "iuf":
        raise _validate.DTypeError(f"{name} must return a real number; got {value!r} ({arr.dtype})")
    if arr.size != 1:
        raise _validate.ShapeError(f"{name} must return a scalar (a loss); got an array of shape {arr.shape}")
    return float(arr.reshape(-1)[0])


def compare(name, analytic, numeric, eps=EPS, atol=ATOL, rtol=RTOL, where=""):
    """Compare two arrays of derivatives elementwise and build a :class:`CheckResult`."""
    eps, atol, rtol = _tolerances(eps, atol, rtol)
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise _validate.ShapeError(f"{name}: analytic gradient has shape {a.shape}, numeric {n.shape}")
    if a.size == 0:
        return CheckResult(name, True, 0, eps=eps, atol=atol, rtol=rtol)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # 0/0 and x/0 are judged below
        err = np.abs(a - n)
        ratio = err / (atol + rtol * np.abs(n))
        ratio = np.where(err == 0, 0.0, ratio)  # an exact match passes, even with atol = 0 at n = 0
        ratio = np.where(np.isnan(ratio), np.inf, ratio)  # NaN on either side is a failure
        k = int(np.argmax(ratio))
        idx = np.unravel_index(k, a.shape)
        ok = bool(ratio[idx] <= 1.0)
        rel = float(err[idx] / max(abs(n[idx]), 1e-300))
    return CheckResult(name, ok, int(a.size), tuple(int(i) for i in idx), float(a[idx]), float(n[idx]),
                       float(err[idx]), rel, eps, atol, rtol, where)


def numeric_gradient(f, x, eps=EPS):
    """Central differences of scalar ``f`` at float64 array ``x`` (perturbing one element at a time)."""
    eps = _validate.real_scalar(eps, "eps", positive=True)
    if not callable(f):
        raise _validate.HyperparameterError(f"f must be callable; got {f!r}")
    x = _validate.as_float_array(x, "x", dtype=np.float64).copy()
    g = np.empty_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    f0 = None
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = _scalar(f(x), "f")
        flat[i] = old - eps
        fm = _scalar(f(x), "f")
        flat[i] = old
        with np.errstate(over="ignore", invalid="ignore"):
            gflat[i] = (fp - fm) / (2 * eps)
        if not (math.isfinite(fp) and math.isfinite(fm) and math.isfinite(gflat[i])) and f0 is None:
            f0 = _scalar(f(x), "f")
        if not (math.isfinite(fp) and math.isfinite(fm) and math.isfinite(gflat[i])) and math.isfinite(f0):
            # f is finite at x but not at x ± eps: eps reached outside f's domain (a NaN f is a failure)
            raise _validate.NonFiniteError(
                f"the central difference at index {i} is not finite: f(x ± eps) = {fp}, {fm} with eps = {eps:g} "
                f"(x = {old:g}); use a smaller eps, or check that f is finite around x")
    return g


def check(f, grad_f, x, eps=EPS, atol=ATOL, rtol=RTOL, name="f"):
    """Check a user's claimed gradient ``grad_f(x)`` of scalar ``f(x)`` at ``x`` (float64)."""
    eps, atol, rtol = _tolerances(eps, atol, rtol)
    for fname, fn in (("f", f), ("grad_f", grad_f)):
        if not callable(fn):
            raise _validate.HyperparameterError(f"{fname} must be callable; got {fn!r}")
    x = _validate.as_float_array(x, "x", dtype=np.float64)
    _scalar(f(x.copy()), "f")
    analytic = _validate.as_float_array(grad_f(x.copy()), "grad_f(x)", dtype=np.float64, finite=False)
    if analytic.shape != x.shape:
        raise _validate.ShapeError(f"grad_f(x) has shape {analytic.shape}; x has {x.shape}")
    return compare(name, analytic, numeric_gradient(f, x, eps), eps, atol, rtol)


def kinks(act):
    """Where ``act``'s derivative jumps: the registry's documented kinks, plus z = 0 whenever f'
    differs on either side of 0 at these hyperparameters (elu with α ≠ 1, for instance, whose
    documented facts are those of the default α = 1)."""
    points = [float(k) for k in act.entry.facts.kinks]
    side = np.asarray(act.derivative(np.array([-1e-12, 1e-12])), dtype=np.float64)
    if 0.0 not in points and not abs(side[1] - side[0]) <= 1e-9 * (1.0 + np.abs(side).max()):
        points.append(0.0)
    return tuple(points)


def default_points(act):
    """A grid over [-6, 6] (plus a few larger values) kept 1e-3 away from the activation's kinks
    (see :func:`kinks`)."""
    z = np.concatenate([np.linspace(-6.0, 6.0, 241), [-12.5, -9.3, 9.3, 12.5]])
    kinks_ = np.asarray(kinks(act), dtype=np.float64)
    if kinks_.size:
        z = z[np.min(np.abs(z[:, None] - kinks_[None, :]), axis=1) > 1e-3]
    return z


def check_activation(act, z=None, eps=EPS, atol=ATOL, rtol=RTOL, **params):
    """Check an activation's derivative and every learnable parameter derivative.

    ``act`` is a name or an :class:`~nnlab.activations.Activation`; ``params`` go to
    :func:`nnlab.activations.get`. Returns a list of :class:`CheckResult`, one for dA/dZ and one per
    learnable parameter (``all(results)`` is the verdict).
    """
    eps, atol, rtol = _tolerances(eps, atol, rtol)
    act = activations.get(act, **params)
    z = default_points(act) if z is None else _validate.as_float_array(z, "z", dtype=np.float64).reshape(-1)
    results = [compare(f"{act.label}'", act.derivative(z),
                       (act.forward(z + eps) - act.forward(z - eps)) / (2 * eps), eps, atol, rtol, "z")]
    for pname in act.param_names:
        value = act.hyperparams[pname]
        plus, minus = _with_value(act, pname, value + eps), _with_value(act, pname, value - eps)
        numeric = (plus.forward(z) - minus.forward(z)) / (2 * eps)
        results.append(compare(f"{act.label} d/d{pname}", act.param_derivative(z, pname), numeric,
                               eps, atol, rtol, "z"))
    return results


def _with_value(act, pname, value):
    clone = act.copy()
    clone._set_learned(pname, value)
    return clone


def _refuse_truncation(net, X):
    """Truncated BPTT is an approximation of the gradient by design: nothing to check it against."""
    if not getattr(net, "_recurrent", False):
        return
    try:
        steps = np.shape(X)[1] if np.ndim(X) == 3 else 1
    except ValueError:  # ragged data: the network's own checks name the problem
        return
    stack = list(enumerate(net.layers))
    while stack:
        where, layer = stack.pop()
        k = getattr(layer, "truncate", None)
        if layer.sequence_input and k is not None and k < steps:
            raise _validate.HyperparameterError(
                f"layer {where} {layer!r} truncates backpropagation through time to {k} of {steps} steps: "
                f"its gradient is an approximation by design, not the loss's gradient that central "
                f"differences measure; check the network with truncate=None")
        stack.extend((f"{where}.{j}", child) for j, child in enumerate(layer.children()))


def check_network(net, X, y, eps=EPS, atol=ATOL, rtol=RTOL):
    """Check ``net.loss_and_grads`` against central differences of ``net.loss``, in float64.

    A float32 network is checked through a float64 copy (same program, same kernels), in the
    network's current mode (train or eval). In training mode the noise of random activations
    (rrelu, noisy_relu) and the dropout masks are drawn from one fixed seed for every evaluation, so the checked function
    is deterministic. Returns one :class:`CheckResult` for all parameters, naming the worst one.
    A recurrent layer that truncates backpropagation through time (``truncate=k`` < T) computes an
    approximation of the gradient on purpose: such a network is refused with a clear error.
    """
    from .network import Sequential

    if not isinstance(net, Sequential):
        raise _validate.HyperparameterError(f"check_network checks an nnlab.Sequential; got {type(net).__name__}")
    eps, atol, rtol = _tolerances(eps, atol, rtol)
    _refuse_truncation(net, X)
    net64 = net.copy(dtype="float64").to(net.device)  # (a network on the GPU is checked there)
    net64.fixed_noise_seed = 12345
    flat = net64._flat
    analytic = np.concatenate([g.reshape(-1) for g in net64.loss_and_grads(X, y)[1]])

    def loss_at(v):
        net64._to_host(write=True)  # (on a device: the host's values are uploaded before the next pass)
        flat[...] = v
        return net64.loss(X, y)

    x0 = flat.copy()
    numeric = numeric_gradient(loss_at, x0, eps)
    flat[...] = x0
    res = compare("network loss", analytic, numeric, eps, atol, rtol)
    if res.index is not None:
        k = res.index[0]
        for name, (off, shape) in zip(net64.param_names(), net64._shapes):
            size = int(np.prod(shape))
            if off <= k < off + size:
                res.where = name
                res.index = tuple(int(i) for i in np.unravel_index(k - off, shape))
                break
    return res
