"""Demo: a plain RNN's gradient fades exponentially back in time, an LSTM's does not, and only the LSTM learns.

The claim, from the source texts ([S1]: "the structure of the LSTM also eases the vanishing
gradient in RNNs"; an RNN's total gradient does not vanish, but the part from distant steps does, so
the gradient is dominated by the near steps and the model can hardly learn long-range dependencies;
where the forget gate is near 1 -- "e.g. by initialising the forget bias to a large positive number,
so that the forget gate saturates" -- the distant gradient does not vanish; [S0]: truncated
backpropagation through time for recurrent nets): *on the adding problem with T = 50 steps, at
initialisation the tanh RNN's ‖∂L/∂h_t‖ shrinks exponentially going back in time while the LSTM's,
its forget bias at 3, does not; trained the same way, the LSTM solves the task and the RNN stays at
the baseline.*

Why: the gradient reaching h_{t−1} from h_t in an RNN is one Jacobian diag(tanh'(z_t))·W_hhᵀ; with
the orthogonal W_hh of the default initialisation its singular values are those of tanh' ≤ 1, so
every step back multiplies the gradient by a factor below 1 (docs/layers.md, RNN). The LSTM's cell
carries its gradient back as dc_{t−1} = dc_t ⊙ f_t: no weight matrix, no squashing derivative, only
the forget gate, σ(3) ≈ 0.95 per step with the bias at 3 (and the gradient reaching h_{t−1} is
dc_t's through the gates). With nnlab's default forget bias 1, f ≈ σ(1) ≈ 0.73 and the LSTM's
gradient at initialisation falls *faster* than the RNN's (see below); the LSTM can still learn to
keep f near 1 where it must remember (seed 0: one of its 32 units ends with a mean forget gate of
0.98), the RNN has no such path.

Setup (all seeded by ``seed``): ``nl.datasets.load("adding", n=samples + test, T=T, seed=seed)``,
the first ``samples`` sequences for training, the last ``test`` for testing (y: the sum of the two
marked values; always predicting 1.0 has plain MSE Var(y) = 1/6 ≈ 0.167, the baseline). Two
networks, float32, ``Sequential(..., seed=seed)``: ``RNN(2, hidden)`` (tanh) and
``LSTM(2, hidden, forget_bias=forget_bias)``, each with a linear head ``Dense(hidden, 1)`` on the
last state h_T, loss ``mse``. Both train with the fused :class:`~nnlab.Trainer`, ``Adam(lr)``,
``clip=("global_norm", 1)``, ``epochs`` epochs of mini-batches of ``batch`` (``fit(..., seed=seed)``).
Before training and after every epoch, a :class:`~nnlab.GradientMonitor` observes the first ``probe``
(256, or all if fewer) training sequences -- one ``loss_and_grads``, no update -- and
``time_grad_norms()`` gives ‖∂L/∂h_t‖ for t = 1..T: the gradient of the batch's loss (mean over the
sequences) reaching the hidden state at step t, over the batch and the hidden units. The test MSE is
the plain mean squared error mean((ŷ − y)²) of the test sequences (nnlab's ``mse`` loss is half of
it) before training and after every epoch.

The measured numbers, per net and per moment (at initialisation, after training):

* ``factor``: exp(−s), s the slope of the least-squares line through log ‖∂L/∂h_t‖ against t over
  t = 1..T−1 -- the factor by which the gradient changes per step back in time (< 1: it shrinks).
  h_T is left out of the fit: it alone receives the head's gradient directly; for the LSTM the
  passage from h_T to h_{T−1} runs through the gates once and costs a one-off factor of about 10
  that says nothing about the rate (for the RNN that step is like any other). Only positive finite
  norms enter the fit (after training a float32 gradient can underflow to 0); ``r2`` is the fit's
  coefficient of determination.
* ``ratio``: ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖, the whole span.

The claim held when all six parts hold: at initialisation (1) the RNN's factor is below 0.95
(:data:`RNN_FACTOR_BELOW`) and (2) its ratio below 0.1 (:data:`RNN_RATIO_BELOW`); (3) the LSTM's
factor is at least 0.97 (:data:`LSTM_FACTOR_ABOVE`) and (4) its ratio above 0.01
(:data:`LSTM_RATIO_ABOVE`: within a factor of 100 over the T steps, the one-off factor of the last
step included); after training (5) the LSTM's test MSE is below 0.05 (:data:`SOLVED_BELOW`) and (6)
the RNN's is above 0.125 (:data:`UNSOLVED_ABOVE`, three quarters of the 1/6 baseline).

Measured at the defaults (T 50, hidden 32, 4000 training and 1000 test sequences, 15 epochs of
batch 64, Adam lr 0.01, forget bias 3), each of seeds 0-4 checked: RNN factor 0.902, 0.884, 0.930,
0.907, 0.935 (R² ≥ 0.996: exponential), ratio 6.9e-3, 3.0e-3, 3.3e-2, 9.1e-3, 4.0e-2; LSTM factor
0.997, 1.021, 1.015, 1.026, 1.017, ratio 0.055, 0.18, 0.15, 0.14, 0.12; final test MSE LSTM
0.0009, 0.0012, 0.0011, 0.0007, 0.0009, RNN 0.169, 0.180, 0.155, 0.166, 0.173. The claim holds
for every one of seeds 0-19 (RNN factor 0.884-0.938, LSTM factor 0.991-1.045, LSTM test MSE below
0.05 after epoch 5-10, RNN test MSE 0.152-0.232 at the end). After training the RNN's gradient
fades faster still (factor 0.41-0.93), the LSTM's stays level (0.994-1.008, ratio 0.06-0.20). It
does not hold with nnlab's default forget bias 1: at initialisation the LSTM's factor is then
0.825-0.864 (seeds 0-4), below the RNN's, though the LSTM still learns the task and its gradient
is level after training; nor for short sequences: at ``T=6`` the RNN learns the task too.

>>> from nnlab.demos import lstm
>>> r = lstm.run(T=6, hidden=4, samples=32, test=16, epochs=1)
>>> len(r.rnn.init_norms), len(r.lstm.norms_by_epoch), r.probe
(6, 2, 32)
"""

