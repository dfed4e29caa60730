"""Mean-field prediction of the per-layer gradient ratio, and the demo that checks it.

Mean-field theory of deep random networks (Poole et al. 2016, "Exponential expressivity in deep
neural networks through transient chaos"; Schoenholz et al. 2017, "Deep information propagation")
treats each pre-activation h of a wide layer with weights W_ij ~ N(0, σ_w²/N) and biases
b_i ~ N(0, σ_b²) as Gaussian, h ~ N(0, q). The variance obeys the map

    q_{l+1} = σ_w² · E_{z~N(0,1)}[φ(√q_l · z)²] + σ_b²,

which converges to a fixed point q*; and the backpropagated layer error E_l = (E_{l+1} W_{l+1}ᵀ) ⊙
φ'(Z_l) changes its squared norm per layer by the factor

    χ = σ_w² · E[φ'(h)²],   h ~ N(0, q*),

so ‖E_l‖ / ‖E_{l+1}‖ ≈ √χ and the per-layer *log ratio* is ½·log χ: negative when the gradient
vanishes towards the input (χ < 1, the "ordered" phase), positive when it explodes (χ > 1,
"chaotic"), zero on the critical line χ = 1. The expectations are Gauss-Hermite quadrature
(:func:`numpy.polynomial.hermite_e.hermegauss`, :data:`GH_NODES` nodes; an even count puts no node
at z = 0, where ReLU's derivative jumps).

At finite depth q_l may not have reached q* yet -- on the critical line (e.g. tanh with σ_w² = 1,
σ_b² = 0, which is Xavier/LeCun init without bias) q_l → q* = 0 only as a power law, q_l ≈ 1/(2l).
:func:`predict` therefore also gives the *layerwise* prediction ½·log χ_l with χ_l evaluated at
the q_l of the iterated map, which equals the fixed-point one once q_l has converged.

The measurement (:func:`measure`) builds the net the theory describes -- ``depth`` hidden
``Dense(width, width)`` layers with W ~ N(0, σ_w²/width), b ~ N(0, σ_b²) (``normal`` initialisers),
a linear ``Dense(width, 1)`` output, mse against the targets of the vanishing demo, X ~ N(0, 1) --
runs one ``loss_and_grads`` and fits a line to log ‖E_l‖ over the *bulk* layers l (from
⌈depth/4⌉ + 1 to depth − ⌈depth/4⌉, away from the input, whose q_1 differs, and from the output,
whose single unit makes the error rank-one). The measured per-layer log ratio is minus the slope
(log ‖E_l‖ grows towards the output when the gradient vanishes towards the input).

The demo's claim (:data:`CLAIM`): for tanh (and sigmoid) nets of width ≥ 256 the measured log
ratio, averaged over ``seeds`` networks, is within 15% of the fixed-point prediction ½·log χ*.

>>> p = predict("sigmoid", sigma_w2=1.0, sigma_b2=0.0, q1=1.0, depth=30)
>>> round(p.q_star, 4), round(p.chi_star, 4), round(p.log_ratio_star, 4)
(0.2647, 0.0557, -1.4437)
>>> p = predict("tanh", 1.0, 0.0, 1.0, 30)
>>> p.q_star, p.chi_star, p.critical
(0.0, 1.0, True)
"""

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from . import _common as C

NAME = "meanfield"
SUMMARY = "Per-layer gradient decay of wide tanh/sigmoid nets vs the mean-field prediction ½·log χ."
CLAIM = ("In deep random tanh and sigmoid nets of width >= 256 the measured per-layer log ratio of the "
         "backpropagated error, log(‖E_l‖/‖E_{l+1}‖), is within 15% of the mean-field prediction ½·log χ, "
         "χ = σ_w²·E[φ'(h)²], h ~ N(0, q*) at the fixed point q* of the variance map")
TOLERANCE = 0.15
GH_NODES = 160
DEFAULT_CONFIGS = (("tanh", 0.5, 0.0), ("tanh", 1.0, 0.2), ("tanh", 2.0, 0.0), ("sigmoid", 1.0, 0.0),
                   ("sigmoid", 4.0, 0.0))
