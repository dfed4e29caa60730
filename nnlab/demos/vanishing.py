"""Demo: vanishing gradients in a deep sigmoid net, and how ReLU with He initialisation avoids them.

The claim, from the source texts: *in a deep sigmoid net the gradient reaching the first layer is
orders of magnitude smaller than at the last layer; ReLU with He init keeps it within a factor
of 10.* The reason is the backward recursion of the layer errors (docs/backprop.md),

    E_l = (E_{l+1} W_{l+1}ᵀ) ⊙ f'(Z_l),

which multiplies the error by one factor f'(Z_l) per layer. For the sigmoid f' ≤ 1/4, so with
Xavier-scaled weights (which keep ‖W‖ near 1) each layer shrinks the error by about 4× or more,
and 20 layers shrink it by ~12 orders of magnitude. ReLU's f' is 0 or 1 and He's variance 2/fan_in
compensates the half of the units that are off, so the error keeps its size on average.

Setup (all seeded by ``seed``): for each (activation, init) configuration a network of ``depth``
hidden ``Dense(width, width)`` layers with that activation and initialiser, plus a linear output
``Dense(width, 1)`` with the same initialiser, loss ``mse``. The data are X ~ N(0, 1) of shape
(batch, width) and y = X·w* from a fixed random linear teacher w* ~ N(0, 1/width), drawn from
``numpy.random.default_rng([seed, 1])`` (a stream independent of the weights); every network is
``Sequential(..., seed=seed)``, so all configurations start from the same standard-normal draws,
scaled by their initialiser. One :meth:`~nnlab.Sequential.loss_and_grads` call per network (eval
mode) gives ‖∂L/∂W_l‖ (Frobenius) for l = 1..depth+1 and the memoized errors ‖E_l‖.

The measured quantity is ``ratio = ‖∂L/∂W_1‖ / ‖∂L/∂W_L‖`` (L = the output layer), with verdict
``vanishing`` below 1e-3, ``exploding`` above 1e3, else ``healthy``. The claim *held* when the sigmoid
ratio is below 1e-3 and the relu/He ratio lies in [0.1, 10].

Measured at the defaults (depth 20, width 32, batch 128): the sigmoid ratio is 7e-14 to 2e-12 for
seeds 0-4 and below 1e-8 for every seed 0-199. The ReLU/He ratio is of order 1 but not exactly 1 at
finite width: its log10 has a standard deviation of about 0.46 across seeds (finite-width
fluctuations that accumulate with depth; a wider net does not shrink it here), so it falls outside
[0.1, 10] for 16 of the seeds 0-199 (the claim then does not hold for that seed); seeds 0-4 give
0.16 to 1.5.

Beside the measured norms the demo prints the mean-field prediction of the per-layer gradient
ratio (:mod:`nnlab.demos.meanfield`; Poole et al. 2016, Schoenholz et al. 2017): χ = σ_w²·E[φ'(h)²]
with h ~ N(0, q*) at the fixed point q* of the variance map, σ_w² = fan_in·mean(W²) of the hidden
weights as drawn (1 for Xavier/LeCun/orthogonal on square layers, 2 for He), σ_b² = 0. The
predicted per-layer log(‖E_l‖/‖E_{l+1}‖) is ½·log χ* (and ½·log χ_l along the iterated q_l, the
"layerwise" column, for nets whose q_l has not converged yet); the measured one is minus the slope
of a line fitted to log ‖E_l‖ over the bulk hidden layers (:func:`meanfield.bulk`). Sigmoid/Xavier
at the defaults: predicted −1.447 (√χ* = 0.235: ‖E‖ shrinks 4.3x per layer), measured −1.51 (at
width 256, depth 30: −1.444 and −1.456). The mean-field numbers are informational: the claim above
does not depend on them (``nnlab demo meanfield`` checks them on wide nets).

>>> from nnlab.demos import vanishing
>>> r = vanishing.run(depth=3, width=8, batch=16, configs=[("tanh", "xavier_normal")])
>>> len(r.rows[0].grad_norms), r.rows[0].verdict
(4, 'healthy')
"""

