"""Demo: a BatchNorm before every sigmoid lets a deep sigmoid net's gradient reach its first layers, and the net train.

What the source texts say about batch normalisation (quoted, with a translation):

* [S1], under "梯度消失和爆炸" (vanishing and exploding gradients), whose causes include the
  sigmoid's derivative below one ("导数小于一,因此累乘会逐渐变小": the derivative is below one, so
  the product keeps shrinking): "解决:(1)用ReLU、Leaky-ReLU、P-ReLU、R-ReLU、Maxout等替代sigmoid函数。
  (2)用Batch Normalization。" -- "Solutions: (1) replace the sigmoid with ReLU, Leaky-ReLU, P-ReLU,
  R-ReLU, Maxout, ...; (2) use Batch Normalization" (then LSTM, clipping, regularisation, fewer layers).
* [S3], a question on training nets "com não linearidades que sofrem com o desaparecimento"
  (with nonlinearities that suffer from the vanishing gradient): "Sei que a maneira padrão (atual) é
  usar a normalização de lote [BN] ou simplesmente abandonar a não linearidade e usar as unidades
  ReLu" -- "I know the standard (current) way is to use batch normalisation [BN], or simply to drop
  the nonlinearity and use ReLU units"; BN "parece funcionar apenas para não linearidades
  específicas. Por exemplo, para sigmóides, tanh" -- "seems to work only for specific
  nonlinearities, for example sigmoids, tanh", and "a maior parte da pesquisa é para mostrar que
  funciona para sigmóides" -- "most of the research is to show that it works for sigmoids"
  (citing Ioffe and Szegedy 2015, "Batch normalization: accelerating deep network training by
  reducing internal covariate shift").
* [S4]: "Было бы классно, если бы после каждого слоя, внутри нашей сетки, данные оказывались
  нормализованы. Тогда бы градиентный спуск работал эффективнее. [...] Она называется нормализацией
  по батчам." -- "It would be great if after every layer, inside our net, the data came out
  normalised [mean subtracted, divided by the standard deviation]. Then gradient descent would work
  more efficiently. [...] It [the technique that keeps every layer's outputs normalised] is called
  batch normalisation."

So the texts claim that BN is a remedy for the vanishing gradient of sigmoid (and tanh) nets, and
that with every layer's outputs normalised gradient descent works (more efficiently). They do not
claim that BN allows larger learning rates, reduces the dependence on the initialisation or
regularises: those are the cited paper's claims, which this demo does not test. [S0] and [S2]
do not mention it.

The claim tested: *in a deep sigmoid net, a BatchNorm before every sigmoid keeps the first layer's
gradient from vanishing -- between 0.1x and 1000x the last hidden layer's -- while in the plain net
of the same depth and the same weights it is more than 1000x smaller; trained the same way, the
BatchNorm net's loss falls below half the chance level ln 2 while the plain net's stays above
0.9·ln 2.*

The form "within a factor of 10" (as for residual blocks) does **not** hold (it fails for 48 of
seeds 0-49): BatchNorm turns the
plain net's decay towards the input into a growth. ‖∂L/∂W_l‖ is roughly flat over the upper layers
and rises towards the input, steepest in the first few layers (seed 0: 0.24 at layer 31, 0.3-0.4
over layers 14-22, about 2 at layers 4-7, 7.7 at layer 1), so first / last hidden is 6.8-208 at
depth 30 over seeds 0-49 (within 10 only for seeds 9 and 14) and 66-607 at depth 60-100 (seeds
0-2): the gradient growth of deep BatchNorm nets at initialisation (Yang et al. 2019, "A mean field
theory of batch normalization"). The claim therefore bounds the ratio from above by the monitor's
``grad_ratio_exploding`` threshold (1e3) instead of 10.

Why: in the plain net each layer multiplies the backpropagated error by Wᵀ·σ'(Z) with σ' ≤ 1/4
(docs/backprop.md), so with Xavier weights it shrinks about 4x per layer -- and so does the spread
of the forward signal: the batch standard deviation of a unit's pre-activation is 0.17, 0.039,
0.009, 0.002, ... in layers 1, 2, 3, 4 (median over units, seed 0), until every sample gives the
same output. Between a Dense layer and its sigmoid, BatchNorm divides each unit's pre-activation by
its batch standard deviation (here 0.16-0.24 in every layer: s = 1/std ≈ 4-6) and its backward pass
multiplies the error by the same s (dx = (s/m)·(m·dx̂ − ...), docs/layers.md), while the sigmoid's
inputs, now of mean 0 and variance 1, give a mean σ' of 0.20: s·σ' ≈ 1 per layer, whatever the
weights' scale.

Setup (all seeded by ``seed``): the moons data set (``nnlab.datasets.moons``, ``samples`` points, 2
classes). Both nets have ``depth + 1`` hidden layers of ``width`` units -- an input layer from the 2
features, then ``depth`` layers ``Dense(width, width)`` -- and a linear output ``Dense(width, 2)``;
softmax cross-entropy, Xavier-normal weights, zero biases. In the plain net every hidden layer is
``Dense(n, width, activation=activation)``; in the BatchNorm net it is ``Dense(n, width)``, ``BatchNorm(width)``
(γ = 1, β = 0, eps 1e-5, momentum 0.1: torch's ``BatchNorm1d``), ``Activation(activation)``. The plain net is
built with ``Sequential(..., seed=seed)`` and its Dense weights and biases are copied into the
BatchNorm net, so both start from *identical* Dense parameters (the result's ``same_weights``): the
normalisation is the only difference. Each net trains with the fused :class:`~nnlab.Trainer`,
``Adam(lr)``, ``steps`` full-batch steps (in training mode: the batch's statistics, and the running
statistics move once per step) and a :class:`~nnlab.GradientMonitor`, whose first recorded step --
computed before any update -- gives ‖∂L/∂W_l‖ at initialisation for the ``depth + 2`` Dense layers
(l = 1 the input layer, l = depth + 1 the last hidden layer, l = depth + 2 the output layer; the
BatchNorm rows of the monitor, γ's gradient, are not among them). The final loss and accuracy are
:meth:`~nnlab.Trainer.evaluate` after the last step: eval mode, so the BatchNorm net normalises with
its running statistics; its final loss in training mode (the batch's statistics) is shown beside it.
The chance-level loss is ln 2. ``activation="tanh"`` runs the same with tanh.

The claim held when all four parts hold: (1) the plain ratio ‖∂L/∂W_1‖ / ‖∂L/∂W_{depth+1}‖ (first
layer over last hidden layer) is below 1e-3 (:data:`PLAIN_BELOW`, the monitor's
``grad_ratio_vanishing``); (2) the BatchNorm ratio lies in [0.1, 1000] (:data:`BN_BAND`: not
vanishing, and not exploding by the monitor's ``grad_ratio_exploding``); (3) the BatchNorm net's
final loss is below 0.5·ln 2 = 0.347 (:data:`TRAINED_BELOW`, the monitor's
``plateau_chance_fraction``); (4) the plain net's final loss is above 0.9·ln 2 = 0.624
(:data:`STALLED_ABOVE`, the monitor's ``plateau_chance_stuck``: it learned nothing).

Measured at the defaults (depth 30, width 32, 200 samples, 200 steps, Adam lr 0.01), each of seeds
0-4 checked: plain ratio 2.8e-20, 2.7e-20, 3.7e-20, 8.5e-20, 1.8e-18; BatchNorm ratio 31.3, 35.8,
11.8, 20.6, 54.1; BatchNorm final loss 0.0012, 0.0017, 0.0014, 0.0008, 0.0007 (accuracy 100%); plain
final loss 0.6931 = ln 2 (accuracy 50%) every time. The claim holds for every one of seeds 0-4, and
of seeds 0-49 (BatchNorm ratio 6.8-208, final loss at most 0.0018 except seed 7: 0.31 in eval mode,
0.028 in training mode -- the running statistics lag the last steps' weights); at the tests' size
(depth 16, width 16, 100 samples, 150 steps) for every one of seeds 0-19. It fails where the
texts' premise does not apply: with ``activation="tanh"`` the plain Xavier net does not lose its
gradient (ratio 0.23-1.55, seeds 0-4) and partly trains (final loss 0.39-0.69), so part (1) fails
for every seed and part (4) for 4 of the 5, while BatchNorm still trains the net (final loss
0.0003-0.19); at ``depth=4`` (seeds 0-2)
the plain ratio is 2.6e-3..9.1e-3 and the plain net trains too (final loss 0.01-0.24). It also fails
in a 100-layer stack (``depth=100``, seeds 0-2): the BatchNorm ratio is still within bounds
(287-607) but 200 steps do not train the net (eval-mode loss 0.54-0.66). After 50 steps instead of
200 the BatchNorm net's training-mode loss is 0.004-0.48 but its eval-mode loss 0.11-1.25 (seeds
0-4; the claim fails for 4 of them): the running statistics (momentum 0.1) have not caught up yet.

>>> from nnlab.demos import batchnorm
>>> r = batchnorm.run(depth=4, width=8, samples=32, steps=3)
>>> len(r.plain.grad_norms), len(r.batchnorm.grad_norms), r.same_weights
(6, 6, True)
"""

