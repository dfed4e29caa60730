"""Demo: optimizers whose step ignores the gradient's magnitude cope with vanishing gradients.

The claim, from the source texts ([S3]: "the short answer to vanishing or exploding gradients
is simply -- don't use the magnitude of the gradient!", with RMSProp/Rprop as the examples; "an
optimizer that handles the vanishing gradient intrinsically ... if a layer is closer to the input,
the learning step should be larger"; [S1]: Adagrad makes the step larger for parameters with
small gradients, RMSProp and Adam normalise by a running average of g²): *on a deep sigmoid net,
where the gradient reaching the first layer is many orders of magnitude smaller than at the output,
plain SGD barely moves the first layer (its update/weight ratio there is tiny) and the loss hardly
moves, while Adagrad, RMSprop, Adam and Rprop -- whose step is about lr whatever the gradient's
scale -- move the first layer by ~lr per step and reach a lower loss in the same budget.*

Setup: the moons data set (``nnlab.datasets.moons``, ``samples`` points, seeded), ``depth`` hidden
``Dense(width)`` sigmoid layers with Xavier-normal weights, a linear output, softmax cross-entropy;
the same initial weights for every optimizer; ``steps`` full-batch steps each with a
:class:`~nnlab.GradientMonitor`. Optimizers (learning rates are PyTorch's defaults where it has
one, 0.1 for SGD): SGD(0.1), SGD(0.1, momentum 0.9), Adagrad(0.01), RMSprop(0.001), Adam(0.001),
Rprop(0.001). The per-layer update ratio is the monitor's ‖ΔW_l‖/‖W_l‖ per step; the demo reports
its median over the steps.

At its first step Adam's update is lr·m̂/(√v̂ + ε) = lr·g/(|g| + ε) per entry, i.e. lr·sign(g) as long
as |g| ≫ ε = 1e-8; Adagrad's (ε = 1e-10) and Rprop's first steps are lr·sign(g) too, RMSprop's is
lr·g/(√(0.01·g²) + ε) = 10·lr·sign(g) while |g| ≫ 1e-7. So their first-layer update ratio is
~lr/rms(W_1), independent of how small the gradient is, while SGD's is lr·‖g_1‖/‖W_1‖. (Where the
first layer's gradient entries approach ε the step there shrinks in proportion -- at depth 10
RMSprop's first step is about 7·lr instead of 10·lr, and at depth 12 and more Adam's falls well
below lr: Adam and RMSprop are magnitude-free only above ε; Rprop, using only the sign, is not
limited that way.)

The claim held when every adaptive optimizer (Adagrad, RMSprop, Adam, Rprop) ends with a lower loss
than SGD and a median first-layer update ratio more than 100x SGD's.

Measured at the defaults (depth 10, width 32, 200 samples, 300 steps, seed 0): SGD's first-layer
update ratio is 3e-8 and its loss stays at 0.693 (ln 2); the adaptive ones have 7e-4 to 6e-3 and
end at 0.32-0.47.
"""

from dataclasses import dataclass, field

import numpy as np

from . import _common as C

NAME = "optimizers"
SUMMARY = "SGD vs momentum, Adagrad, RMSprop, Adam, Rprop on a deep sigmoid net: magnitude-free steps win."
CLAIM = ("On a deep sigmoid net plain SGD barely moves the first layer and the loss stalls, while the "
         "optimizers whose step ignores the gradient's magnitude (Adagrad, RMSprop, Adam, Rprop) move the "
         "first layer by about lr per step and reach a lower loss in the same number of steps")
OPTIONS = (
    C.Option("depth", "int", 10, "Hidden sigmoid layers.", low=2, high=100),
    C.Option("width", "int", 32, "Units per hidden layer.", low=2, high=1024),
    C.Option("steps", "int", 300, "Full-batch steps per optimizer.", low=10, high=100000),
    C.Option("samples", "int", 200, "Points of the moons data set.", low=8, high=100000),
)
OPTIMIZERS = (
    ("SGD", "sgd", {"lr": 0.1}),
    ("SGD momentum", "sgd", {"lr": 0.1, "momentum": 0.9}),
    ("Adagrad", "adagrad", {"lr": 0.01}),
    ("RMSprop", "rmsprop", {"lr": 1e-3}),
    ("Adam", "adam", {"lr": 1e-3}),
    ("Rprop", "rprop", {"lr": 1e-3}),
)
ADAPTIVE = ("Adagrad", "RMSprop", "Adam", "Rprop")
RATIO_FACTOR = 100.0  # an adaptive optimizer's first-layer update ratio must exceed SGD's by this


