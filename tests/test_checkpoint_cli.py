"""`nnlab train --checkpoint/--checkpoint-every/--resume`: an interrupted run resumed from its
checkpoint ends on the same weights and history as one that never stopped; bad checkpoint options
and corrupt model or checkpoint files give one-line errors (a traceback only with NNLAB_DEBUG=1)."""

import json
import os

import numpy as np
import pytest
from cli_checks import one_line_error  # tests/ is on sys.path (conftest.py)
from click.testing import CliRunner

import nnlab as nl
from nnlab_cli.main import cli

RUN = ["--data", "moons", "--samples", "120", "--layers", "8,8", "--activation", "rrelu", "--optimizer", "rmsprop",
       "--lr", "0.01", "--momentum", "0.5", "--clip-global-norm", "1.0", "--epochs", "3", "--batch-size", "16",
       "--seed", "4", "--dtype", "float32"]  # 96 training rows: 6 steps an epoch


def _train(*args, env=None):
    return CliRunner().invoke(cli, ["train", *args], env=env)


def _history(path):
    return json.loads(open(path).read())["history"]


def test_interrupted_run_resumed_from_its_checkpoint_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    full = _train(*RUN, "--save", str(tmp_path / "full.npz"), "--json", str(tmp_path / "full.json"))
    assert full.exit_code == 0, full.output
    ckpt = str(tmp_path / "run.ckpt.npz")
    real_record = nl.Trainer._record

    def interrupt(self, loss, epoch, history, step_callback):  # Ctrl-C after step 10 (mid-epoch 2)
        ok = real_record(self, loss, epoch, history, step_callback)
        if len(history.loss) == 10:
            raise KeyboardInterrupt
        return ok

    monkeypatch.setattr(nl.Trainer, "_record", interrupt)
    cut = _train(*RUN, "--checkpoint", ckpt, "--checkpoint-every", "4")
    assert cut.exit_code == 1 and "Aborted" in cut.output
    monkeypatch.setattr(nl.Trainer, "_record", real_record)
    assert nl.load_checkpoint(ckpt)._run.batch == 2  # the checkpoint of step 8: epoch 2, batch 2 of 6
    resumed = _train("--resume", ckpt, "--save", str(tmp_path / "resumed.npz"), "--json", str(tmp_path / "res.json"))
    assert resumed.exit_code == 0, resumed.output
    assert f"resume    {ckpt} at epoch 2, step 9" in resumed.output
    a, b = nl.load(tmp_path / "full.npz"), nl.load(tmp_path / "resumed.npz")
    assert a.dtype == b.dtype == np.float32 and np.array_equal(a._store, b._store)
    ha, hb = _history(tmp_path / "full.json"), _history(tmp_path / "res.json")
    for key in ("loss", "grad_norm", "epoch_loss", "accuracy", "val_loss", "val_accuracy"):
        assert ha[key] == hb[key], key
    # the resumed run kept checkpointing into the file: it now holds the finished run, which --epochs extends
    done = nl.load_checkpoint(ckpt)
    assert done._run.epoch == 3 and len(done._run.history.loss) == 18
    more = _train("--resume", ckpt, "--epochs", "4")
    assert more.exit_code == 0 and len([ln for ln in more.output.splitlines() if ln.startswith("epoch ")]) == 1


