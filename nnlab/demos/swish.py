"""Demo: swish_β(z) = z·σ(βz) interpolates between z/2 (β → 0) and ReLU (β → ∞).

The claim, from the source text ([S4]: "as β → 0 we get the linear function z/2; as β → ∞ the
sigmoid becomes a step, 0 or 1, and multiplied by z gives ReLU"; Swish is "a smooth ReLU with a
gate"): *over a grid of z, the largest gap between swish_β and z/2 shrinks as β decreases, and the
largest gap to ReLU shrinks as β grows; at β = 1 swish has its minimum −0.2785 at z ≈ −1.2785.*

Exact facts behind the numbers: swish_β(z) = swish_1(βz)/β, so max_z |swish_β − relu| = 0.27846/β
(attained at z = −1.27846/β, the minimum of swish_β), and swish_β(z) − z/2 = z(σ(βz) − ½) ≈ βz²/4
for small βz, so on [−Z, Z] the gap to z/2 is about βZ²/4. The minimum of swish_1 solves
1 + z(1 − σ(z)) = 0 (Newton's method gives z* = −1.278465, swish_1(z*) = −0.278465).

Setup: the registry's compiled swish (``nnlab.activations.get('swish', beta=β)``) on ``points``
equally spaced z in [−``zmax``, ``zmax``], β in (0.01, 0.1, 1, 10, 100).

The claim held when the gap to z/2 decreases monotonically as β decreases and is below 0.1 at
β = 0.01, the gap to ReLU decreases monotonically as β grows and is below 0.003 at β = 100, and the
grid minimum at β = 1 is within 1e-4 of −0.27846.

Measured at the defaults (zmax 6, 4801 points): gap to z/2 = 0.0900, 0.874, 2.985, 3.0, 3.0 and gap
to ReLU = 2.91, 2.13, 0.2785, 0.02785, 0.002784 for β = 0.01, 0.1, 1, 10, 100; grid minimum at β = 1
−0.278464 at z = −1.2775 (the grid point nearest z* = −1.278465).
"""

import math
from dataclasses import dataclass, field

import numpy as np

from . import _common as C

NAME = "swish"
SUMMARY = "swish_β = z·σ(βz): z/2 at small β, ReLU at large β; its minimum at β = 1."
CLAIM = ("swish_β(z) = z·σ(βz) tends to z/2 as β -> 0 and to ReLU as β -> ∞ (the largest gaps over a grid "
         "shrink monotonically), and at β = 1 its minimum is −0.2785 at z ≈ −1.2785")
OPTIONS = (
    C.Option("zmax", "float", 6.0, "The grid spans [−zmax, zmax].", low=0, low_open=True, high=1e3),
    C.Option("points", "int", 4801, "Grid points.", low=11, high=10**7),
)
BETAS = (0.01, 0.1, 1.0, 10.0, 100.0)
HALF_BELOW = 0.1      # gap to z/2 at β = 0.01
RELU_BELOW = 0.003    # gap to ReLU at β = 100
MIN_TOL = 1e-4


def swish1_minimum():
    """(z*, swish_1(z*)): Newton's method on g(z) = 1 + z(1 − σ(z)), the zero of swish_1'(z)/σ(z)."""
    z = -1.0
    for _ in range(50):
        s = 1.0 / (1.0 + math.exp(-z))
        g = 1.0 + z * (1.0 - s)
        dg = (1.0 - s) - z * s * (1.0 - s)
        z -= g / dg
    return z, z / (1.0 + math.exp(-z))


@dataclass
class SwishResult:
    claim: str
    zmax: float
    points: int
    seed: int
    betas: list = field(default_factory=list)
    gap_half: list = field(default_factory=list)   # max |swish_β − z/2| per β
    gap_relu: list = field(default_factory=list)   # max |swish_β − relu| per β
    gap_relu_exact: list = field(default_factory=list)  # 0.27846/β where the minimum lies in the grid
    min_value: float = None                        # grid minimum at β = 1
    min_at: float = None
    exact_min: tuple = None                        # (z*, swish_1(z*)) by Newton's method
    curves: dict = field(default_factory=dict)     # β -> swish_β on a coarse grid (for pictures)
    curve_z: list = field(default_factory=list)
    held: bool = False
    reason: str = ""

    def to_dict(self):
        d = C.jsonable(self)
        d["demo"] = NAME
        d["thresholds"] = {"half_below_at_0.01": HALF_BELOW, "relu_below_at_100": RELU_BELOW, "min_tol": MIN_TOL}
        return d