import math
import textwrap
from dataclasses import dataclass, field

import numpy as np

from . import _common as C

__all__ = ["run", "render", "plot", "VanishingResult", "ConfigResult", "MeanField", "CLAIM", "DEFAULT_CONFIGS",
           "VANISHING_BELOW", "EXPLODING_ABOVE", "RELU_HE_BAND"]

NAME = "vanishing"
SUMMARY = "Deep sigmoid vs relu/He nets: per-layer gradient norms, the ratio first/last, the mean-field χ."
OPTIONS = ()  # the command is written out in cli/main.py (it has the repeatable --config)

CLAIM = ("In a deep sigmoid net the gradient reaching the first layer is orders of magnitude smaller "
         "than at the last layer; ReLU with He init keeps it within a factor of 10")
DEFAULT_CONFIGS = (("sigmoid", "xavier_normal"), ("tanh", "xavier_normal"), ("relu", "he_normal"),
                   ("selu", "lecun_normal"))
VANISHING_BELOW = 1e-3  # ratio first/last below this: 'vanishing'
EXPLODING_ABOVE = 1e3   # ratio first/last above this: 'exploding'
RELU_HE_BAND = (0.1, 10.0)  # the claim: relu/He ratio within a factor of 10
MAX_BYTES = 4 * 2**30  # refuse configurations whose buffers would exceed this


def verdict(ratio):
    """'vanishing' (ratio < 1e-3), 'exploding' (ratio > 1e3), 'healthy', or 'undefined' (NaN)."""
    if math.isnan(ratio):
        return "undefined"
    if ratio < VANISHING_BELOW:
        return "vanishing"
    if ratio > EXPLODING_ABOVE:
        return "exploding"
    return "healthy"


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class MeanField:
    """The mean-field prediction for one configuration beside the measured decay (see the docstring)."""

    sigma_w2: float           # fan_in·mean(W²) over the hidden layers 2..depth
    sigma_b2: float
    q1: float                 # first layer's pre-activation variance: σ_w²·mean(X²) + σ_b²
    q_star: float
    chi_star: float
    log_ratio_star: float     # ½·log χ*: predicted log(‖E_l‖/‖E_{l+1}‖)
    layerwise: float          # mean over the bulk of ½·log χ_l (q_l of the iterated map)
    measured: float           # minus the slope of log ‖E_l‖ over the bulk (NaN if the bulk is < 2 layers)
    measured_grad: float      # the same fit to ‖∂L/∂W_l‖
    bulk: tuple               # (first, last) hidden layers of the fit

    def to_dict(self):
        return C.jsonable(self)


@dataclass
class ConfigResult:
    """One configuration: per-layer norms (layer 1 first, the output layer last), ratio and verdict."""

    activation: str
    init: str
    grad_norms: list  # ‖∂L/∂W_l‖_F, l = 1..depth+1
    error_norms: list  # ‖E_l‖_F = ‖∂L/∂Z_l‖_F, l = 1..depth+1
    loss: float
    ratio: float  # grad_norms[0] / grad_norms[-1]
    verdict: str
    meanfield: MeanField = None

    @property
    def label(self):
        return f"{self.activation}/{self.init}"

    def to_dict(self):
        return {"activation": self.activation, "init": self.init, "loss": _finite_or_none(self.loss),
                "grad_norms": [_finite_or_none(v) for v in self.grad_norms],
                "error_norms": [_finite_or_none(v) for v in self.error_norms],
                "ratio": _finite_or_none(self.ratio), "verdict": self.verdict,
                "meanfield": None if self.meanfield is None else self.meanfield.to_dict()}