import math
from dataclasses import dataclass

import numpy as np

from .. import progress as _progress
from . import _common as C

NAME = "lstm"
SUMMARY = "RNN vs LSTM on the adding problem: ‖∂L/∂h_t‖ per time step, its decay per step, and test MSE."
CLAIM = ("On the adding problem with long sequences, at initialisation the tanh RNN's gradient ‖∂L/∂h_t‖ "
         "shrinks exponentially going back in time (fitted factor per step below 0.95, ‖∂L/∂h_1‖/‖∂L/∂h_T‖ "
         "below 0.1) while the LSTM's, its forget bias at 3, does not (factor at least 0.97, ratio above 0.01), "
         "and trained the same way the LSTM's test MSE falls below 0.05 while the RNN's stays above 0.125, three "
         "quarters of the 1/6 of always predicting 1")
OPTIONS = (
    C.Option("T", "int", 50, "Steps per sequence of the adding problem.", low=4, high=1000),
    C.Option("hidden", "int", 32, "Hidden units of the RNN and of the LSTM.", low=1, high=512),
    C.Option("samples", "int", 4000, "Training sequences.", low=16, high=100000),
    C.Option("test", "int", 1000, "Test sequences (the test MSE).", low=1, high=100000),
    C.Option("epochs", "int", 15, "Training epochs of each net.", low=1, high=1000),
    C.Option("batch", "int", 64, "Sequences per mini-batch.", low=1, high=100000),
    C.Option("lr", "float", 0.01, "Adam learning rate.", low=0, low_open=True, high=10.0),
    C.Option("forget_bias", "float", 3.0, "Initial bias of the LSTM's forget gate (nnlab's LSTM default: 1).",
             low=-20.0, high=20.0),
)
RNN_FACTOR_BELOW = 0.95      # (1) the RNN's fitted factor per step at initialisation is below this
RNN_RATIO_BELOW = 0.1        # (2) the RNN's ‖∂L/∂h_1‖/‖∂L/∂h_T‖ at initialisation is below this
LSTM_FACTOR_ABOVE = 0.97     # (3) the LSTM's fitted factor per step at initialisation is at least this
LSTM_RATIO_ABOVE = 0.01      # (4) the LSTM's ratio at initialisation is above this
SOLVED_BELOW = 0.05          # (5) the LSTM's final test MSE (plain) is below this
UNSOLVED_ABOVE = 0.125       # (6) the RNN's final test MSE (plain) is above this
BASELINE = 1.0 / 6.0         # plain MSE of always predicting 1.0: Var(y) = 2·(1/12)
PROBE = 256                  # training sequences the monitor observes (all if fewer)
CLIP = 1.0                   # global-norm clipping threshold
DTYPE = "float32"
HEAT_LOW = -6                # the heat maps' lightest shade: ‖∂L/∂h_t‖/‖∂L/∂h_T‖ at or below 1e-6


