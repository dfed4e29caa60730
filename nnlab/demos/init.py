"""Demo: what the initialiser does to per-layer activations and gradients (the Glorot & Bengio picture).

The claim, from the source texts and the papers they point to ([S0]: weight initialisation and
the choice of activation are remedies for vanishing gradients; [S1]: initialise with mean 0 and
standard deviation √(2/fan_in) for ReLU; [S2]: initialising the weights so that the gradients do
not vanish is a remedy; Glorot & Bengio 2010 for tanh, He et al. 2015 for ReLU): *in a deep net,
zero init gives no gradient to any weight (every hidden unit computes the same 0 and the network
cannot break the symmetry), a small normal init (std 0.01) makes the activations and the gradients
collapse by orders of magnitude, Xavier init keeps tanh's activations and gradients in range, and
He init does the same for ReLU, where Xavier lets the activations shrink by about √2 per layer.*

Setup: for tanh and for relu, and for each initialiser -- zeros, normal(std=0.01), xavier_normal,
he_normal, lecun_normal, orthogonal -- a net of ``depth`` hidden ``Dense(width, width)`` layers and
a linear ``Dense(width, 1)`` output with that initialiser (zero biases), mse on the vanishing demo's
data (X ~ N(0, 1), a linear teacher, ``batch`` rows), all from the same seed. One forward pass gives
the standard deviation of every hidden activation A_l, one ``loss_and_grads`` every ‖∂L/∂W_l‖.

The claim held when all of these hold (each is printed with its numbers):

1. zeros (tanh and relu): every hidden activation and every weight gradient is exactly 0;
2. normal(0.01) (tanh and relu): the last hidden layer's activation std is below 1e-6 x the first's,
   and every ‖∂L/∂W_l‖ is below 1e-6 x the smallest one under Xavier (tanh) or He (relu);
3. tanh/Xavier: every hidden layer's activation std is above 0.1 and max/min of ‖∂L/∂W_l‖ over the
   layers is at most 10;
4. relu/He: every hidden layer's activation std is within a factor 3 of the first layer's and
   max/min of ‖∂L/∂W_l‖ is at most 30 (He preserves the second moment only on average: at finite
   width log ‖·‖ random-walks over the layers, so the spread varies with the seed -- 1.7 to 16 for
   seeds 0-9 at the defaults, std ratios 0.49 to 1.63);
5. relu/Xavier: the last hidden layer's activation std is below 1/10 of the first's.

Not part of the claim but printed: tanh's activations under Xavier decay slowly (the mean-field
variance map has its fixed point at 0 and q_l ≈ 1/(2l), so std ≈ 0.16 at layer 20 and below 0.1
past about layer 50); LeCun equals Xavier on square layers; He saturates tanh (std ≈ 0.55, the
chaotic phase); orthogonal init keeps tanh's gradient the most uniform.

Measured at the defaults (depth 20, width 128, batch 256, seed 0): zeros 0 everywhere; normal(0.01)
activation std 0.11 -> 1e-19 (tanh), every gradient ~1e-19; tanh/Xavier std 0.63 -> 0.16, gradient
max/min 1.7 (1.5-2.7 for seeds 0-9); relu/He std 0.82-1.15, gradient max/min 4.6; relu/Xavier std
0.58 -> 1.1e-3.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from . import _common as C

NAME = "init"
SUMMARY = "Zeros, small normal, Xavier, He, LeCun, orthogonal init: per-layer activation std and gradients."
CLAIM = ("In a deep net zero init gives no gradient to any weight, a small normal init (std 0.01) collapses "
         "activations and gradients, Xavier keeps tanh's activations and gradients in range and He does so for "
         "ReLU, where Xavier lets the activations shrink by about √2 per layer")
OPTIONS = (
    C.Option("depth", "int", 20, "Hidden layers.", low=3, high=200),
    C.Option("width", "int", 128, "Units per hidden layer.", low=4, high=2048),
    C.Option("batch", "int", 256, "Rows of the input batch.", low=4, high=100000),
)
INITS = (("zeros", "zeros", {}), ("normal(0.01)", "normal", {"std": 0.01}), ("xavier_normal", "xavier_normal", {}),
         ("he_normal", "he_normal", {}), ("lecun_normal", "lecun_normal", {}), ("orthogonal", "orthogonal", {}))
ACTIVATIONS = ("tanh", "relu")


@dataclass
class InitRecord:
    activation: str
    init: str
    act_std: list      # per hidden layer, std of A_l
    grad_norms: list   # per layer (output last), ‖∂L/∂W_l‖
    loss: float

    @property
    def grad_spread(self):
        g = [v for v in self.grad_norms]
        lo = min(g)
        return max(g) / lo if lo > 0 else (math.nan if max(g) == 0 else math.inf)


@dataclass
class Check:
    name: str
    held: bool
    text: str


@dataclass
class InitResult:
    claim: str
    depth: int
    width: int
    batch: int
    seed: int
    runs: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    held: bool = False
    reason: str = ""

    def run(self, activation, init):
        return next(r for r in self.runs if r.activation == activation and r.init == init)

    def to_dict(self):
        d = C.jsonable(self)
        for rd, r in zip(d["runs"], self.runs):
            rd["grad_spread"] = C.jsonable(r.grad_spread)
        d["demo"] = NAME
        return d


def run(depth=20, width=128, batch=256, seed=0):
    """One forward and one backward pass per (activation, initialiser); see the module docstring."""
    from .. import init as _init
    from ..network import Dense, Sequential
    from . import vanishing

    o = C.check_options(OPTIONS, dict(depth=depth, width=width, batch=batch))
    C.check_sizes(NAME, o)
    seed = C.check_seed(seed)
    res = InitResult(CLAIM, o["depth"], o["width"], o["batch"], seed)
    X, y = vanishing.data(res.width, res.batch, seed)
    for act in ACTIVATIONS:
        for label, name, kw in INITS:
            ini = _init.get(name, **kw)
            layers = [Dense(res.width, res.width, activation=act, init=ini) for _ in range(res.depth)]
            layers.append(Dense(res.width, 1, init=ini))
            net = Sequential(layers, loss="mse", seed=seed)
            stds = [float(np.std(a)) for _, _, a in net.layer_inputs(X)][:res.depth]
            loss, grads = net.loss_and_grads(X, y, training=False)
            res.runs.append(InitRecord(act, label, stds, C.weight_norms(net, grads), float(loss)))
    _judge(res)
    return res


def _judge(res):
    checks = []
    zeros = [res.run(a, "zeros") for a in ACTIVATIONS]
    ok = all(max(r.act_std) == 0 and max(r.grad_norms) == 0 for r in zeros)
    checks.append(Check("zeros", ok, "zeros: every hidden activation and every weight gradient is exactly 0 ("
                        + ", ".join(f"{r.activation}: max std {max(r.act_std):g}, max ‖∂L/∂W‖ {max(r.grad_norms):g}"
                                    for r in zeros) + ")"))
    parts, ok = [], True
    for act, ref in (("tanh", "xavier_normal"), ("relu", "he_normal")):
        r, good = res.run(act, "normal(0.01)"), res.run(act, ref)
        shrink = r.act_std[-1] / r.act_std[0] if r.act_std[0] > 0 else math.nan
        rel = max(r.grad_norms) / min(good.grad_norms) if min(good.grad_norms) > 0 else math.nan
        ok = ok and shrink < 1e-6 and rel < 1e-6
        parts.append(f"{act}: std layer {res.depth}/layer 1 = {C.sci(shrink, 1)}, largest ‖∂L/∂W_l‖ "
                     f"{C.sci(max(r.grad_norms), 1)} = {C.sci(rel, 1)} x the smallest under {ref}")
    checks.append(Check("small_normal", ok, "normal(0.01) collapses: " + "; ".join(parts)))
    r = res.run("tanh", "xavier_normal")
    ok = min(r.act_std) > 0.1 and r.grad_spread <= 10
    checks.append(Check("tanh_xavier", ok, f"tanh/xavier_normal: activation std {min(r.act_std):.3f}..{max(r.act_std):.3f} "
                        f"(> 0.1), ‖∂L/∂W_l‖ max/min {r.grad_spread:.2f} (<= 10)"))
    r = res.run("relu", "he_normal")
    ratios = [s / r.act_std[0] for s in r.act_std] if r.act_std[0] > 0 else [math.nan]
    ok = all(1 / 3 <= q <= 3.0 for q in ratios) and r.grad_spread <= 30
    checks.append(Check("relu_he", ok, f"relu/he_normal: activation std {min(r.act_std):.3f}..{max(r.act_std):.3f} "
                        f"({min(ratios):.2f}..{max(ratios):.2f} x layer 1's, within 3x), ‖∂L/∂W_l‖ max/min "
                        f"{r.grad_spread:.2f} (<= 30)"))
    r = res.run("relu", "xavier_normal")
    shrink = r.act_std[-1] / r.act_std[0] if r.act_std[0] > 0 else math.nan
    checks.append(Check("relu_xavier", shrink < 0.1,
                        f"relu/xavier_normal: activation std {r.act_std[0]:.3f} -> {r.act_std[-1]:.2e} over "
                        f"{res.depth} layers ({C.sci(shrink, 1)}; √2 per layer would give "
                        f"{2 ** (-(res.depth - 1) / 2):.1e})"))
    res.checks = checks
    res.held = all(c.held for c in checks)
    failed = [c.name for c in checks if not c.held]
    res.reason = (f"all {len(checks)} checks hold" if not failed else f"failed: {', '.join(failed)}")


def render(res, width=100):
    from .. import charts

    out = C.header(res, width, (
        f"{res.depth} hidden Dense({res.width}, {res.width}) layers + linear output, zero biases, mse on X ~ N(0, 1) "
        f"(batch {res.batch}, linear teacher), seed {res.seed}; one forward and one backward pass per "
        "(activation, initialiser)."))
    picks = sorted({p for p in (0, 1, 4, res.depth // 2, res.depth - 1) if p < res.depth})
    for act in ACTIVATIONS:
        runs = [r for r in res.runs if r.activation == act]
        out.append("")
        out.append(f"{act}: std of the hidden activations A_l, layers {', '.join(str(p + 1) for p in picks)}")
        out += C.table(["init"] + [f"l={p + 1}" for p in picks],
                       [[r.init] + [C.sci(r.act_std[p], 1) for p in picks] for r in runs])
        out.append(f"{act}: ‖∂L/∂W_l‖, the same layers and the output; max/min over all layers")
        out += C.table(["init"] + [f"l={p + 1}" for p in picks] + ["out", "max/min"],
                       [[r.init] + [C.sci(r.grad_norms[p], 1) for p in picks]
                        + [C.sci(r.grad_norms[-1], 1), f"{r.grad_spread:.3g}"] for r in runs])
    out.append("")
    pairs = (("tanh", "xavier_normal"), ("tanh", "he_normal"), ("relu", "he_normal"), ("relu", "xavier_normal"))
    out.append("std of A_l per hidden layer (log scale):")
    out.append(charts.line_plot({f"{a}/{i}": res.run(a, i).act_std for a, i in pairs},
                                width=C.chart_width(width), height=10, logy=True))
    out.append("")
    out.append("‖∂L/∂W_1‖, the first layer's weight gradient ('·' = exactly 0):")
    out.append(charts.log_bars([f"{r.activation}/{r.init}" for r in res.runs], [r.grad_norms[0] for r in res.runs],
                               width=max(20, min(45, width - 35))))
    out.append("")
    out.append("checks:")
    for c in res.checks:
        out += C.wrap(f"  [{'ok' if c.held else 'FAILED'}] {c.text}", width, indent="       ")
    return C.finish(out, res, width)


def plot(res, path):
    from .. import charts

    panels = []
    for act in ACTIVATIONS:
        runs = [r for r in res.runs if r.activation == act]
        panels.append(dict(kind="lines", series={r.init: r.act_std for r in runs}, logy=True, xlabel="hidden layer",
                           ylabel="std of A_l", title=f"init: {act}, activation std per layer (zeros: not shown)"))
        panels.append(dict(kind="lines", series={r.init: r.grad_norms for r in runs}, logy=True, xlabel="layer",
                           ylabel="‖∂L/∂W_l‖", title=f"{act}: weight-gradient norm per layer"))
    return charts.save_panels(path, panels)
