"""Demo: exploding gradients from too-large initial weights, caught by the monitor; clipping fixes it.

The claim, from the source texts ([S0]: the signs of an exploding gradient are a high loss,
loss jumps, a NaN loss, exponentially growing or NaN weights; the remedy is clipping the gradient's
norm, keeping its direction; [S1]: weights initialised too large make the back-propagated
product overflow, "in the extreme the weights overflow to NaN and can no longer be updated"):
*a deep ReLU net whose initial weights are too large diverges to a non-finite loss under plain
SGD, and the gradient monitor's exploding verdict fires at the first bad step with its evidence;
the same run with the gradient clipped to global norm 1 stays finite.*

Setup: ``depth`` hidden ``Dense(width, width)`` ReLU layers and a linear ``Dense(width, 1)`` output,
weights N(0, (scale·√(2/width))²) -- ``scale`` times He's standard deviation, so the forward signal
and the backward error both grow by about ``scale`` per layer -- zero biases, mse on the vanishing
demo's data (X ~ N(0, 1), linear teacher, ``batch`` rows, full batch). Two identical copies train
with SGD(lr) for up to ``steps`` steps, each with a :class:`~nnlab.GradientMonitor`: one without
clipping (``on_nonfinite='stop'``: the trainer stops at the first non-finite loss or gradient and
keeps the last finite weights), one with ``clip=('global_norm', clip)``.

The *first bad step* is the first step whose loss is non-finite or above the monitor's
``loss_high_factor`` (10) times the first loss, or whose gradient norm is non-finite. The claim
held when (1) the unclipped run reached a non-finite loss or gradient, (2) the earliest of the
monitor's exploding verdicts (loss_high, loss_jumps, loss_nan, weights_growing, weights_nan,
gradient_exploding) fired exactly at the first bad step, and (3) every loss, gradient norm and
weight of the clipped run stayed finite for all ``steps`` steps (none of its exploding verdicts
fired, and its final loss is below its first).

Measured at the defaults (depth 10, width 32, scale 2, lr 0.01, float32, seed 0): the loss is 8.8e6
at step 1 and NaN at step 2, where loss_nan fires and the trainer stops with the weights of step 1;
clipped, the loss falls from 8.8e6 to 2.4e4 in 100 steps. The claim holds for seeds 0-9: the first
bad step is step 2 every time, with loss_nan (7 seeds) or, where the loss was still finite but the
gradient overflowed, loss_high (3 seeds). In float64 the same run shows the verdict *before* the
NaN: 8.8e6 -> 5.2e101 (step 2: loss_high, 5.8e94 x the first loss) -> 4.7e115 -> inf at step 4
(loss_nan); but there the blow-up can also kill every ReLU before anything overflows (seed 2: the
loss stays at 5e70, finite), so the claim holds for 9 of the seeds 0-9.
"""

import math
from dataclasses import dataclass

import numpy as np

from . import _common as C

NAME = "exploding"
SUMMARY = "Too-large initial weights: the loss overflows, the monitor fires at the first bad step; clipping fixes it."
CLAIM = ("A deep ReLU net with too-large initial weights diverges to a non-finite loss under plain SGD and the "
         "monitor's exploding verdict fires at the first bad step; clipping the gradient to global norm 1 "
         "keeps the same run finite")
OPTIONS = (
    C.Option("depth", "int", 10, "Hidden ReLU layers.", low=1, high=200),
    C.Option("width", "int", 32, "Units per hidden layer.", low=1, high=1024),
    C.Option("scale", "float", 2.0, "Initial weight std as a multiple of He's √(2/width).", low=0, low_open=True,
             high=1e3),
    C.Option("lr", "float", 0.01, "SGD learning rate.", low=0, low_open=True, high=1e3),
    C.Option("steps", "int", 100, "Full-batch SGD steps (at most).", low=1, high=10000),
    C.Option("clip", "float", 1.0, "Global-norm clipping threshold of the second run.", low=0, low_open=True),
    C.Option("batch", "int", 256, "Rows of the data (one full batch).", low=1, high=100000),
    C.Option("dtype", "choice", "float32", "Floating-point type (float32 overflows at 3.4e38, as in PyTorch).",
             choices=("float32", "float64")),
)
EXPLODING = ("loss_high", "loss_jumps", "loss_nan", "weights_growing", "weights_nan", "gradient_exploding")