import math
from dataclasses import dataclass

import numpy as np

from . import _common as C

NAME = "batchnorm"
SUMMARY = "Deep sigmoid nets with and without BatchNorm: per-layer gradient norms and training loss."
CLAIM = ("In a deep sigmoid net a BatchNorm before every sigmoid keeps the first layer's gradient from vanishing, "
         "between 0.1x and 1000x the last hidden layer's, while in the plain net of the same depth and weights it "
         "is more than 1000x smaller, and trained the same way the BatchNorm net's loss falls below half the "
         "chance level ln 2 while the plain one's stays above 0.9·ln 2")
OPTIONS = (
    C.Option("depth", "int", 30, "Dense(width, width) layers between the input and output layers.", low=2,
             high=300),
    C.Option("width", "int", 32, "Units per hidden layer.", low=2, high=512),
    C.Option("samples", "int", 200, "Points of the moons data set (one full batch).", low=8, high=100000),
    C.Option("steps", "int", 200, "Full-batch Adam steps per net.", low=1, high=100000),
    C.Option("lr", "float", 0.01, "Adam learning rate.", low=0, low_open=True, high=10.0),
    C.Option("activation", "choice", "sigmoid", "The hidden layers' activation (with tanh the plain Xavier net "
             "does not lose its gradient: the claim fails).", choices=("sigmoid", "tanh")),
)
PLAIN_BELOW = 1e-3            # (1) the plain ratio first/last hidden is below this
BN_BAND = (0.1, 1e3)          # (2) the BatchNorm ratio lies in this band
TRAINED_BELOW = 0.5           # (3) BatchNorm final loss < 0.5 x the chance-level loss
STALLED_ABOVE = 0.9           # (4) plain final loss > 0.9 x the chance-level loss
INIT = "xavier_normal"
KINDS = ("plain", "batchnorm")


