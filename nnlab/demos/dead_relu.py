"""Demo: a negative bias initialisation kills ReLU units; a positive bias or leaky_relu fixes it.

The claim, from the source texts ([S4]: "if b is initialised with a negative number, the neuron
dies at once; to prevent it, initialise b with a positive number"; leaky ReLU "insures against all
outputs becoming zero"; [S2]: a unit whose gradient is 0 is dead because its weights never
change, and leaky ReLU keeps the gradient from falling to zero; [S1]: dead ReLU comes from too
many negative inputs -- change the initialisation): *ReLU layers whose biases start negative are
mostly dead (every unit outputs 0 for every sample, so no gradient flows) and training stalls;
with a small positive bias (0.1) or with leaky_relu the units live and the loss falls.*

Setup: the moons data set (``nnlab.datasets.moons``, 400 points, 2 classes, seeded), ``depth``
hidden ``Dense(width)`` layers with He-normal weights, softmax cross-entropy, Adam(lr) for
``steps`` full-batch steps, a :class:`~nnlab.GradientMonitor` on each run. Configurations:
relu with bias ``bias`` (default −1), relu with bias ``fix_bias`` (0.1), leaky_relu (α = 0.01) with
the negative bias, and relu with zero bias for reference. A unit is *dead* when its derivative
is 0 for every row of the batch (the monitor's ``dead_fraction``; leaky_relu's derivative is never 0).

The claim held when (1) relu with the negative bias has a hidden layer more than 50% dead at the
first step (the monitor's ``dead_units`` threshold) and its loss falls by less than 10% over the run
(the ``slow_progress`` threshold), and (2) both fixes have every hidden layer at most 50% dead at
the last step and their loss falls by more than a quarter.

Measured at the defaults (depth 6, width 32, 200 steps): for every seed 0-9 relu/b=−1 starts with
its deeper layers 100% dead, no gradient reaches any weight, and its loss stays at ln 2 = 0.6931
(only the output bias learns, and the classes are balanced); relu/b=0.1 falls by 100% (to < 1e-4)
with at most 44% of a layer dead; leaky_relu/b=−1 has no dead unit and falls by 41-100% (it starts
as a nearly linear net, slope 0.01 everywhere, and must first lift its biases).
"""

import math
from dataclasses import dataclass, field

import numpy as np

from . import _common as C

NAME = "dead-relu"
SUMMARY = "Negative bias init kills ReLU units and stalls training; bias 0.1 or leaky_relu fixes it."
CLAIM = ("ReLU layers whose biases start negative are mostly dead (zero output and zero gradient for every "
         "sample) and training stalls; with a positive bias (0.1) or leaky_relu the units live and the loss falls")
OPTIONS = (
    C.Option("depth", "int", 6, "Hidden layers.", low=2, high=100),
    C.Option("width", "int", 32, "Units per hidden layer.", low=2, high=1024),
    C.Option("bias", "float", -1.0, "The negative bias init (of every hidden layer).", high=0.0),
    C.Option("fix_bias", "float", 0.1, "The positive bias init of the fix.", low=0, low_open=True),
    C.Option("steps", "int", 200, "Full-batch Adam steps.", low=20, high=100000),
    C.Option("lr", "float", 0.01, "Adam learning rate.", low=0, low_open=True, high=10.0),
)
DEAD_ABOVE = 0.5      # the monitor's dead_units threshold
STALL_BELOW = 0.1     # the monitor's slow_progress threshold: loss fell by < 10%
FALL_ABOVE = 0.25     # a fix works when the loss falls by more than a quarter


@dataclass
class RunRecord:
    label: str
    activation: str
    bias: float
    loss: list                 # per step
    final_loss: float          # after the last update
    accuracy: float            # after the last update
    dead_first: list           # per hidden layer, dead fraction at step 1
    dead_last: list            # per hidden layer, at the last step
    grad_first: list           # ‖∂L/∂W_l‖ per layer at step 1
    dead_series: list          # steps × hidden layers
    verdicts: list             # the monitor's fired verdicts (name, step, evidence)

    @property
    def drop(self):
        return 1.0 - self.final_loss / self.loss[0] if self.loss and self.loss[0] > 0 else math.nan


@dataclass
class DeadReluResult:
    claim: str
    depth: int
    width: int
    bias: float
    fix_bias: float
    steps: int
    lr: float
    seed: int
    runs: list = field(default_factory=list)
    held: bool = False
    reason: str = ""

    def run(self, label):
        return next(r for r in self.runs if r.label == label)

    def to_dict(self):
        d = C.jsonable(self)
        for rd, r in zip(d["runs"], self.runs):
            rd["drop"] = C.jsonable(r.drop)
        d["demo"] = NAME
        d["thresholds"] = {"dead_above": DEAD_ABOVE, "stall_below": STALL_BELOW, "fall_above": FALL_ABOVE}
        return d


def _train(label, activation, bias, X, y, depth, width, steps, lr, seed):
    from ..diagnostics import GradientMonitor
    from ..network import Dense, Sequential
    from ..optim import Adam
    from ..trainer import Trainer

    layers = [Dense(X.shape[1] if i == 0 else width, width, activation=activation, init="he_normal",
                    bias_init=bias) for i in range(depth)]
    layers.append(Dense(width, int(y.max()) + 1, init="he_normal"))
    net = Sequential(layers, loss="softmax_cross_entropy", seed=seed)
    mon = GradientMonitor(net)
    trainer = Trainer(net, Adam(lr=lr), monitor=mon)
    losses = C.train_steps(trainer, X, y, steps, label)
    final, acc = trainer.evaluate(X, y)
    dead = mon.series("dead_fraction")[:, :depth]
    fired = [{"name": v.name, "step": v.step, "evidence": v.evidence} for v in mon.verdicts() if v.fired]
    return RunRecord(label, activation, float(bias), losses, float(final), float(acc), dead[0].tolist(),
                     dead[-1].tolist(), mon.series("grad_norm")[0].tolist(), dead.tolist(), fired)