@dataclass
class VanishingResult:
    """What :func:`run` measured. ``held`` is the verdict on :data:`CLAIM`."""

    claim: str
    depth: int
    width: int
    batch: int
    seed: int
    dtype: str
    rows: list = field(default_factory=list)
    held: bool = False
    sigmoid_ratio: float = None  # ratio of the first sigmoid configuration, None if there is none
    relu_he_ratio: float = None  # ratio of the first relu/he_normal (or he_uniform) one, None if none
    reason: str = ""

    @property
    def n_layers(self):
        return self.depth + 1

    def row(self, activation, init=None):
        """The first row with this activation (and init, if given)."""
        for r in self.rows:
            if r.activation == activation and (init is None or r.init == init):
                return r
        raise KeyError(f"no configuration {activation}/{init or '*'}")

    def to_dict(self):
        """A JSON-able dict (non-finite numbers become None)."""
        return {
            "demo": "vanishing", "claim": self.claim, "held": self.held, "reason": self.reason,
            "depth": self.depth, "width": self.width, "batch": self.batch, "seed": self.seed,
            "dtype": self.dtype, "n_layers": self.n_layers,
            "ratio": "grad_norms[0] / grad_norms[-1] = ||dL/dW_1|| / ||dL/dW_L||, L = output layer",
            "thresholds": {"vanishing_below": VANISHING_BELOW, "exploding_above": EXPLODING_ABOVE,
                           "relu_he_band": list(RELU_HE_BAND)},
            "sigmoid_ratio": None if self.sigmoid_ratio is None else _finite_or_none(self.sigmoid_ratio),
            "relu_he_ratio": None if self.relu_he_ratio is None else _finite_or_none(self.relu_he_ratio),
            "configs": [r.to_dict() for r in self.rows],
        }


def _parse_configs(configs):
    """Validate ``configs`` -> [(activation name, canonical init name)] (raises nnlab errors)."""
    from .. import activations
    from .. import init as _init
    from ..errors import HyperparameterError

    if configs is None:
        configs = DEFAULT_CONFIGS
    if isinstance(configs, (str, bytes)):
        configs = [configs]
    try:
        items = list(configs)
    except TypeError:
        raise HyperparameterError(f"configs must be a list of (activation, init) pairs; got {configs!r}") from None
    if not items:
        raise HyperparameterError("configs is empty; give at least one (activation, init) pair")
    out = []
    for item in items:
        if isinstance(item, str):
            parts = item.split("/")
            if len(parts) != 2 or not all(parts):
                raise HyperparameterError(f"configuration {item!r} must look like 'activation/init', e.g. 'relu/he_normal'")
            act, ini = parts
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(s, str) for s in item):
            act, ini = item
        else:
            raise HyperparameterError(f"configuration {item!r} must be an (activation, init) pair of names")
        activations.get(act)  # UnknownNameError listing the known names
        out.append((act, _init.get(ini).name))
    return out


def _check_size(depth, width, batch, dtype):
    from .. import limits

    n_params = depth * width * (width + 1) + width + 1
    n_ws = batch * (2 * width * (depth + 1) + 2 * width + 2)
    nbytes = np.dtype(dtype).itemsize * (3 * n_params + 2 * n_ws)
    limits.require(nbytes, f"depth={depth}, width={width}, batch={batch} (per network)", "depth, width or batch",
                   available=min(MAX_BYTES, limits.available_bytes() or MAX_BYTES))


def data(width, batch, seed, dtype="float64"):
    """The demo's inputs and targets: X ~ N(0,1) (batch, width), y = X·w*, w* ~ N(0, 1/width)."""
    rng = np.random.default_rng([seed, 1])
    X = rng.standard_normal((batch, width))
    teacher = rng.standard_normal((width, 1)) / math.sqrt(width)
    y = X @ teacher
    return X.astype(dtype), y.astype(dtype)


def build_net(activation, init, depth, width, seed, dtype="float64"):
    """The demo's network for one configuration (``depth`` hidden layers plus a linear output)."""
    from ..network import Dense, Sequential

    layers = [Dense(width, width, activation=activation, init=init) for _ in range(depth)]
    layers.append(Dense(width, 1, activation="identity", init=init))
    return Sequential(layers, loss="mse", seed=seed, dtype=dtype)


