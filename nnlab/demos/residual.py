"""Demo: residual blocks carry the gradient through a deep sigmoid stack that a plain net loses, and train it.

The claim, from the source texts ([S0], "Residual blocks": a unit's output goes both to the next
unit and to the unit 2-3 layers further on, which adds it to its own input, and this "lets the
gradient act directly on layers further away" during backpropagation): *in a deep sigmoid net,
residual blocks keep the first layer's gradient within a factor of 10 of the last hidden layer's,
while in the plain net of the same depth it is more than 1000x smaller; trained the same way, the
residual net's loss falls below half the chance level while the plain net's stays at it.*

Why: a plain stack multiplies the backpropagated error by one factor Wᵀ·σ'(Z), σ' ≤ 1/4, per layer
(docs/backprop.md), so with Xavier weights it shrinks about 4x per sigmoid layer; a residual block
y = x + F(x) passes its output error to its input unchanged and adds F's contribution,
∂L/∂x = ∂L/∂y + (∂L/∂y)·∂F/∂x (docs/layers.md), so the error reaching the first layers is at
least the one at the top, whatever σ' does inside the blocks.

Setup (all seeded by ``seed``): the moons data set (``nnlab.datasets.moons``, ``samples`` points,
2 classes). Both nets are an input layer ``Dense(2, width)``, then ``depth`` layers
``Dense(width, width)``, then a linear output ``Dense(width, 2)``; every hidden layer is sigmoid,
every weight Xavier-normal, every bias 0; softmax cross-entropy; ``Sequential(..., seed=seed)``. In
the plain net the ``depth`` layers follow one another; in the residual net the same layers are
grouped into ``depth / block`` blocks ``Residual([Dense, ...])`` of ``block`` layers (y = x + F(x),
no projection). The parameters come in the same order with the same shapes, so both nets start
from *identical* weights (the result's ``same_weights``): the skips are the only difference. Each
net trains with the fused :class:`~nnlab.Trainer`, ``Adam(lr)``, ``steps`` full-batch steps, and a
:class:`~nnlab.GradientMonitor`, whose first recorded step -- computed before any update -- gives
‖∂L/∂W_l‖ at initialisation for all ``depth + 2`` layers (l = 1 the input layer, l = depth + 1 the
last hidden layer, l = depth + 2 the output layer). The final loss and accuracy are
:meth:`~nnlab.Trainer.evaluate` after the last step; the chance-level loss is ln 2.

The measured ratio is ``‖∂L/∂W_1‖ / ‖∂L/∂W_{depth+1}‖``: first layer over last hidden layer, the
span the skips cover. The output layer is shown but not judged: no skip spans it, and in the
residual net it sees large activations, because every block adds F(x) ∈ (0, 1)ʷ (sigmoid outputs,
mean about 1/2) to x: the mean activation entering the output layer is 8.0 at the defaults (seed 0),
and ‖∂L/∂W_out‖ = ‖Aᵀ E_out‖ grows with it (first/output ratio 4e-3..8e-3 for the residual net,
~1e-20 for the plain one). The same growth makes the residual net's first loss 1-11 instead of
~0.7, and drives the sigmoid inputs of its later blocks into saturation (the monitor's
``saturation`` verdict fires); the skips carry the gradient past them anyway.

The claim held when all four parts hold: (1) the plain ratio is below 1e-3 (:data:`PLAIN_BELOW`);
(2) the residual ratio lies in [0.1, 10] (:data:`RESIDUAL_BAND`); (3) the residual net's final
loss is below 0.5·ln 2 = 0.347 (:data:`TRAINED_BELOW`, as the monitor's
``plateau_chance_fraction``); (4) the plain net's final loss is above 0.9·ln 2 = 0.624
(:data:`STALLED_ABOVE`, as the monitor's ``plateau_chance_stuck``: it learned nothing).

Measured at the defaults (depth 30, block 2, width 32, 200 samples, 200 steps, Adam lr 0.01), each
of seeds 0-4 checked: plain ratio 2.8e-20, 2.7e-20, 3.7e-20, 8.5e-20, 1.8e-18; residual ratio 0.36,
0.20, 0.31, 0.22, 0.25; residual final loss 0.285, 0.180, 0.253, 0.164, 0.196 (accuracy 87-93%);
plain final loss 0.6931 = ln 2 (accuracy 50%) every time. The claim holds for every one of seeds
0-4, and of seeds 0-19 (residual ratio 0.16-0.36, final loss 0.16-0.31; plain ratio below 2e-18,
final loss 0.6931). The plain net stalls even under Adam because neither direction carries a signal:
its last hidden layer gives every sample the same output to ~1e-15 (seed 0), and its first ~20
layers, which could change that, get gradients of 1e-20..1e-8, below Adam's ε = 1e-8, so their steps
are tiny. In shallower stacks that is no longer so: at depth 12 (width 16, 100 samples, 200 steps)
Adam trains the plain net for seed 9 of 0-9, and at ``depth=4`` (defaults otherwise, seeds 0-2) the
plain ratio is 2.6e-3..9.1e-3 and the plain net trains as well as the residual one (final loss
0.01-0.24): the claim does not hold there -- the skips matter for deep stacks.

>>> from nnlab.demos import residual
>>> r = residual.run(depth=4, width=8, samples=32, steps=3)
>>> len(r.plain.grad_norms), len(r.residual.grad_norms), r.same_weights
(6, 6, True)
"""