@dataclass
class NetRecord:
    """One net: ‖∂L/∂h_t‖ (t = 1..T) before training and after every epoch, its fits, its training."""

    kind: str                 # "RNN" or "LSTM"
    label: str                # the monitor's label of the recurrent layer, e.g. "1 RNN (tanh)"
    norms_by_epoch: list      # [e][t-1]: ‖∂L/∂h_t‖ after epoch e (e = 0: at initialisation)
    probe_loss: list          # [e]: the monitor's loss (nnlab's mse, ½·MSE) on the probe sequences
    init_norms: list          # norms_by_epoch[0]
    init_factor: float        # exp(-slope) of log ‖∂L/∂h_t‖ over t = 1..T-1 at initialisation
    init_r2: float            # the fit's R²
    init_ratio: float         # ‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ at initialisation
    trained_norms: list       # norms_by_epoch[-1]
    trained_factor: float
    trained_r2: float
    trained_ratio: float
    fit_points: list          # [e]: norms that entered the fit (positive, finite, t < T)
    epoch_loss: list          # [e-1]: training loss of epoch e (nnlab's mse, the fit's History.epoch_loss)
    test_mse: list            # [e]: plain test MSE after epoch e (e = 0: at initialisation)
    final_test_mse: float     # test_mse[-1]
    stopped: str              # why training stopped early (History.stopped), "" if it ran every epoch


@dataclass
class LstmResult:
    claim: str
    T: int
    hidden: int
    samples: int
    test: int
    epochs: int
    batch: int
    lr: float
    forget_bias: float
    seed: int
    probe: int = None
    baseline: float = BASELINE
    baseline_test: float = None  # plain MSE of always predicting 1.0 on the test sequences
    rnn: NetRecord = None
    lstm: NetRecord = None
    held: bool = False
    reason: str = ""

    def to_dict(self):
        d = C.jsonable(self)
        d["demo"] = NAME
        d["definitions"] = {
            "factor": ("exp(-slope) of the least-squares line through log ||dL/dh_t|| against t over t = 1..T-1 "
                       "(positive finite norms only): the factor per step back in time"),
            "ratio": "||dL/dh_1|| / ||dL/dh_T||",
            "test_mse": "plain mean((y_hat - y)^2) on the test sequences (nnlab's mse loss is half of it)",
            "norms_by_epoch": "[e][t-1] = ||dL/dh_t|| on the probe sequences after epoch e (e = 0: at initialisation)"}
        d["thresholds"] = {"rnn_factor_below": RNN_FACTOR_BELOW, "rnn_ratio_below": RNN_RATIO_BELOW,
                           "lstm_factor_above": LSTM_FACTOR_ABOVE, "lstm_ratio_above": LSTM_RATIO_ABOVE,
                           "solved_below": SOLVED_BELOW, "unsolved_above": UNSOLVED_ABOVE}
        d["clip"] = CLIP
        d["dtype"] = DTYPE
        return d


def decay_fit(norms):
    """(factor, r2, points) of ``norms`` = ‖∂L/∂h_t‖, t = 1..T: a least-squares line through
    log ‖∂L/∂h_t‖ against t over t = 1..T−1 (positive finite values only), factor = exp(−slope),
    the change per step back in time; NaN with fewer than 3 points."""
    v = np.asarray(norms, dtype=np.float64)[:-1]
    t = np.arange(1, v.size + 1, dtype=np.float64)
    keep = np.isfinite(v) & (v > 0)
    if keep.sum() < 3:
        return math.nan, math.nan, int(keep.sum())
    x, y = t[keep], np.log(v[keep])
    slope, icpt = np.polyfit(x, y, 1)
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - (slope * x + icpt)) ** 2)) / ss if ss > 0 else 1.0
    return math.exp(-slope), r2, int(keep.sum())