def run(depth=20, width=32, batch=128, seed=0, configs=None, dtype="float64"):
    """Measure per-layer gradient norms of deep nets side by side; see the module docstring.

    ``configs`` is a list of ``(activation, init)`` pairs or ``'activation/init'`` strings (default
    :data:`DEFAULT_CONFIGS`). Every argument is validated before anything is built; bad input
    raises a :class:`~nnlab.errors.NnlabError`.
    """
    from .. import _validate

    depth = _validate.positive_int(depth, "depth")
    width = _validate.positive_int(width, "width")
    batch = _validate.positive_int(batch, "batch")
    seed = _validate.positive_int(seed, "seed", minimum=0)
    dt = _validate.resolve_dtype(dtype)
    pairs = _parse_configs(configs)
    _check_size(depth, width, batch, dt)

    X, y = data(width, batch, seed, dt)
    result = VanishingResult(CLAIM, depth, width, batch, seed, dt.name)
    for act, ini in pairs:
        net = build_net(act, ini, depth, width, seed, dt)
        loss, grads = net.loss_and_grads(X, y, training=False)
        gnorms = [float(np.linalg.norm(np.asarray(g, dtype=np.float64)))
                  for name, g in zip(net.param_names(), grads) if name.endswith(".W")]
        enorms = [float(np.linalg.norm(np.asarray(e, dtype=np.float64))) for e in net.layer_errors]
        first, last = gnorms[0], gnorms[-1]
        if last > 0:
            ratio = first / last
        else:
            ratio = math.nan if first == 0 or math.isnan(first) else math.inf
        row = ConfigResult(act, ini, gnorms, enorms, float(loss), ratio, verdict(ratio))
        row.meanfield = _meanfield(net, act, X, gnorms, enorms, depth)
        result.rows.append(row)
    _judge(result)
    return result


def _meanfield(net, activation, X, gnorms, enorms, depth):
    """The mean-field prediction for this net, from its hidden weights as drawn, beside the fit."""
    from . import meanfield as mf

    Ws = [np.asarray(p, dtype=np.float64) for n, p in zip(net.param_names(), net.params()) if n.endswith(".W")]
    hidden = Ws[1:depth] if depth > 1 else Ws[:1]
    sw2 = float(np.mean([W.shape[0] * np.mean(W * W) for W in hidden]))
    sw2_1 = Ws[0].shape[0] * float(np.mean(Ws[0] * Ws[0]))
    q1 = sw2_1 * float(np.mean(np.asarray(X, dtype=np.float64) ** 2))
    first, last = mf.bulk(depth)
    with np.errstate(all="ignore"):
        pred = mf.predict(activation, sw2, 0.0, q1, depth)
        layerwise = float(np.mean(pred.log_ratio[first - 1:last])) if last >= first else math.nan
    return MeanField(sw2, 0.0, q1, pred.q_star, pred.chi_star, pred.log_ratio_star, layerwise,
                     mf.log_ratio_fit(enorms[:depth], first, last), mf.log_ratio_fit(gnorms[:depth], first, last),
                     (first, last))


def _judge(result):
    sig = next((r for r in result.rows if r.activation == "sigmoid"), None)
    relu = next((r for r in result.rows if r.activation == "relu" and r.init in ("he_normal", "he_uniform")), None)
    result.sigmoid_ratio = None if sig is None else sig.ratio
    result.relu_he_ratio = None if relu is None else relu.ratio
    if sig is None or relu is None:
        result.held = None
        result.reason = "the claim needs a sigmoid configuration and a relu/he_normal one"
        return
    lo, hi = RELU_HE_BAND
    sig_ok = sig.ratio < VANISHING_BELOW
    relu_ok = lo <= relu.ratio <= hi
    result.held = bool(sig_ok and relu_ok)
    result.reason = (f"sigmoid ratio {sig.ratio:.2e} {'<' if sig_ok else '>='} {VANISHING_BELOW:g}; "
                     f"relu/{relu.init} ratio {relu.ratio:.2e} {'within' if relu_ok else 'outside'} "
                     f"[{lo:g}, {hi:g}]")