import math
from dataclasses import dataclass

import numpy as np

from ..errors import HyperparameterError
from . import _common as C

NAME = "residual"
SUMMARY = "Plain vs residual deep sigmoid nets of the same depth: per-layer gradient norms and training loss."
CLAIM = ("In a deep sigmoid net residual blocks keep the first layer's gradient within a factor of 10 of the "
         "last hidden layer's while in the plain net of the same depth it is more than 1000x smaller, and trained "
         "the same way the residual net's loss falls below half the chance level ln 2 while the plain one's stays "
         "above 0.9·ln 2")
OPTIONS = (
    C.Option("depth", "int", 30, "Dense(width, width) sigmoid layers between the input and output layers "
             "(a multiple of --block).", low=2, high=300),
    C.Option("block", "int", 2, "Layers per residual block (2-3 in the source texts).", low=2, high=3),
    C.Option("width", "int", 32, "Units per hidden layer.", low=2, high=512),
    C.Option("samples", "int", 200, "Points of the moons data set (one full batch).", low=8, high=100000),
    C.Option("steps", "int", 200, "Full-batch Adam steps per net.", low=1, high=100000),
    C.Option("lr", "float", 0.01, "Adam learning rate.", low=0, low_open=True, high=10.0),
)
PLAIN_BELOW = 1e-3            # (1) the plain ratio first/last hidden is below this
RESIDUAL_BAND = (0.1, 10.0)   # (2) the residual ratio lies in this band
TRAINED_BELOW = 0.5           # (3) residual final loss < 0.5 x the chance-level loss
STALLED_ABOVE = 0.9           # (4) plain final loss > 0.9 x the chance-level loss
ACTIVATION = "sigmoid"
INIT = "xavier_normal"


@dataclass
class NetRecord:
    """One net: per-layer norms at initialisation (layer 1 first, the output layer last) and its training."""

    kind: str                 # "plain" or "residual"
    labels: list              # the monitor's label of each layer with weights, e.g. "3.1 Dense (sigmoid)"
    grad_norms: list          # ‖∂L/∂W_l‖ at initialisation, l = 1..depth+2
    error_norms: list         # ‖E_l‖ at initialisation
    ratio: float              # grad_norms[0] / grad_norms[-2]: first layer / last hidden layer
    out_ratio: float          # grad_norms[0] / grad_norms[-1]: first layer / output layer (not judged)
    loss: list                # per step, the step's (pre-update) loss
    final_loss: float         # after the last update (Trainer.evaluate)
    accuracy: float           # after the last update
    verdicts: list            # the monitor's verdicts that fired: {"name", "step", "evidence"}


@dataclass
class ResidualResult:
    claim: str
    depth: int
    block: int
    width: int
    samples: int
    steps: int
    lr: float
    seed: int
    chance_loss: float = None
    same_weights: bool = None  # both nets started from identical parameters
    plain: NetRecord = None
    residual: NetRecord = None
    held: bool = False
    reason: str = ""

    @property
    def n_layers(self):
        return self.depth + 2

    def to_dict(self):
        d = C.jsonable(self)
        d["demo"] = NAME
        d["n_layers"] = self.n_layers
        d["ratio"] = ("grad_norms[0] / grad_norms[-2] = ||dL/dW_1|| / ||dL/dW_{depth+1}|| (first layer / last "
                      "hidden layer); out_ratio = grad_norms[0] / grad_norms[-1] (output layer, not judged)")
        d["thresholds"] = {"plain_below": PLAIN_BELOW, "residual_band": list(RESIDUAL_BAND),
                           "trained_below": TRAINED_BELOW * self.chance_loss,
                           "stalled_above": STALLED_ABOVE * self.chance_loss}
        return d


