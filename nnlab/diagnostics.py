"""The gradient-health monitor: per-step, per-layer records and the named verdicts of the source texts.

>>> import numpy as np, nnlab as nl
>>> net = nl.Sequential([nl.Dense(8, 8, activation="sigmoid") for _ in range(12)] + [nl.Dense(8, 1)], seed=0)
>>> X = np.random.default_rng(0).normal(size=(64, 8)); y = X[:, :1]
>>> mon = nl.GradientMonitor(net)
>>> loss = mon.observe(X, y)
>>> [v.name for v in mon.verdicts() if v.fired]
['gradient_vanishing']

Recording runs inside the same compiled call as the training step (``Trainer(..., monitor=mon)``)
or with :meth:`GradientMonitor.observe` (one ``loss_and_grads`` plus the statistics). Per step and
per Dense layer it keeps: the loss, ‖∂L/∂W_l‖ (before clipping), ‖∂L/∂b_l‖, ‖E_l‖ (the memoized
layer error), ‖W_l‖, the update-to-weight ratio ‖ΔW_l‖/‖W_l‖, the dead-unit fraction (units whose
derivative is 0 for every row of the batch), the saturated fraction (entries of a saturating
activation whose derivative is below ``saturation_ratio`` of its maximum), the count of non-finite
values (weights, gradients, Z, A, E) and of gradient entries that underflow float32 (subnormal:
0 < |g| < 1.18e-38), and the mean/std of Z_l and A_l. Every threshold is a field of
:class:`Thresholds` and is documented in docs/diagnostics.md.
"""

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from . import _validate
from .errors import HyperparameterError
from .kernels import layout as L

SATURATING = ("sigmoid", "tanh", "softsign", "hard_sigmoid")
"""Activations whose saturation ("network paralysis") the monitor measures."""

SERIES = {
    "grad_norm": L.S_GRAD_NORM, "bias_grad_norm": L.S_B_GRAD_NORM, "error_norm": L.S_ERR_NORM,
    "weight_norm": L.S_W_NORM, "update_norm": L.S_UPDATE_NORM, "dead_fraction": L.S_DEAD,
    "saturated_fraction": L.S_SATURATED, "nonfinite": L.S_NONFINITE, "subnormal": L.S_SUBNORMAL,
    "zero_grad": L.S_ZERO_GRAD, "z_mean": L.S_Z_MEAN, "z_std": L.S_Z_STD, "a_mean": L.S_A_MEAN,
    "a_std": L.S_A_STD, "n_grad": L.S_N_GRAD,
}


@dataclass
class Thresholds:
    """When each verdict fires (see docs/diagnostics.md for the reasoning behind each number)."""

    loss_high_factor: float = 10.0        # loss_high: a finite loss above 10x the first loss
    loss_jump_factor: float = 5.0         # loss_jumps: loss_t > 5x the median of the previous 10 losses ...
    loss_jump_window: int = 10
    loss_jump_count: int = 2              # ... at least this many times (a non-finite loss counts)
    weight_change: float = 10.0           # weights_growing / _shrinking: ||W_l|| changes by 10x ...
    exp_fit_r2: float = 0.9               # ... and log ||W_l|| over steps is a line with R^2 >= 0.9
    weights_zero: float = 1e-3            # weights_to_zero: ||W_l|| < 1e-3 x its first value
    plateau_min_steps: int = 20           # slow_progress: judged after at least 20 steps ...
    plateau_improvement: float = 0.1      # ... fires when the loss fell by less than 10% overall
    grad_ratio_vanishing: float = 1e-3    # gradient_vanishing: median ||dW_1||/||dW_L|| < 1e-3
    grad_ratio_exploding: float = 1e3     # gradient_exploding: median ||dW_1||/||dW_L|| > 1e3
    dead_fraction: float = 0.5            # dead_units: > 50% of a hidden layer's units dead
    saturated_fraction: float = 0.5       # saturation: > 50% of a layer's entries saturated
    underflow_fraction: float = 0.01      # underflow: > 1% of a layer's gradient entries subnormal


@dataclass
class Verdict:
    """One named symptom: whether it fired, its threshold, its evidence and the remedy."""

    name: str
    problem: str          # "exploding", "vanishing", "dead units", "saturation", "underflow"
    fired: bool
    threshold: str
    evidence: str
    remedy: str
    step: int = None      # first step (1-based) at which it fired
    layer: int = None     # the layer (1-based Dense index) it points at
    data: dict = field(default_factory=dict)

    def __str__(self):
        mark = "FIRED" if self.fired else "ok   "
        return f"{mark} {self.name} ({self.problem}): {self.evidence}"

    def to_dict(self):
        return asdict(self)