@dataclass
class OptRecord:
    label: str
    name: str
    hyper: dict
    loss: list                  # per step
    final_loss: float
    accuracy: float
    update_ratio_median: list   # per layer, median over steps of ‖ΔW_l‖/‖W_l‖
    update_ratio_first: list    # per layer, at step 1
    grad_median: list           # per layer, median ‖∂L/∂W_l‖
    grad_series_first: list     # per step, ‖∂L/∂W_1‖

    @property
    def lr(self):
        return self.hyper["lr"]


@dataclass
class OptimizersResult:
    claim: str
    depth: int
    width: int
    steps: int
    samples: int
    seed: int
    runs: list = field(default_factory=list)
    sgd_grad_heat: list = None  # layers × steps ‖∂L/∂W_l‖ of the SGD run
    held: bool = False
    reason: str = ""

    def run(self, label):
        return next(r for r in self.runs if r.label == label)

    def to_dict(self):
        d = C.jsonable(self)
        d["demo"] = NAME
        d["ratio_factor"] = RATIO_FACTOR
        d["update_ratio"] = "||W_l after - W_l before|| / ||W_l after||, the monitor's update_ratio()"
        return d


def _train(label, name, hyper, X, y, depth, width, steps, seed):
    from .. import optim
    from ..diagnostics import GradientMonitor
    from ..network import Dense, Sequential
    from ..trainer import Trainer

    layers = [Dense(X.shape[1] if i == 0 else width, width, activation="sigmoid", init="xavier_normal")
              for i in range(depth)]
    layers.append(Dense(width, int(y.max()) + 1, init="xavier_normal"))
    net = Sequential(layers, loss="softmax_cross_entropy", seed=seed)
    mon = GradientMonitor(net)
    trainer = Trainer(net, optim.get(name, **hyper), monitor=mon)
    losses = C.train_steps(trainer, X, y, steps, label)
    final, acc = trainer.evaluate(X, y)
    ur = mon.update_ratio()
    g = mon.series("grad_norm")
    with np.errstate(all="ignore"):
        med = np.nanmedian(ur, axis=0)
    return OptRecord(label, name, dict(hyper), losses, float(final), float(acc), med.tolist(), ur[0].tolist(),
                     np.median(g, axis=0).tolist(), g[:, 0].tolist()), g


def run(depth=10, width=32, steps=300, samples=200, seed=0):
    """Train one net per optimizer from the same initial weights; see the module docstring."""
    from .. import datasets

    o = C.check_options(OPTIONS, dict(depth=depth, width=width, steps=steps, samples=samples))
    C.check_sizes(NAME, o)
    seed = C.check_seed(seed)
    res = OptimizersResult(CLAIM, o["depth"], o["width"], o["steps"], o["samples"], seed)
    X, y = datasets.moons(n=res.samples, seed=seed)
    from ..kernels.variants import several_optimizers

    several_optimizers()  # one training step compiled with every rule, not one per optimizer
    for label, name, hyper in OPTIMIZERS:
        rec, g = _train(label, name, hyper, X, y, res.depth, res.width, res.steps, seed)
        res.runs.append(rec)
        if label == "SGD":
            res.sgd_grad_heat = g.T.tolist()
    _judge(res)
    return res