def build_net(kind, depth, block, width, seed, n_in=2, n_out=2):
    """The demo's network: ``kind`` "plain" or "residual" (see the module docstring)."""
    from ..layers import Residual
    from ..network import Dense, Sequential

    def dense(n):
        return Dense(n, width, activation=ACTIVATION, init=INIT)

    stack = [[dense(width) for _ in range(block)] for _ in range(depth // block)]
    body = [layer for group in stack for layer in group] if kind == "plain" else [Residual(g) for g in stack]
    return Sequential([dense(n_in), *body, Dense(width, n_out, init=INIT)], loss="softmax_cross_entropy",
                      seed=seed)


def _ratio(a, b):
    if b > 0:
        return a / b
    return math.nan if a == 0 or math.isnan(a) else math.inf


def _train(kind, net, X, y, steps, lr):
    from ..diagnostics import GradientMonitor
    from ..optim import Adam
    from ..trainer import Trainer

    mon = GradientMonitor(net)
    trainer = Trainer(net, Adam(lr=lr), monitor=mon)
    losses = C.train_steps(trainer, X, y, steps, f"{kind} net")
    final, acc = trainer.evaluate(X, y)
    g = mon.series("grad_norm")[0].tolist()  # step 1: computed before the first update
    e = mon.series("error_norm")[0].tolist()
    fired = [{"name": v.name, "step": v.step, "evidence": v.evidence} for v in mon.verdicts() if v.fired]
    rec = NetRecord(kind, [layer.label for layer in mon.layers], g, e, _ratio(g[0], g[-2]), _ratio(g[0], g[-1]),
                    losses, float(final), float(acc), fired)
    return rec, mon.chance_loss


def run(depth=30, block=2, width=32, samples=200, steps=200, lr=0.01, seed=0):
    """Train the plain and the residual net from the same weights; see the module docstring."""
    from .. import datasets
    from ..network import share_executor

    o = C.check_options(OPTIONS, dict(depth=depth, block=block, width=width, samples=samples, steps=steps, lr=lr))
    C.check_sizes(NAME, o)
    seed = C.check_seed(seed)
    if o["depth"] % o["block"]:
        raise HyperparameterError(f"depth must be a multiple of block (the residual net groups the layers into "
                                  f"blocks of {o['block']}); got depth={o['depth']}")
    res = ResidualResult(CLAIM, o["depth"], o["block"], o["width"], o["samples"], o["steps"], o["lr"], seed)
    X, y = datasets.moons(n=res.samples, seed=seed)
    plain = build_net("plain", res.depth, res.block, res.width, seed)
    resid = build_net("residual", res.depth, res.block, res.width, seed)
    share_executor(plain, resid)  # one compiled executor for both (the same bits as each one's own)
    res.same_weights = bool(len(plain.params()) == len(resid.params()) and
                            all(np.array_equal(a, b) for a, b in zip(plain.params(), resid.params())))
    with np.errstate(all="ignore"):
        res.plain, res.chance_loss = _train("plain", plain, X, y, res.steps, res.lr)
        res.residual, _ = _train("residual", resid, X, y, res.steps, res.lr)
    _judge(res)
    return res


def _judge(res):
    p, r, chance = res.plain, res.residual, res.chance_loss
    lo, hi = RESIDUAL_BAND
    trained_below, stalled_above = TRAINED_BELOW * chance, STALLED_ABOVE * chance
    parts = [
        (p.ratio < PLAIN_BELOW, f"plain ratio {C.sci(p.ratio)} {'<' if p.ratio < PLAIN_BELOW else 'not <'} "
                                f"{PLAIN_BELOW:g}"),
        (lo <= r.ratio <= hi, f"residual ratio {C.sci(r.ratio)} {'within' if lo <= r.ratio <= hi else 'outside'} "
                              f"[{lo:g}, {hi:g}]"),
        (r.final_loss < trained_below, f"residual final loss {r.final_loss:.4f} "
                                       f"{'<' if r.final_loss < trained_below else 'not <'} {trained_below:.4f} "
                                       f"(0.5·ln 2)"),
        (p.final_loss > stalled_above, f"plain final loss {p.final_loss:.4f} "
                                       f"{'>' if p.final_loss > stalled_above else 'not >'} {stalled_above:.4f} "
                                       f"(0.9·ln 2)"),
    ]
    res.held = all(ok for ok, _ in parts)
    if res.held:
        res.reason = "; ".join(text for _, text in parts)
    else:
        failed = "; ".join(text for ok, text in parts if not ok)
        kept = "; ".join(text for ok, text in parts if ok)
        res.reason = f"fails: {failed}" + (f" (holds: {kept})" if kept else "")


def _where(label):
    """'1.0 Dense (sigmoid)' -> '1.0': the layer's place in the residual net."""
    return label.split(" ", 1)[0]


def render(res, width=100):
    """The text ``nnlab demo residual`` prints: setup, per-layer table and bars, loss chart, verdicts."""
    from .. import charts

    p, r, n = res.plain, res.residual, res.n_layers
    out = C.header(res, width, (
        f"moons ({res.samples} points, 2 classes, seed {res.seed}); both nets: Dense(2, {res.width}) {ACTIVATION}, "
        f"{res.depth} Dense({res.width}, {res.width}) {ACTIVATION} layers, linear Dense({res.width}, 2); "
        f"{INIT} weights ({'identical in both nets' if res.same_weights else 'NOT identical'}), zero biases, "
        f"softmax cross-entropy. Plain: the {res.depth} layers one after another; residual: "
        f"{res.depth // res.block} blocks y = x + F(x) of {res.block} layers. Adam lr {res.lr:g}, "
        f"{res.steps} full-batch steps (the fused Trainer)."))
    out.append("")
    out.append("‖∂L/∂W_l‖ at initialisation (the monitor's step 1, before any update)")
    lab = len(f"{n} out")
    rows = []
    for i in range(n):
        tag = "in" if i == 0 else ("out" if i == n - 1 else ("last" if i == n - 2 else ""))
        rows.append([f"{i + 1} {tag}".rstrip(), _where(r.labels[i]), C.sci(p.grad_norms[i]), C.sci(r.grad_norms[i])])
    out += C.table(["layer", "residual net", "plain", "residual"], rows, align="llrr")
    out.append("(residual net: block.layer inside a block; 'last' = the last hidden layer)")
    out.append("")
    vals = [v for v in p.grad_norms + r.grad_norms if v > 0 and math.isfinite(v)]
    lo = math.floor(math.log10(min(vals))) if vals else -1
    hi = math.ceil(math.log10(max(vals))) if vals else 0
    hi = hi if hi > lo else lo + 1
    bw = max(8, min(30, (width - lab - 4) // 2 - 2))
    out.append(f"log10 ‖∂L/∂W_l‖: each bar spans 1e{lo:+d} .. 1e{hi:+d} ({(hi - lo) / bw:.2g} decades per █)")
    out.append("layer".ljust(lab) + "  " + "plain".ljust(bw) + "  residual")
    for i in range(n):
        tag = f"{i + 1}" + (" out" if i == n - 1 else "")
        bars = charts.bar(p.grad_norms[i], lo, hi, bw) + "  " + charts.bar(r.grad_norms[i], lo, hi, bw)
        out.append(tag.rjust(lab) + "  " + bars.rstrip())
    out.append("")
    out.append(f"ratio = ‖∂L/∂W_1‖ / ‖∂L/∂W_{n - 1}‖ (first layer / last hidden layer); the output layer "
               f"(not judged) in brackets")
    for rec in (p, r):
        out.append(f"  {rec.kind.ljust(8)}  ratio {C.sci(rec.ratio)}  (first / output {C.sci(rec.out_ratio)})")
    out.append("")
    out.append(f"training loss per step (log scale; • = the chance level ln 2 = {res.chance_loss:.4f}):")
    chance = [res.chance_loss] * len(p.loss)
    out.append(charts.line_plot({"ln 2": chance, "plain": p.loss, "residual": r.loss},
                                width=C.chart_width(width), height=10, logy=True))
    rows = [[rec.kind, f"{rec.loss[0]:.4f}", f"{rec.final_loss:.4f}", f"{rec.accuracy:.1%}"] for rec in (p, r)]
    out += C.table(["net", "first loss", "final loss", "accuracy"], rows)
    out.append("")
    for rec in (p, r):
        names = ", ".join(f"{v['name']} (step {v['step']})" if v["step"] else v["name"] for v in rec.verdicts)
        out += C.wrap(f"monitor verdicts fired for the {rec.kind} net: {names or 'none'}", width)
    return C.finish(out, res, width)


def plot(res, path):
    """PNG: ‖∂L/∂W_l‖ per layer at initialisation (log scale) and the training loss of both nets."""
    from .. import charts

    p, r = res.plain, res.residual
    return charts.save_panels(path, [
        dict(kind="lines", series={"plain": p.grad_norms, "residual": r.grad_norms}, logy=True, xlabel="layer",
             ylabel="‖∂L/∂W_l‖",
             title=f"residual: depth {res.depth} + in/out, width {res.width}, seed {res.seed}, at initialisation",
             output_layer=True),
        dict(kind="lines", series={"plain": p.loss, "residual": r.loss}, logy=True, xlabel="step", ylabel="loss",
             title=f"training loss, Adam lr {res.lr:g}",
             hlines={"chance ln 2": res.chance_loss, "0.5·ln 2": TRAINED_BELOW * res.chance_loss}),
    ])
