"""Demo: the exponentially weighted average and its bias correction.

The claim, from the source text ([S1]: V_t = β·V_{t−1} + (1 − β)·θ_t "does not fit the first
few days well, hence the bias correction V_t / (1 − βᵗ)"; β = 0.9 averages about the last 10
values, β = 0.98 about 50): *started from V_0 = 0, the uncorrected average's first values are
biased towards 0 -- E[V_t] = (1 − βᵗ)·μ for a series of mean μ, so V_1 ≈ (1 − β)·θ_1 -- while the
corrected V̂_t = V_t/(1 − βᵗ) is unbiased from t = 1; once βᵗ is negligible the two coincide.*

Setup: a noisy "daily temperature" series θ_t = μ + σ·ε_t, ε_t ~ N(0, 1) (seeded), t = 1..``days``,
averaged by :func:`nnlab.ewa.ewa` with and without ``bias_correction``. For independent noise the
corrected V̂_t has mean μ and standard deviation
sd_t = σ·√((1 − β)/(1 + β) · (1 + βᵗ)/(1 − βᵗ)) (σ at t = 1, σ·√((1 − β)/(1 + β)) for large t).

The claim held when, for t = 1..5, every uncorrected V_t falls short of μ by at least half of the
predicted start-up bias βᵗ·μ (μ − V_t ≥ ½·βᵗ·μ), every corrected V̂_t is within 3·sd_t of μ, and at
t = ``days`` the two differ by less than 0.1% of μ.

Measured at the defaults (μ = 20, σ = 2, β = 0.9, 100 days, seed 0): V_1..V_5 = 2.02, 3.62, 5.10,
6.38, 7.63 against μ = 20 (0.10, 0.18, 0.25, 0.32, 0.38 of it; 1 − βᵗ = 0.10, 0.19, 0.27, 0.34,
0.41); V̂_1..V̂_5 = 20.21, 19.07, 18.81, 18.56, 18.63 (sd_t = 2.0, 1.42, 1.16, 1.01, 0.90); at day
100 both are 19.60 (they differ by 5e-4).
"""

import math
from dataclasses import dataclass, field

import numpy as np

from . import _common as C

NAME = "ewa"
SUMMARY = "Exponentially weighted average: the first values are biased towards 0 unless bias-corrected."
CLAIM = ("Started from V_0 = 0, an exponentially weighted average's first values are biased towards 0 "
         "(E[V_t] = (1 − βᵗ)·μ), while the bias-corrected V_t/(1 − βᵗ) is unbiased from the first value; "
         "once βᵗ is negligible the two coincide")
OPTIONS = (
    C.Option("beta", "float", 0.9, "β of the average (0.9 ~ the last 10 values).", low=0, low_open=True,
             high=0.999),
    C.Option("days", "int", 100, "Length of the series.", low=10, high=10**6),
    C.Option("mean", "float", 20.0, "μ, the series' mean.", low=0, low_open=True, high=1e6),
    C.Option("noise", "float", 2.0, "σ, the standard deviation of the noise.", low=0, high=1e6),
)
FIRST = 5  # the start-up values the claim looks at


def corrected_sd(sigma, beta, t):
    """Standard deviation of the bias-corrected average of independent N(μ, σ²) values at step t."""
    return sigma * math.sqrt((1 - beta) / (1 + beta) * (1 + beta ** t) / (1 - beta ** t))


@dataclass
class EwaResult:
    claim: str
    beta: float
    days: int
    mean: float
    noise: float
    seed: int
    series: list = field(default_factory=list)
    raw: list = field(default_factory=list)        # V_t without correction
    corrected: list = field(default_factory=list)  # V̂_t
    expected_raw: list = field(default_factory=list)  # (1 − βᵗ)·μ
    sd: list = field(default_factory=list)         # sd_t of V̂_t
    held: bool = False
    reason: str = ""

    def to_dict(self):
        d = C.jsonable(self)
        d["demo"] = NAME
        d["first"] = FIRST
        return d