def span_ratio(norms):
    """‖∂L/∂h_1‖ / ‖∂L/∂h_T‖ (NaN if the last is 0 or either is non-finite)."""
    first, last = float(norms[0]), float(norms[-1])
    if not (math.isfinite(first) and math.isfinite(last)) or last <= 0:
        return math.nan
    return first / last


def build_net(kind, hidden, seed, forget_bias=3.0):
    """The demo's network: ``kind`` "RNN" (tanh) or "LSTM", a linear head on the last state."""
    from ..layers import LSTM, RNN
    from ..network import Dense, Sequential

    layer = RNN(2, hidden) if kind == "RNN" else LSTM(2, hidden, forget_bias=forget_bias)
    return Sequential([layer, Dense(hidden, 1)], loss="mse", seed=seed, dtype=DTYPE)


def _test_mse(net, X, y):
    pred = np.asarray(net.forward(X), dtype=np.float64).ravel()
    return float(np.mean((pred - y) ** 2))


def _train(kind, net, Xtr, ytr, Xte, yte, probe, epochs, batch, lr, seed):
    from ..diagnostics import GradientMonitor
    from ..optim import Adam
    from ..trainer import Trainer

    mon = GradientMonitor(net)
    Xp, yp = Xtr[:probe], ytr[:probe]
    norms, probe_loss, test = [], [], []

    def record():
        probe_loss.append(float(mon.observe(Xp, yp)))
        (label, g), = mon.time_grad_norms().items()
        norms.append(np.asarray(g, dtype=np.float64).tolist())
        test.append(_test_mse(net, Xte, yte))
        return label

    label = record()
    trainer = Trainer(net, Adam(lr=lr), clip=("global_norm", CLIP))
    def after_epoch(epoch, history):
        record()
        return False

    history = trainer.fit(Xtr, ytr, epochs=epochs, batch_size=batch, seed=seed, callback=after_epoch,
                          progress=_progress.enabled() and f"training the {kind}")
    f0, r0, _ = decay_fit(norms[0])
    f1, r1, _ = decay_fit(norms[-1])
    return NetRecord(kind, label, norms, probe_loss, norms[0], f0, r0, span_ratio(norms[0]), norms[-1], f1, r1,
                     span_ratio(norms[-1]), [decay_fit(g)[2] for g in norms], [float(x) for x in history.epoch_loss],
                     test, test[-1], history.stopped)


def run(T=50, hidden=32, samples=4000, test=1000, epochs=15, batch=64, lr=0.01, forget_bias=3.0, seed=0):
    """Train the RNN and the LSTM on the adding problem; see the module docstring."""
    from .. import datasets

    o = C.check_options(OPTIONS, dict(T=T, hidden=hidden, samples=samples, test=test, epochs=epochs, batch=batch,
                                      lr=lr, forget_bias=forget_bias))
    C.check_sizes(NAME, o)
    seed = C.check_seed(seed)
    res = LstmResult(CLAIM, o["T"], o["hidden"], o["samples"], o["test"], o["epochs"], o["batch"], o["lr"],
                     o["forget_bias"], seed)
    X, y = datasets.load("adding", n=res.samples + res.test, T=res.T, seed=seed)
    Xtr, ytr, Xte, yte = X[:res.samples], y[:res.samples], X[res.samples:], y[res.samples:]
    res.probe = min(PROBE, res.samples)
    res.baseline_test = float(np.mean((1.0 - yte) ** 2))
    args = (Xtr, ytr, Xte, yte, res.probe, res.epochs, res.batch, res.lr, seed)
    with np.errstate(all="ignore"):
        res.rnn = _train("RNN", build_net("RNN", res.hidden, seed), *args)
        res.lstm = _train("LSTM", build_net("LSTM", res.hidden, seed, res.forget_bias), *args)
    _judge(res)
    return res


def _cmp(ok, yes, no):
    return yes if ok else no