@dataclass
class NetRecord:
    """One net: per-Dense-layer norms at initialisation (layer 1 first, the output layer last) and its training."""

    kind: str                 # "plain" or "batchnorm"
    labels: list              # the monitor's label of each Dense layer, e.g. "3 Dense (identity)"
    grad_norms: list          # ‖∂L/∂W_l‖ at initialisation, l = 1..depth+2 (Dense layers only)
    error_norms: list         # ‖E_l‖ at initialisation (E_l = ∂L/∂Z_l of the Dense layer)
    ratio: float              # grad_norms[0] / grad_norms[-2]: first layer / last hidden layer
    out_ratio: float          # grad_norms[0] / grad_norms[-1]: first layer / output layer (not judged)
    loss: list                # per step, the step's (pre-update) loss
    final_loss: float         # after the last update, eval mode (Trainer.evaluate; running statistics)
    accuracy: float           # after the last update, eval mode
    final_train_loss: float   # after the last update, training mode (the batch's statistics)
    verdicts: list            # the monitor's verdicts that fired: {"name", "step", "evidence"}
    running_mean_absmax: float = None  # BatchNorm net: max |running_mean| after training (started at 0)
    running_var_range: list = None     # BatchNorm net: [min, max] of running_var after training (started at 1)


@dataclass
class BatchNormResult:
    claim: str
    depth: int
    width: int
    samples: int
    steps: int
    lr: float
    activation: str
    seed: int
    chance_loss: float = None
    same_weights: bool = None  # both nets started from identical Dense parameters
    plain: NetRecord = None
    batchnorm: NetRecord = None
    held: bool = False
    reason: str = ""

    @property
    def n_layers(self):
        return self.depth + 2

    def to_dict(self):
        d = C.jsonable(self)
        d["demo"] = NAME
        d["n_layers"] = self.n_layers
        d["ratio"] = ("grad_norms[0] / grad_norms[-2] = ||dL/dW_1|| / ||dL/dW_{depth+1}|| (first Dense layer / last "
                      "hidden Dense layer); out_ratio = grad_norms[0] / grad_norms[-1] (output layer, not judged)")
        d["thresholds"] = {"plain_below": PLAIN_BELOW, "batchnorm_band": list(BN_BAND),
                           "trained_below": TRAINED_BELOW * self.chance_loss,
                           "stalled_above": STALLED_ABOVE * self.chance_loss}
        return d


