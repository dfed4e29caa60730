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
per layer with weights (dense, maxout, RBF, normalisation, recurrent) it keeps: the loss, ‖∂L/∂W_l‖ (before clipping), ‖∂L/∂b_l‖, ‖E_l‖ (the memoized
layer error), ‖W_l‖, the update-to-weight ratio ‖ΔW_l‖/‖W_l‖, the dead-unit fraction (units whose
derivative is 0 for every row of the batch), the saturated fraction (entries of a saturating
activation whose derivative is below ``saturation_ratio`` of its maximum), the count of non-finite
values (weights, gradients, Z, A, E) and of gradient entries that underflow float32 (subnormal:
0 < |g| < 1.18e-38), the mean/std of Z_l and A_l, and whether the CPU flushed denormals to zero
(:mod:`nnlab.backend`). Every threshold is a field of :class:`Thresholds` and is documented, with
its reason, in docs/diagnostics.md.
"""

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from . import _validate
from . import backend as _backend
from .errors import HyperparameterError
from .kernels import layout as L
from .kernels import optim_cpu as _OK
from .kernels.common import act_slots as _act_slots

SATURATING = ("sigmoid", "tanh", "softsign", "hard_sigmoid")
"""Activations whose saturation ("network paralysis") the monitor measures."""

_MONOTONE = ("sigmoid", "tanh", "softsign")  # |θ'| even in z and falling with |z|

SERIES = {
    "grad_norm": L.S_GRAD_NORM, "bias_grad_norm": L.S_B_GRAD_NORM, "error_norm": L.S_ERR_NORM,
    "weight_norm": L.S_W_NORM, "update_norm": L.S_UPDATE_NORM, "dead_fraction": L.S_DEAD,
    "saturated_fraction": L.S_SATURATED, "nonfinite": L.S_NONFINITE, "subnormal": L.S_SUBNORMAL,
    "zero_grad": L.S_ZERO_GRAD, "z_mean": L.S_Z_MEAN, "z_std": L.S_Z_STD, "a_mean": L.S_A_MEAN,
    "a_std": L.S_A_STD, "n_grad": L.S_N_GRAD,
}
"""Name -> column of the per-layer statistics; :meth:`GradientMonitor.series` reads them."""


@dataclass
class Thresholds:
    """When each verdict fires (docs/diagnostics.md gives the reasoning behind each number)."""

    loss_samples: int = 32                # losses are judged as means over >= 32 samples (small batches pooled)
    loss_high_factor: float = 10.0        # loss_high: a (pooled) loss above 10x the first one, or ...
    loss_chance_factor: float = 4.0       # ... (classifiers) recent losses above 4x the chance-level loss
    loss_jump_factor: float = 5.0         # loss_jumps: loss > 5x the median of the previous 10 losses ...
    loss_jump_window: int = 10
    loss_jump_min: float = 0.25           # ... and above it by at least 0.25x the first loss ...
    loss_jump_count: int = 2              # ... at least this many times (a non-finite loss counts)
    weight_change: float = 10.0           # weights_growing / _shrinking: ||W_l|| changes by 10x ...
    exp_fit_r2: float = 0.9               # ... and log ||W_l|| over steps is a line with R^2 >= 0.9
    weights_zero: float = 1e-3            # weights_to_zero: ||W_l|| < 1e-3 x its first value
    plateau_min_steps: int = 20           # slow_progress: judged on at least 20 (pooled) losses ...
    plateau_improvement: float = 0.1      # ... fires when the loss fell by less than 10% ...
    plateau_chance_fraction: float = 0.5  # ... while (classifiers) still above half the chance-level loss,
    plateau_chance_stuck: float = 0.9     # ... or (classifiers) it ends above 0.9x the chance-level loss
    grad_ratio_vanishing: float = 1e-3    # gradient_vanishing: median ||dW_1||/||dW_L|| < 1e-3
    grad_ratio_exploding: float = 1e3     # gradient_exploding: median ||dW_1||/||dW_L|| > 1e3
    persist_window: int = 10              # dead_units / saturation look at the last 10 steps ...
    dead_fraction: float = 0.5            # dead_units: median > 50% of a hidden layer's units dead ...
    dead_min_batch: int = 16              # ... in batches of at least 16 rows
    saturated_fraction: float = 0.5       # saturation: median > 50% of a layer's entries saturated
    underflow_fraction: float = 0.01      # underflow: > 1% of a layer's gradient entries subnormal

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type is int or f.type == "int":
                setattr(self, f.name, _validate.positive_int(value, f"Thresholds.{f.name}"))
            else:
                setattr(self, f.name, _validate.real_scalar(value, f"Thresholds.{f.name}", positive=True))
        for name in ("exp_fit_r2", "plateau_improvement", "dead_fraction", "saturated_fraction",
                     "underflow_fraction", "plateau_chance_fraction", "plateau_chance_stuck"):
            if getattr(self, name) > 1:
                raise HyperparameterError(f"Thresholds.{name} is a fraction and must be <= 1; got {getattr(self, name)}")
        for name in ("loss_high_factor", "loss_jump_factor", "weight_change", "grad_ratio_exploding"):
            if getattr(self, name) <= 1:
                raise HyperparameterError(f"Thresholds.{name} is a factor and must be > 1; got {getattr(self, name)}")
        for name in ("weights_zero", "grad_ratio_vanishing"):
            if getattr(self, name) >= 1:
                raise HyperparameterError(f"Thresholds.{name} must be < 1; got {getattr(self, name)}")


@dataclass
class Verdict:
    """One named symptom: whether it fired, its threshold, its evidence and the remedy."""

    name: str
    problem: str          # "exploding", "vanishing", "dead units", "saturation", "underflow"
    fired: bool
    threshold: str
    evidence: str
    remedy: str
    step: int = None      # the step (1-based) it points at: when it first fired
    layer: int = None     # the layer (1-based Dense index) it points at
    data: dict = field(default_factory=dict)

    def __str__(self):
        mark = "FIRED" if self.fired else "ok   "
        where = []
        if self.fired and self.step is not None:
            where.append(f"step {self.step}")
        if self.fired and self.layer is not None:
            where.append(f"layer {self.layer}")
        at = f" [{', '.join(where)}]" if where else ""
        return f"{mark} {self.name} ({self.problem}){at}: {self.evidence}"

    def to_dict(self):
        return _finite_json(asdict(self))


REMEDIES = {
    "exploding": "clip the gradient by its norm, keeping its direction (Trainer(clip=('global_norm', 1.0))); "
                 "regularise the weights (regularizer=('l2', 1e-4)); lower the learning rate; use fewer "
                 "layers or smaller batches; residual blocks; truncated BPTT for recurrent nets",
    "vanishing": "replace sigmoid by tanh, ReLU (or leaky/parametric/noisy ReLU) or softplus; Xavier/He "
                 "initialisation; residual blocks; fewer layers; an optimizer whose step ignores the "
                 "gradient's scale (Adam, RMSprop, Rprop)",
    "dead units": "leaky_relu, prelu or softplus; a small positive bias init (bias_init=0.1); He "
                  "initialisation; a lower learning rate",
    "saturation": "avoid large weights: smaller initial weights (Xavier/LeCun), weight regularisation "
                  "(L2), normalised inputs, a lower learning rate; tanh instead of sigmoid",
    "underflow": "fix the vanishing gradient first; train in float64; or flush denormals to zero "
                 "(nl.backend.set_flush_denormals(True)) so that they stop costing time",
}


def _slots(ops, hp, store, i):
    """(p0, p1, p2, a) of op i as the compiled kernels read them."""
    return _act_slots.py_func(ops, hp, store, i)


def _saturation_row(act, ratio):
    """(1 if saturating, threshold on |a·θ'(z)|, z_sat) for the compiled statistics (0s otherwise)."""
    if act.name not in SATURATING:
        return 0.0, 0.0, 0.0
    if act.name == "sigmoid":
        dmax = abs(act.scale) * abs(act.values["alpha"]) / 4
    else:
        dmax = abs(act.scale) * float(act.entry.facts.deriv_range[1])
    thr = ratio * dmax
    zs = 0.0
    if act.name in _MONOTONE and not act.param_names:
        def d(z):
            return abs(act.scale * float(act.derivative(np.array([z], dtype=np.float64))[0]))
        lo, hi = 0.0, 1.0
        while d(hi) >= thr:
            lo, hi = hi, 2 * hi
        while True:  # bisect to adjacent floats: d(lo) >= thr > d(hi)
            mid = 0.5 * (lo + hi)
            if mid <= lo or mid >= hi:
                break
            if d(mid) >= thr:
                lo = mid
            else:
                hi = mid
        zs = lo
    return 1.0, thr, zs


@dataclass
class WatchedLayer:
    """What the monitor knows of one op with weights: its kind, label, activation and widths."""

    kind: str          # "Dense", "LSTM", "BatchNorm", ...
    label: str         # its place and name in the network, e.g. "2 LSTM" or "1.0 Dense (relu)"
    activation: object  # the op's activation (identity for kinds without one)
    n_in: int
    n_out: int
    plain: bool = True  # a top-level Dense layer (labelled by its activation alone, as always)


def _watched(net, prog, i, label):
    from . import activations as _acts
    ops = prog.ops
    layer = net.layers[int(ops[i, L.F_LAYER])]
    path = label.split(" ", 1)[0]
    kind = _KIND_NAMES.get(int(ops[i, L.F_KIND]), "layer")
    act = prog.activations[i] if prog.activations[i] is not None else _acts.get("identity")
    plain = kind == "Dense" and "." not in path and type(layer).__name__ == "Dense"
    return WatchedLayer(kind, label, act, int(ops[i, L.F_NIN]), int(ops[i, L.F_NOUT]), plain)


_KIND_NAMES = {L.KIND_DENSE: "Dense", L.KIND_BATCHNORM: "BatchNorm", L.KIND_LAYERNORM: "LayerNorm",
               L.KIND_MAXOUT: "Maxout", L.KIND_RBF: "RBF", L.KIND_RNN: "RNN", L.KIND_LSTM: "LSTM"}


def _time_norms(prog, dws, n):
    """Per recurrent op, ‖∂L/∂h_t‖ for t = 1..T from the gradient workspace of the last backward
    pass: the op's first auxiliary tensor holds its hidden states h_0..h_T time-major, (T+1, n, H),
    and its region of ``dws`` the gradients reaching them."""
    out = []
    for i in prog.recurrent:
        ops = prog.ops
        steps, hidden = int(ops[i, L.F_T]), int(ops[i, L.F_NOUT])
        dh = prog.tensor(dws, int(ops[i, L.F_AUX]), n).reshape(-1)[:(steps + 1) * n * hidden]
        dh = dh.reshape(steps + 1, n * hidden)[1:].astype(np.float64)
        out.append(np.sqrt(np.einsum("ij,ij->i", dh, dh)))
    return out


def _chance_loss(net):
    """The loss of a predictor that knows nothing (uniform probabilities), or None (mse)."""
    if net.loss_name == "softmax_cross_entropy":
        return math.log(net.n_out) if net.n_out > 1 else None
    if net.loss_name == "bce":
        return math.log(2.0)
    return None


class GradientMonitor:
    """Records gradient health of ``net`` per step; :meth:`verdicts` names the symptoms.

    ``saturation_ratio``: an entry of a saturating activation (sigmoid, tanh, softsign,
    hard_sigmoid) counts as saturated when |a·θ'(z)| < saturation_ratio · max |a·θ'| (default
    0.1: |z| > 3.637 for sigmoid, |z| > 1.818 for tanh, |z| > 2.162 for softsign).
    ``thresholds``: a :class:`Thresholds` (when each verdict fires).
    """

    def __init__(self, net, saturation_ratio=0.1, thresholds=None):
        if not hasattr(net, "_ops") or not hasattr(net, "_flat"):
            raise HyperparameterError(f"GradientMonitor watches an nnlab.Sequential; got {net!r}")
        self.net = net
        self.saturation_ratio = _validate.real_scalar(saturation_ratio, "saturation_ratio", positive=True)
        if self.saturation_ratio >= 1:
            raise HyperparameterError(f"saturation_ratio must be < 1; got {self.saturation_ratio}")
        self.thresholds = Thresholds() if thresholds is None else thresholds
        if not isinstance(self.thresholds, Thresholds):
            raise HyperparameterError(f"thresholds must be an nnlab.diagnostics.Thresholds; got {thresholds!r}")
        prog = net._program(1)
        ops = prog.ops
        self.layers = [_watched(net, prog, i, label) for i, label in zip(prog.watched, prog.labels)]
        self._sat = np.zeros((ops.shape[0], 3))
        for i, layer in zip(prog.watched, self.layers):
            if layer.kind == "Dense":
                self._sat[i] = _saturation_row(layer.activation, self.saturation_ratio)
        self.saturation_z = [float(self._sat[i, 2]) if self._sat[i, 0] and self._sat[i, 2] > 0 else None
                             for i in prog.watched]
        # a learnable slope or scale moves the derivative's maximum: those rows' thresholds are
        # recomputed from the live values before every recorded step (see _refresh_saturation)
        self._live_sat = [(i, layer.activation) for i, layer in zip(prog.watched, self.layers)
                          if layer.kind == "Dense" and self._sat[i, 0] and self._sat[i, 2] <= 0
                          and ops[i, L.F_AMASK] != 0]
        self._sat_prog = prog
        self.recurrent = [self.layers[int(ops[i, L.F_LEVEL])].label for i in prog.recurrent]
        self._prev = np.zeros_like(net._flat)
        self._stats = np.zeros((len(self.layers), L.NS))
        self._grads = None
        self.chance_loss = _chance_loss(net)
        self.flush_denormals_at_start = _backend.flush_denormals_enabled()
        self.reset()

    # -------------------------------------------------------------- recording
    def buffers(self):
        """(prev, sat, stats): the arrays the compiled step fills when recording."""
        self._refresh_saturation()
        return self._prev, self._sat, self._stats

    def _refresh_saturation(self):
        """The saturation threshold ratio·max|a·θ'| of layers whose slope α (sigmoid) or scale a is
        learned, from their current values (the threshold follows the derivative's maximum)."""
        prog = self._sat_prog
        if self._live_sat:
            self.net._to_host()
        for i, act in self._live_sat:
            p0, _, _, a = _slots(prog.ops, prog.hp, self.net._store, i)
            unit = abs(p0) / 4 if act.name == "sigmoid" else float(act.entry.facts.deriv_range[1])
            self._sat[i, 1] = self.saturation_ratio * abs(a) * unit

    def commit(self, loss, total_norm, applied, batch, prog=None, dws=None):
        """Keep the statistics the compiled call just wrote (and the flush-to-zero state).

        ``applied``: whether the step updated the weights (None: no update was attempted, as in
        :meth:`observe`); ``batch``: its number of rows; ``prog``/``dws``: the program and the
        gradient workspace of that call (for the recurrent layers' ‖∂L/∂h_t‖ per time step).
        """
        self.loss.append(float(loss))
        self.grad_norm_total.append(float(total_norm))
        self.applied.append(None if applied is None else bool(applied))
        self.batch.append(int(batch))
        self.flush_denormals.append(_backend.flush_denormals_enabled())
        self._rows.append(self._stats.copy())
        self._time.append(_time_norms(prog, dws, batch) if prog is not None and prog.recurrent else [])

    def observe(self, X, y, training=None):
        """One ``loss_and_grads`` on (X, y) with the statistics recorded (no update); returns the loss.

        Afterwards ``net.layer_errors`` holds E_l as after :meth:`~nnlab.Sequential.loss_and_grads`
        and :attr:`grads` the gradients (aligned with ``net.params()``).
        """
        net = self.net
        X, Y = net._prepare(X, y)
        prog = net._prog_for(X)
        training = net.training if training is None else bool(training)
        prog.check_batch(X.shape[0], training)
        ws, dws = net._workspace(X.shape[0], prog.width)
        if self._grads is None:
            self._grads = np.zeros_like(net._flat)
        self._refresh_saturation()
        from .kernels.cpu import ensure_loss_and_grad

        ensure_loss_and_grad(net._kernels, net.dtype)
        loss = float(net._kernels.observe(prog.ops, prog.hp, prog.tens, net._store, self._grads, ws, dws, X, Y,
                                          net._loss_code, training, net._noise_seed(training), self._sat,
                                          self._stats))
        norm = float(_OK.norm2(self._grads))
        self.commit(loss, norm, None, X.shape[0], prog, dws)
        net.layer_errors = net._errors(prog, dws, X.shape[0])
        return loss

    @property
    def grads(self):
        """The gradients of the last :meth:`observe` (aligned with ``net.params()``), or None."""
        if self._grads is None:
            return None
        return [self._grads[o:o + int(np.prod(s))].reshape(s).copy() for o, s in self.net._shapes]

    def reset(self):
        """Forget every recorded step."""
        self.loss, self.grad_norm_total, self.applied, self.batch, self.flush_denormals = [], [], [], [], []
        self._rows = []
        self._time = []

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
        """(steps, layers) ‖ΔW_l‖ / ‖W_l‖ (NaN where ‖W_l‖ = 0)."""
        w = self.series("weight_norm")
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(w > 0, self.series("update_norm") / np.where(w > 0, w, 1.0), np.nan)

    def layer_label(self, l):
        """'3 (sigmoid)' for the 0-based index l of a dense layer; '3 LSTM' (the kind, with its place
        in the network) for the others."""
        layer = self.layers[l]
        if layer.kind == "Dense" and layer.plain:
            return f"{l + 1} ({layer.activation.label})"
        return f"{l + 1} {layer.label}"

    def time_grad_norms(self, step=-1):
        """{label: array (T,)} of ‖∂L/∂h_t‖ per time step of every recurrent layer at one recorded
        step (default the last): the total gradient reaching the hidden state h_t (from the loss at
        t and, through the recurrence, from every later step), over the batch. Empty for networks
        without recurrent layers."""
        if not self._rows:
            raise HyperparameterError("the monitor has recorded no step yet (observe() or Trainer(monitor=...))")
        return dict(zip(self.recurrent, self._time[step])) if self._time[step] else {}

    def layer_summary(self, step=-1):
        """Per layer, the statistics of one recorded step (default the last) as a list of dicts."""
        if not self._rows:
            raise HyperparameterError("the monitor has recorded no step yet (observe() or Trainer(monitor=...))")
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or not -self.steps <= step < self.steps:
            raise HyperparameterError(f"step must be an int in [-{self.steps}, {self.steps}); got {step!r}")
        row = self._rows[step]
        ratio = self.update_ratio()[step]
        out = []
        for l, layer in enumerate(self.layers):
            rec = {"layer": l + 1, "kind": layer.kind, "name": layer.label, "activation": layer.activation.label,
                   "shape": [layer.n_in, layer.n_out], "activation_saturates": layer.activation.name in SATURATING}
            for name, col in SERIES.items():
                v = float(row[l, col])
                rec[name] = int(v) if name in ("nonfinite", "subnormal", "zero_grad", "n_grad") else v
            rec["update_ratio"] = float(ratio[l])
            out.append(rec)
        return out

    def verdicts(self):
        """Every verdict, fired or not, in the order of the source text's list."""
        return [check(self) for check in _CHECKS]

    def fired(self):
        """The verdicts that fired."""
        return [v for v in self.verdicts() if v.fired]

    def _ftz_text(self):
        if not self.flush_denormals:
            state = self.flush_denormals_at_start
            return "on" if state else ("off" if _backend.FTZ_SUPPORTED else "off (not supported on this CPU)")
        on = sum(self.flush_denormals)
        if on == 0:
            return "off" if _backend.FTZ_SUPPORTED else "off (not supported on this CPU)"
        return "on" if on == len(self.flush_denormals) else f"on for {on} of {len(self.flush_denormals)} steps"

    def report(self):
        """A readable summary: one line per verdict, fired ones with their remedy."""
        lines = [f"gradient health over {self.steps} step(s), {len(self.layers)} layer(s) with weights, "
                 f"{self.net.dtype.name}, flush-to-zero {self._ftz_text()}:"]
        for v in self.verdicts():
            lines.append(f"  {v}")
            if v.fired:
                lines.append(f"        remedy: {v.remedy}")
        return "\n".join(lines)

    def to_dict(self):
        """Every recorded number and verdict; JSON-serialisable (non-finite floats become None)."""
        out = {"steps": self.steps, "layers": [self.layer_label(l) for l in range(len(self.layers))],
               "dtype": self.net.dtype.name, "loss": self.loss, "grad_norm_total": self.grad_norm_total,
               "applied": self.applied, "batch": self.batch, "flush_denormals": self.flush_denormals,
               "flush_denormals_at_start": self.flush_denormals_at_start,
               "thresholds": asdict(self.thresholds), "saturation_ratio": self.saturation_ratio,
               "saturation_z": self.saturation_z, "chance_loss": self.chance_loss}
        out["layer_kinds"] = [layer.kind for layer in self.layers]
        for name in SERIES:
            out[name] = self.series(name).tolist()
        out["time_grad_norms"] = [[t.tolist() for t in row] for row in self._time]
        out["recurrent_layers"] = self.recurrent
        out["update_ratio"] = self.update_ratio().tolist()
        out["verdicts"] = [v.to_dict() for v in self.verdicts()]
        return _finite_json(out)


def _finite_json(obj):
    """Plain Python values with non-finite floats as None (JSON has no NaN)."""
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_finite_json(v) for v in obj]
    return obj