@dataclass
class RunRecord:
    """One training run: per-step records and the monitor's verdicts."""

    clip: float                 # None for the unclipped run
    loss: list                  # per step (the step's pre-update loss)
    grad_norm: list             # per step, global ‖g‖ before clipping
    layer_grad_norms: list      # per step, ‖∂L/∂W_l‖ per layer (before clipping)
    error_norms: list           # per step, ‖E_l‖ per layer (the backpropagated error)
    weight_norms: list          # per step, ‖W_l‖ per layer after the step
    stopped: str                # why the run stopped early ("" if it ran every step)
    verdicts: list              # every verdict of the monitor, as dicts
    first_bad_step: int = None  # see the module docstring; None if no step was bad
    first_verdict: dict = None  # the earliest exploding verdict that fired

    @property
    def fired(self):
        return [v for v in self.verdicts if v["fired"]]

    @property
    def finite(self):
        return (all(math.isfinite(x) for x in self.loss + self.grad_norm)
                and all(math.isfinite(x) for row in self.weight_norms for x in row))


@dataclass
class ExplodingResult:
    claim: str
    depth: int
    width: int
    scale: float
    lr: float
    steps: int
    clip: float
    batch: int
    dtype: str
    seed: int
    plain: RunRecord = None
    clipped: RunRecord = None
    held: bool = False
    reason: str = ""

    def to_dict(self):
        d = C.jsonable(self)
        d["demo"] = NAME
        return d


def build_net(depth, width, scale, seed, dtype):
    from .. import init as _init
    from ..network import Dense, Sequential

    w_init = _init.get("normal", std=scale * math.sqrt(2.0 / width))
    layers = [Dense(width, width, activation="relu", init=w_init) for _ in range(depth)]
    layers.append(Dense(width, 1, init=w_init))
    return Sequential(layers, loss="mse", seed=seed, dtype=dtype)


def _train(net, X, y, lr, steps, clip):
    from ..diagnostics import GradientMonitor
    from ..optim import SGD
    from ..trainer import Trainer

    mon = GradientMonitor(net)
    trainer = Trainer(net, SGD(lr=lr), clip=None if clip is None else ("global_norm", clip), monitor=mon)
    losses, norms, stopped = [], [], ""
    for t in range(steps):
        loss = trainer.step(X, y)
        losses.append(float(loss))
        norms.append(float(trainer.last.grad_norm))
        if not trainer.last.applied:
            what = "loss" if not math.isfinite(loss) else "gradient"
            stopped = f"non-finite {what} at step {t + 1}; the trainer kept the weights of step {t}"
            break
    verdicts = mon.verdicts()
    rec = RunRecord(clip, losses, norms, mon.series("grad_norm").tolist(), mon.series("error_norm").tolist(),
                    mon.series("weight_norm").tolist(), stopped, [v.to_dict() for v in verdicts])
    factor = mon.thresholds.loss_high_factor
    first = losses[0]
    for t, (loss, g) in enumerate(zip(losses, norms)):
        if not math.isfinite(loss) or not math.isfinite(g) or (math.isfinite(first) and loss > factor * abs(first)):
            rec.first_bad_step = t + 1
            break
    fired = [v for v in rec.verdicts if v["fired"] and v["name"] in EXPLODING and v["step"] is not None]
    if fired:
        rec.first_verdict = min(fired, key=lambda v: v["step"])
    return rec