REMEDIES = {
    "exploding": "clip the gradient norm (nl.clip / Trainer(clip=('global_norm', 1.0)), direction kept); "
                 "regularise the weights (L2); lower the learning rate; use fewer layers or smaller batches; "
                 "residual blocks; truncated BPTT for recurrent nets",
    "vanishing": "replace sigmoid by tanh, ReLU (or leaky/parametric ReLU) or softplus; Xavier/He "
                 "initialisation; residual blocks; fewer layers; an optimizer whose step ignores the "
                 "gradient's scale (Adam, RMSprop, Rprop)",
    "dead units": "leaky_relu or prelu; a small positive bias init (bias_init=0.1); He initialisation; "
                  "a lower learning rate",
    "saturation": "smaller initial weights (Xavier/LeCun), normalised inputs, weight regularisation, "
                  "tanh instead of sigmoid, a lower learning rate",
    "underflow": "fix the vanishing gradient first; train in float64; or accept the flush-to-zero that "
                 "XLA and PyTorch's set_flush_denormal use",
}


class GradientMonitor:
    """Records gradient health of ``net`` per step; :meth:`verdicts` names the symptoms.

    ``saturation_ratio``: an entry of a saturating activation (sigmoid, tanh, softsign,
    hard_sigmoid) counts as saturated when a·θ'(z) < saturation_ratio · max θ' (default 0.1:
    |z| > 3.6 for sigmoid, |z| > 1.8 for tanh).
    """

    def __init__(self, net, saturation_ratio=0.1, thresholds=None):
        self.net = net
        self.saturation_ratio = _validate.real_scalar(saturation_ratio, "saturation_ratio", positive=True)
        if self.saturation_ratio >= 1:
            raise HyperparameterError(f"saturation_ratio must be < 1; got {self.saturation_ratio}")
        self.thresholds = thresholds or Thresholds()
        if not isinstance(self.thresholds, Thresholds):
            raise HyperparameterError("thresholds must be an nnlab.diagnostics.Thresholds")
        ops = net._ops
        dense = [i for i in range(ops.shape[0]) if ops[i, L.F_KIND] == L.KIND_DENSE]
        self.layers = [net.layers[int(ops[i, L.F_LAYER])] for i in dense]
        self._sat = np.zeros((ops.shape[0], 2))
        for i, layer in zip(dense, self.layers):
            act = layer.activation
            if act.name in SATURATING:
                dmax = abs(act.scale) * float(act.entry.facts.deriv_range[1])
                if act.name == "sigmoid":
                    dmax = abs(act.scale) * abs(act.values["alpha"]) / 4
                self._sat[i] = (1.0, self.saturation_ratio * dmax)
        self._prev = np.zeros_like(net._flat)
        self._stats = np.zeros((len(self.layers), L.NS))
        self._grads = None
        self.loss = []
        self.grad_norm_total = []
        self.applied = []
        self.batch = []
        self._rows = []

    # -------------------------------------------------------------- recording
    def buffers(self):
        """(prev, sat, stats): the arrays the compiled step fills when recording."""
        return self._prev, self._sat, self._stats

    def commit(self, loss, total_norm, applied, batch):
        """Keep the statistics the compiled call just wrote."""
        self.loss.append(float(loss))
        self.grad_norm_total.append(float(total_norm))
        self.applied.append(bool(applied))
        self.batch.append(int(batch))
        self._rows.append(self._stats.copy())

    def observe(self, X, y, training=None):
        """One ``loss_and_grads`` on (X, y) with the statistics recorded (no update); returns the loss."""
        net = self.net
        X, Y = net._prepare(X, y)
        training = net.training if training is None else bool(training)
        ws, dws = net._workspace(X.shape[0])
        if self._grads is None:
            self._grads = np.zeros_like(net._flat)
        loss = float(net._kernels.observe(net._ops, net._hp, net._tens, net._flat, self._grads, ws, dws, X, Y,
                                          net._loss_code, training, net._noise_seed(training), self._sat,
                                          self._stats))
        norm = math.sqrt(float(np.sum(self._grads.astype(np.float64) ** 2)))
        self.commit(loss, norm, False, X.shape[0])
        net.layer_errors = [net._tensor(dws, t, X.shape[0]).copy() for t in net._dense_z]
        return loss

    def reset(self):
        self.loss, self.grad_norm_total, self.applied, self.batch, self._rows = [], [], [], [], []

    # -------------------------------------------------------------- reading
    @property
    def steps(self):
        return len(self._rows)

    def series(self, name):
        """(steps, layers) array of statistic ``name`` (see :data:`SERIES`)."""
        if name not in SERIES:
            raise HyperparameterError(f"unknown statistic {name!r}; known: {', '.join(SERIES)}")
        if not self._rows:
            return np.zeros((0, len(self.layers)))
        return np.stack(self._rows)[:, :, SERIES[name]]

    def update_ratio(self):
        """(steps, layers) ‖ΔW_l‖ / ‖W_l‖."""
        w = self.series("weight_norm")
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(w > 0, self.series("update_norm") / w, np.nan)

    def layer_label(self, l):
        """'3 (sigmoid)' for the 0-based Dense index l."""
        return f"{l + 1} ({self.layers[l].activation.label})"

    def verdicts(self):
        """Every verdict, fired or not, in the order of the source text's list."""
        return [check(self) for check in _CHECKS]

    def fired(self):
        return [v for v in self.verdicts() if v.fired]

    def report(self):
        """A readable summary: one line per verdict."""
        lines = [f"gradient health over {self.steps} step(s), {len(self.layers)} layer(s):"]
        lines += [f"  {v}" for v in self.verdicts()]
        return "\n".join(lines)

    def to_dict(self):
        out = {"steps": self.steps, "layers": [self.layer_label(l) for l in range(len(self.layers))],
               "loss": self.loss, "grad_norm_total": self.grad_norm_total, "applied": self.applied,
               "thresholds": asdict(self.thresholds), "saturation_ratio": self.saturation_ratio}
        for name in SERIES:
            out[name] = self.series(name).tolist()
        out["verdicts"] = [v.to_dict() for v in self.verdicts()]
        return _finite_json(out)