def build_net(kind, depth, width, seed, activation="sigmoid", n_in=2, n_out=2):
    """The demo's network: ``kind`` "plain" or "batchnorm" (see the module docstring), freshly initialised."""
    from ..layers import Activation, BatchNorm
    from ..network import Dense, Sequential

    layers = []
    for n in [n_in] + [width] * depth:
        if kind == "plain":
            layers.append(Dense(n, width, activation=activation, init=INIT))
        else:
            layers += [Dense(n, width, init=INIT), BatchNorm(width), Activation(activation)]
    layers.append(Dense(width, n_out, init=INIT))
    return Sequential(layers, loss="softmax_cross_entropy", seed=seed)


def _dense_params(net):
    return [p for name, p in zip(net.param_names(), net.params()) if name.endswith((".W", ".b"))]


def build_nets(depth, width, seed, activation="sigmoid", n_in=2, n_out=2):
    """(plain, batchnorm, same_weights): the plain net, and the BatchNorm net with the plain net's Dense weights
    and biases copied in (γ = 1, β = 0, running statistics 0 and 1)."""
    plain = build_net("plain", depth, width, seed, activation, n_in, n_out)
    bn = build_net("batchnorm", depth, width, seed, activation, n_in, n_out)
    source = iter(_dense_params(plain))
    bn.set_params([next(source) if name.endswith((".W", ".b")) else p
                   for name, p in zip(bn.param_names(), bn.params())])
    a, b = _dense_params(plain), _dense_params(bn)
    same = bool(len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b)))
    return plain, bn, same


def _ratio(a, b):
    if b > 0:
        return a / b
    return math.nan if a == 0 or math.isnan(a) else math.inf


def train_net(kind, net, X, y, steps, lr):
    """Train ``net`` in place as the demo does; returns (its :class:`NetRecord`, the chance-level loss)."""
    from ..diagnostics import GradientMonitor
    from ..optim import Adam
    from ..trainer import Trainer

    mon = GradientMonitor(net)
    trainer = Trainer(net, Adam(lr=lr), monitor=mon)
    losses = C.train_steps(trainer, X, y, steps, f"{kind} net")
    final, acc = trainer.evaluate(X, y)
    train_loss = net.loss(X, y, training=True)  # the batch's statistics; moves no running statistic
    dense = [i for i, layer in enumerate(mon.layers) if layer.kind == "Dense"]
    g = mon.series("grad_norm")[0][dense].tolist()  # step 1: computed before the first update
    e = mon.series("error_norm")[0][dense].tolist()
    fired = [{"name": v.name, "step": v.step, "evidence": v.evidence} for v in mon.verdicts() if v.fired]
    rec = NetRecord(kind, [mon.layers[i].label for i in dense], g, e, _ratio(g[0], g[-2]), _ratio(g[0], g[-1]),
                    losses, float(final), float(acc), float(train_loss), fired)
    bufs = dict(zip(net.buffer_names(), net.buffers()))
    means = [v for name, v in bufs.items() if name.endswith("running_mean")]
    variances = [v for name, v in bufs.items() if name.endswith("running_var")]
    if means:
        rec.running_mean_absmax = float(max(np.max(np.abs(m)) for m in means))
        rec.running_var_range = [float(min(np.min(v) for v in variances)), float(max(np.max(v) for v in variances))]
    return rec, mon.chance_loss