def _judge(res):
    sgd = res.run("SGD")
    ok, parts = True, []
    for label in ADAPTIVE:
        r = res.run(label)
        loss_ok = r.final_loss < sgd.final_loss
        ratio_ok = r.update_ratio_median[0] > RATIO_FACTOR * sgd.update_ratio_median[0]
        ok = ok and loss_ok and ratio_ok
        parts.append(f"{label} loss {r.final_loss:.3f} {'<' if loss_ok else '>='} SGD's, first-layer ratio "
                     f"{C.sci(r.update_ratio_median[0], 1)} ({r.update_ratio_median[0] / sgd.update_ratio_median[0]:.1e}x"
                     f" SGD's)" if sgd.update_ratio_median[0] > 0 else f"{label}: SGD's ratio is 0")
    res.held = bool(ok)
    res.reason = (f"SGD: loss {sgd.final_loss:.3f}, first-layer update ratio {C.sci(sgd.update_ratio_median[0], 1)}; "
                  + "; ".join(parts))


def render(res, width=100):
    from .. import charts

    out = C.header(res, width, (
        f"moons ({res.samples} points, seed {res.seed}); {res.depth} hidden Dense({res.width}) sigmoid layers, "
        f"Xavier-normal, softmax cross-entropy; {res.steps} full-batch steps per optimizer from the same initial "
        "weights. update ratio = ‖ΔW_l‖/‖W_l‖ per step (median over the steps)."))
    out.append("")
    rows = []
    for r in res.runs:
        hyper = ", ".join(f"{k} {v:g}" for k, v in r.hyper.items() if k != "lr")
        rows.append([r.label + (f" ({hyper})" if hyper and r.label == "SGD" else ""), f"{r.lr:g}",
                     f"{r.final_loss:.4f}", f"{r.accuracy:.1%}",
                     C.sci(r.update_ratio_first[0], 1), C.sci(r.update_ratio_median[0], 1),
                     f"{r.update_ratio_median[0] / r.lr:.2g}", C.sci(r.update_ratio_median[-1], 1)])
    out.append(f"loss at step 1 (the same initial weights for all): {res.runs[0].loss[0]:.4f}")
    out += C.table(["optimizer", "lr", "final", "acc", "L1 @1", "L1 med", "L1/lr", "out med"], rows)
    out += C.wrap("(L1 @1: the first layer's update ratio at step 1; L1 med, out med: the median over the steps "
                  "for the first and the output layer; L1/lr: L1 med divided by the learning rate)", width, indent=" ")
    out.append("")
    out.append("median update ratio ‖ΔW_l‖/‖W_l‖ per layer (the first layer is where vanishing gradients bite):")
    n = len(res.runs[0].update_ratio_median)
    rows = [[str(l + 1) if l + 1 < n else f"{n} out"] + [C.sci(r.update_ratio_median[l], 1) for r in res.runs]
            for l in range(n)]
    out += C.table(["layer"] + [r.label for r in res.runs], rows)
    out.append("")
    out.append("first-layer median update ratio per optimizer:")
    out.append(C.fit(charts.log_bars([r.label for r in res.runs], [r.update_ratio_median[0] for r in res.runs],
                                     width=max(20, min(50, width - 35))), width))
    out.append("")
    mat = np.asarray(res.sgd_grad_heat)
    out.append(C.fit(charts.heatmap(mat, row_labels=[str(l + 1) for l in range(mat.shape[0])],
                                    max_cols=max(20, min(60, width - 20)),
                                    title="SGD: log10 ‖∂L/∂W_l‖, layers (rows, 1 = input side) × steps"), width))
    out.append("")
    out.append("loss per step:")
    out.append(charts.line_plot({r.label: r.loss for r in res.runs}, width=C.chart_width(width), height=10))
    return C.finish(out, res, width)


def plot(res, path):
    from .. import charts

    return charts.save_panels(path, [
        dict(kind="lines", series={r.label: r.loss for r in res.runs}, xlabel="step", ylabel="loss",
             title="optimizers: training loss on a deep sigmoid net"),
        dict(kind="lines", series={r.label: r.update_ratio_median for r in res.runs}, logy=True, xlabel="layer",
             ylabel="median ‖ΔW_l‖/‖W_l‖", title="per-layer update ratio"),
        dict(kind="heat", matrix=res.sgd_grad_heat, xlabel="step", ylabel="layer",
             title="SGD: log10 ‖∂L/∂W_l‖"),
    ])

