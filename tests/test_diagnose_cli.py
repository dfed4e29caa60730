"""`nnlab diagnose`: a healthy model exits 0, a deep sigmoid model fires gradient_vanishing and exits
1, training steps run on a copy, --json is valid, and bad input is one line with exit 2."""

import hashlib
import json
import math
import re

import numpy as np
import pytest
from cli_checks import one_line_error  # tests/ is on sys.path (conftest.py)
from click.testing import CliRunner

import nnlab as nl
from nnlab import diagnostics as D
from nnlab_cli.main import cli


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Small models trained and saved with the library: healthy tanh, deep sigmoid, sine regression."""
    d = tmp_path_factory.mktemp("models")
    X, y = nl.datasets.load("moons", n=200, seed=0)
    healthy = nl.Sequential([nl.Dense(2, 16, activation="tanh", init="xavier_normal"),
                             nl.Dense(16, 16, activation="tanh", init="xavier_normal"), nl.Dense(16, 2)],
                            loss="softmax_cross_entropy", seed=0)
    nl.Trainer(healthy, nl.optim.Adam(lr=0.02)).fit(X, y, epochs=20, batch_size=32)
    deep = nl.Sequential([nl.Dense(2, 16, activation="sigmoid")]
                         + [nl.Dense(16, 16, activation="sigmoid") for _ in range(11)] + [nl.Dense(16, 2)],
                         loss="softmax_cross_entropy", seed=0)
    Xs, ys = nl.datasets.load("sine", n=64, seed=0)
    sine = nl.Sequential([nl.Dense(1, 8, activation="tanh"), nl.Dense(8, 1)], loss="mse", seed=0)
    nl.Trainer(sine, nl.optim.Adam(lr=0.01)).fit(Xs, ys, epochs=5, batch_size=16)
    paths = {}
    for name, net in (("healthy", healthy), ("deep", deep), ("sine", sine)):
        paths[name] = str(d / f"{name}.npz")
        net.save(paths[name])
    return paths


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, ["diagnose", *args])

    return invoke


def _digest(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_a_healthy_model_exits_0(run, models):
    result = run(models["healthy"], "--data", "moons", "--samples", "200")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "2 -> 16 tanh x2 -> 2 identity; loss softmax_cross_entropy; 354 parameters; float64" in out
    assert "one loss_and_grads on all 200 samples (no update); flush-to-zero off" in out
    header = next(line for line in out.splitlines() if line.startswith("layer "))
    for col in ("activation", "‖∂L/∂W‖", "‖E‖", "‖W‖", "‖ΔW‖/‖W‖", "dead", "saturated", "non-finite", "subnormal"):
        assert col in header
    assert "log10 scale" in out  # the per-layer bar chart of one step
    for name in D.VERDICT_NAMES:
        assert f"ok    {name} (" in out
    assert "FIRED" not in out and out.rstrip().endswith("no verdict fired")


def test_a_deep_sigmoid_model_fires_gradient_vanishing_and_exits_1(run, models):
    result = run(models["deep"], "--data", "moons", "--samples", "200")
    assert result.exit_code == 1, result.output
    out = result.output
    assert "2 -> 16 sigmoid x12 -> 2 identity" in out
    line = next(line for line in out.splitlines() if "gradient_vanishing" in line and "FIRED" in line)
    assert "[step 1, layer 1]" in line and "||dL/dW_1|| / ||dL/dW_L|| = " in line
    assert "remedy: replace sigmoid by tanh, ReLU" in out
    assert "verdict(s) fired: " in out and "gradient_vanishing" in out.splitlines()[-1]


def test_training_steps_run_on_a_copy_and_draw_a_heat_map(run, models):
    before = _digest(models["deep"])
    result = run(models["deep"], "--data", "moons", "--samples", "200", "--steps", "12", "--optimizer", "sgd",
                 "--lr", "0.1", "--batch-size", "32")
    assert result.exit_code == 1, result.output
    out = result.output
    assert "12 training step(s) of SGD lr=0.1, batch 32, on a copy (the file is not changed)" in out
    assert "log10 ‖∂L/∂W_l‖, layers (rows) x steps (columns)" in out
    assert "12 column(s) in 12 bin(s)" in out
    rows = [line for line in out.splitlines() if "│" in line]
    assert len(rows) == 13
    assert "per layer, step 12 (the last)" in out
    assert _digest(models["deep"]) == before


def test_json_file_and_json_only(run, models, tmp_path):
    path = tmp_path / "d.json"
    result = run(models["healthy"], "--data", "moons", "--samples", "100", "--steps", "3", "--json", str(path))
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.output
    record = json.loads(path.read_text())
    assert record["data"] == "moons" and record["samples"] == 100 and record["fired"] == []
    mon = record["monitor"]
    assert mon["steps"] == 3 and len(mon["grad_norm"]) == 3 and len(mon["verdicts"]) == len(D.VERDICT_NAMES)
    assert record["optimizer"]["name"] == "adam"
    only = run(models["deep"], "--data", "moons", "--samples", "100", "--json", "-")
    assert only.exit_code == 1
    data = json.loads(only.stdout)  # nothing but the JSON on stdout
    assert data["fired"] == ["gradient_vanishing"] and data["monitor"]["steps"] == 1


def test_json_has_no_nan_after_a_diverging_run(run, models, tmp_path):
    path = tmp_path / "nan.json"
    result = run(models["sine"], "--data", "sine", "--samples", "64", "--steps", "60", "--optimizer", "sgd",
                 "--lr", "1000", "--batch-size", "64", "--json", str(path))
    assert result.exit_code == 1, result.output
    assert "stopped at step" in result.output and "FIRED loss_nan" in result.output
    def no_constants(name):
        raise AssertionError(f"{name} in the JSON")

    record = json.loads(path.read_text(), parse_constant=no_constants)
    assert record["stopped"] and record["monitor"]["loss"][-1] is None


def test_regression_model(run, models):
    result = run(models["sine"], "--data", "sine", "--samples", "64")
    assert result.exit_code in (0, 1), result.output
    assert "loss mse" in result.output and "loss_high (exploding)" in result.output


@pytest.mark.skipif(not nl.backend.FTZ_SUPPORTED, reason="flush-to-zero is an x86 setting")
def test_flush_denormals_flag(run, models):
    result = run(models["healthy"], "--data", "moons", "--samples", "64", "--flush-denormals")
    assert "flush-to-zero on" in result.output
    assert not nl.backend.flush_denormals_enabled()  # restored afterwards


def test_missing_model_file(run, tmp_path):
    line = one_line_error(run(str(tmp_path / "nope.npz"), "--data", "moons"))
    assert "no such model file" in line


def test_not_a_model_file(run, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    assert "not an nnlab model file" in one_line_error(run(str(bad), "--data", "moons"))


@pytest.mark.parametrize("data,needle", [("digits", "takes 2 input feature(s) but dataset 'digits' has 64"),
                                         ("sine", "takes 2 input feature(s) but dataset 'sine' has 1"),
                                         ("nope", "unknown dataset 'nope'")])
def test_data_that_does_not_fit(run, models, data, needle):
    assert needle in one_line_error(run(models["healthy"], "--data", data))


def test_labels_outside_the_models_outputs(run, tmp_path):
    net = nl.Sequential([nl.Dense(64, 4, activation="relu"), nl.Dense(4, 3)], loss="softmax_cross_entropy", seed=0)
    path = tmp_path / "three.npz"
    net.save(path)
    assert "labels must lie in [0, 3)" in one_line_error(run(str(path), "--data", "digits"))


@pytest.mark.parametrize("args,needle", [
    (["--data", "digits", "--samples", "10"], "digits has a fixed size"),
    (["--data", "moons", "--steps", "-1"], "--steps"),
    (["--data", "moons", "--steps", "2", "--optimizer", "nope"], "unknown optimizer"),
    (["--data", "moons", "--json", "/no/such/folder/x.json"], "does not exist"),
    (["--samples", "10"], "--data"),
])
def test_bad_options(run, models, args, needle):
    assert needle in one_line_error(run(models["healthy"], *args))


def test_the_numbers_are_the_library_monitors(run, models, tmp_path):
    path = tmp_path / "n.json"
    run(models["healthy"], "--data", "moons", "--samples", "100", "--json", str(path))
    record = json.loads(path.read_text())
    net = nl.load(models["healthy"])
    X, y = nl.datasets.load("moons", n=100, seed=0)
    mon = nl.GradientMonitor(net)
    mon.observe(X, y)
    np.testing.assert_allclose(record["monitor"]["grad_norm"], mon.series("grad_norm"), rtol=1e-12)
    assert math.isclose(record["monitor"]["loss"][0], mon.loss[0], rel_tol=1e-12)


def test_a_residual_model_names_each_layer_with_weights(run, tmp_path):
    net = nl.Sequential([nl.Dense(2, 8, activation="tanh"),
                         nl.Residual([nl.Dense(8, 8, activation="relu"), nl.Dense(8, 4)], projection=True),
                         nl.Dense(4, 2)], loss="softmax_cross_entropy", seed=0)
    path = tmp_path / "res.npz"
    net.save(path)
    result = run(str(path), "--data", "moons", "--samples", "100", "--steps", "3")
    assert result.exit_code in (0, 1), result.output
    rows = [line.split() for line in result.output.splitlines() if re.match(r"^\d+ +\S+ +(Dense|Residual)", line)]
    # the watched ops in program order: 0, the block's two layers, the projection on the skip, 3
    assert [(r[1], r[2]) for r in rows] == [("0", "Dense"), ("1.0", "Dense"), ("1.1", "Dense"), ("1", "Dense"),
                                            ("2", "Dense")]
    assert "Residual" in result.output  # the architecture line names the block


def test_a_recurrent_model_gets_the_per_step_gradient_chart(run, tmp_path):
    net = nl.Sequential([nl.LSTM(2, 4), nl.Dense(4, 1)], loss="mse", seed=0)
    path = tmp_path / "lstm.npz"
    net.save(path)
    result = run(str(path), "--data", "adding", "--samples", "32", "--seq-len", "7")
    assert result.exit_code in (0, 1), result.output
    assert "sequences of 7 steps" in result.output
    assert "log10 ‖∂L/∂h_t‖, recurrent layers (rows) x time steps t = 1..T" in result.output
    line = next(x for x in result.output.splitlines() if x.strip().startswith("0 LSTM: ‖∂L/∂h_1‖"))
    # the printed ratio is the monitor's first/last per-step norm of the same computation
    mon = nl.GradientMonitor(net)
    X, y = nl.datasets.load("adding", n=32, T=7, seed=0)
    mon.observe(X, y)
    norms = mon.time_grad_norms()["0 LSTM"]
    assert f"ratio first/last {norms[0] / norms[-1]:.2e}" in line