"""(activation, σ_w², σ_b²): tanh ordered (χ* = 0.5), ordered with bias, chaotic (χ* = 1.106 > 1: the
gradient grows towards the input); sigmoid with Xavier-like σ_w² = 1 and with σ_w² = 4."""
OPTIONS = (
    C.Option("depth", "int", 30, "Hidden layers of each net.", low=8, high=200),
    C.Option("width", "int", 256, "Units per hidden layer (the claim is for >= 256).", low=8, high=2048),
    C.Option("batch", "int", 128, "Rows of the input batch.", low=8, high=4096),
    C.Option("seeds", "int", 2, "Networks averaged per configuration (seeds SEED, SEED+1, ...).",
             low=1, high=20),
)

_NODES = {}


def _nodes(n=GH_NODES):
    if n not in _NODES:
        z, w = hermegauss(n)
        _NODES[n] = (z, w / w.sum())  # probabilists' Hermite: weights sum to √(2π)
    return _NODES[n]


def _activation(activation):
    from .. import activations

    return activations.get(activation) if isinstance(activation, str) else activation


def gaussian_mean(f, q, n=GH_NODES):
    """E[f(h)] for h ~ N(0, q) by Gauss-Hermite quadrature (f takes and returns arrays)."""
    z, w = _nodes(n)
    return float(np.dot(w, np.asarray(f(math.sqrt(max(q, 0.0)) * z), dtype=np.float64)))


def variance_map(activation, q, sigma_w2, sigma_b2):
    """q_{l+1} = σ_w²·E[φ(h)²] + σ_b², h ~ N(0, q)."""
    act = _activation(activation)
    return sigma_w2 * gaussian_mean(lambda h: act.forward(h) ** 2, q) + sigma_b2


def chi(activation, q, sigma_w2):
    """χ = σ_w²·E[φ'(h)²], h ~ N(0, q): the per-layer factor of ‖E_l‖²."""
    act = _activation(activation)
    return sigma_w2 * gaussian_mean(lambda h: act.derivative(h) ** 2, q)


def fixed_point(activation, sigma_w2, sigma_b2, q0=1.0, tol=1e-12, max_iter=5000):
    """(q*, converged): iterate the variance map from q0.

    When σ_b² = 0 and φ(0) = 0 the origin is a fixed point; if the iterates fall towards it
    without converging (the power-law approach on the critical line) q* = 0 is returned with
    ``converged`` True. If they grow without bound (ReLU with σ_w² > 2: q_{l+1} = σ_w²/2·q_l) the
    result is (inf, False).
    """
    act = _activation(activation)
    origin = sigma_b2 == 0 and float(act.forward(np.zeros(1))[0]) == 0.0  # q = 0 is a fixed point
    q = float(q0)
    history = [q]
    for _ in range(max_iter):
        new = variance_map(act, q, sigma_w2, sigma_b2)
        if not math.isfinite(new) or new > 1e30:  # no finite fixed point
            return math.inf, False
        if origin and new < 1e-200:  # falling geometrically into the origin
            return 0.0, True
        if abs(new - q) <= tol * max(abs(q), 1e-300) or new == q:
            return new, True
        q = new
        history.append(q)
    if origin and all(b <= a for a, b in zip(history[-100:], history[-99:])):
        return 0.0, True
    return q, False