def run(zmax=6.0, points=4801, seed=0):
    """Evaluate swish_β on the grid for every β; ``seed`` is accepted for uniformity (nothing is random)."""
    from .. import activations

    o = C.check_options(OPTIONS, dict(zmax=zmax, points=points))
    seed = C.check_seed(seed)
    res = SwishResult(CLAIM, o["zmax"], o["points"], seed)
    z = np.linspace(-res.zmax, res.zmax, res.points)
    relu = np.maximum(z, 0.0)
    zs, ms = swish1_minimum()
    res.exact_min = (zs, ms)
    coarse = np.linspace(-min(res.zmax, 4.0), min(res.zmax, 4.0), 161)
    res.curve_z = coarse.tolist()
    for beta in BETAS:
        act = activations.get("swish", beta=beta)
        f = np.asarray(act.forward(z), dtype=np.float64)
        res.betas.append(beta)
        res.gap_half.append(float(np.max(np.abs(f - z / 2))))
        res.gap_relu.append(float(np.max(np.abs(f - relu))))
        res.gap_relu_exact.append(-ms / beta if abs(zs / beta) <= res.zmax else None)
        res.curves[f"{beta:g}"] = np.asarray(act.forward(coarse), dtype=np.float64).tolist()
        if beta == 1.0:
            i = int(np.argmin(f))
            res.min_value, res.min_at = float(f[i]), float(z[i])
    _judge(res)
    return res


def _judge(res):
    half, relu = res.gap_half, res.gap_relu
    mono_half = all(a <= b for a, b in zip(half[:-1], half[1:]))
    mono_relu = all(a >= b for a, b in zip(relu[:-1], relu[1:]))
    min_ok = abs(res.min_value - res.exact_min[1]) <= MIN_TOL
    res.held = bool(mono_half and half[0] < HALF_BELOW and mono_relu and relu[-1] < RELU_BELOW and min_ok)
    res.reason = (f"max|swish_β − z/2| at β = {res.betas[0]:g}: {half[0]:.3g} "
                  f"({'<' if half[0] < HALF_BELOW else '>='} {HALF_BELOW:g}), "
                  f"{'non-decreasing' if mono_half else 'NOT monotone'} in β; max|swish_β − relu| at β = "
                  f"{res.betas[-1]:g}: {relu[-1]:.3g} ({'<' if relu[-1] < RELU_BELOW else '>='} {RELU_BELOW:g}), "
                  f"{'non-increasing' if mono_relu else 'NOT monotone'} in β; minimum at β = 1: {res.min_value:.6f} at "
                  f"z = {res.min_at:.4f} (exact {res.exact_min[1]:.6f} at {res.exact_min[0]:.6f})")


def render(res, width=100):
    from .. import charts

    out = C.header(res, width, (
        f"the registry's swish on {res.points} points of [−{res.zmax:g}, {res.zmax:g}]; swish_β(z) = swish_1(βz)/β, "
        "so the gap to ReLU is exactly 0.27846/β once the minimum z = −1.27846/β lies in the grid; the gap to z/2 "
        "is about β·zmax²/4 for small β."))
    out.append("")
    rows = [[f"{b:g}", f"{h:.4g}", f"{r:.4g}", "-" if e is None else f"{e:.4g}"]
            for b, h, r, e in zip(res.betas, res.gap_half, res.gap_relu, res.gap_relu_exact)]
    out += C.table(["β", "max|swish_β − z/2|", "max|swish_β − relu|", "0.27846/β"], rows)
    out.append("")
    out.append("max|swish_β − z/2| per β (log scale):")
    bw = max(20, min(50, width - 30))
    out.append(charts.log_bars([f"β={b:g}" for b in res.betas], res.gap_half, width=bw))
    out.append("max|swish_β − relu| per β (log scale):")
    out.append(charts.log_bars([f"β={b:g}" for b in res.betas], res.gap_relu, width=bw))
    out.append("")
    out += C.wrap(f"minimum at β = 1 on the grid: {res.min_value:.6f} at z = {res.min_at:.4f}; exact (Newton): "
                  f"{res.exact_min[1]:.6f} at z = {res.exact_min[0]:.6f}", width)
    out.append("")
    z = np.asarray(res.curve_z)
    series = {"z/2": (z / 2).tolist(), "relu": np.maximum(z, 0).tolist()}
    series.update({f"β={k}": v for k, v in res.curves.items() if k in ("0.1", "1", "10")})
    out.append("swish_β(z) for β = 0.1, 1, 10 beside z/2 and relu (later curves drawn on top):")
    out.append(charts.line_plot(series, x=z, width=C.chart_width(width), height=14))
    return C.finish(out, res, width)


def plot(res, path):
    from .. import charts

    z = np.asarray(res.curve_z)
    series = {f"β={k}": v for k, v in res.curves.items()}
    series["z/2"] = (z / 2).tolist()
    series["relu"] = np.maximum(z, 0).tolist()
    return charts.save_panels(path, [
        dict(kind="lines", series=series, x=z, xlabel="z", ylabel="swish_β(z)", title="swish: z·σ(βz)"),
        dict(kind="lines", series={"max|swish_β − z/2|": res.gap_half, "max|swish_β − relu|": res.gap_relu},
             x=res.betas, logy=True, logx=True, xlabel="β", ylabel="largest gap on the grid",
             title="gaps to the two limits"),
    ])