# ---------------------------------------------------------------- the checks
def _fmt(x):
    return f"{x:.3g}"


def _exp_fit(values):
    """(total factor last/first, R² of a line fitted to log values) over finite positive values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
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


def _loss_points(m):
    """[(step index, loss)]: the losses the loss verdicts judge. A step with fewer than
    ``loss_samples`` rows is pooled with the next ones (mean weighted by rows) until the pool holds
    that many: one online step's loss says little about the model. A pool with a non-finite loss
    is non-finite; a last, unfilled pool counts only when it is the only one."""
    need = m.thresholds.loss_samples
    points, total, rows = [], 0.0, 0
    for t, (loss, b) in enumerate(zip(m.loss, m.batch)):
        b = max(int(b), 1)
        total += loss * b
        rows += b
        if rows >= need:
            points.append((t, total / rows))
            total, rows = 0.0, 0
    if rows and not points:
        points.append((len(m.loss) - 1, total / rows))
    return points


def _pooled(m):
    pts = _loss_points(m)
    return f" (losses pooled over >= {m.thresholds.loss_samples} samples)" if len(pts) < m.steps else ""


def _loss_nan(m):
    bad = [t for t, l in enumerate(m.loss) if not math.isfinite(l)]
    v = Verdict("loss_nan", "exploding", bool(bad), "any non-finite loss (NaN or inf)", "every loss is finite",
                REMEDIES["exploding"])
    if bad:
        t = bad[0]
        last = f"; last finite loss {_fmt(m.loss[t - 1])} at step {t}" if t > 0 and math.isfinite(m.loss[t - 1]) else ""
        kept = "; its update was skipped (weights kept)" if m.applied[t] is False else ""
        v.evidence = f"loss = {m.loss[t]} at step {t + 1}{last}{kept}"
        v.step, v.data = t + 1, {"loss": m.loss[t], "steps": [b + 1 for b in bad]}
    return v


def _weights_nan(m):
    w = m.series("weight_norm")
    bad = np.argwhere(~np.isfinite(w))
    v = Verdict("weights_nan", "exploding", bool(bad.size), "any non-finite weight (NaN or inf)",
                "all weights finite", REMEDIES["exploding"])
    if bad.size:
        t, l = (int(i) for i in bad[0])
        v.evidence = f"layer {m.layer_label(l)} has non-finite weights (||W|| = {w[t, l]}) after step {t + 1}"
        v.step, v.layer = t + 1, l + 1
    return v


def _gradient_nan(m):
    """A non-finite gradient while the loss is finite (an overflow inside the backward pass), or an
    update that would have left a non-finite weight or optimizer state entry (a huge but finite
    gradient overflowing g² in Adam's state, say): the loss alone does not show either."""
    g = m.series("grad_norm")
    b = m.series("bias_grad_norm")
    bad = []
    for t, loss in enumerate(m.loss):
        if not math.isfinite(loss):
            continue
        total = m.grad_norm_total[t]
        layers = np.flatnonzero(~(np.isfinite(g[t]) & np.isfinite(b[t]))) if g.size else np.zeros(0, int)
        if not math.isfinite(total) or layers.size:
            bad.append((t, "gradient", total, layers))
        elif m.applied[t] is False:
            bad.append((t, "update", total, layers))
    v = Verdict("gradient_nan", "exploding", bool(bad),
                "a non-finite gradient with a finite loss, or an update that would make weights or optimizer "
                "state non-finite", "every gradient and update finite", REMEDIES["exploding"])
    if bad:
        t, what, total, layers = bad[0]
        if what == "gradient":
            where = f" (layer {m.layer_label(int(layers[0]))})" if layers.size else ""
            v.evidence = (f"gradient norm {total} at step {t + 1}{where} while the loss was finite "
                          f"({_fmt(m.loss[t])})")
        else:
            v.evidence = (f"the update of step {t + 1} (gradient norm {_fmt(total)}) would have made a weight or the "
                          f"optimizer state non-finite; it was skipped (weights and state kept)")
        v.step = t + 1
        v.data = {"steps": [b_[0] + 1 for b_ in bad], "kinds": [b_[1] for b_ in bad]}
        if layers.size:
            v.layer = int(layers[0]) + 1
    return v


def _loss_high(m):
    th = m.thresholds
    fin = [(t, l) for t, l in _loss_points(m) if math.isfinite(l)]
    chance = m.chance_loss
    text = f"a loss above {th.loss_high_factor:g}x the first loss"
    if chance is not None:
        text += (f", or the median of the last {th.loss_jump_window} losses above {th.loss_chance_factor:g}x the "
                 f"chance-level loss {_fmt(chance)}")
    v = Verdict("loss_high", "exploding", False, text, "no finite loss", REMEDIES["exploding"])
    if not fin:
        return v
    first = fin[0][1]
    for t, l in fin:
        if l > 0 and l > th.loss_high_factor * abs(first):
            v.fired, v.step = True, t + 1
            v.evidence = (f"loss {_fmt(l)} at step {t + 1} is {_fmt(l / abs(first))}x the first loss "
                          f"{_fmt(first)}{_pooled(m)}")
            v.data = {"loss": l, "first": first}
            return v
    recent = float(np.median([l for _, l in fin[-th.loss_jump_window:]]))
    if chance is not None and recent > th.loss_chance_factor * chance:
        v.fired, v.step = True, fin[-1][0] + 1
        v.evidence = (f"median of the last {min(len(fin), th.loss_jump_window)} loss(es) {_fmt(recent)} is "
                      f"{_fmt(recent / chance)}x the chance-level loss {_fmt(chance)} (uniform guessing)")
        v.data = {"recent": recent, "chance": chance}
        return v
    v.evidence = f"largest loss {_fmt(max(l for _, l in fin))}, first {_fmt(first)}, recent {_fmt(recent)}"
    if chance is not None:
        v.evidence += f" (chance level {_fmt(chance)})"
    return v


def _loss_jumps(m):
    th = m.thresholds
    pts = _loss_points(m)
    fin = [l for _, l in pts if math.isfinite(l)]
    first = abs(fin[0]) if fin else 0.0
    jumps = []
    for k in range(1, len(pts)):
        window = [l for _, l in pts[max(0, k - th.loss_jump_window):k] if math.isfinite(l)]
        if not window:
            continue
        ref = float(np.median(window))
        t, l = pts[k]
        if not math.isfinite(l) or (l > th.loss_jump_factor * ref and l - ref > th.loss_jump_min * first):
            jumps.append((t, l, ref))
    v = Verdict("loss_jumps", "exploding", len(jumps) >= th.loss_jump_count,
                f"loss above {th.loss_jump_factor:g}x the median of the previous {th.loss_jump_window} losses "
                f"and above it by {th.loss_jump_min:g}x the first loss, at least {th.loss_jump_count} times",
                "no jump", REMEDIES["exploding"], data={"steps": [t + 1 for t, _, _ in jumps]})
    if jumps:
        shown = ", ".join(f"step {t + 1}: {_fmt(l)} vs median {_fmt(ref)}" for t, l, ref in jumps[:3])
        v.evidence = f"{len(jumps)} jump(s) ({shown}{', ...' if len(jumps) > 3 else ''}){_pooled(m)}"
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
                f"(a line fits log ||W_l|| over the steps with R^2 >= {th.exp_fit_r2:g})", "no layer",
                REMEDIES[problem])
    if w.shape[0] < 3:
        v.evidence = f"needs >= 3 steps; {w.shape[0]} recorded"
        return v
    best = None
    for l in range(w.shape[1]):
        factor, r2 = _exp_fit(w[:, l])
        change = factor if growing else (1.0 / factor if factor > 0 else math.inf)
        if best is None or change > best[1]:
            best = (l, change, r2, factor)
        if change >= th.weight_change and r2 >= th.exp_fit_r2 and not v.fired:
            col = w[:, l]
            ok = np.isfinite(col) & (col > 0)
            first = col[ok][0]
            cross = np.flatnonzero(ok & ((col >= th.weight_change * first) if growing
                                         else (col <= first / th.weight_change)))
            v.fired, v.layer = True, l + 1
            v.step = int(cross[0]) + 1 if cross.size else int(np.flatnonzero(ok)[-1]) + 1
            v.evidence = (f"layer {m.layer_label(l)}: ||W|| went {_fmt(first)} -> {_fmt(col[ok][-1])} "
                          f"({_fmt(factor)}x, log-linear R^2 = {r2:.2f}); {th.weight_change:g}x reached at step "
                          f"{v.step}")
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
    if w.shape[0] < 2:
        v.evidence = f"needs >= 2 steps; {w.shape[0]} recorded"
        return v
    lowest = None
    for l in range(w.shape[1]):
        col = w[:, l]
        if not (col.size and col[0] > 0 and np.isfinite(col[0])):
            continue
        rel = np.where(np.isfinite(col), col / col[0], np.inf)
        if lowest is None or rel.min() < lowest[1]:
            lowest = (l, float(rel.min()))
        hits = np.flatnonzero(rel < th)
        if hits.size and not v.fired:
            t = int(hits[0])
            v.fired, v.step, v.layer = True, t + 1, l + 1
            v.evidence = (f"layer {m.layer_label(l)}: ||W|| {_fmt(col[0])} -> {_fmt(col[t])} at step {t + 1} "
                          f"({_fmt(rel[t])}x its first value)")
            v.data = {"first": float(col[0]), "value": float(col[t])}
    if not v.fired and lowest is not None:
        v.evidence = f"lowest: layer {m.layer_label(lowest[0])} at {_fmt(lowest[1])}x its first ||W||"
    return v