def run(beta=0.9, days=100, mean=20.0, noise=2.0, seed=0):
    """Average a seeded noisy series with and without bias correction; see the module docstring."""
    from .. import ewa as _ewa

    o = C.check_options(OPTIONS, dict(beta=beta, days=days, mean=mean, noise=noise))
    seed = C.check_seed(seed)
    res = EwaResult(CLAIM, o["beta"], o["days"], o["mean"], o["noise"], seed)
    theta = res.mean + res.noise * np.random.default_rng([seed, 1]).standard_normal(res.days)
    res.series = theta.tolist()
    res.raw = _ewa.ewa(theta, beta=res.beta).tolist()
    res.corrected = _ewa.ewa(theta, beta=res.beta, bias_correction=True).tolist()
    t = np.arange(1, res.days + 1)
    res.expected_raw = ((1 - res.beta ** t) * res.mean).tolist()
    res.sd = [corrected_sd(res.noise, res.beta, int(k)) for k in t]
    _judge(res)
    return res


def _judge(res):
    b, mu = res.beta, res.mean
    raw_ok = all(mu - res.raw[k] >= 0.5 * b ** (k + 1) * mu for k in range(FIRST))
    corr_ok = all(abs(res.corrected[k] - mu) <= 3 * res.sd[k] for k in range(FIRST))
    late = abs(res.raw[-1] - res.corrected[-1])
    late_ok = late < 1e-3 * mu
    res.held = bool(raw_ok and corr_ok and late_ok)
    res.reason = (f"V_1..V_{FIRST} = {', '.join(f'{v:.3g}' for v in res.raw[:FIRST])} vs μ = {mu:g} "
                  f"({'biased towards 0' if raw_ok else 'NOT as biased as claimed'}); corrected "
                  f"{', '.join(f'{v:.3g}' for v in res.corrected[:FIRST])} "
                  f"({'within' if corr_ok else 'NOT within'} 3 sd of μ); at t = {res.days} they differ by "
                  f"{late:.2g} ({'<' if late_ok else '>='} 0.1% of μ)")


def render(res, width=100):
    from .. import charts

    out = C.header(res, width, (
        f"θ_t = μ + σ·ε_t with μ = {res.mean:g}, σ = {res.noise:g}, {res.days} values (seed {res.seed}); "
        f"V_t = {res.beta:g}·V_(t−1) + {1 - res.beta:.3g}·θ_t from V_0 = 0 (nnlab.ewa.ewa), corrected "
        f"V̂_t = V_t/(1 − {res.beta:g}^t); averages about the last {1 / (1 - res.beta):.3g} values."))
    out.append("")
    n = min(10, res.days)
    rows = [[k + 1, f"{res.series[k]:.3f}", f"{res.raw[k]:.3f}", f"{res.expected_raw[k]:.3f}",
             f"{res.raw[k] / res.mean:.3f}", f"{res.corrected[k]:.3f}", f"{res.sd[k]:.3f}"] for k in range(n)]
    rows.append([res.days, f"{res.series[-1]:.3f}", f"{res.raw[-1]:.3f}", f"{res.expected_raw[-1]:.3f}",
                 f"{res.raw[-1] / res.mean:.3f}", f"{res.corrected[-1]:.3f}", f"{res.sd[-1]:.3f}"])
    out += C.table(["t", "θ_t", "V_t", "(1−βᵗ)μ", "V_t/μ", "V̂_t", "sd of V̂_t"], rows)
    out += C.wrap(f"(series mean {float(np.mean(res.series)):.3f}; "
                  f"mean of (V_t − μ)/μ over t = 1..{n}: uncorrected "
                  f"{float(np.mean([(v - res.mean) / res.mean for v in res.raw[:n]])):+.3f}, corrected "
                  f"{float(np.mean([(v - res.mean) / res.mean for v in res.corrected[:n]])):+.3f})", width, indent=" ")
    out.append("")
    k = min(res.days, 40)
    out.append(f"the first {k} values: θ_t, V_t (uncorrected), V̂_t (corrected)")
    out.append(charts.line_plot({"θ_t": res.series[:k], "V_t": res.raw[:k], "V̂_t": res.corrected[:k]},
                                width=C.chart_width(width), height=12))
    return C.finish(out, res, width)


def plot(res, path):
    from .. import charts

    return charts.save_panels(path, [
        dict(kind="lines", series={"θ_t": res.series, "V_t (uncorrected)": res.raw, "V̂_t (corrected)": res.corrected},
             xlabel="t", ylabel="value", title=f"ewa: β = {res.beta:g}", hlines={"μ": res.mean}),
    ])