def run(depth=30, width=32, samples=200, steps=200, lr=0.01, activation="sigmoid", seed=0):
    """Train the plain and the BatchNorm net from the same Dense weights; see the module docstring."""
    from .. import datasets
    from ..network import share_executor

    o = C.check_options(OPTIONS, dict(depth=depth, width=width, samples=samples, steps=steps, lr=lr,
                                      activation=activation))
    C.check_sizes(NAME, o)
    seed = C.check_seed(seed)
    res = BatchNormResult(CLAIM, o["depth"], o["width"], o["samples"], o["steps"], o["lr"], o["activation"], seed)
    X, y = datasets.moons(n=res.samples, seed=seed)
    plain, bn, res.same_weights = build_nets(res.depth, res.width, seed, res.activation)
    share_executor(plain, bn)  # one compiled executor for both (the same bits as each one's own)
    with np.errstate(all="ignore"):
        res.plain, res.chance_loss = train_net("plain", plain, X, y, res.steps, res.lr)
        res.batchnorm, _ = train_net("batchnorm", bn, X, y, res.steps, res.lr)
    _judge(res)
    return res


def _judge(res):
    p, b, chance = res.plain, res.batchnorm, res.chance_loss
    lo, hi = BN_BAND
    trained_below, stalled_above = TRAINED_BELOW * chance, STALLED_ABOVE * chance
    parts = [
        (p.ratio < PLAIN_BELOW, f"plain ratio {C.sci(p.ratio)} {'<' if p.ratio < PLAIN_BELOW else 'not <'} "
                                f"{PLAIN_BELOW:g}"),
        (lo <= b.ratio <= hi, f"BatchNorm ratio {C.sci(b.ratio)} {'within' if lo <= b.ratio <= hi else 'outside'} "
                              f"[{lo:g}, {hi:g}]"),
        (b.final_loss < trained_below, f"BatchNorm final loss {b.final_loss:.4f} "
                                       f"{'<' if b.final_loss < trained_below else 'not <'} {trained_below:.4f} "
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


def render(res, width=100):
    """The text ``nnlab demo batchnorm`` prints: setup, per-layer table and bars, loss chart, verdicts."""
    from .. import charts

    p, b, n, act = res.plain, res.batchnorm, res.n_layers, res.activation
    out = C.header(res, width, (
        f"moons ({res.samples} points, 2 classes, seed {res.seed}); both nets: {res.depth + 1} hidden layers of "
        f"{res.width} {act} units (Dense(2, {res.width}), then {res.depth} Dense({res.width}, {res.width})), linear "
        f"Dense({res.width}, 2); {INIT} Dense weights "
        f"({'identical in both nets' if res.same_weights else 'NOT identical'}), zero biases, softmax "
        f"cross-entropy. Plain: Dense(..., activation=\"{act}\"); BatchNorm: Dense -> BatchNorm({res.width}) -> "
        f"Activation(\"{act}\") in every hidden layer. Adam lr {res.lr:g}, {res.steps} full-batch steps "
        f"(the fused Trainer)."))
    out.append("")
    out.append("‖∂L/∂W_l‖ of the Dense layers at initialisation (the monitor's step 1, before any update)")
    lab = len(f"{n} out")
    rows = []
    for i in range(n):
        tag = "in" if i == 0 else ("out" if i == n - 1 else ("last" if i == n - 2 else ""))
        rows.append([f"{i + 1} {tag}".rstrip(), C.sci(p.grad_norms[i]), C.sci(b.grad_norms[i]),
                     C.sci(_ratio(b.grad_norms[i], p.grad_norms[i]))])
    out += C.table(["layer", "plain", "BatchNorm", "BatchNorm / plain"], rows)
    out.append("('last' = the last hidden layer)")
    out.append("")
    vals = [v for v in p.grad_norms + b.grad_norms if v > 0 and math.isfinite(v)]
    lo = math.floor(math.log10(min(vals))) if vals else -1
    hi = math.ceil(math.log10(max(vals))) if vals else 0
    hi = hi if hi > lo else lo + 1
    bw = max(8, min(30, (width - lab - 4) // 2 - 2))
    out.append(f"log10 ‖∂L/∂W_l‖: each bar spans 1e{lo:+d} .. 1e{hi:+d} ({(hi - lo) / bw:.2g} decades per █)")
    out.append("layer".ljust(lab) + "  " + "plain".ljust(bw) + "  BatchNorm")
    for i in range(n):
        tag = f"{i + 1}" + (" out" if i == n - 1 else "")
        bars = charts.bar(p.grad_norms[i], lo, hi, bw) + "  " + charts.bar(b.grad_norms[i], lo, hi, bw)
        out.append(tag.rjust(lab) + "  " + bars.rstrip())
    out.append("")
    out.append(f"ratio = ‖∂L/∂W_1‖ / ‖∂L/∂W_{n - 1}‖ (first layer / last hidden layer); the output layer "
               f"(not judged) in brackets")
    for rec, name in ((p, "plain"), (b, "BatchNorm")):
        out.append(f"  {name.ljust(9)}  ratio {C.sci(rec.ratio)}  (first / output {C.sci(rec.out_ratio)})")
    out.append("")
    out.append(f"training loss per step (log scale; • = the chance level ln 2 = {res.chance_loss:.4f}):")
    chance = [res.chance_loss] * len(p.loss)
    out.append(charts.line_plot({"ln 2": chance, "plain": p.loss, "BatchNorm": b.loss},
                                width=C.chart_width(width), height=10, logy=True))
    rows = [[name, f"{rec.loss[0]:.4f}", f"{rec.final_train_loss:.4f}", f"{rec.final_loss:.4f}", f"{rec.accuracy:.1%}"]
            for rec, name in ((p, "plain"), (b, "BatchNorm"))]
    out += C.table(["net", "first loss", "final (train mode)", "final (eval mode)", "accuracy"], rows)
    out += C.wrap("(train mode normalises with the batch's statistics, eval mode with the running statistics; "
                  "the verdict uses eval mode)", width)
    if b.running_var_range is not None:
        out += C.wrap(f"BatchNorm running statistics after {res.steps} steps (momentum 0.1; started at mean 0, "
                      f"variance 1): max |running_mean| {b.running_mean_absmax:.3g}, running_var in "
                      f"[{b.running_var_range[0]:.3g}, {b.running_var_range[1]:.3g}]", width)
    out.append("")
    for rec, name in ((p, "plain"), (b, "BatchNorm")):
        names = ", ".join(f"{v['name']} (step {v['step']})" if v["step"] else v["name"] for v in rec.verdicts)
        out += C.wrap(f"monitor verdicts fired for the {name} net: {names or 'none'}", width)
    return C.finish(out, res, width)


def plot(res, path):
    """PNG: ‖∂L/∂W_l‖ per Dense layer at initialisation (log scale) and the training loss of both nets."""
    from .. import charts

    p, b = res.plain, res.batchnorm
    return charts.save_panels(path, [
        dict(kind="lines", series={"plain": p.grad_norms, "BatchNorm": b.grad_norms}, logy=True, xlabel="layer",
             ylabel="‖∂L/∂W_l‖",
             title=f"batchnorm: {res.activation}, depth {res.depth} + in/out, width {res.width}, seed {res.seed}, "
                   f"at initialisation", output_layer=True),
        dict(kind="lines", series={"plain": p.loss, "BatchNorm": b.loss}, logy=True, xlabel="step", ylabel="loss",
             title=f"training loss, Adam lr {res.lr:g}",
             hlines={"chance ln 2": res.chance_loss, "0.5·ln 2": TRAINED_BELOW * res.chance_loss}),
    ])