def _finite_json(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    return obj


# ---------------------------------------------------------------- the checks
def _fmt(x):
    return f"{x:.3g}"


def _exp_fit(values):
    """(total factor last/first, R² of a line fitted to log values) over finite positive values."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (v > 0)
    v = v[ok]
    if v.size < 3:
        return 1.0, 0.0
    x = np.arange(v.size, dtype=np.float64)
    y = np.log(v)
    if np.ptp(y) == 0:
        return 1.0, 0.0
    slope, icpt = np.polyfit(x, y, 1)
    resid = y - (slope * x + icpt)
    r2 = 1.0 - float(np.sum(resid ** 2)) / float(np.sum((y - y.mean()) ** 2))
    return float(v[-1] / v[0]), r2


def _loss_nan(m):
    bad = [t for t, l in enumerate(m.loss) if not math.isfinite(l)]
    v = Verdict("loss_nan", "exploding", bool(bad), "any non-finite loss", "every loss is finite",
                REMEDIES["exploding"])
    if bad:
        t = bad[0]
        last = f"; last finite loss {_fmt(m.loss[t - 1])} at step {t}" if t > 0 else ""
        v.evidence = f"loss = {m.loss[t]} at step {t + 1}{last}"
        v.step, v.data = t + 1, {"loss": m.loss[t]}
    return v


def _weights_nan(m):
    w = m.series("weight_norm")
    bad = np.argwhere(~np.isfinite(w))
    v = Verdict("weights_nan", "exploding", bool(bad.size), "any non-finite weight", "all weights finite",
                REMEDIES["exploding"])
    if bad.size:
        t, l = (int(i) for i in bad[0])
        v.evidence = f"layer {m.layer_label(l)} has non-finite weights after step {t + 1}"
        v.step, v.layer = t + 1, l + 1
    return v


def _loss_high(m):
    th = m.thresholds.loss_high_factor
    fin = [(t, l) for t, l in enumerate(m.loss) if math.isfinite(l)]
    v = Verdict("loss_high", "exploding", False, f"a loss above {th:g}x the first loss", "no loss above it",
                REMEDIES["exploding"])
    if fin:
        first = fin[0][1]
        for t, l in fin:
            if l > th * abs(first) and l > 0:
                v.fired, v.step = True, t + 1
                v.evidence = f"loss {_fmt(l)} at step {t + 1} is {_fmt(l / abs(first))}x the first loss {_fmt(first)}"
                v.data = {"loss": l, "first": first}
                break
        if not v.fired:
            v.evidence = f"largest loss {_fmt(max(l for _, l in fin))} vs first {_fmt(first)}"
    return v


def _loss_jumps(m):
    th = m.thresholds
    jumps = []
    for t in range(1, len(m.loss)):
        window = [l for l in m.loss[max(0, t - th.loss_jump_window):t] if math.isfinite(l)]
        if not window:
            continue
        ref = float(np.median(window))
        if ref > 0 and (not math.isfinite(m.loss[t]) or m.loss[t] > th.loss_jump_factor * ref):
            jumps.append((t, ref))
    v = Verdict("loss_jumps", "exploding", len(jumps) >= th.loss_jump_count,
                f"loss above {th.loss_jump_factor:g}x the median of the previous {th.loss_jump_window} losses, "
                f"at least {th.loss_jump_count} times", "no jump", REMEDIES["exploding"],
                data={"steps": [t + 1 for t, _ in jumps]})
    if jumps:
        shown = ", ".join(f"step {t + 1}: {_fmt(m.loss[t])} vs median {_fmt(ref)}" for t, ref in jumps[:3])
        v.evidence = f"{len(jumps)} jump(s) ({shown})"
        if v.fired:
            v.step = jumps[th.loss_jump_count - 1][0] + 1
    return v


def _weights_trend(m, growing):
    th = m.thresholds
    name = "weights_growing" if growing else "weights_shrinking"
    problem = "exploding" if growing else "vanishing"
    w = m.series("weight_norm")
    v = Verdict(name, problem, False,
                f"||W_l|| {'grows' if growing else 'shrinks'} by {th.weight_change:g}x or more, exponentially "
                f"(log-linear fit R^2 >= {th.exp_fit_r2:g})", "no layer", REMEDIES[problem])
    best = None
    for l in range(w.shape[1]):
        factor, r2 = _exp_fit(w[:, l])
        change = factor if growing else (1.0 / factor if factor > 0 else math.inf)
        if best is None or change > best[1]:
            best = (l, change, r2, factor)
        if change >= th.weight_change and r2 >= th.exp_fit_r2 and not v.fired:
            v.fired, v.layer = True, l + 1
            v.evidence = (f"layer {m.layer_label(l)}: ||W|| went {_fmt(w[0, l])} -> {_fmt(w[-1, l])} "
                          f"({_fmt(factor)}x, log-linear R^2 = {r2:.2f})")
            v.data = {"factor": factor, "r2": r2}
    if not v.fired and best is not None:
        v.evidence = (f"no layer {'grew' if growing else 'shrank'} {th.weight_change:g}x exponentially; most: layer "
                      f"{m.layer_label(best[0])}, ||W|| x{_fmt(best[3])} (R^2 = {best[2]:.2f})")
    return v


def _weights_to_zero(m):
    th = m.thresholds.weights_zero
    w = m.series("weight_norm")
    v = Verdict("weights_to_zero", "vanishing", False, f"||W_l|| below {th:g}x its first value", "no layer",
                REMEDIES["vanishing"])
    for l in range(w.shape[1]):
        col = w[:, l]
        if col.size and col[0] > 0:
            hits = np.flatnonzero(np.isfinite(col) & (col < th * col[0]))
            if hits.size:
                t = int(hits[0])
                v.fired, v.step, v.layer = True, t + 1, l + 1
                v.evidence = f"layer {m.layer_label(l)}: ||W|| {_fmt(col[0])} -> {_fmt(col[t])} at step {t + 1}"
                break
    return v


def _grad_ratio(m):
    g = m.series("grad_norm")
    if g.shape[0] == 0 or g.shape[1] < 2:
        return None, g
    with np.errstate(divide="ignore", invalid="ignore"):
        r = g[:, 0] / g[:, -1]
    r = r[np.isfinite(r)]
    return (float(np.median(r)) if r.size else None), g


def _gradient_vanishing(m, exploding=False):
    th = m.thresholds
    ratio, g = _grad_ratio(m)
    name, problem = ("gradient_exploding", "exploding") if exploding else ("gradient_vanishing", "vanishing")
    bound = th.grad_ratio_exploding if exploding else th.grad_ratio_vanishing
    v = Verdict(name, problem, False,
                f"median over steps of ||dL/dW_1|| / ||dL/dW_L|| {'>' if exploding else '<'} {bound:g}",
                "needs >= 2 layers and finite gradients", REMEDIES[problem])
    if ratio is not None:
        v.fired = ratio > bound if exploding else ratio < bound
        last = g[-1]
        v.evidence = (f"||dL/dW_1|| / ||dL/dW_L|| = {_fmt(ratio)} (last step: first layer {_fmt(last[0])}, "
                      f"last layer {_fmt(last[-1])})")
        v.data = {"ratio": ratio, "grad_norm_last_step": last.tolist()}
        if v.fired:
            v.layer = 1
    return v


def _slow_progress(m):
    th = m.thresholds
    fin = [l for l in m.loss if math.isfinite(l)]
    v = Verdict("slow_progress", "vanishing", False,
                f"after >= {th.plateau_min_steps} steps the loss fell by less than {th.plateau_improvement:.0%}",
                f"only {len(m.loss)} step(s) recorded", REMEDIES["vanishing"])
    if len(m.loss) >= th.plateau_min_steps and fin and fin[0] > 0:
        drop = 1.0 - fin[-1] / fin[0]
        v.fired = drop < th.plateau_improvement
        mid = fin[len(fin) // 2]
        v.evidence = (f"loss {_fmt(fin[0])} -> {_fmt(mid)} -> {_fmt(fin[-1])} over {len(m.loss)} steps "
                      f"({drop:.1%} lower)")
        v.data = {"drop": drop}
    return v


def _fraction_check(name, series, th_value, problem, what, skip_last=False):
    def check(m):
        f = m.series(series)
        cols = range(f.shape[1] - (1 if skip_last else 0))
        v = Verdict(name, problem, False, f"more than {th_value(m):.0%} of a layer's {what}", "",
                    REMEDIES[problem])
        worst = (0.0, None, None)
        for l in cols:
            col = f[:, l]
            hits = np.flatnonzero(col > th_value(m))
            if hits.size and not v.fired:
                t = int(hits[0])
                v.fired, v.step, v.layer = True, t + 1, l + 1
                v.evidence = f"layer {m.layer_label(l)}: {col[t]:.0%} of its {what} at step {t + 1}"
                v.data = {"fraction": float(col[t])}
            if col.size and col.max() > worst[0]:
                worst = (float(col.max()), l, int(col.argmax()))
        if not v.fired:
            v.evidence = (f"at most {worst[0]:.0%} (layer {m.layer_label(worst[1])}, step {worst[2] + 1})"
                          if worst[1] is not None else f"no {what}")
        return v
    return check


def _underflow(m):
    th = m.thresholds.underflow_fraction
    sub = m.series("subnormal")
    n = m.series("n_grad")
    v = Verdict("underflow", "underflow", False,
                f"more than {th:.0%} of a layer's gradient entries are float32-subnormal (0 < |g| < 1.18e-38)",
                "no subnormal gradients", REMEDIES["underflow"])
    if sub.size:
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(n > 0, sub / n, 0.0)
        hits = np.argwhere(frac > th)
        if hits.size:
            t, l = (int(i) for i in hits[0])
            v.fired, v.step, v.layer = True, t + 1, l + 1
            v.evidence = (f"layer {m.layer_label(l)}: {int(sub[t, l])} of {int(n[t, l])} gradient entries "
                          f"({frac[t, l]:.1%}) subnormal at step {t + 1}")
            v.data = {"fraction": float(frac[t, l])}
        else:
            v.evidence = f"at most {frac.max():.2%} subnormal"
    return v


_CHECKS = [
    _loss_high, _loss_jumps, _loss_nan,
    lambda m: _weights_trend(m, True), _weights_nan,
    lambda m: _gradient_vanishing(m, exploding=True),
    _slow_progress, _gradient_vanishing,
    lambda m: _weights_trend(m, False), _weights_to_zero,
    _fraction_check("dead_units", "dead_fraction", lambda m: m.thresholds.dead_fraction, "dead units",
                    "units dead (derivative 0 for every sample)", skip_last=True),
    _fraction_check("saturation", "saturated_fraction", lambda m: m.thresholds.saturated_fraction, "saturation",
                    "activations saturated"),
    _underflow,
]

VERDICT_NAMES = ["loss_high", "loss_jumps", "loss_nan", "weights_growing", "weights_nan", "gradient_exploding",
                 "slow_progress", "gradient_vanishing", "weights_shrinking", "weights_to_zero", "dead_units",
                 "saturation", "underflow"]