def _layer_label(i, n):
    return f"{i}" + (" out" if i == n else "")


def _f(x, fmt="+.3f"):
    return "-" if x is None or not math.isfinite(x) else format(x, fmt)


def _terms(first, last):
    """(term, one-line definition) for the mean-field table, in the order the table uses them."""
    return [
        ("E_l", "= ∂L/∂Z_l, the error of hidden layer l (Z_l its pre-activation) that backpropagation "
                "memoizes; ∂L/∂W_l = A_{l-1}ᵀ E_l"),
        ("σ_w²", "fan_in·mean(W²) of the hidden weights as drawn (1 for Xavier/LeCun, 2 for He); σ_b² = 0"),
        ("q*", "the fixed point of the variance map q_{l+1} = σ_w²·E[φ(h)²] + σ_b², h ~ N(0, q_l): the "
               "pre-activation variance a wide net settles to with depth (inf: none is finite)"),
        ("χ*", "σ_w²·E[φ'(h)²] at q*: the per-layer gain of ‖E_l‖² at the fixed point; < 1 the gradient "
               "vanishes towards the input, > 1 it explodes"),
        ("½logχ*", "the predicted log(‖E_l‖/‖E_{l+1}‖) per layer"),
        ("layerwise", "the same, ½·log χ_l averaged over layers "
                      f"{first}..{last}, with q_l iterated from the data's variance instead of q* (for nets "
                      "whose q_l has not reached q*)"),
        ("measured", f"minus the slope of a line fitted to log ‖E_l‖ over hidden layers {first}..{last}"),
    ]


def _why_q_zero(rows):
    """One line per activation whose q* is 0: why the variance map sends q to 0 there."""
    out = []
    for r in rows:
        m = r.meanfield
        if m.q_star != 0.0:
            continue
        if r.activation == "relu":
            out.append(f"q* = 0 for {r.label}: with σ_b² = 0 relu's map is linear, q_{{l+1}} = (σ_w²/2)·q_l, so q "
                       f"decays to 0 when σ_w² < 2 (here {m.sigma_w2:.3f}; He's 2 keeps every q, above 2 it grows "
                       "to inf); χ = σ_w²/2 whatever q")
        elif r.activation == "tanh":
            out.append(f"q* = 0 for {r.label}: with σ_b² = 0 and tanh(0) = 0, q = 0 is a fixed point, and as "
                       f"tanh²h < h² the map shrinks every q > 0 when σ_w² <= 1 (here {m.sigma_w2:.3f}), slowly "
                       "(about 1/l); χ* = σ_w²·tanh'(0)² = σ_w²")
        else:
            out.append(f"q* = 0 for {r.label}: with σ_b² = 0 and φ(0) = 0, q = 0 is a fixed point, and the map "
                       f"shrinks q towards it at σ_w² = {m.sigma_w2:.3f}; χ* is the limit q -> 0")
    return out


