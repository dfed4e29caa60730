"""The trainability phase diagram of deep tanh networks (Schoenholz, Gilmer, Ganguli, Sohl-Dickstein,
"Deep information propagation", ICLR 2017), reproduced as a sweep.

Mean-field theory (see :mod:`nnlab.demos.meanfield`) follows a random net with weights
N(0, σ_w²/n_in) and biases N(0, σ_b²). The pre-activation variance settles at the fixed point q*;
two inputs' correlation obeys the map

    c_{l+1} = (σ_w² · E[φ(u₁) φ(u₂)] + σ_b²) / q*,   u₁ = √q* z₁,  u₂ = √q* (c z₁ + √(1 − c²) z₂),

whose fixed point c* is 1 in the ordered phase (χ₁ = σ_w² E[φ'(√q* z)²] ≤ 1) and c* < 1 in the
chaotic phase (χ₁ > 1). Near c* the correlation approaches its fixed point as e^(−l/ξ_c), with

    ξ_c⁻¹ = −ln(σ_w² · E[φ'(u₁) φ'(u₂)])  at c = c*     (= −ln χ₁ in the ordered phase),

a depth scale that diverges at the order-to-chaos transition χ₁ = 1. The paper's claim: a net is
trainable roughly when its depth L < 6 ξ_c. The expectations are Gauss-Hermite quadrature
(:data:`GH_NODES_2D` × :data:`GH_NODES_2D` nodes for the two-dimensional ones); c* is the root of
c_{l+1}(c) − c on [0, 1) (the map's quadrature error at c = 1, where the map is exactly 1, is
subtracted first, so that the root is not lost near the transition).

The demo trains one net per grid point (σ_w², L) through :func:`nnlab.sweep.run` -- in parallel
on Dask workers, on an existing cluster with ``scheduler=``, or in this process -- and reports:

* the **agreement**: the fraction of grid points where "trainable" (training accuracy at least
  :data:`THRESHOLD_FRACTION` of the way from chance to 1, i.e. ≥ 0.55 with 10 classes) and
  "L < 6 ξ_c" agree (the claim: ≥ 80%);
* the critical σ_w² where χ₁ = 1 (the paper: ≈ 1.76 for σ_b² = 0.05);
* the measured per-layer decay rate of ‖∂L/∂W_l‖² at initialisation beside −ln χ₁.

>>> round(critical_sigma_w2("tanh", 0.05), 3)
1.761
>>> s = depth_scale("tanh", 1.0, 0.05)
>>> s.c_star, round(s.xi_c, 2)
(1.0, 3.63)
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from . import _common as C
from . import meanfield as MF

NAME = "phase"
SUMMARY = "Trainability of deep tanh nets over (σ_w², depth) vs the mean-field depth scale 6ξ_c (a Dask sweep)."
AGREEMENT = 0.8
THRESHOLD_FRACTION = 0.5
SIGMA_B2 = 0.05
CLAIM = ("For tanh nets with weights N(0, σ_w²/n_in) and biases N(0, 0.05), trained with SGD on the digits, "
         "'trainable' (training accuracy at least halfway from chance to 1) agrees with the mean-field "
         "prediction 'depth L < 6 ξ_c' at >= 80% of the grid points over σ_w² in [1, 4] and L in [10, 200]")
GH_NODES_2D = 160
BATCH = 32
COARSE = (np.linspace(1.0, 4.0, 6).tolist(), [10, 48, 86, 124, 162, 200])
FULL = (np.linspace(1.0, 4.0, 13).tolist(), list(range(10, 201, 10)))

OPTIONS = (
    C.Option("width", "int", 100, "Units per hidden layer (the claim is for >= 100).", low=8, high=1024),
    C.Option("steps", "int", 300, "SGD steps per net (batch 32).", low=1, high=100000),
    C.Option("lr", "float", 0.02, "SGD learning rate.", low=0.0, low_open=True, high=10.0),
    C.Option("samples", "int", 1000, "Training rows (a fixed subset of the 1797 digits).", low=64, high=1797),
    C.Option("full", "flag", False, "The fine grid: 13 σ_w² × 20 depths (10, 20, ..., 200) instead of 6 × 6."),
    C.Option("scheduler", "text", "", "Address of a Dask scheduler (tcp://host:8786) to run the nets on; "
             "'inprocess' runs them here; default: an embedded Dask cluster (in this process without Dask)."),
    C.Option("workers", "int", 0, "Worker processes of the embedded Dask cluster (0: one per core).", low=0,
             high=1024),
    C.Option("results", "text", "", "Keep the sweep's rows in this JSON Lines file (a rerun resumes it)."),
)


# ---------------------------------------------------------------- mean-field theory
_NODES2 = {}


def _nodes2(n=GH_NODES_2D):
    if n not in _NODES2:
        z, w = hermegauss(n)
        w = w / w.sum()
        z1, z2 = np.meshgrid(z, z, indexing="ij")
        _NODES2[n] = (z1, z2, np.outer(w, w))
    return _NODES2[n]


def _pair(q, c, n=GH_NODES_2D):
    z1, z2, w = _nodes2(n)
    s = math.sqrt(max(q, 0.0))
    return s * z1, s * (c * z1 + math.sqrt(max(1.0 - c * c, 0.0)) * z2), w


def correlation_map(activation, c, q, sigma_w2, sigma_b2):
    """c_{l+1} = (σ_w²·E[φ(u₁)φ(u₂)] + σ_b²)/q for inputs of variance q and correlation c."""
    act = MF._activation(activation)
    u1, u2, w = _pair(q, c)
    return (sigma_w2 * float(np.sum(w * act.forward(u1) * act.forward(u2))) + sigma_b2) / q


def chi_c(activation, c, q, sigma_w2):
    """σ_w²·E[φ'(u₁)φ'(u₂)] at correlation c (χ₁ at c = 1): the slope of the correlation map."""
    act = MF._activation(activation)
    u1, u2, w = _pair(q, c)
    return sigma_w2 * float(np.sum(w * act.derivative(u1) * act.derivative(u2)))


@dataclass
class DepthScale:
    """The mean-field numbers of one (activation, σ_w², σ_b²)."""

    sigma_w2: float
    q_star: float
    chi1: float
    c_star: float
    chi_c: float
    xi_c: float       # inf at the transition

    @property
    def phase(self):
        return "ordered" if self.chi1 < 1 else ("critical" if self.chi1 == 1 else "chaotic")


def c_fixed_point(activation, q, sigma_w2, sigma_b2, chi1):
    """c*: 1 in the ordered phase (χ₁ ≤ 1), else the root of the correlation map minus c in [0, 1)."""
    from scipy.optimize import brentq

    if chi1 <= 1.0:
        return 1.0
    offset = correlation_map(activation, 1.0, q, sigma_w2, sigma_b2) - 1.0  # quadrature error at c = 1

    def f(c):
        return correlation_map(activation, c, q, sigma_w2, sigma_b2) - c - offset

    hi = 1.0 - 1e-7
    if f(0.0) <= 0 or f(hi) >= 0:  # too close to the transition to resolve: c* ~ 1
        return 1.0
    return float(brentq(f, 0.0, hi, xtol=1e-13))


def depth_scale(activation, sigma_w2, sigma_b2):
    """:class:`DepthScale`: q*, χ₁, c*, the slope at c* and ξ_c = −1/ln(slope)."""
    q, _ = MF.fixed_point(activation, sigma_w2, sigma_b2)
    chi1 = MF.chi(activation, q, sigma_w2)
    c = c_fixed_point(activation, q, sigma_w2, sigma_b2, chi1)
    slope = chi1 if c == 1.0 else chi_c(activation, c, q, sigma_w2)
    xi = math.inf if slope >= 1.0 or slope <= 0 else -1.0 / math.log(slope)
    return DepthScale(float(sigma_w2), float(q), float(chi1), float(c), float(slope), xi)


def critical_sigma_w2(activation="tanh", sigma_b2=SIGMA_B2, lo=0.5, hi=8.0):
    """The σ_w² where χ₁ = 1 (the order-to-chaos transition) for this σ_b²."""
    from scipy.optimize import brentq

    def f(sw2):
        q, _ = MF.fixed_point(activation, sw2, sigma_b2)
        return MF.chi(activation, q, sw2) - 1.0

    return float(brentq(f, lo, hi, xtol=1e-12))


# ---------------------------------------------------------------- the demo
@dataclass
class PhaseResult:
    claim: str
    sigma_w2: list
    depths: list
    width: int
    steps: int
    lr: float
    samples: int
    threshold: float
    chance: float
    scales: list                   # DepthScale per σ_w²
    accuracy: list                 # [depth][σ_w²] final training accuracy (None: the point failed)
    trainable: list                # [depth][σ_w²]
    predicted: list                # [depth][σ_w²]: L < 6 ξ_c
    decay: list                    # [depth][σ_w²] measured decay rate of ‖∂L/∂W_l‖² at init (None if < 4 layers)
    agreement: float
    critical: float
    runner: str
    wall_time: float
    failed: list = field(default_factory=list)
    results: str = ""
    held: bool = False
    reason: str = ""
    seed: int = 0

    def to_dict(self):
        d = C.jsonable({k: getattr(self, k) for k in self.__dataclass_fields__ if k != "scales"})
        d["demo"] = NAME
        d["sigma_b2"] = SIGMA_B2
        d["scales"] = [C.jsonable({**s.__dict__, "phase": s.phase, "six_xi_c": 6 * s.xi_c}) for s in self.scales]
        d["paper_critical_sigma_w2"] = 1.76
        return d


def grid(full=False):
    """(σ_w² values, depths) of the coarse (default) or the full grid."""
    return FULL if full else COARSE


def _runner(scheduler, workers):
    """(scheduler, workers, text) for nnlab.sweep.run: the embedded Dask cluster when Dask is there."""
    if scheduler == "inprocess":
        return "inprocess", 0, "in this process"
    if scheduler:
        return scheduler, None, f"on the Dask cluster at {scheduler}"
    try:
        import distributed  # noqa: F401
    except ImportError:
        return "inprocess", 0, "in this process (Dask is not installed: pip install 'nnlab[sweep]' for workers)"
    import os

    n = workers or os.cpu_count() or 1
    return None, n, f"on an embedded Dask cluster of {n} worker process{'es' if n > 1 else ''}"


def run(seed=0, width=100, steps=300, lr=0.02, samples=1000, full=False, scheduler="", workers=0, results="",
        progress=None):
    """Sweep the grid, compare with 6 ξ_c; see the module docstring."""
    from .. import sweep

    opts = C.check_options(OPTIONS, dict(width=width, steps=steps, lr=lr, samples=samples, full=full,
                                         scheduler=scheduler, workers=workers, results=results))
    seed = C.check_seed(seed)
    sws, depths = grid(opts["full"])
    sched, nworkers, runner = _runner(opts["scheduler"], opts["workers"])
    fixed = dict(data="digits", samples=opts["samples"], width=opts["width"], activation="tanh", init="meanfield",
                 sigma_b2=SIGMA_B2, optimizer="sgd", lr=opts["lr"], steps=opts["steps"], batch_size=BATCH,
                 dtype="float32", seed=seed, record=["grad_norms"])
    t0 = time.perf_counter()
    rows = sweep.run({"sigma_w2": sws, "depth": depths}, opts["results"] or None, fixed=fixed, scheduler=sched,
                     workers=nworkers, progress=progress)
    wall = time.perf_counter() - t0
    by = {(r["params"]["sigma_w2"], r["params"]["depth"]): r for r in rows}
    scales = [depth_scale("tanh", s, SIGMA_B2) for s in sws]
    chance = 0.1
    threshold = chance + THRESHOLD_FRACTION * (1 - chance)
    acc, trn, pred, dec, failed = [], [], [], [], []
    for L in depths:
        a_row, t_row, p_row, d_row = [], [], [], []
        for s, sc in zip(sws, scales):
            r = by[(s, L)]
            ok = r["status"] == "ok"
            if not ok:
                failed.append(f"σ_w²={s:g}, L={L}: {r['error']}")
            a = r["metrics"]["accuracy"] if ok else None
            a_row.append(a)
            t_row.append(bool(a is not None and a >= threshold))
            p_row.append(bool(L < 6 * sc.xi_c))
            d_row.append(r["metrics"].get("grad_decay_init") if ok else None)
        acc.append(a_row)
        trn.append(t_row)
        pred.append(p_row)
        dec.append(d_row)
    n = len(sws) * len(depths)
    agree = sum(t == p for tr, pr in zip(trn, pred) for t, p in zip(tr, pr)) / n
    res = PhaseResult(CLAIM, sws, depths, opts["width"], opts["steps"], opts["lr"], opts["samples"], threshold, chance,
                      scales, acc, trn, pred, dec, agree, critical_sigma_w2("tanh", SIGMA_B2), runner, wall,
                      failed, opts["results"], seed=seed)
    res.held = bool(agree >= AGREEMENT and not failed and opts["width"] >= 100)
    if failed:
        res.reason = f"{len(failed)} grid point(s) failed: {failed[0]}"
    elif opts["width"] < 100:
        res.reason = f"width {opts['width']} < 100: the claim is about wide nets (agreement {agree:.0%})"
    else:
        res.reason = (f"'trainable' agrees with 'L < 6 ξ_c' at {agree:.0%} of {n} grid points "
                      f"({'>=' if agree >= AGREEMENT else '<'} {AGREEMENT:.0%})")
    return res


def _cell(a, trainable, predicted):
    if a is None:
        return "fail"
    mark = " " if trainable == predicted else "!"
    return f"{round(100 * a):3d}{'+' if predicted else '·'}{mark}"


def render(res, width=100):
    out = C.header(res, width, (
        f"tanh nets: L hidden Dense({res.width}) layers, W ~ N(0, σ_w²/n_in), b ~ N(0, {SIGMA_B2}), softmax output; "
        f"{res.steps} SGD steps (lr {res.lr:g}, batch {BATCH}, float32) on {res.samples} standardised digits, seed "
        f"{res.seed}; ran {res.runner} in {res.wall_time:.1f} s. Trainable: training accuracy >= "
        f"{res.threshold:.2f} (halfway from chance {res.chance:.2f} to 1)."))
    out.append("")
    out.append("training accuracy (%) over depth L (rows) and σ_w² (columns); '+' L < 6ξ_c (predicted trainable),")
    out.append("'·' L >= 6ξ_c; '!' where the prediction and the measurement disagree")
    head = ["L \\ σ_w²"] + [f"{s:.2f}" for s in res.sigma_w2]
    rows = []
    for L, a_row, t_row, p_row in reversed(list(zip(res.depths, res.accuracy, res.trainable, res.predicted))):
        rows.append([str(L)] + [_cell(a, t, p) for a, t, p in zip(a_row, t_row, p_row)])
    rows.append(["ξ_c"] + [("inf" if math.isinf(s.xi_c) else f"{s.xi_c:.1f}") for s in res.scales])
    rows.append(["6ξ_c"] + [("inf" if math.isinf(s.xi_c) else f"{6 * s.xi_c:.0f}") for s in res.scales])
    rows.append(["χ₁"] + [f"{s.chi1:.3f}" for s in res.scales])
    out += C.table(head, rows)
    out.append("")
    out.append(f"critical σ_w² (χ₁ = 1) at σ_b² = {SIGMA_B2}: {res.critical:.4f} (the paper: ≈ 1.76)")
    out.append("")
    out.append("per-layer decay rate of ‖∂L/∂W_l‖² at initialisation (fit over the bulk layers) vs −ln χ₁:")
    deep = [i for i, L in enumerate(res.depths) if L >= 40][:2] or [len(res.depths) - 1]
    trows = []
    for j, s in enumerate(res.scales):
        meas = [res.decay[i][j] for i in deep]
        trows.append([f"{s.sigma_w2:.2f}", s.phase, f"{-math.log(s.chi1):+.4f}"]
                     + [("-" if m is None else f"{m:+.4f}") for m in meas])
    out += C.table(["σ_w²", "phase", "−ln χ₁"] + [f"measured L={res.depths[i]}" for i in deep], trows)
    if res.failed:
        out.append("")
        out.append(f"failed points ({len(res.failed)}):")
        out += [f"  {f}" for f in res.failed[:10]]
    out.append("")
    out.append(f"agreement: {res.agreement:.1%} of {len(res.depths) * len(res.sigma_w2)} grid points")
    return C.finish(out, res, width)


def plot(res, path):
    """PNG: the accuracy heat map over (σ_w², L) with the ξ_c and 6ξ_c curves and the transition."""
    from .. import charts

    plt = charts._pyplot()
    acc = np.array([[np.nan if a is None else a for a in row] for row in res.accuracy], dtype=float)
    sws, depths = np.array(res.sigma_w2), np.array(res.depths)
    fig, ax = plt.subplots(figsize=(7, 5))
    dx = (sws[1] - sws[0]) / 2 if len(sws) > 1 else 0.5
    dy = (depths[1] - depths[0]) / 2 if len(depths) > 1 else 5
    im = ax.imshow(acc, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1,
                   extent=(sws[0] - dx, sws[-1] + dx, depths[0] - dy, depths[-1] + dy))
    fig.colorbar(im, ax=ax, label="training accuracy")
    fine = np.linspace(sws[0] - dx, sws[-1] + dx, 121)
    xi = np.array([depth_scale("tanh", s, SIGMA_B2).xi_c for s in fine])
    xi = np.where(np.isfinite(xi), xi, np.nan)
    ax.plot(fine, xi, "w--", lw=1.5, label="ξ_c")
    ax.plot(fine, 6 * xi, "w-", lw=2, label="6 ξ_c")
    ax.axvline(res.critical, color="r", ls=":", lw=1, label=f"χ₁ = 1 (σ_w² = {res.critical:.3f})")
    ax.set_ylim(depths[0] - dy, depths[-1] + dy)
    ax.set_xlabel("σ_w²")
    ax.set_ylabel("depth L")
    ax.set_title(f"tanh, σ_b² = {SIGMA_B2}: agreement {res.agreement:.0%} with L < 6 ξ_c")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