def _grad_ratios(m):
    g = m.series("grad_norm")
    if g.shape[0] == 0 or g.shape[1] < 2:
        return None, g
    with np.errstate(divide="ignore", invalid="ignore"):
        r = g[:, 0] / g[:, -1]
    return r, g


def _gradient_ratio(m, exploding):
    th = m.thresholds
    r, g = _grad_ratios(m)
    name, problem = ("gradient_exploding", "exploding") if exploding else ("gradient_vanishing", "vanishing")
    bound = th.grad_ratio_exploding if exploding else th.grad_ratio_vanishing
    text = f"median over steps of ||dL/dW_1|| / ||dL/dW_L|| {'>' if exploding else '<'} {bound:g}"
    if exploding:
        text += ", or a layer's gradient norm overflowed to inf"
    v = Verdict(name, problem, False, text, "needs >= 2 layers and a recorded step", REMEDIES[problem])
    if r is None:
        return v
    if exploding:
        over = np.argwhere(np.isposinf(g))
        if over.size:
            t, l = (int(i) for i in over[0])
            v.fired, v.step, v.layer = True, t + 1, l + 1
            v.evidence = f"layer {m.layer_label(l)}: ||dL/dW|| = inf (overflow) at step {t + 1}"
            v.data = {"overflow": True}
            return v
    ok = np.isfinite(r)
    if not ok.any():
        v.evidence = "no step with finite, non-zero gradient norms in the first and last layers"
        return v
    ratio = float(np.median(r[ok]))
    v.fired = ratio > bound if exploding else ratio < bound
    t_last = int(np.flatnonzero(ok)[-1])
    last = g[t_last]
    v.evidence = (f"||dL/dW_1|| / ||dL/dW_L|| = {_fmt(ratio)}"
                  + (f" (median of {int(ok.sum())} steps)" if ok.sum() > 1 else "")
                  + f"; step {t_last + 1}: first layer {_fmt(last[0])}, last layer {_fmt(last[-1])}")
    v.data = {"ratio": ratio, "grad_norm": last.tolist()}
    if v.fired:
        cross = np.flatnonzero(ok & ((r > bound) if exploding else (r < bound)))
        v.step = int(cross[0]) + 1 if cross.size else t_last + 1
        v.layer = 1
        # the layer where the gradient crosses 10x away from the output layer's, for the reader
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = last / last[-1]
        v.data["relative_to_last"] = rel.tolist()
    return v