def _judge(res):
    r, m = res.rnn, res.lstm
    ok = [r.init_factor < RNN_FACTOR_BELOW, r.init_ratio < RNN_RATIO_BELOW,
          m.init_factor >= LSTM_FACTOR_ABOVE, m.init_ratio > LSTM_RATIO_ABOVE,
          m.final_test_mse < SOLVED_BELOW, r.final_test_mse > UNSOLVED_ABOVE]
    parts = [
        (ok[0], f"RNN factor per step {r.init_factor:.3f} {_cmp(ok[0], '<', 'not <')} {RNN_FACTOR_BELOW:g}"),
        (ok[1], f"RNN ratio {C.sci(r.init_ratio)} {_cmp(ok[1], '<', 'not <')} {RNN_RATIO_BELOW:g}"),
        (ok[2], f"LSTM factor per step {m.init_factor:.3f} {_cmp(ok[2], '>=', 'not >=')} {LSTM_FACTOR_ABOVE:g}"),
        (ok[3], f"LSTM ratio {C.sci(m.init_ratio)} {_cmp(ok[3], '>', 'not >')} {LSTM_RATIO_ABOVE:g}"),
        (ok[4], f"LSTM test MSE {m.final_test_mse:.4f} {_cmp(ok[4], '<', 'not <')} {SOLVED_BELOW:g}"),
        (ok[5], f"RNN test MSE {r.final_test_mse:.4f} {_cmp(ok[5], '>', 'not >')} {UNSOLVED_ABOVE:g}"),
    ]
    res.held = all(ok)
    if res.held:
        res.reason = "at initialisation " + "; ".join(text for _, text in parts[:4]) + "; after training " + \
            "; ".join(text for _, text in parts[4:])
    else:
        failed = "; ".join(text for good, text in parts if not good)
        kept = "; ".join(text for good, text in parts if good)
        res.reason = f"fails: {failed}" + (f" (holds: {kept})" if kept else "")


def _rel(norms):
    """‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ for t = 1..T."""
    g = np.asarray(norms, dtype=np.float64)
    last = g[-1]
    with np.errstate(all="ignore"):
        return (g / last).tolist() if last > 0 and math.isfinite(last) else [math.nan] * g.size


def _shown_steps(T):
    """The time steps the table prints: 1, every ⌈T/10⌉-th, T−1 and T."""
    step = max(1, math.ceil(T / 10))
    return sorted({1, *range(step, T, step), T - 1, T})