def test_checkpoint_options_errors_are_one_line(tmp_path):
    ckpt = str(tmp_path / "c.npz")
    assert _train(*RUN, "--epochs", "1", "--checkpoint", ckpt).exit_code == 0
    net = nl.Sequential([nl.Dense(2, 2)], loss="softmax_cross_entropy")
    net.save(tmp_path / "model.npz")
    t = nl.Trainer(net, "sgd")
    t.save_checkpoint(tmp_path / "library.npz")
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 not a zip")
    np.save(tmp_path / "array.npy", np.zeros(3))
    cases = [
        (["--checkpoint-every", "3"], "--checkpoint-every needs --checkpoint"),
        (["--checkpoint", ckpt, "--checkpoint-every", "0"], "--checkpoint-every"),
        (["--checkpoint", str(tmp_path / "nodir" / "c.npz")], "--checkpoint"),
        (["--resume", str(tmp_path / "missing.npz")], "no such"),
        (["--resume", str(tmp_path / "garbage.npz")], "not an nnlab checkpoint"),
        (["--resume", str(tmp_path / "array.npy")], "not an nnlab checkpoint"),
        (["--resume", str(tmp_path / "model.npz")], "nnlab.load"),
        (["--resume", str(tmp_path / "library.npz")], "not of an 'nnlab train' run"),
        (["--resume", ckpt, "--layers", "4"], "drop --layers"),
        (["--resume", ckpt, "--optimizer", "sgd", "--lr", "0.1"], "drop --optimizer, --lr"),
        (["--resume", ckpt, "--seed", "9"], "--seed"),
        (["--resume", ckpt, "--batch-size", "8"], "--batch-size"),
        (["--resume", ckpt, "--data", "xor"], "--data"),
        (["--model", str(tmp_path / "garbage.npz")], "garbage.npz"),
        (["--model", str(tmp_path / "array.npy")], "array.npy"),
    ]
    for args, needle in cases:
        line = one_line_error(_train(*args))
        assert needle in line, (args, line)
    assert os.listdir(tmp_path / ".") and not [f for f in os.listdir(tmp_path) if "nnlab-tmp" in f]


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "garbage.npz").write_bytes(b"not a checkpoint")
    result = _train("--resume", str(tmp_path / "garbage.npz"), env={"NNLAB_DEBUG": "1"})
    assert result.exit_code != 0
    assert isinstance(result.exception, nl.errors.ModelFileError)


@pytest.mark.parametrize("flag", ["--checkpoint", "--resume"])
def test_help_lists_the_checkpoint_options(flag):
    result = CliRunner().invoke(cli, ["train", "--help"])
    assert flag in result.output


def _bad_model_files(tmp_path):
    """Corrupt model files, each with a word its error must contain."""
    good = tmp_path / "good.npz"
    net = nl.Sequential([nl.Dense(2, 4, activation="tanh"), nl.BatchNorm(4), nl.Dense(4, 2)],
                        loss="softmax_cross_entropy", seed=0)
    net.save(good)
    with np.load(good) as d:
        members = {k: d[k] for k in d.files}
    meta = json.loads(bytes(members["config"]).decode())

    def npz(name, **change):
        path = tmp_path / name
        with open(path, "wb") as fh:
            np.savez(fh, **{**members, **change})
        return path

    nan = members["params"].copy()
    nan[0] = np.nan
    huge = dict(meta, layers=[{"type": "Dense", "n_in": 2, "n_out": 10**7}, {"type": "Dense", "n_in": 10**7, "n_out": 2}])
    chain = dict(meta, layers=[{"type": "Dense", "n_in": 2, "n_out": 10**7}, *meta["layers"][1:]])
    text = lambda obj: np.frombuffer(json.dumps(obj).encode(), np.uint8)  # noqa: E731
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:400])
    return {
        "empty": (tmp_path / "empty.npz", "empty.npz"),
        "truncated": (tmp_path / "cut.npz", "cut.npz"),
        "NaN parameters": (npz("nan.npz", params=nan), "non-finite"),
        "huge architecture": (npz("huge.npz", config=text(huge)), "do not match"),
        "no buffers": (npz("nobuf.npz", buffers=np.zeros(0)), "buffers"),
        "widths that do not chain": (npz("chain.npz", config=text(chain)), "chain.npz"),
        "pickled": (npz("pickled.npz", params=np.array([{"x": 1}], dtype=object)), "pickled"),
    }


def test_corrupt_model_files_are_one_line_errors_in_every_command(tmp_path):
    for label, (path, needle) in _bad_model_files(tmp_path).items():
        for args in (["train", "--data", "xor", "--samples", "16", "--model", str(path), "--epochs", "1"],
                     ["diagnose", str(path), "--data", "xor", "--samples", "16"]):
            line = one_line_error(CliRunner().invoke(cli, args))
            assert needle in line, (label, args[0], line)