def _slow_progress(m):
    th = m.thresholds
    fin = [l for _, l in _loss_points(m) if math.isfinite(l)]
    chance = m.chance_loss
    text = (f"over >= {th.plateau_min_steps} losses (each pooled over >= {th.loss_samples} samples) the loss "
            f"fell by less than {th.plateau_improvement:.0%}")
    if chance is not None:
        text += (f" while still above {th.plateau_chance_fraction:g}x the chance-level loss {_fmt(chance)}, or "
                 f"it ends above {th.plateau_chance_stuck:g}x that loss")
    v = Verdict("slow_progress", "vanishing", False, text, "", REMEDIES["vanishing"])
    if len(fin) < max(2, th.plateau_min_steps):
        v.evidence = f"{len(fin)} finite loss(es){_pooled(m)}, too few to judge"
        return v
    k = max(1, len(fin) // 10)
    start, end = float(np.mean(fin[:k])), float(np.mean(fin[-k:]))
    if start <= 0:
        v.evidence = f"first loss {_fmt(start)} <= 0"
        return v
    drop = 1.0 - end / start
    mid = fin[len(fin) // 2]
    avg = f" (means of the first and last {k})" if k > 1 else ""
    change = f"{drop:.1%} lower" if drop > -1 else f"{_fmt(end / start)}x higher"
    v.evidence = f"loss {_fmt(start)} -> {_fmt(mid)} -> {_fmt(end)} over {m.steps} steps{avg}{_pooled(m)}: {change}"
    v.data = {"drop": drop, "start": start, "end": end}
    if drop < th.plateau_improvement:
        if chance is not None and end <= th.plateau_chance_fraction * chance:
            v.evidence += f", but already below {th.plateau_chance_fraction:g}x chance level {_fmt(chance)}"
        else:
            v.fired, v.step = True, m.steps
    elif chance is not None and end > th.plateau_chance_stuck * chance:
        v.fired, v.step = True, m.steps
        v.evidence += f", but still {end / chance:.2f}x the chance-level loss {_fmt(chance)}: nothing learned yet"
    return v


def _fraction_check(name, series, threshold, problem, what, hidden_only=False, min_batch=None, judged=None):
    """Fires when the median of a layer's fraction over the last ``persist_window`` (eligible) steps
    exceeds the threshold: a state that persists, not one bad batch. Only layers whose activation
    name satisfies ``judged`` count."""
    def check(m):
        th = m.thresholds
        f = m.series(series)
        bound = threshold(m)
        nmin = min_batch(m) if min_batch else 1
        n_layers = f.shape[1] - (1 if hidden_only else 0)
        v = Verdict(name, problem, False,
                    f"median over the last {th.persist_window} steps of the fraction of a "
                    f"{'hidden ' if hidden_only else ''}layer's {what} above {bound:.0%}"
                    + (f" (batches of >= {nmin} rows)" if min_batch else ""), f"no {what}", REMEDIES[problem])
        steps = np.array([t for t, b in enumerate(m.batch) if b >= nmin], dtype=np.int64)
        if m.steps and not steps.size:
            v.evidence = f"no batch of >= {nmin} rows recorded (cannot judge: too few rows)"
            return v
        if n_layers < 1 or not steps.size:
            return v
        recent = steps[-th.persist_window:]
        worst = (-1.0, 0)
        for l in range(n_layers):
            if judged is not None and not judged(m.layers[l].activation.name):
                continue
            med = float(np.median(f[recent, l]))
            if med > worst[0]:
                worst = (med, l)
            if med > bound and not v.fired:
                col = f[steps, l]
                k = len(steps) - 1  # the first step of the run above the bound that reaches the last step
                while k > 0 and col[k - 1] > bound:
                    k -= 1
                if col[k] <= bound:
                    k = int(np.flatnonzero(f[recent, l] > bound)[0]) + len(steps) - len(recent)
                t = int(steps[k])
                v.fired, v.step, v.layer = True, t + 1, l + 1
                v.evidence = (f"layer {m.layer_label(l)}: {med:.0%} of its {what} (median of the last "
                              f"{len(recent)} step(s)); {f[t, l]:.0%} at step {t + 1}")
                if t != steps[-1]:
                    v.evidence += f", {f[steps[-1], l]:.0%} at the last step {steps[-1] + 1}"
                v.data = {"fraction": med, "last": float(f[steps[-1], l])}
        if not v.fired:
            v.evidence = (f"at most {worst[0]:.0%} (layer {m.layer_label(worst[1])}, median of the last "
                          f"{len(recent)} step(s))" if worst[0] >= 0 else "no layer it applies to")
        return v
    return check


def _underflow(m):
    th = m.thresholds.underflow_fraction
    sub = m.series("subnormal")
    n = m.series("n_grad")
    ftz = any(m.flush_denormals)
    v = Verdict("underflow", "underflow", False,
                f"float32 nets: more than {th:.0%} of a layer's gradient entries (dL/dW_l and E_l) are "
                f"subnormal (0 < |g| < 1.18e-38)", "no subnormal gradients", REMEDIES["underflow"])
    if sub.size:
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(n > 0, sub / np.where(n > 0, n, 1.0), 0.0)
        hits = np.argwhere(frac > th)
        if hits.size:
            t, l = (int(i) for i in hits[0])
            v.step, v.layer = t + 1, l + 1
            v.evidence = (f"layer {m.layer_label(l)}: {int(sub[t, l])} of {int(n[t, l])} gradient entries "
                          f"({frac[t, l]:.1%}) subnormal at step {t + 1}")
            # only a float32 net computes with subnormal floats; a float64 net is told, not flagged
            v.fired = m.net.dtype == np.float32
            if not v.fired:
                v.evidence += " (a float64 net: they would be subnormal in float32; not flagged)"
            v.data = {"fraction": float(frac[t, l]), "max_fraction": float(frac.max())}
        else:
            v.evidence = f"at most {frac.max():.2%} of a layer's gradient entries subnormal"
    if ftz:
        v.evidence += ("; flush-to-zero was on, so results below 1.18e-38 became 0 and are counted in "
                       "zero_grad, not here")
    return v


_CHECKS = [
    _loss_high, _loss_jumps, _loss_nan,
    lambda m: _weights_trend(m, True), _weights_nan, _gradient_nan,
    lambda m: _gradient_ratio(m, exploding=True),
    _slow_progress, lambda m: _gradient_ratio(m, exploding=False),
    lambda m: _weights_trend(m, False), _weights_to_zero,
    _fraction_check("dead_units", "dead_fraction", lambda m: m.thresholds.dead_fraction, "dead units",
                    "units dead (derivative 0 for every row of the batch)", hidden_only=True,
                    min_batch=lambda m: m.thresholds.dead_min_batch,
                    judged=lambda name: name not in SATURATING),
    _fraction_check("saturation", "saturated_fraction", lambda m: m.thresholds.saturated_fraction, "saturation",
                    "activations saturated", judged=lambda name: name in SATURATING),
    _underflow,
]

VERDICT_NAMES = ["loss_high", "loss_jumps", "loss_nan", "weights_growing", "weights_nan", "gradient_nan",
                 "gradient_exploding",
                 "slow_progress", "gradient_vanishing", "weights_shrinking", "weights_to_zero", "dead_units",
                 "saturation", "underflow"]
"""The verdicts in the order :meth:`GradientMonitor.verdicts` returns them."""
