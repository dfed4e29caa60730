"""The phase diagram demo: the mean-field depth scale ξ_c and the critical σ_w² against brute-force
numerical integration (scipy.integrate.quad and a fine 2-D grid), the measured gradient decay
against −ln χ₁, and the demo itself at a tiny size."""

import json
import math

import numpy as np
import pytest
from scipy import integrate, optimize

from nnlab import demos, sweep
from nnlab.demos import phase

SB2 = 0.05


def gauss(f):
    """E[f(z)], z ~ N(0, 1), by adaptive quadrature."""
    return integrate.quad(lambda z: f(z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi), -12, 12,
                          epsabs=1e-13, epsrel=1e-12, limit=200)[0]


def q_star(sw2, sb2=SB2):
    q = 1.0
    for _ in range(2000):
        new = sw2 * gauss(lambda z, q=q: math.tanh(math.sqrt(q) * z) ** 2) + sb2
        if abs(new - q) < 1e-14:
            break
        q = new
    return new


def chi1(sw2, sb2=SB2):
    q = q_star(sw2, sb2)
    return sw2 * gauss(lambda z: (1 - math.tanh(math.sqrt(q) * z) ** 2) ** 2)


# a fine trapezoid grid for the 2-D expectations
_Z = np.linspace(-9, 9, 1801)
_W = np.exp(-_Z ** 2 / 2)
_W /= _W.sum()
Z1, Z2 = np.meshgrid(_Z, _Z, indexing="ij")
W2 = np.outer(_W, _W)


def brute_xi_chaotic(sw2, sb2=SB2):
    q = q_star(sw2, sb2)

    def u(c):
        return math.sqrt(q) * Z1, math.sqrt(q) * (c * Z1 + math.sqrt(1 - c * c) * Z2)

    def cmap(c):
        u1, u2 = u(c)
        return (sw2 * float(np.sum(W2 * np.tanh(u1) * np.tanh(u2))) + sb2) / q

    c = optimize.brentq(lambda c: cmap(c) - c, 0.0, 0.999, xtol=1e-12)
    u1, u2 = u(c)
    slope = sw2 * float(np.sum(W2 / np.cosh(u1) ** 2 / np.cosh(u2) ** 2))
    return c, -1 / math.log(slope)


def test_critical_sigma_w2_against_quadrature_and_the_paper():
    brute = optimize.brentq(lambda s: chi1(s) - 1, 1.2, 2.5, xtol=1e-10)
    ours = phase.critical_sigma_w2("tanh", SB2)
    assert abs(ours - brute) < 1e-6, (ours, brute)
    assert abs(ours - 1.76) < 0.01  # the paper's value


@pytest.mark.parametrize("sw2", [1.0, 1.5, 1.7])
def test_xi_c_in_the_ordered_phase_against_quadrature(sw2):
    s = phase.depth_scale("tanh", sw2, SB2)
    assert s.phase == "ordered" and s.c_star == 1.0
    assert abs(s.q_star - q_star(sw2)) < 1e-9
    expected = -1 / math.log(chi1(sw2))
    assert abs(s.xi_c - expected) < 1e-6 * expected, (s.xi_c, expected)


@pytest.mark.parametrize("sw2", [2.2, 3.0, 4.0])
def test_xi_c_in_the_chaotic_phase_against_a_fine_grid(sw2):
    s = phase.depth_scale("tanh", sw2, SB2)
    c, xi = brute_xi_chaotic(sw2)
    assert s.phase == "chaotic" and s.chi1 > 1
    assert abs(s.c_star - c) < 1e-6, (s.c_star, c)
    assert abs(s.xi_c - xi) < 1e-5 * xi, (s.xi_c, xi)


def test_xi_c_diverges_at_the_transition():
    crit = phase.critical_sigma_w2("tanh", SB2)
    near = [phase.depth_scale("tanh", crit + d, SB2).xi_c for d in (-0.1, -0.01, 0.01, 0.1)]
    assert near[1] > 5 * near[0] and near[2] > 5 * near[3]
    assert min(near[1], near[2]) > 100


@pytest.mark.parametrize("sw2", [1.0, 3.0])
def test_measured_gradient_decay_matches_minus_log_chi1(sw2):
    p = sweep.Grid({"sigma_w2": [sw2]}, fixed=dict(depth=40, width=256, sigma_b2=SB2, steps=0, samples=256)).points()[0]
    measured = sweep.train_point(p)["grad_decay_init"]
    predicted = -math.log(phase.depth_scale("tanh", sw2, SB2).chi1)
    assert abs(measured - predicted) < 0.25 * abs(predicted), (measured, predicted)


@pytest.fixture(scope="module")
def tiny():
    return phase.run(width=8, steps=3, samples=64, scheduler="inprocess", progress=False)


def test_tiny_demo_result(tiny):
    assert tiny.sigma_w2 == phase.COARSE[0] and tiny.depths == phase.COARSE[1]
    assert len(tiny.accuracy) == 6 and all(len(r) == 6 for r in tiny.accuracy)
    agree = np.mean([t == p for tr, pr in zip(tiny.trainable, tiny.predicted) for t, p in zip(tr, pr)])
    assert tiny.agreement == pytest.approx(agree)
    for L, row in zip(tiny.depths, tiny.predicted):
        assert row == [L < 6 * s.xi_c for s in tiny.scales]
    assert tiny.threshold == pytest.approx(0.55)
    assert tiny.held is False and "width 8 < 100" in tiny.reason  # the claim is about wide nets
    d = json.loads(json.dumps(tiny.to_dict(), allow_nan=False))
    assert d["demo"] == "phase" and abs(d["critical"] - 1.7610) < 1e-3


@pytest.mark.parametrize("width", [80, 120])
def test_tiny_demo_renders(tiny, width):
    text = phase.render(tiny, width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "critical σ_w²" in text and "6ξ_c" in text and "−ln χ₁" in text and "claim held: no" in text


def test_tiny_demo_is_a_command(run, tmp_path):
    assert "phase" in demos.DEMOS
    res = run("demo", "phase", "--width", "8", "--steps", "2", "--samples", "64", "--scheduler", "inprocess",
              "--results", str(tmp_path / "p.jsonl"), "--json", str(tmp_path / "p.json"))
    assert res.exit_code == 1, res.output  # width < 100: not the claim
    assert "agreement:" in res.output and "critical σ_w²" in res.output
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 36
    assert run("demo", "phase", "--help").output.count("--full") == 1
    bad = run("demo", "phase", "--width", "4")
    assert bad.exit_code == 2 and "Traceback" not in bad.output
