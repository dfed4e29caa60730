"""Demo: SELU keeps each layer's activations at mean 0, variance 1 with LeCun-normal init.

The claim, from the source texts ([S4]: "SELU is self-normalising: the outputs of every layer
are distributed with mean zero and variance one ... if you use SELU, don't forget LeCun's
initialiser"): *through 30+ SELU layers with LeCun-normal weights (Var W = 1/fan_in) the
per-layer mean and variance of the activations stay near 0 and 1; with initialisers whose variance
is not 1/fan_in they drift -- He-normal (2/fan_in) makes the variance grow layer after layer,
Xavier-uniform (2/(fan_in + fan_out)) pulls it away wherever fan_in ≠ fan_out.*

Xavier's variance equals LeCun's when fan_in = fan_out, so in a stack of equal widths Xavier keeps
SELU normalised as well; the demo's hidden widths therefore alternate between ``wide`` and
``narrow`` (default 256 and 64), where Xavier's σ_w² = fan_in·Var W alternates between 1.6 and 0.4.

Setup: X ~ N(0, 1) of shape (``batch``, wide); ``depth`` SELU ``Dense`` layers of widths
wide → narrow → wide → ..., no output layer, zero biases; one forward pass per initialiser (the
same seed); per layer the mean and variance of A_l over the batch and the units.

The claim held when, with LeCun-normal init, every layer has |mean| ≤ 0.1 and variance in [0.8, 1.2],
while the last layer of both He-normal and Xavier-uniform falls outside that band.

Measured at the defaults (depth 32, widths 256/64, batch 512; seeds 0-5): LeCun-normal keeps every
layer's |mean| ≤ 0.05 and variance within 0.85-1.09; Xavier-uniform's variance settles near 0.3
after the 64 -> 256 layers (σ_w² = 0.4) and near 0.6 after the 256 -> 64 ones (σ_w² = 1.6); He-normal's
grows every layer, to 27-247 (mean +2 to +9) at layer 32.
"""

from dataclasses import dataclass, field

import numpy as np

from . import _common as C

NAME = "selu"
SUMMARY = "SELU self-normalises with LeCun-normal init; He or Xavier (fan_in ≠ fan_out) make it drift."
CLAIM = ("Through 30+ SELU layers with LeCun-normal init the per-layer mean and variance of the activations "
         "stay near 0 and 1; with He-normal or (where fan_in ≠ fan_out) Xavier-uniform init they drift")
OPTIONS = (
    C.Option("depth", "int", 32, "SELU layers.", low=2, high=500),
    C.Option("wide", "int", 256, "Width of the odd layers (and of the input).", low=2, high=4096),
    C.Option("narrow", "int", 64, "Width of the even layers (= wide gives a stack of equal widths).",
             low=2, high=4096),
    C.Option("batch", "int", 512, "Rows of the input batch.", low=2, high=100000),
)
INITS = ("lecun_normal", "xavier_uniform", "he_normal")
MEAN_BAND = 0.1
VAR_BAND = (0.8, 1.2)


@dataclass
class InitRecord:
    init: str
    mean: list      # per layer, mean of A_l
    var: list       # per layer, variance of A_l
    sigma_w2: list  # per layer, fan_in·Var(W_l) as drawn

    @property
    def in_band(self):
        return [abs(m) <= MEAN_BAND and VAR_BAND[0] <= v <= VAR_BAND[1] for m, v in zip(self.mean, self.var)]


@dataclass
class SeluResult:
    claim: str
    depth: int
    wide: int
    narrow: int
    batch: int
    seed: int
    widths: list = field(default_factory=list)
    runs: list = field(default_factory=list)
    held: bool = False
    reason: str = ""

    def run(self, init):
        return next(r for r in self.runs if r.init == init)

    def to_dict(self):
        d = C.jsonable(self)
        d["demo"] = NAME
        d["band"] = {"abs_mean_max": MEAN_BAND, "var": list(VAR_BAND)}
        return d


