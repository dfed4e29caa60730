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
                  "--skip", "fit,denormals,sweeps,layers,memory,compile,demo", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "Performance goals" in printed and "tiny" in printed
    data = json.loads(out.read_text())
    case = data["cases"][0]
    assert case["check"]["nnlab"]["agree"] and "nnlab" in case["time"]
    assert res["sgemm_peak_gflops"] > 0
    again = B.main(["--report", str(out)])  # re-prints the tables from the JSON
    assert again["cases"][0]["config"] == "tiny" and "Performance goals" in capsys.readouterr().out


# ---------------------------------------------------------------- the layers section
SMALL_LAYERS = {"lstm": B.LstmSpec(batch=5, steps=4, n_in=2, hidden=3),
                "bn-mlp": B.BnMlpSpec(widths=(6, 7, 5, 3), batch=12)}


@pytest.fixture
def small_layers(monkeypatch):
    monkeypatch.setattr(B, "LAYER_SPECS", SMALL_LAYERS)
    return SMALL_LAYERS


def _fd_check(loss_of, params, grads, h=1e-6, rtol=1e-5, atol=1e-8):
    """Central differences of ``loss_of(params)`` against ``grads``, every entry."""
    for p, g in zip(params, grads):
        fd = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + h
            up = loss_of(params)
            p[idx] = old - h
            down = loss_of(params)
            p[idx] = old
            fd[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=rtol, atol=atol)


def test_layer_references_match_central_differences():
    lstm = SMALL_LAYERS["lstm"]
    X, y = B.layer_data(lstm)
    params = [p.astype(np.float64) for p in B.build_layer_net(lstm).params()]
    _, grads, _ = B.lstm_reference(lstm, "adam", params, X, y)
    _fd_check(lambda ps: B.lstm_reference(lstm, "adam", ps, X, y)[0], params, grads)
    mlp = SMALL_LAYERS["bn-mlp"]
    X, y = B.layer_data(mlp)
    params = [p.astype(np.float64) for p in B.build_layer_net(mlp).params()]
    masks = [np.random.default_rng(k).random((mlp.batch, w)) >= mlp.p for k, w in enumerate(mlp.widths[1:-1])]
    (_, grads, _), _ = B.bn_mlp_reference(mlp, "sgd-momentum", params, X, y, masks)
    _fd_check(lambda ps: B.bn_mlp_reference(mlp, "sgd-momentum", ps, X, y, masks)[0][0], params, grads,
              atol=1e-7)


@pytest.mark.parametrize(("name", "opt"), B.LAYER_ROWS)
def test_layer_rows_agree_and_refuse_wrong_results(small_layers, name, opt):
    """nnlab and torch agree with the float64 reference on one step (the MLP on nnlab's dropout
    masks); a wrong loss, gradient, update, dropout mask or running statistic is refused."""
    spec = small_layers[name]
    runners, reports, how = B.prepare_layer(spec, opt, quiet=True)
    assert reports["nnlab"]["agree"], reports["nnlab"]
    if _importable("torch"):
        assert reports["torch"]["agree"], reports["torch"]
        runners["torch"].run(2)
    else:
        assert reports["torch"] is None
    runners["nnlab"].run(2)
    X, y = B.layer_data(spec)
    net = B.build_layer_net(spec)
    params = [p.copy() for p in net.params()]
    nn = B.NnlabNetRunner(net, opt, X, y)
    loss, grads, after = nn.first_step()
    atol = B.LAYER_GRAD_SCALE_ATOL
    if name == "lstm":
        assert how is None
        ref = B.lstm_reference(spec, opt, params, X, y)
    else:
        assert "masks agreed" in how
        masks = nn.dropout_masks()
        assert [m.shape for m in masks] == [(spec.batch, w) for w in spec.widths[1:-1]]
        ref, buffers = B.bn_mlp_reference(spec, opt, params, X, y, masks)
        assert B._buffers_rel(nn.buffers(), buffers) <= B.BUFFER_RTOL
        assert B._buffers_rel([2 * b for b in nn.buffers()], buffers) > B.BUFFER_RTOL
        flipped = [m.copy() for m in masks]
        flipped[0][0, :] = ~flipped[0][0, :]  # one row's mask of the first dropout flipped
        other, _ = B.bn_mlp_reference(spec, opt, params, X, y, flipped)
        assert not B.check(other, params, (loss, grads, after), opt, scale_atol=atol)["agree"]
        everything = [np.ones_like(m) for m in masks]  # no dropout (p = 0) is not what was run
        other, _ = B.bn_mlp_reference(spec, opt, params, X, y, everything)
        assert not B.check(other, params, (loss, grads, after), opt, scale_atol=atol)["agree"]
    assert B.check(ref, params, (loss, grads, after), opt, scale_atol=atol)["agree"]
    assert not B.check(ref, params, (loss * 1.001, grads, after), opt, scale_atol=atol)["agree"]
    for k in range(len(grads)):
        if np.abs(ref[1][k]).max() > 1e-3 * max(np.abs(r).max() for r in ref[1]):
            bad = [g.copy() for g in grads]
            bad[k] *= 1.01
            assert not B.check(ref, params, (loss, bad, after), opt, scale_atol=atol)["agree"], k
    doubled = [p0 + 2 * (a - p0) for p0, a in zip(params, after)]
    assert not B.check(ref, params, (loss, grads, doubled), opt, scale_atol=atol)["agree"]