def run(depth=10, width=32, scale=2.0, lr=0.01, steps=100, clip=1.0, batch=256, dtype="float32", seed=0):
    """Train the too-large net twice (plain, clipped); see the module docstring."""
    from . import vanishing

    o = C.check_options(OPTIONS, dict(depth=depth, width=width, scale=scale, lr=lr, steps=steps, clip=clip,
                                      batch=batch, dtype=dtype))
    seed = C.check_seed(seed)
    res = ExplodingResult(CLAIM, o["depth"], o["width"], o["scale"], o["lr"], o["steps"], o["clip"], o["batch"],
                          o["dtype"], seed)
    X, y = vanishing.data(res.width, res.batch, seed, res.dtype)
    with np.errstate(all="ignore"):
        res.plain = _train(build_net(res.depth, res.width, res.scale, seed, res.dtype), X, y, res.lr, res.steps, None)
        res.clipped = _train(build_net(res.depth, res.width, res.scale, seed, res.dtype), X, y, res.lr, res.steps,
                             res.clip)
    _judge(res)
    return res


def _judge(res):
    p, c = res.plain, res.clipped
    diverged = bool(p.stopped)
    on_time = p.first_verdict is not None and p.first_bad_step is not None and p.first_verdict["step"] == p.first_bad_step
    c_fired = [v["name"] for v in c.fired if v["name"] in EXPLODING]
    c_ok = c.finite and len(c.loss) == res.steps and not c_fired and c.loss[-1] < c.loss[0]
    res.held = bool(diverged and on_time and c_ok)
    parts = []
    if diverged:
        parts.append(f"plain SGD: {p.stopped}")
    else:
        parts.append(f"plain SGD stayed finite for {len(p.loss)} steps (final loss {C.sci(p.loss[-1])})")
    if p.first_verdict is not None:
        parts.append(f"{p.first_verdict['name']} fired at step {p.first_verdict['step']}, first bad step "
                     f"{p.first_bad_step}")
    else:
        parts.append("no exploding verdict fired")
    if c_ok:
        parts.append(f"clipped: finite for all {res.steps} steps, loss {C.sci(c.loss[0])} -> {C.sci(c.loss[-1])}")
    else:
        parts.append(f"clipped: {'finite' if c.finite else 'NOT finite'}, {len(c.loss)} steps, "
                     f"exploding verdicts fired: {', '.join(c_fired) or 'none'}, loss {C.sci(c.loss[0])} -> "
                     f"{C.sci(c.loss[-1])}")
    res.reason = "; ".join(parts)


