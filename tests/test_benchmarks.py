"""Smoke tests of the training-step benchmark (nnlab.benchmark: ``nnlab bench``,
benchmarks/bench_train_step.py) at tiny sizes: its float64 reference, the agreement check that
decides which frameworks get timed, and its reporting; and of benchmarks/bench_bounds.py. No
timing asserts."""

import importlib.util
import json
import os

import numpy as np
import pytest
from cli_checks import one_line_error  # tests/ is on sys.path (conftest.py)

import nnlab.benchmark as B

_BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")

SMALL = [B.Spec("t-tanh-mse", (3, 5, 4, 2), 6, "tanh", "mse", "xavier_normal"),
         B.Spec("t-relu-ce", (4, 7, 6, 3), 5, "relu", "softmax_cross_entropy", "he_normal"),
         B.Spec("t-sigmoid-ce", (3, 4, 4, 4, 3), 4, "sigmoid", "softmax_cross_entropy", "torch_default")]
IDS = [s.name for s in SMALL]


def _importable(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _setup(spec):
    X, y = B.make_data(spec)
    return [p.copy() for p in B.build_nnlab(spec).params()], X, y


@pytest.mark.parametrize("spec", SMALL, ids=IDS)
def test_reference_gradients_match_central_differences(spec):
    params, X, y = _setup(spec)
    ref = B.NumpyRunner(spec, "sgd-momentum", params, X, y, dtype=np.float64)
    ref.loss_and_grads()
    grads = [g.copy() for g in ref.g]
    h = 1e-6
    for p, g in zip(ref.p, grads):
        fd = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = ref.loss_and_grads()
            p[idx] = old - h
            down = ref.loss_and_grads()
            p[idx] = old
            fd[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("opt", B.OPTIMIZERS)
def test_rule_update_is_the_numpy_first_step(opt):
    spec = SMALL[0]
    params, X, y = _setup(spec)
    r = B.NumpyRunner(spec, opt, params, X, y, dtype=np.float64)
    _, grads, after = r.first_step()
    for p0, g, a in zip(params, grads, after):
        np.testing.assert_allclose(a - p0, B.rule_update(opt, g), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("opt", B.OPTIMIZERS)
@pytest.mark.parametrize("spec", SMALL, ids=IDS)
def test_every_framework_agrees_with_the_reference(spec, opt):
    names = ["nnlab", "nnlab-kernel", "numpy"] + [n for n in ("torch", "jax") if _importable(n)]
    runners, reports = B.prepare(spec, opt, names, quiet=True)
    for name in names:
        rep = reports[name]
        if rep.get("unreachable"):  # the trainer no longer calls through net._kernels
            continue
        assert rep["agree"], (name, rep)
        runners[name].run(2)  # and keeps stepping


def test_the_check_rejects_wrong_loss_gradients_and_updates():
    spec = SMALL[1]
    params, X, y = _setup(spec)
    ref = B.reference(spec, "adam", params, X, y)
    loss, grads, after = B.NumpyRunner(spec, "adam", params, X, y).first_step()
    assert B.check(ref, params, (loss, grads, after), "adam")["agree"]
    assert not B.check(ref, params, (loss * 1.001, grads, after), "adam")["agree"]
    bad = [g.copy() for g in grads]
    bad[0] *= 1.01
    assert not B.check(ref, params, (loss, bad, after), "adam")["agree"]
    doubled = [p0 + 2 * (a - p0) for p0, a in zip(params, after)]  # the update at twice the rate
    assert not B.check(ref, params, (loss, grads, doubled), "adam")["agree"]
    assert not B.check(ref, params, (float("nan"), grads, after), "adam")["agree"]


def test_relu_masks_steer_the_reference():
    spec = SMALL[1]
    params, X, y = _setup(spec)
    r64 = B.NumpyRunner(spec, "sgd-momentum", params, X, y, dtype=np.float64)
    masks = r64.relu_masks()
    same = B.reference(spec, "sgd-momentum", params, X, y, masks=masks)
    plain = B.reference(spec, "sgd-momentum", params, X, y)
    for a, b in zip(same[1], plain[1]):
        np.testing.assert_array_equal(a, b)
    flipped = [m.copy() for m in masks]
    flipped[0][0, 0] = ~flipped[0][0, 0]
    other = B.reference(spec, "sgd-momentum", params, X, y, masks=flipped)
    assert any(not np.array_equal(a, b) for a, b in zip(other[1], plain[1]))


def test_flops_and_specs():
    assert B.flops_per_step(B.Spec("s", (3, 5, 2), 4, "tanh", "mse", "xavier_normal")) == \
        2 * (2 * 4 * 3 * 5) + 3 * (2 * 4 * 5 * 2)
    deep = B.CONFIGS["deep-narrow"]
    assert deep.n_layers == 51 and deep.widths[0] == 64 and deep.widths[-1] == 10
    assert B.mlp_spec(50, 64).widths == deep.widths
    assert B.mlp_spec(3, 256).n_layers == 4


def test_goal_verdicts_and_tables():
    def case(config, nn, **others):
        time = {"nnlab": {"median_s": nn, "gflops": 1.0, "pct_peak": 0.5}}
        time.update({k: {"median_s": v} for k, v in others.items()})
        return {"config": config, "optimizer": "sgd-momentum", "time": time, "refused": ["numpy"],
                "ratios": {f"{k}/nnlab": v / nn for k, v in others.items()}, "other_processes_cores": 0.0}

    cases = [case("tiny", 1e-5, torch=2e-4, jax=1.5e-5), case("wide", 0.05, torch=0.04)]
    goals = B.evaluate_goals(cases, {"wall_s": [9.0, 1.0]})
    verdict = {g: (v, ok) for g, _, v, ok in goals}
    assert verdict["tiny: torch/nnlab >= 10x"][1] is True
    assert verdict["tiny: jax/nnlab >= 2x"][1] is False and "MISSED by 1.33x" in verdict["tiny: jax/nnlab >= 2x"][0]
    assert verdict["wide: torch/nnlab >= 1x"][1] is False
    assert verdict["mnist: jax/nnlab >= 1.2x"][1] is None
    assert verdict["nnlab demo vanishing, 2nd run < 5 s"][1] is True
    table = B.main_table(cases)
    assert "20.00x" in table and "refused" in table
    assert "MISSED" in B.goals_table(goals)
    deep = case("deep-narrow", 0.02, torch=0.015, jax=0.002)
    denormals = {"time": {"nnlab ftz on": {"median_s": 0.001}, "torch ftz off": {"median_s": 0.015},
                          "torch ftz on": {"median_s": 0.004}, "jax (XLA flushes)": {"median_s": 0.002}}}
    extra = {g: ok for g, _, _, ok in B.evaluate_goals([deep], None, denormals)}
    assert extra["deep-narrow: torch/nnlab >= 5x"] is False
    assert extra["  nnlab FTZ on: torch/nnlab >= 5x"] is True
    assert extra["  nnlab FTZ on: torch FTZ/nnlab >= 5x"] is False
    assert extra["  nnlab FTZ on: jax/nnlab >= 1.5x"] is True


def test_main_end_to_end_tiny(tmp_path, capsys):
    out = tmp_path / "bench.json"
    res = B.main(["--quick", "--configs", "tiny", "--optimizers", "adam", "--repeat", "1",
                  "--skip", "fit,denormals,sweeps,memory,compile,demo,layers", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "Speed goals (docs/performance.md#goals" in printed and "tiny" in printed
    data = json.loads(out.read_text())
    case = data["cases"][0]
    assert case["check"]["nnlab"]["agree"] and "nnlab" in case["time"]
    assert res["sgemm_peak_gflops"] > 0
    again = B.main(["--report", str(out)])  # re-prints the tables from the JSON
    assert again["cases"][0]["config"] == "tiny" and "Speed goals (docs/performance.md#goals" in capsys.readouterr().out


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_memory_probe_reports_growth():
    res = B.probe_memory("tiny", "numpy", "sgd-momentum")
    assert res["held_after_steps_bytes"] is not None and res["params_bytes"] > 0


def _load_bounds():
    path = os.path.join(_BENCH_DIR, "bench_bounds.py")
    spec = importlib.util.spec_from_file_location("bench_bounds", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bounds_products_gemm_and_context(monkeypatch, capsys):
    BB = _load_bounds()
    monkeypatch.setattr(BB, "TARGET_S", 1e-4)
    monkeypatch.setattr(BB, "ROUNDS", 1)
    spec = B.Spec("t", (3, 5, 5, 2), 6, "tanh", "mse", "xavier_normal")
    prods = BB.products(spec)
    assert len(prods) == 2 + 3 + 3  # Z and dW per layer, dX above the first layer
    for name, A, Bm, ta, tb in prods:
        a = A.T if ta else A
        b = Bm.T if tb else Bm
        assert a.shape[1] == b.shape[0], name
    res = BB.gemm_section([spec])
    cfg = res["configs"]["t"]
    assert sum(row[2] for row in cfg["rows"]) == len(prods)  # same-shape products are timed once, counted each
    assert len(cfg["totals"]) == len(res["libraries"]) and min(cfg["totals"]) > 0
    ctx = BB.context_section([spec])["t"]
    measured = [k for k in ctx if "in context" not in k]  # the two "in context" rows are differences
    assert len(measured) == 6 and all(ctx[k] > 0 for k in measured)
    BB.print_gemm(res)
    BB.print_context({"t": ctx})
    assert "sum per step" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        BB.main(["--configs", "no-such-config"])


def test_bounds_norm_after_a_product(monkeypatch, capsys):
    BB = _load_bounds()
    monkeypatch.setattr(BB, "TARGET_S", 1e-4)
    monkeypatch.setattr(BB, "ROUNDS", 1)
    from nnlab.kernels import blas

    before = blas.get_threads()
    res = BB.after_section(((4, 6, 5), (8, 16, 12)))
    assert blas.get_threads() == before  # the BLAS thread count is set back
    assert list(res) == ["dW 6x5 (K=4)", "dW 16x12 (K=8)"]
    for d in res.values():
        assert len(d) == 6 and all(d[k] > 0 for k in d if k.startswith(("product", "norm, C in cache")))
    BB.print_after(res)
    assert "right after it (2)" in capsys.readouterr().out


def test_bounds_one_pool(monkeypatch, capsys):
    BB = _load_bounds()
    monkeypatch.setattr(BB, "TARGET_S", 1e-4)
    monkeypatch.setattr(BB, "ROUNDS", 1)
    from nnlab.kernels import blas

    before = blas.get_threads()
    spec = B.Spec("t", (7, 9, 5, 3), 6, "tanh", "mse", "xavier_normal")
    res = BB.pool_section([spec])  # checks the row-split products against whole ones first
    assert blas.get_threads() == before
    level1 = blas.LIBRARY.startswith("NumPy's OpenBLAS")
    assert len(res["t"]) == 6 + 2 * level1 and all(v > 0 for v in res["t"].values())
    BB.print_pool(res)
    assert "one pool: both" in capsys.readouterr().out


def test_bounds_level1_update_is_sgd_momentum():
    """The pool section's level-1 BLAS update computes m = g + mu*m, p -= lr*m (to float32 rounding)."""
    BB = _load_bounds()
    from nnlab.kernels import blas

    rng = np.random.default_rng(2)
    p, g, m = (rng.standard_normal(1000).astype(np.float32) for _ in range(3))
    want_m = (g.astype(np.float64) + 0.9 * m)
    want_p = p - 0.01 * want_m
    update = BB._level1_update(p, g, m, 0.01, 0.9)
    if not blas.LIBRARY.startswith("NumPy's OpenBLAS"):
        assert update is None
        return
    update()
    np.testing.assert_allclose(m, want_m, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(p, want_p, rtol=1e-6, atol=1e-6)


def test_nnlab_bench_command(tmp_path):
    """``nnlab bench`` runs the benchmark (a tiny quick run), writes and re-reports its JSON, and
    turns bad input into a one-line error with exit 2."""
    from click.testing import CliRunner

    from nnlab_cli import bench as cli_bench
    from nnlab_cli.main import cli

    assert cli_bench.CONFIGS == tuple(B.CONFIGS) and cli_bench.OPTIMIZERS == B.OPTIMIZERS
    assert cli_bench.SECTIONS == B.SECTIONS
    runner = CliRunner()
    out = tmp_path / "b.json"
    res = runner.invoke(cli, ["bench", "--quick", "--configs", "tiny", "--optimizers", "sgd-momentum", "--repeat", "1",
                              "--skip", "fit,denormals,sweeps,memory,compile,demo,layers", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "Speed goals (docs/performance.md#goals" in res.output
    data = json.loads(out.read_text())
    assert [c["config"] for c in data["cases"]] == ["tiny"] and data["cases"][0]["check"]["nnlab"]["agree"]
    again = runner.invoke(cli, ["bench", "--report", str(out)])
    assert again.exit_code == 0 and "Speed goals (docs/performance.md#goals" in again.output
    for args, word in ((["--configs", "tiny,huge"], "huge"), (["--optimizers", "lbfgs"], "lbfgs"),
                       (["--skip", "everything"], "everything"), (["--repeat", "0"], "repeat"),
                       (["--json", str(tmp_path / "no" / "x.json")], "does not exist")):
        assert word in one_line_error(runner.invoke(cli, ["bench"] + args)), args
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    bad = runner.invoke(cli, ["bench", "--report", str(junk)])
    assert bad.exit_code == 2 and "not a file written by 'nnlab bench --json'" in bad.output


def test_nnlab_bench_json_to_stdout():
    """``--json -``: the JSON alone on stdout (parseable), the tables on stderr."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "nnlab_cli.main", "bench", "--quick", "--configs", "tiny",
                          "--optimizers", "adam", "--repeat", "1", "--skip", "fit,denormals,sweeps,memory,compile,demo,layers",
                          "--json", "-"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(res.stdout)
    assert [c["config"] for c in data["cases"]] == ["tiny"]
    assert "Speed goals (docs/performance.md#goals" in res.stderr and "Speed goals (docs/performance.md#goals" not in res.stdout


def test_bench_optimizers_runs_every_variant(capsys):
    path = os.path.join(_BENCH_DIR, "bench_optimizers.py")
    spec = importlib.util.spec_from_file_location("bench_optimizers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--n", "64", "--repeat", "1"])
    assert list(out) == [name for name, _ in mod.VARIANTS]
    assert all(t > 0 for row in out.values() for t in row.values())
    assert "adamw" in capsys.readouterr().out


# ---------------------------------------------------------------- the layers section
def test_layer_rows_agree_with_torch_and_a_wrong_step_is_refused(monkeypatch):
    torch = pytest.importorskip("torch")
    from nnlab import bench_layers as BL

    for case, opt in BL.ROWS:
        ok, worst = BL.check(case, opt, torch)
        assert ok and worst <= BL.RTOL, (case, opt, worst)
    # a network whose step differs from torch's (another learning rate) is refused
    real = BL._optimizer
    monkeypatch.setattr(BL, "_optimizer", lambda nl, opt: nl.optim.Adam(lr=2e-3) if opt == "adam" else real(nl, opt))
    ok, worst = BL.check("lstm", "adam", torch)
    assert not ok and worst > BL.RTOL


def test_layer_rows_time_both_frameworks_and_judge_the_goals():
    from nnlab import bench_layers as BL

    calls = []

    def fake_round_robin(runs, repeat, target):
        calls.append(sorted(runs))
        for run in runs.values():
            run(1)  # every runner really takes a training step
        return {n: {"median_s": 0.004 if n == "nnlab" else 0.01} for n in runs}

    rows = BL.run(3, 0.01, fake_round_robin, quick=True)
    assert [(r["case"], r["optimizer"]) for r in rows] == list(BL.ROWS)
    text = BL.table(rows)
    if "torch" in calls[0]:
        assert all(r["torch_over_nnlab"] == pytest.approx(2.5) for r in rows)
        assert "lstm adam: torch/nnlab >= 2x" in text and "MET (margin 1.25x)" in text
    else:
        assert "n/a (torch not run)" in text


def test_cold_start_section_runs_each_target_in_a_fresh_process():
    rows = B.bench_cold(B.cold_targets("ewa"))
    assert [r["target"] for r in rows] == ["ewa"]
    assert rows[0]["exit_code"] == 0
    assert rows[0]["wall_s"] > 0 and rows[0]["cpu_s"] > 0
    assert "nnlab demo ewa" in B.cold_table(rows)


def test_cold_start_targets():
    every = B.cold_targets("all")
    assert every[0] == "vanishing" and every[-3:] == ["new-steps", "step", "warmup"] and "lstm" in every
    assert B.cold_targets("step,ewa") == ["step", "ewa"]
    with pytest.raises(ValueError, match="'bogus'"):
        B.cold_targets("ewa,bogus")


def test_the_new_step_configurations_are_working_programs():
    """Each first step ``new-steps`` times is a working program (run here in this process), on a
    network no demo trains."""
    import nnlab as nl

    for label, *config in B._NEW_STEPS:
        scope = {}
        exec(B._new_step_source(*config), scope)  # noqa: S102 - the benchmark's own fixed source
        net = scope["net"]
        assert isinstance(net, nl.Sequential) and np.isfinite(net.params()[0]).all(), label
        assert net.dtype == np.dtype(config[0])


def test_bench_cold_rejects_an_unknown_target(run):
    assert "'bogus'" in one_line_error(run("bench", "--cold", "ewa,bogus"))


class _VirtualClock:
    """A stand-in for the benchmark's ``time`` module: steps advance a virtual clock, and the sleep
    before every visit counts the visits."""

    def __init__(self):
        self.now = 0.0
        self.visit = -1

    def perf_counter(self):
        return self.now

    def sleep(self, s):
        self.now += s
        self.visit += 1


def test_paired_ratio_survives_a_slow_stretch_that_the_ratio_of_medians_does_not(monkeypatch):
    """nnlab 1 ms and torch 2 ms per step, five rounds in rotated order: visits n0 t0 | t1 n1 |
    n2 t2 | t3 n3 | n4 t4. A stretch of time in which everything runs 3x slower covers visits
    t0 .. t3 (six visits in a row): torch is slow in four rounds, nnlab in two. The ratio of the
    overall medians then reads 6x; the median of the ratios within the rounds, 2x."""
    clock = _VirtualClock()
    monkeypatch.setattr(B, "time", clock)

    def make(per_step):
        def run(k):
            clock.now += k * per_step * (3.0 if 1 <= clock.visit <= 6 else 1.0)
        return run

    out = B.time_round_robin({"nnlab": make(1e-3), "torch": make(2e-3)}, repeat=10, target=0.01, rounds=5)
    assert clock.visit == 9
    per_round = [a / b for a, b in zip(out["torch"]["round_medians_s"], out["nnlab"]["round_medians_s"])]
    assert per_round == pytest.approx([6.0, 2.0, 2.0, 6.0, 2.0])
    assert out["torch"]["median_s"] / out["nnlab"]["median_s"] == pytest.approx(6.0)
    assert B.paired_ratio(out, "torch") == pytest.approx(2.0)
    assert B.paired_ratio(out, "nnlab", base="torch") == pytest.approx(0.5)


def test_paired_ratio_falls_back_to_the_medians_with_one_round():
    timing = {"nnlab": {"median_s": 2.0, "round_medians_s": [2.0]},
              "torch": {"median_s": 5.0, "round_medians_s": [5.0]}}
    assert B.paired_ratio(timing, "torch") == pytest.approx(2.5)
    del timing["torch"]["round_medians_s"]  # a saved run from before the rounds were kept
    assert B.paired_ratio(timing, "torch") == pytest.approx(2.5)