def test_a_wrong_framework_is_refused_and_not_timed(small_layers, monkeypatch, capsys):
    """A torch runner whose step computes something else (here: the loss without its factor 1/2)
    is reported DISAGREE and never timed; the row has no ratio and its goals are 'no ratio'."""
    pytest.importorskip("torch")

    def wrong_step(self):
        self.opt.zero_grad(set_to_none=True)
        out = self.lin(self.lstm(self.X)[0][:, -1])
        loss = ((out - self.y) ** 2).sum() / out.shape[0]
        loss.backward()
        self.opt.step()
        return loss

    monkeypatch.setattr(B.TorchLstmRunner, "_step", wrong_step)
    args = B.parse_args(["--quick", "--repeat", "1"])
    args.budget = B.QuietBudget(0)
    row = B.bench_layer(small_layers["lstm"], "adam", args)
    assert "DISAGREE" in capsys.readouterr().out
    assert row["refused"] == ["torch"] and "torch" not in row["time"] and "nnlab" in row["time"]
    assert row["ratios"] == {}
    assert "refused" in B.layers_table([row])
    verdicts = {g: (v, ok) for g, _, v, ok in B.evaluate_layer_goals([row])}
    assert verdicts["lstm (adam): torch/nnlab >= 2x"] == ("no ratio (torch unavailable or refused)", None)


def test_layer_goal_verdicts():
    def row(name, opt, nn, torch):
        return {"row": name, "optimizer": opt, "spec": name, "refused": [], "other_processes_cores": 0.0,
                "time": {"nnlab": {"median_s": nn}, "torch": {"median_s": torch}}, "ratios": {"torch/nnlab": torch / nn}}

    rows = [row("lstm", "adam", 0.01, 0.015), row("bn-mlp", "sgd-momentum", 0.002, 0.003)]
    verdict = {g: (v, ok) for g, _, v, ok in B.evaluate_layer_goals(rows)}
    assert verdict["lstm (adam): torch/nnlab >= 1x"] == ("MET (margin 1.50x)", True)
    assert verdict["lstm (adam): torch/nnlab >= 2x"][1] is False
    assert "MISSED by 1.33x: nnlab 10,000 us, needs <= 7,500 us" in verdict["lstm (adam): torch/nnlab >= 2x"][0]
    assert verdict["bn-mlp (sgd-momentum): torch/nnlab >= 1x"][1] is True
    assert verdict["bn-mlp (adam): torch/nnlab >= 1x"] == ("not measured", None)
    table = B.goals_table(B.evaluate_layer_goals(rows), "goal (layers)")
    assert "goal (layers)" in table and "MISSED" in table and "MET" in table
    assert "1.50x" in B.layers_table(rows)


def test_layers_section_in_quick_mode_and_json_round_trip(small_layers, tmp_path, capsys):
    out = tmp_path / "layers.json"
    res = B.main(["--quick", "--configs", "tiny", "--optimizers", "adam", "--repeat", "1",
                  "--skip", "fit,denormals,sweeps,memory,compile,demo", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "[layers: lstm / adam]" in printed and "[layers: bn-mlp / sgd-momentum]" in printed
    assert "Performance goals" in printed and "goal (layers)" in printed
    assert [(r["row"], r["optimizer"]) for r in res["layers"]] == list(B.LAYER_ROWS)
    data = json.loads(out.read_text())
    assert [(r["row"], r["optimizer"]) for r in data["layers"]] == list(B.LAYER_ROWS)
    for r in data["layers"]:
        assert r["check"]["nnlab"]["agree"] and r["time"]["nnlab"]["median_s"] > 0
        if _importable("torch"):
            assert r["ratios"]["torch/nnlab"] > 0
    assert "masks agreed" in data["layers"][1]["dropout_check"]
    assert [g["goal"] for g in data["layer_goals"]] == [g for g, _, _, _ in B.evaluate_layer_goals(data["layers"])]
    again = B.main(["--report", str(out)])
    reprinted = capsys.readouterr().out
    assert again["layers"] == data["layers"]
    assert B.layers_table(data["layers"]) in reprinted and "goal (layers)" in reprinted
    skipped = B.main(["--quick", "--configs", "tiny", "--optimizers", "adam", "--repeat", "1",
                      "--skip", "fit,denormals,sweeps,layers,memory,compile,demo"])
    assert "layers" not in skipped and "goal (layers)" not in capsys.readouterr().out


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
                              "--skip", "fit,denormals,sweeps,layers,memory,compile,demo", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "Performance goals" in res.output
    data = json.loads(out.read_text())
    assert [c["config"] for c in data["cases"]] == ["tiny"] and data["cases"][0]["check"]["nnlab"]["agree"]
    again = runner.invoke(cli, ["bench", "--report", str(out)])
    assert again.exit_code == 0 and "Performance goals" in again.output
    for args, word in ((["--configs", "tiny,huge"], "huge"), (["--optimizers", "lbfgs"], "lbfgs"),
                       (["--skip", "everything"], "everything"), (["--repeat", "0"], "repeat"),
                       (["--json", str(tmp_path / "no" / "x.json")], "no such directory")):
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
                          "--optimizers", "adam", "--repeat", "1", "--skip", "fit,denormals,sweeps,layers,memory,compile,demo",
                          "--json", "-"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    data = json.loads(res.stdout)
    assert [c["config"] for c in data["cases"]] == ["tiny"]
    assert "Performance goals" in res.stderr and "Performance goals" not in res.stdout


def test_bench_optimizers_runs_every_variant(capsys):
    path = os.path.join(_BENCH_DIR, "bench_optimizers.py")
    spec = importlib.util.spec_from_file_location("bench_optimizers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--n", "64", "--repeat", "1"])
    assert list(out) == [name for name, _ in mod.VARIANTS]
    assert all(t > 0 for row in out.values() for t in row.values())
    assert "adamw" in capsys.readouterr().out
