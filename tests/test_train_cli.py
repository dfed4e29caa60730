"""`nnlab train`: output, JSON, --save, layer specs, determinism, and one-line errors on bad options."""

import json
import re

import numpy as np
import pytest
from cli_checks import one_line_error  # tests/ is on sys.path (conftest.py)
from click.testing import CliRunner

import nnlab as nl
from nnlab_cli.main import _layers_text, _parse_layers, cli

TINY = ["--data", "xor", "--samples", "64", "--layers", "8", "--activation", "tanh", "--init", "xavier_normal",
        "--lr", "0.05", "--epochs", "2", "--batch-size", "16"]


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(cli, ["train", *args], **kwargs)

    return invoke


# ---------------------------------------------------------------- success
def test_tiny_run_prints_epochs_and_summary(run):
    result = run(*TINY)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("data      xor: 51 train / 13 test samples, 2 features, 2 classes")
    assert "network   2 -> hidden 8 tanh -> 2; init xavier_normal; loss softmax_cross_entropy; 42 parameters" in out
    assert "Adam lr=0.05; clip none; batch 16 (4 steps/epoch); 2 epochs; seed 0" in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2
    assert re.fullmatch(r"epoch 1/2  loss \d+\.\d{4}  train acc +\d+\.\d\d%  test acc +\d+\.\d\d%  \d+\.\d\d s",
                        epochs[0]), epochs[0]
    assert re.search(r"^test accuracy \d+\.\d\d% \(\d+/13\), test loss \d+\.\d{4}", out, re.M)
    assert re.search(r"^8 steps in \d+\.\d\d s .*fused training step \d+\.\d{3} ms", out, re.M)
    assert result.stderr == ""


def test_json_holds_history_and_test_accuracy(run, tmp_path):
    path = tmp_path / "out.json"
    result = run(*TINY, "--clip-global-norm", "1.0", "--json", str(path))
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.stdout
    data = json.loads(path.read_text())
    h = data["history"]
    assert len(h["loss"]) == len(h["grad_norm"]) == len(h["step_time"]) == data["steps"] == 8
    assert len(h["epoch_loss"]) == len(h["accuracy"]) == len(h["val_loss"]) == len(h["val_accuracy"]) == 2
    assert h["stopped"] == "" and data["stopped"] is None
    assert 0.0 <= data["test_accuracy"] <= 1.0 and data["test_accuracy"] == h["val_accuracy"][-1]
    assert f"test accuracy {100 * data['test_accuracy']:.2f}%" in result.stdout
    assert data["optimizer"]["name"] == "adam" and data["optimizer"]["hyperparams"]["lr"] == 0.05
    assert data["optimizer"]["hyperparams"]["betas"] == [0.9, 0.999]
    assert data["clip"] == {"kind": "global_norm", "value": 1.0}
    assert data["layers"] == [8] and data["n_params"] == 42 and data["n_train"] == 51 and data["n_test"] == 13
    assert data["wall_time_s"] > 0 and data["ms_per_step"] > 0


def test_json_dash_prints_only_json_and_runs_repeat(run):
    first = run(*TINY, "--json", "-")
    second = run(*TINY, "--json", "-")
    assert first.exit_code == second.exit_code == 0
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["history"]["loss"] == b["history"]["loss"] and a["test_accuracy"] == b["test_accuracy"]
    third = json.loads(run(*TINY, "--json", "-", "--seed", "1").stdout)
    assert third["history"]["loss"] != a["history"]["loss"]


def test_save_then_load_reproduces_the_test_accuracy(run, tmp_path):
    model, out = tmp_path / "model.npz", tmp_path / "out.json"
    result = run("--data", "moons", "--samples", "80", "--layers", "8,8", "--epochs", "3", "--batch-size", "8",
                 "--seed", "2", "--save", str(model), "--json", str(out))
    assert result.exit_code == 0, result.output
    assert f"saved the network to {model}" in result.stdout
    net = nl.load(model)
    assert [layer.n_out for layer in net.layers] == [8, 8, 2] and net.loss_name == "softmax_cross_entropy"
    X, y = nl.datasets.load("moons", n=80, seed=2)
    _, _, X_test, y_test = nl.datasets.train_test_split(X, y, 0.2, seed=2)
    acc = float(np.mean(np.argmax(net.forward(X_test), axis=1) == y_test))
    assert acc == json.loads(out.read_text())["test_accuracy"]