@dataclass
class Prediction:
    """The mean-field numbers for one (activation, σ_w², σ_b²) and an input variance q_1."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    q: list                 # q_l, l = 1..depth (pre-activation variance of hidden layer l)
    chi: list               # χ_l = σ_w²·E[φ'(h)²], h ~ N(0, q_l)
    q_star: float
    chi_star: float
    converged: bool
    log_ratio_star: float   # ½·log χ*: predicted log(‖E_l‖/‖E_{l+1}‖) at the fixed point

    @property
    def log_ratio(self):
        """Layerwise prediction ½·log χ_l."""
        return [0.5 * math.log(c) if c > 0 else -math.inf for c in self.chi]

    @property
    def critical(self):
        """On the critical line: χ* = 1 within 1e-9."""
        return abs(self.chi_star - 1.0) < 1e-9

    def to_dict(self):
        return C.jsonable({**{k: getattr(self, k) for k in self.__dataclass_fields__},
                           "log_ratio": self.log_ratio, "critical": self.critical})


def predict(activation, sigma_w2, sigma_b2, q1, depth):
    """:class:`Prediction` for ``depth`` hidden layers whose first pre-activation variance is q1."""
    act = _activation(activation)
    qs = [float(q1)]
    for _ in range(depth - 1):
        qs.append(variance_map(act, qs[-1], sigma_w2, sigma_b2))
    chis = [chi(act, q, sigma_w2) for q in qs]
    q_star, conv = fixed_point(act, sigma_w2, sigma_b2, q0=q1)
    # at q* = 0, χ is the limit q -> 0+ (ReLU's derivative at exactly 0 is its one-sided value 0);
    # at q* = inf (no finite fixed point) the limit q -> inf
    chi_star = chi(act, min(max(q_star, 1e-200), 1e200), sigma_w2)
    lr_star = 0.5 * math.log(chi_star) if chi_star > 0 else -math.inf
    return Prediction(act.label, float(sigma_w2), float(sigma_b2), qs, chis, q_star, chi_star, conv, lr_star)


def bulk(depth):
    """(first, last) hidden layers (1-based, inclusive) of the fit, away from both ends."""
    cut = math.ceil(depth / 4)
    return cut + 1, depth - cut


def log_ratio_fit(norms, first, last):
    """Minus the least-squares slope of log(norms[l-1]) over l = first..last: the measured
    per-layer log(‖E_l‖/‖E_{l+1}‖). NaN if fewer than 2 layers or a norm is not positive."""
    y = np.asarray(norms[first - 1:last], dtype=np.float64)
    if y.size < 2 or not np.all(np.isfinite(y) & (y > 0)):
        return math.nan
    x = np.arange(first, last + 1, dtype=np.float64)
    return -float(np.polyfit(x, np.log(y), 1)[0])


def build_net(activation, sigma_w2, sigma_b2, width, depth, seed, dtype="float64"):
    """The net of the theory: W ~ N(0, σ_w²/width), b ~ N(0, σ_b²), linear output, mse."""
    from .. import init as _init
    from ..network import Dense, Sequential

    w_init = _init.get("normal", std=math.sqrt(sigma_w2 / width))
    b_init = _init.get("normal", std=math.sqrt(sigma_b2)) if sigma_b2 > 0 else 0.0
    layers = [Dense(width, width, activation=activation, init=w_init, bias_init=b_init) for _ in range(depth)]
    layers.append(Dense(width, 1, init=w_init))
    return Sequential(layers, loss="mse", seed=seed, dtype=dtype)


def measure(activation, sigma_w2, sigma_b2, width, depth, batch, seed):
    """(‖E_l‖ list, ‖∂L/∂W_l‖ list) for hidden layers l = 1..depth of one seeded net."""
    from . import vanishing

    X, y = vanishing.data(width, batch, seed)
    net = build_net(activation, sigma_w2, sigma_b2, width, depth, seed)
    _, grads = net.loss_and_grads(X, y, training=False)
    enorms = [C.norm(e) for e in net.layer_errors][:depth]
    return enorms, C.weight_norms(net, grads)[:depth]


@dataclass
class ConfigResult:
    """One (activation, σ_w², σ_b²): prediction, per-seed measurement, agreement."""

    activation: str
    sigma_w2: float
    sigma_b2: float
    prediction: Prediction
    measured: list            # per seed: measured log ratio (bulk fit of ‖E_l‖)
    measured_grad: list       # per seed: the same fit to ‖∂L/∂W_l‖ (for reference)
    measured_mean: float
    predicted_layerwise: float  # mean over the bulk of ½·log χ_l
    rel_error: float          # |measured_mean − ½ log χ*| / |½ log χ*|
    within: bool
    error_norms: list         # ‖E_l‖ of the first seed's net (l = 1..depth)

    @property
    def label(self):
        return f"{self.activation} σ_w²={self.sigma_w2:g} σ_b²={self.sigma_b2:g}"

    def to_dict(self):
        d = C.jsonable({k: getattr(self, k) for k in self.__dataclass_fields__ if k != "prediction"})
        d["prediction"] = self.prediction.to_dict()
        return d


@dataclass
class MeanFieldResult:
    claim: str
    depth: int
    width: int
    batch: int
    seeds: list
    bulk: tuple
    tolerance: float
    rows: list = field(default_factory=list)
    held: bool = False
    reason: str = ""
    seed: int = 0

    def to_dict(self):
        d = C.jsonable({k: getattr(self, k) for k in self.__dataclass_fields__ if k != "rows"})
        d["demo"] = NAME
        d["measured"] = ("minus the least-squares slope of log ||E_l|| over the bulk layers = "
                         "per-layer log(||E_l|| / ||E_{l+1}||); prediction 0.5*log(chi*)")
        d["configs"] = [r.to_dict() for r in self.rows]
        return d


def _parse_configs(configs):
    from .. import activations
    from ..errors import HyperparameterError

    out = []
    for item in configs:
        try:
            act, sw2, sb2 = item
        except (TypeError, ValueError):
            raise HyperparameterError(f"a configuration is (activation, sigma_w2, sigma_b2); got {item!r}") from None
        activations.get(act)
        sw2 = C._validate.real_scalar(sw2, "sigma_w2", positive=True)
        sb2 = C._validate.real_scalar(sb2, "sigma_b2", nonnegative=True)
        out.append((act, sw2, sb2))
    if not out:
        raise HyperparameterError("configs is empty")
    return out


def run(depth=30, width=256, batch=128, seeds=2, seed=0, configs=None, tolerance=TOLERANCE):
    """Predict and measure every configuration; see the module docstring."""
    opts = C.check_options(OPTIONS, dict(depth=depth, width=width, batch=batch, seeds=seeds))
    C.check_sizes(NAME, opts)
    seed = C.check_seed(seed)
    tolerance = C._validate.real_scalar(tolerance, "tolerance", positive=True)
    configs = _parse_configs(DEFAULT_CONFIGS if configs is None else configs)
    depth, width, batch = opts["depth"], opts["width"], opts["batch"]
    seed_list = list(range(seed, seed + opts["seeds"]))
    first, last = bulk(depth)
    res = MeanFieldResult(CLAIM, depth, width, batch, seed_list, (first, last), tolerance, seed=seed)
    for act, sw2, sb2 in configs:
        pred = predict(act, sw2, sb2, q1=sw2 * 1.0 + sb2, depth=depth)  # X ~ N(0, 1): E[x²] = 1
        meas, meas_g, first_norms = [], [], None
        for s in seed_list:
            en, gn = measure(act, sw2, sb2, width, depth, batch, s)
            first_norms = first_norms or en
            meas.append(log_ratio_fit(en, first, last))
            meas_g.append(log_ratio_fit(gn, first, last))
        mean = float(np.mean(meas))
        layerwise = float(np.mean(pred.log_ratio[first - 1:last]))
        rel = abs(mean - pred.log_ratio_star) / abs(pred.log_ratio_star) if pred.log_ratio_star else math.inf
        res.rows.append(ConfigResult(act, sw2, sb2, pred, meas, meas_g, mean, layerwise, rel,
                                     bool(rel <= tolerance), first_norms))
    bad = [r for r in res.rows if not r.within]
    worst = max(res.rows, key=lambda r: r.rel_error)
    res.held = None if width < 256 else not bad
    if width < 256:
        res.reason = f"width {width} < 256: the claim is about wide nets (worst error {worst.rel_error:.1%})"
    elif bad:
        res.reason = "; ".join(f"{r.label}: {r.rel_error:.1%} off" for r in bad) + f" (tolerance {tolerance:.0%})"
    else:
        res.reason = (f"all {len(res.rows)} configurations within {tolerance:.0%}; worst {worst.label}: "
                      f"{worst.rel_error:.1%}")
    return res


def qtext(q):
    """q* for a table: 4 decimals, or 'inf' where the variance map has no finite fixed point."""
    return "inf" if math.isinf(q) else (f"{q:.4f}" if q < 1e4 else f"{q:.3g}")


def render(res, width=100):
    out = C.header(res, width, (
        f"{res.depth} hidden Dense({res.width}, {res.width}) layers, W ~ N(0, σ_w²/{res.width}), b ~ N(0, σ_b²), "
        f"linear output, mse, X ~ N(0, 1) batch {res.batch}; seeds {', '.join(map(str, res.seeds))}; fit over "
        f"layers {res.bulk[0]}..{res.bulk[1]}. log ratio = log(‖E_l‖/‖E_{{l+1}}‖) per layer: < 0 the gradient "
        "shrinks towards the input, > 0 it grows."))
    out.append("")
    out += C.wrap("terms: E_l = ∂L/∂Z_l, the error of layer l that backpropagation memoizes; q* = the fixed point "
                  "of the variance map q_{l+1} = σ_w²·E[φ(h)²] + σ_b², h ~ N(0, q_l); χ* = σ_w²·E[φ'(h)²] at q*, the "
                  "per-layer gain of ‖E_l‖² (< 1 vanishes, > 1 explodes); layerwise = ½·log χ_l averaged over the "
                  "fitted layers, q_l iterated from the data's variance; measured = minus the slope of log ‖E_l‖, "
                  "mean over the seeds; error = |measured − ½log χ*| / |½log χ*|", width, indent="  ")
    for r in res.rows:
        if r.prediction.q_star == 0.0 and r.sigma_b2 == 0.0:
            out += C.wrap(f"q* = 0 for {r.label}: with σ_b² = 0 and φ(0) = 0, q = 0 is a fixed point, and it "
                          f"attracts at σ_w² = {r.sigma_w2:g} (for tanh: tanh²h < h², so q shrinks when σ_w² <= 1); "
                          "χ* is the limit q -> 0, σ_w²·φ'(0)²", width, indent="  ")
    out.append("")
    rows = []
    for r in res.rows:
        p = r.prediction
        rows.append([r.activation, f"{r.sigma_w2:g}", f"{r.sigma_b2:g}", qtext(p.q_star), f"{p.chi_star:.4f}",
                     f"{p.log_ratio_star:+.4f}", f"{r.predicted_layerwise:+.4f}", f"{r.measured_mean:+.4f}",
                     f"{r.rel_error:.1%}", "yes" if r.within else "NO"])
    out += C.table(["act", "σ_w²", "σ_b²", "q*", "χ*", "½log χ*", "layerwise", "measured", "error", "≤15%"],
                   rows, align="lrrrrrrrrr")
    out.append("")
    out.append("per-seed measured log ratios (fit to ‖E_l‖; to ‖∂L/∂W_l‖ in brackets):")
    for r in res.rows:
        per = ", ".join(f"{m:+.4f} [{g:+.4f}]" for m, g in zip(r.measured, r.measured_grad))
        out += C.wrap(f"  {r.label}: {per}", width, indent="      ")
    out.append("")
    out.append("predicted vs measured factor ‖E_l‖/‖E_{l+1}‖ = e^(log ratio):")
    for r in res.rows:
        out.append(f"  {r.label}: √χ* = {math.exp(r.prediction.log_ratio_star):.4f}, measured "
                   f"{math.exp(r.measured_mean):.4f}")
    return C.finish(out, res, width)


def plot(res, path):
    from .. import charts

    series = {r.label: r.error_norms for r in res.rows}
    return charts.save_panels(path, [dict(kind="lines", series=series, logy=True, xlabel="hidden layer l",
                                          ylabel="‖E_l‖", title=f"meanfield: ‖E_l‖ (seed {res.seeds[0]})")])