def render(res, width=100):
    from .. import charts

    p, c = res.plain, res.clipped
    out = C.header(res, width, (
        f"{res.depth} hidden Dense({res.width}, {res.width}) relu layers + linear output, W ~ N(0, "
        f"({res.scale:g}·√(2/{res.width}))²) = {res.scale:g} x He's std, mse on {res.batch} rows, SGD lr "
        f"{res.lr:g}, up to {res.steps} full-batch steps, {res.dtype}, seed {res.seed}; run 1 without clipping, "
        f"run 2 with clip=('global_norm', {res.clip:g})"))
    out.append("")
    out.append("run 1, plain SGD: per step loss, ‖g‖ (global, before clipping), ‖W_1‖, ‖W_out‖")
    rows = []
    for t in range(len(p.loss)):
        w = p.weight_norms[t]
        mark = "  <- first bad step" if p.first_bad_step == t + 1 else ""
        rows.append([t + 1, C.sci(p.loss[t]), C.sci(p.grad_norm[t]), C.sci(w[0]), C.sci(w[-1]) + mark])
    out += ["  " + line for line in C.table(["step", "loss", "‖g‖", "‖W_1‖ after", "‖W_out‖ after"], rows,
                                            align="rrrrl")]
    out.append(f"  {p.stopped or 'ran every step'}")
    out.append("")
    out.append("run 1, the monitor's verdicts that fired (step, evidence):")
    for v in p.fired:
        out += C.wrap(f"  FIRED {v['name']} ({v['problem']}) at step {v['step']}: {v['evidence']}", width,
                      indent="        ")
    if p.first_verdict is not None:
        out += C.wrap(f"  -> first exploding verdict: {p.first_verdict['name']} at step {p.first_verdict['step']}; "
                      f"first bad step {p.first_bad_step}", width, indent="     ")
    out.append("")
    n = len(p.layer_grad_norms[0])
    labels = [str(l + 1) if l + 1 < n else f"{n} out" for l in range(n)]
    e = p.error_norms[0]
    out += C.wrap(f"run 1, step 1: the backpropagated error E_l = ∂L/∂Z_l (Z_l layer l's pre-activation) grows "
                  f"towards the input, ‖E_1‖/‖E_{n}‖ = "
                  f"{C.sci(e[0] / e[-1]) if e[-1] > 0 else '-'} ({C.sci((e[0] / e[-1]) ** (1 / max(1, n - 1)))} per "
                  f"layer), while the activations grow towards the output, so every ‖∂L/∂W_l‖ = ‖A_{{l-1}}ᵀ E_l‖ "
                  f"is huge:", width, indent="  ")
    out.append(C.fit(charts.log_bars(labels, p.layer_grad_norms[0], width=max(20, min(50, width - 30))), width))
    out.append("")
    out.append(f"run 2, clipped to global norm {res.clip:g}: loss every {max(1, len(c.loss) // 10)} steps")
    every = max(1, len(c.loss) // 10)
    picks = sorted(set(list(range(0, len(c.loss), every)) + [len(c.loss) - 1]))
    out += ["  " + line for line in C.table(
        ["step", "loss", "‖g‖ before clip"], [[t + 1, C.sci(c.loss[t]), C.sci(c.grad_norm[t])] for t in picks])]
    c_fired = [v for v in c.fired if v["name"] in EXPLODING]
    out.append(f"  exploding verdicts fired: {', '.join(v['name'] for v in c_fired) or 'none'}; "
               f"all losses, gradients and weights finite: {'yes' if c.finite else 'no'}")
    out.append("")
    mat = np.asarray(c.layer_grad_norms, dtype=np.float64).T
    out.append(C.fit(charts.heatmap(mat, row_labels=[str(l + 1) for l in range(mat.shape[0])],
                                    max_cols=max(20, min(60, width - 20)),
                                    title="run 2: log10 ‖∂L/∂W_l‖ (before clipping), layers (rows) × steps"), width))
    return C.finish(out, res, width)


def panels(res):
    """The PNG's panels: both runs' losses (each in its own panel, so neither hides the other), the
    plain run's per-layer norms at step 1, the clipped run's per-layer gradient norms per step."""
    p, c = res.plain, res.clipped
    stop = next((i + 1 for i, v in enumerate(p.loss) if not math.isfinite(v)), None)
    plain_title = ("exploding: loss per step, plain SGD" + (f" (non-finite from step {stop}: the run stops)"
                                                           if stop else ""))
    return [
        dict(kind="lines", series={"plain SGD": p.loss}, logy=True, xlabel="step", ylabel="loss", title=plain_title),
        dict(kind="lines", series={f"clipped (global norm {res.clip:g})": c.loss}, logy=True, xlabel="step",
             ylabel="loss", title="the same net and data with global-norm clipping: loss per step"),
        dict(kind="lines", series={"‖∂L/∂W_l‖": p.layer_grad_norms[0], "‖E_l‖": p.error_norms[0]}, logy=True,
             xlabel="layer", title="plain run, step 1: per-layer gradient and error norms", output_layer=True),
        dict(kind="heat", matrix=np.asarray(c.layer_grad_norms).T, xlabel="step", ylabel="layer",
             title="clipped run: log10 ‖∂L/∂W_l‖ before clipping", output_layer=True),
    ]


def plot(res, path):
    from .. import charts

    return charts.save_panels(path, panels(res))