def test_deep_layer_spec_sgd_momentum_and_float32(run):
    result = run("--data", "spirals", "--samples", "40", "--layers", "6x4", "--activation", "sigmoid",
                 "--init", "xavier_normal", "--optimizer", "SGD", "--lr", "0.1", "--momentum", "0.9",
                 "--weight-decay", "1e-4", "--clip-value", "0.5", "--epochs", "1", "--dtype", "float32",
                 "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["layers"] == [6, 6, 6, 6] and data["dtype"] == "float32"
    assert data["optimizer"]["name"] == "sgd" and data["optimizer"]["hyperparams"]["momentum"] == 0.9
    assert data["optimizer"]["hyperparams"]["weight_decay"] == 1e-4
    assert data["clip"] == {"kind": "value", "value": 0.5}


def test_no_hidden_layers_and_online_training(run):
    result = run("--data", "moons", "--samples", "20", "--layers", "none", "--epochs", "1", "--batch-size", "1",
                 "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["layers"] == [] and data["n_params"] == 2 * 2 + 2 and data["steps"] == 16


def test_sine_is_regression(run):
    result = run("--data", "sine", "--samples", "40", "--layers", "8", "--activation", "tanh", "--epochs", "2",
                 "--lr", "0.01")
    assert result.exit_code == 0, result.output
    assert "regression" in result.stdout and "loss mse" in result.stdout
    assert re.search(r"^epoch 2/2  loss \d+\.\d{4}  test loss \d+\.\d{4}  ", result.stdout, re.M)
    assert "test loss" in result.stdout and "accuracy" not in result.stdout
    data = json.loads(run("--data", "sine", "--samples", "40", "--epochs", "1", "--json", "-").stdout)
    assert data["task"] == "regression" and data["test_accuracy"] is None and data["n_outputs"] == 1


def test_digits_builds_ten_outputs(run):
    result = run("--layers", "16", "--epochs", "1", "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["data"] == "digits" and data["n_outputs"] == 10 and data["n_features"] == 64
    assert data["n_train"] + data["n_test"] == 1797 and data["steps"] == 23


def test_diverging_run_stops_with_exit_1_and_valid_json(run, tmp_path):
    path = tmp_path / "out.json"
    result = run("--data", "sine", "--samples", "64", "--layers", "16,16", "--optimizer", "sgd", "--lr", "1e30",
                 "--epochs", "5", "--batch-size", "8", "--json", str(path))
    assert result.exit_code == 1, result.output
    assert "training stopped: non-finite" in result.stderr and "Traceback" not in result.output
    data = json.loads(path.read_text())  # strict JSON: the infinite loss is null
    assert data["stopped"].startswith("non-finite") and data["history"]["loss"][-1] is None


# ---------------------------------------------------------------- bad options: exit 2, one line
@pytest.mark.parametrize("args", [
    ["--optimizer", "bogus"],
    ["--layers", "abc"],
    ["--layers", "64,,64"],
    ["--layers", "0"],
    ["--layers", "64x0"],
    ["--layers", "8x2000"],
    ["--lr", "-1"],
    ["--lr", "0"],
    ["--lr", "fast"],
    ["--data", "mnist"],
    ["--activation", "bogus"],
    ["--init", "bogus"],
    ["--momentum", "0.9"],                       # adam has no momentum
    ["--optimizer", "rprop", "--weight-decay", "0.1"],
    ["--clip-global-norm", "1", "--clip-value", "1"],
    ["--clip-norm", "0"],
    ["--samples", "100"],                        # digits has a fixed size
    ["--epochs", "0"],
    ["--batch-size", "0"],
    ["--test-fraction", "1"],
    ["--dtype", "float16"],
    ["--json", "/nonexistent-folder/out.json"],
    ["--save", "/nonexistent-folder/model.npz"],
    ["--bogus-option"],
], ids=lambda a: " ".join(a))
def test_bad_options_give_one_line_and_exit_2(run, args):
    one_line_error(run(*args))


def test_nnlab_errors_name_the_problem(run):
    assert "unknown optimizer 'bogus'" in run("--optimizer", "bogus").output
    assert "unknown dataset 'mnist'" in run("--data", "mnist").output
    assert "'--layers'" in run("--layers", "abc").output
    assert "Adam has no momentum" in run("--momentum", "0.9").output


# ---------------------------------------------------------------- the layer spec
@pytest.mark.parametrize(("text", "widths", "back"), [
    ("64,64", [64, 64], "64,64"),
    ("32,32,32", [32] * 3, "32x3"),
    ("64x20", [64] * 20, "64x20"),
    ("128, 64x3 ,16", [128, 64, 64, 64, 16], "128,64x3,16"),
    ("none", [], "none"),
    ("7", [7], "7"),
])
def test_parse_layers(text, widths, back):
    assert _parse_layers(text) == widths
    assert _layers_text(widths) == back
    assert _parse_layers(_layers_text(widths)) == widths


# ---------------------------------------------------------------- --model: any architecture from a description
MODEL = {"layers": [{"type": "Dense", "n_in": 2, "n_out": 6, "activation": "tanh"},
                    {"type": "Residual", "layers": [{"type": "Dense", "n_in": 6, "n_out": 6, "activation": "relu"},
                                                    {"type": "Dense", "n_in": 6, "n_out": 6}]},
                    {"type": "Activation", "activation": "tanh"},
                    {"type": "Dense", "n_in": 6, "n_out": 2}],
         "loss": "softmax_cross_entropy"}
MODEL_RUN = ["--data", "xor", "--samples", "64", "--lr", "0.05", "--epochs", "2", "--batch-size", "16"]


def test_model_from_a_json_description(run, tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(MODEL))
    saved = tmp_path / "trained.npz"
    result = run(*MODEL_RUN, "--model", str(path), "--save", str(saved))
    assert result.exit_code == 0, result.output
    assert f"network   {path}: 4 layers (Dense (tanh), Residual, Activation (tanh), Dense (identity))" in result.stdout
    net = nl.load(saved)
    assert net.param_names() == ["0.W", "0.b", "1.0.W", "1.0.b", "1.1.W", "1.1.b", "3.W", "3.b"]
    # the trained model's own description (to_json) builds the same architecture again
    again = nl.model_from_json(net.to_json())
    assert again.config() == net.config()


def test_model_from_a_saved_file_keeps_training_its_weights(run, tmp_path):
    path = tmp_path / "start.npz"
    nl.model_from_json(json.dumps(MODEL)).save(path)
    result = run(*MODEL_RUN, "--model", str(path), "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"]["source"] == str(path) and data["layers"] is None
    assert [layer["type"] for layer in data["model"]["layers"]] == ["Dense", "Residual", "Activation", "Dense"]


@pytest.mark.parametrize("model, extra, message", [
    (MODEL, ["--layers", "4"], "--model describes the whole network; drop --layers"),
    ({**MODEL, "loss": "mse"}, [], "the model's loss is mse but the data need softmax_cross_entropy"),
    ({**MODEL, "layers": MODEL["layers"][:-1] + [{"type": "Dense", "n_in": 6, "n_out": 3}]}, [],
     "the model has 3 output"),
    ({"layers": [{"type": "Conv", "n_in": 2}]}, [], "unknown layer type 'Conv'"),
    ({"layers": [{"type": "Dense", "n_in": 2, "n_out": 2}, {"type": "Dense", "n_in": 3, "n_out": 2}],
      "loss": "softmax_cross_entropy"}, [], "layer 1 Dense.* expects 3 inputs but layer 0"),
])
def test_bad_model_descriptions_give_one_line_errors(run, tmp_path, model, extra, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(model))
    result = run(*MODEL_RUN, "--model", str(path), *extra)
    assert re.search(message, one_line_error(result))


def test_model_file_that_is_not_json(run, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    assert "is not valid JSON" in one_line_error(run(*MODEL_RUN, "--model", str(path)))
    assert "cannot read model description" in one_line_error(run(*MODEL_RUN, "--model", str(tmp_path / "x.json")))


def test_a_recurrent_model_on_the_adding_sequences(run, tmp_path):
    path = tmp_path / "lstm.json"
    path.write_text(json.dumps({"layers": [{"type": "LSTM", "n_in": 2, "hidden": 4},
                                           {"type": "Dense", "n_in": 4, "n_out": 1}], "loss": "mse"}))
    result = run("--data", "adding", "--samples", "40", "--seq-len", "6", "--model", str(path), "--epochs", "2",
                 "--batch-size", "8", "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["seq_len"] == 6 and data["n_features"] == 2 and data["steps"] == 2 * 4
    assert [layer["type"] for layer in data["model"]["layers"]] == ["LSTM", "Dense"]
    assert "--model FILE with a recurrent network" in one_line_error(run("--data", "adding"))
    assert "xor is not a sequence dataset" in one_line_error(run("--data", "xor", "--seq-len", "5"))


@pytest.mark.parametrize("layer, message", [
    ({"type": "LSTM", "n_in": 2}, "a LSTM layer description needs 'hidden'"),
    ({"type": "Dense", "n_in": 2, "n_out": 1, "widht": 3}, "a Dense layer has no argument 'widht'"),
])
def test_layer_descriptions_name_missing_and_foreign_fields(layer, message):
    with pytest.raises(nl.errors.ModelFileError, match=message):
        nl.model_from_json(json.dumps({"layers": [layer]}))