def render(res, width=100):
    """The text ``nnlab demo lstm`` prints: setup, per-step table, decay chart and fits, heat maps, test MSE."""
    from .. import charts

    r, m, T = res.rnn, res.lstm, res.T
    out = C.header(res, width, (
        f"adding problem, T = {T} steps ({res.samples} training, {res.test} test sequences, seed {res.seed}); "
        f"RNN(2, {res.hidden}) tanh vs LSTM(2, {res.hidden}) with forget bias {res.forget_bias:g}, each with a "
        f"linear Dense({res.hidden}, 1) on h_T, {DTYPE}, mse. Adam lr {res.lr:g}, global-norm clipping at "
        f"{CLIP:g}, {res.epochs} epochs of batch {res.batch} (the fused Trainer). ‖∂L/∂h_t‖: "
        f"GradientMonitor.time_grad_norms() on the first {res.probe} training sequences."))
    out.append("")
    out.append("‖∂L/∂h_t‖ at initialisation, and relative to ‖∂L/∂h_T‖")
    rr, mr = _rel(r.init_norms), _rel(m.init_norms)
    rows = [[str(t), C.sci(r.init_norms[t - 1]), C.sci(rr[t - 1]), C.sci(m.init_norms[t - 1]), C.sci(mr[t - 1])]
            for t in _shown_steps(T)]
    out += C.table(["t", "RNN", "RNN rel", "LSTM", "LSTM rel"], rows)
    out.append("")
    out.append("‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ at initialisation against t (log scale):")
    out.append(charts.line_plot({"RNN": rr, "LSTM": mr}, width=C.chart_width(width), height=10, logy=True))
    out.append("")
    out.append(f"decay per step back in time: factor = exp(−slope) of log ‖∂L/∂h_t‖ over t = 1..{T - 1} "
               f"(R² of the fit); ratio = ‖∂L/∂h_1‖ / ‖∂L/∂h_{T}‖")
    rows = []
    for rec in (r, m):
        rows.append([rec.kind, "initialisation", f"{rec.init_factor:.4f}", f"{rec.init_r2:.3f}", C.sci(rec.init_ratio)])
        rows.append([rec.kind, f"after epoch {res.epochs}", f"{rec.trained_factor:.4f}", f"{rec.trained_r2:.3f}",
                     C.sci(rec.trained_ratio)])
    out += C.table(["net", "when", "factor", "R²", "ratio"], rows, align="llrrr")
    out.append("")
    cols = max(10, min(T, width - 12))
    for rec in (r, m):
        mat = np.array([_rel(g) for g in rec.norms_by_epoch])
        with np.errstate(all="ignore"):
            big = np.nanmax(np.where(mat > 0, mat, np.nan)) if np.any(mat > 0) else 1.0
        hi = max(0, math.ceil(math.log10(big))) if math.isfinite(big) else 0
        labels = ["init"] + [str(e) for e in range(1, len(rec.norms_by_epoch))]
        out.append(f"{rec.kind}: ‖∂L/∂h_t‖ / ‖∂L/∂h_T‖, epochs (rows; init = before training) × t = 1..{T} "
                   f"(columns)")
        out.append(C.fit(charts.heatmap(mat, row_labels=labels, max_cols=cols, lo=HEAT_LOW, hi=hi), width))
        out.append("")
    out.append(f"test MSE per epoch (log scale; • = always predicting 1.0, {res.baseline_test:.4f} on these "
               f"sequences, 1/6 in expectation):")
    x = list(range(max(len(r.test_mse), len(m.test_mse))))
    out.append(charts.line_plot({"baseline": [res.baseline_test] * len(x), "RNN": r.test_mse, "LSTM": m.test_mse},
                                x=x, width=C.chart_width(width), height=10, logy=True))
    for rec in (r, m):
        if rec.stopped:
            out += C.wrap(f"{rec.kind}: {rec.stopped}", width)
    rows = [[rec.kind, f"{rec.test_mse[0]:.4f}", f"{rec.final_test_mse:.4f}", f"{rec.epoch_loss[-1]:.4f}"]
            for rec in (r, m)]
    out += C.table(["net", "test MSE before", "after", "last epoch loss (½·MSE)"], rows)
    return C.finish(out, res, width)


def _padded(values, n):
    """``values`` with NaN appended up to length ``n`` (a run that stopped early has fewer epochs)."""
    return list(values) + [math.nan] * (n - len(values))


def plot(res, path):
    """PNG: ‖∂L/∂h_t‖/‖∂L/∂h_T‖ at initialisation, both heat maps over training, the test MSE per epoch."""
    from .. import charts

    r, m = res.rnn, res.lstm
    heat = [dict(kind="heat", matrix=[_rel(g) for g in rec.norms_by_epoch], xlabel="time step t",
                 ylabel="row e+1: after epoch e (row 1: init)",
                 title=f"{rec.kind}: log10 ‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ over training") for rec in (r, m)]
    return charts.save_panels(path, [
        dict(kind="lines", series={f"{rec.kind} (factor {rec.init_factor:.3f} per step)": _rel(rec.init_norms)
                                   for rec in (r, m)}, logy=True, xlabel="time step t", ylabel="‖∂L/∂h_t‖ / ‖∂L/∂h_T‖",
             title=f"lstm: adding problem, T = {res.T}, hidden {res.hidden}, seed {res.seed}: at initialisation"),
        *heat,
        dict(kind="lines", series={k: _padded(rec.test_mse, res.epochs + 1) for k, rec in (("RNN", r), ("LSTM", m))},
             x=list(range(res.epochs + 1)), logy=True,
             xlabel="epoch", ylabel="test MSE", title=f"test MSE, Adam lr {res.lr:g} (epoch 0: at initialisation)",
             hlines={"baseline 1/6": BASELINE, f"solved < {SOLVED_BELOW:g}": SOLVED_BELOW}),
    ])