def run(depth=6, width=32, bias=-1.0, fix_bias=0.1, steps=200, lr=0.01, seed=0):
    """Train the four configurations; see the module docstring."""
    from .. import datasets

    o = C.check_options(OPTIONS, dict(depth=depth, width=width, bias=bias, fix_bias=fix_bias, steps=steps, lr=lr))
    C.check_sizes(NAME, o)
    seed = C.check_seed(seed)
    res = DeadReluResult(CLAIM, o["depth"], o["width"], o["bias"], o["fix_bias"], o["steps"], o["lr"], seed)
    X, y = datasets.moons(seed=seed)
    configs = [(f"relu, b={res.bias:g}", "relu", res.bias), (f"relu, b={res.fix_bias:g}", "relu", res.fix_bias),
               (f"leaky_relu, b={res.bias:g}", "leaky_relu", res.bias), ("relu, b=0", "relu", 0.0)]
    for label, act, b in configs:
        res.runs.append(_train(label, act, b, X, y, res.depth, res.width, res.steps, res.lr, seed))
    _judge(res)
    return res


def _judge(res):
    bad, fix, leaky = res.runs[0], res.runs[1], res.runs[2]
    killed = max(bad.dead_first) > DEAD_ABOVE
    stalled = bad.drop < STALL_BELOW
    fixes = [(r, max(r.dead_last) <= DEAD_ABOVE, r.drop > FALL_ABOVE) for r in (fix, leaky)]
    res.held = bool(killed and stalled and all(a and b for _, a, b in fixes))
    parts = [f"{bad.label}: up to {max(bad.dead_first):.0%} of a layer dead at step 1, loss "
             f"{bad.loss[0]:.4f} -> {bad.final_loss:.4f} ({bad.drop:.1%} lower)"]
    for r, _alive, _fell in fixes:
        parts.append(f"{r.label}: at most {max(r.dead_last):.0%} dead at the end, loss {r.loss[0]:.4f} -> "
                     f"{r.final_loss:.4f} ({r.drop:.1%} lower)")
    res.reason = "; ".join(parts)


def render(res, width=100):
    from .. import charts

    out = C.header(res, width, (
        f"moons (400 points, 2 classes, seed {res.seed}); {res.depth} hidden Dense({res.width}) layers, He-normal "
        f"weights, softmax cross-entropy, Adam lr {res.lr:g}, {res.steps} full-batch steps. A unit is dead when its "
        "derivative is 0 for every row of the batch."))
    out.append("")
    rows = [[r.label, f"{r.loss[0]:.4f}", f"{r.final_loss:.4f}", f"{r.drop:.1%}", f"{r.accuracy:.1%}",
             f"{max(r.dead_first):.0%}", f"{max(r.dead_last):.0%}"] for r in res.runs]
    out += C.table(["configuration", "loss@1", "final", "fell by", "acc", "dead@1", "dead@end"], rows)
    out.append("(dead@1, dead@end: the largest dead fraction of a hidden layer at step 1 and at the last step)")
    out.append("")
    out.append("dead fraction per hidden layer, at step 1 -> at the last step:")
    rows = []
    for l in range(res.depth):
        rows.append([str(l + 1)] + [f"{r.dead_first[l]:4.0%} -> {r.dead_last[l]:4.0%}" for r in res.runs])
    out += C.table(["layer"] + [r.label for r in res.runs], rows)
    out.append("")
    n = len(res.runs[0].grad_first)
    out.append("‖∂L/∂W_l‖ per layer at step 1 (0 exactly: no gradient reaches the layer):")
    rows = [[str(l + 1) if l + 1 < n else f"{n} out"] + [C.sci(r.grad_first[l], 1) for r in res.runs]
            for l in range(n)]
    out += C.table(["layer"] + [r.label for r in res.runs], rows)
    out.append("")
    for r in res.runs[:3]:
        names = ", ".join(f"{v['name']} (step {v['step']})" if v["step"] else v["name"] for v in r.verdicts)
        out += C.wrap(f"monitor verdicts fired for {r.label}: {names or 'none'}", width)
    out.append("")
    out.append("loss per step:")
    out.append(charts.line_plot({r.label: r.loss for r in res.runs}, width=C.chart_width(width), height=10))
    return C.finish(out, res, width)


def plot(res, path):
    from .. import charts

    bad = res.runs[0]
    return charts.save_panels(path, [
        dict(kind="lines", series={r.label: r.loss for r in res.runs}, xlabel="step", ylabel="loss",
             title="dead-relu: training loss"),
        dict(kind="lines", series={r.label: r.dead_first for r in res.runs}, xlabel="hidden layer",
             ylabel="dead fraction at step 1", title="dead units per layer at initialisation"),
        dict(kind="heat", matrix=np.asarray(bad.dead_series).T, log=False, xlabel="step", ylabel="hidden layer",
             title=f"{bad.label}: dead fraction per layer over the steps"),
    ])