def render(res, width=100):
    """The text ``nnlab demo vanishing`` prints: table, chart, mean-field comparison, verdicts."""
    from ..charts import bar

    rows, n = res.rows, res.n_layers
    out = [*C.wrap(f"claim: {res.claim}.", width, indent="       "), "",
           *C.wrap(f"{res.depth} hidden Dense({res.width}, {res.width}) layers + linear output "
                   f"Dense({res.width}, 1), loss mse, batch {res.batch}, seed {res.seed}, {res.dtype}", width,
                   indent=""), ""]
    # the table
    cw = max(12, *(len(r.activation) + 2 for r in rows), *(len(r.init) + 2 for r in rows))
    out.append("‖∂L/∂W_l‖ (Frobenius norm of the weight gradient) per layer")
    lab = len(_layer_label(n, n))
    out.append("layer".ljust(lab) + "".join(r.activation.rjust(cw) for r in rows))
    out.append(" " * lab + "".join(r.init.rjust(cw) for r in rows))
    for i in range(n):
        out.append(_layer_label(i + 1, n).rjust(lab) + "".join(f"{r.grad_norms[i]:.2e}".rjust(cw) for r in rows))
    out.append("")
    # the chart: one bar column per configuration, a shared log10 axis
    vals = [v for r in rows for v in r.grad_norms if v > 0 and math.isfinite(v)]
    lo = math.floor(math.log10(min(vals))) if vals else -1
    hi = math.ceil(math.log10(max(vals))) if vals else 0
    hi = hi if hi > lo else lo + 1
    bw = max(8, min(30, (width - lab - 2) // len(rows) - 2))
    per_cell = (hi - lo) / bw
    out.append(f"log10 ‖∂L/∂W_l‖: each bar spans 1e{lo:+d} .. 1e{hi:+d} ({per_cell:.2g} decades per █)")
    out.append("layer".ljust(lab) + "  " + "  ".join(r.label[:bw].ljust(bw) for r in rows).rstrip())
    for i in range(n):
        bars = "  ".join(bar(r.grad_norms[i], lo, hi, bw) for r in rows)
        out.append(_layer_label(i + 1, n).rjust(lab) + "  " + bars.rstrip())
    out.append("")
    # the mean-field prediction beside the measured decay
    mfs = [r for r in rows if r.meanfield is not None]
    if mfs:
        from . import meanfield as mf

        first, last = mfs[0].meanfield.bulk
        out += C.wrap("mean-field prediction (Poole et al. 2016, Schoenholz et al. 2017) of how the error E_l "
                      "changes from layer to layer, beside the measured change:", width, indent="  ")
        out += [f"  {k:<9}  {line}" if i == 0 else f"  {'':<9}  {line}"
                for k, text in _terms(first, last) for i, line in enumerate(textwrap.wrap(text, width - 13))]
        table = [[r.label, f"{r.meanfield.sigma_w2:.3f}", mf.qtext(r.meanfield.q_star), f"{r.meanfield.chi_star:.4f}",
                  _f(r.meanfield.log_ratio_star), _f(r.meanfield.layerwise), _f(r.meanfield.measured)]
                 for r in mfs]
        out += C.table(["config", "σ_w²", "q*", "χ*", "½logχ*", "layerwise", "measured"], table)
        for text in _why_q_zero(mfs):
            out += C.wrap(text, width, indent="  ")
        out += C.wrap("(narrow nets fluctuate around the prediction -- 'nnlab demo meanfield' checks wide ones)",
                      width, indent=" ")
        out.append("")
    # ratios and verdicts
    lw = max(len(r.label) for r in rows)
    out.append(f"ratio = ‖∂L/∂W_1‖ / ‖∂L/∂W_{n}‖ (first hidden layer / output layer)")
    out.append("verdict: vanishing if ratio < 1e-3, exploding if ratio > 1e3, else healthy")
    for r in rows:
        ratio = f"{r.ratio:.2e}" if math.isfinite(r.ratio) else str(r.ratio)
        out.append(f"  {r.label.ljust(lw)}  ratio {ratio}  {r.verdict}")
    return C.finish(out, res, width)


def plot(res, path):
    """PNG: ‖∂L/∂W_l‖ and ‖E_l‖ per layer for every configuration (log scale)."""
    from .. import charts

    return charts.save_panels(path, [
        dict(kind="lines", series={r.label: r.grad_norms for r in res.rows}, logy=True, xlabel="layer",
             ylabel="‖∂L/∂W_l‖", title=f"vanishing: depth {res.depth}, width {res.width}, seed {res.seed}",
             output_layer=True),
        dict(kind="lines", series={r.label: r.error_norms for r in res.rows}, logy=True, xlabel="layer",
             ylabel="‖E_l‖ = ‖∂L/∂Z_l‖", title="backpropagated error per layer", output_layer=True),
    ])