def run(depth=32, wide=256, narrow=64, batch=512, seed=0):
    """One forward pass per initialiser; see the module docstring."""
    from ..network import Dense, Sequential

    o = C.check_options(OPTIONS, dict(depth=depth, wide=wide, narrow=narrow, batch=batch))
    C.check_sizes(NAME, o)
    seed = C.check_seed(seed)
    res = SeluResult(CLAIM, o["depth"], o["wide"], o["narrow"], o["batch"], seed)
    res.widths = [res.wide] + [res.narrow if l % 2 == 0 else res.wide for l in range(res.depth)]
    X = np.random.default_rng([seed, 1]).standard_normal((res.batch, res.wide))
    for init in INITS:
        layers = [Dense(res.widths[l], res.widths[l + 1], activation="selu", init=init) for l in range(res.depth)]
        net = Sequential(layers, seed=seed)
        outs = net.layer_inputs(X)
        Ws = [np.asarray(p) for n, p in zip(net.param_names(), net.params()) if n.endswith(".W")]
        res.runs.append(InitRecord(init, [float(a.mean()) for _, _, a in outs], [float(a.var()) for _, _, a in outs],
                                   [float(W.shape[0] * W.var()) for W in Ws]))
    _judge(res)
    return res


def _judge(res):
    lecun = res.run("lecun_normal")
    others = [res.run(i) for i in INITS if i != "lecun_normal"]
    ok_lecun = all(lecun.in_band)
    drift = [not r.in_band[-1] for r in others]
    res.held = bool(ok_lecun and all(drift))
    lo, hi = VAR_BAND
    parts = [f"lecun_normal: {sum(lecun.in_band)}/{res.depth} layers with |mean| <= {MEAN_BAND:g} and variance in "
             f"[{lo:g}, {hi:g}] (|mean| <= {max(abs(m) for m in lecun.mean):.3f}, variance "
             f"{min(lecun.var):.3f}..{max(lecun.var):.3f})"]
    for r in others:
        parts.append(f"{r.init}: layer {res.depth} mean {r.mean[-1]:+.3f}, variance {r.var[-1]:.3g} "
                     f"({'outside' if not r.in_band[-1] else 'inside'} the band)")
    res.reason = "; ".join(parts)


def render(res, width=100):
    from .. import charts

    out = C.header(res, width, (
        f"X ~ N(0, 1), batch {res.batch}; {res.depth} SELU Dense layers, widths alternating {res.wide} -> "
        f"{res.narrow} -> {res.wide} -> ..., zero biases; one forward pass per initialiser (seed {res.seed}). "
        f"σ_w² = fan_in·Var(W): LeCun 1, He 2, Xavier 2·fan_in/(fan_in + fan_out)."))
    out.append("")
    rows = []
    for l in range(res.depth):
        row = [f"{l + 1}", f"{res.widths[l]}->{res.widths[l + 1]}"]
        for r in res.runs:
            row += [f"{r.mean[l]:+.3f}", f"{r.var[l]:.3g}" + ("" if r.in_band[l] else "*")]
        rows.append(row)
    heads = ["layer", "fan"]
    for r in res.runs:
        short = r.init.replace("_normal", "_n").replace("_uniform", "_u")
        heads += [f"{short} mean", "var"]
    out += C.table(heads, rows)
    out.append(f"(* outside the band |mean| <= {MEAN_BAND:g}, variance in [{VAR_BAND[0]:g}, {VAR_BAND[1]:g}])")
    out.append("")
    out += C.wrap("σ_w² = fan_in·Var(W) of the first two layers as drawn: " + "; ".join(
        f"{r.init} {r.sigma_w2[0]:.2f}, {r.sigma_w2[1]:.2f}" for r in res.runs), width)
    out.append("")
    out.append("variance of A_l per layer (log scale):")
    out.append(charts.line_plot({r.init: r.var for r in res.runs}, width=C.chart_width(width), height=10,
                                logy=True))
    return C.finish(out, res, width)


def plot(res, path):
    from .. import charts

    return charts.save_panels(path, [
        dict(kind="lines", series={r.init: r.mean for r in res.runs}, xlabel="layer", ylabel="mean of A_l",
             title=f"selu: per-layer mean (widths {res.wide}/{res.narrow})", hlines={"0": 0.0}),
        dict(kind="lines", series={r.init: r.var for r in res.runs}, logy=True, xlabel="layer",
             ylabel="variance of A_l", title="per-layer variance", hlines={"1": 1.0}),
    ])
