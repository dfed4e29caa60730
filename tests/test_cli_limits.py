"""Limits and checks every command makes before it works: progress on stderr (periodic lines when
piped, none with --quiet), memory and size limits refused in one line before anything is allocated,
output paths checked before training, options without effect refused, files that are not models."""

import io
import json
import os
import re
import time

import numpy as np
import pytest
from click.testing import CliRunner

import nnlab as nl
from nnlab import limits, progress
from nnlab.errors import ModelFileError, ResourceError
from nnlab_cli.main import cli

TRAIN = ["train", "--data", "xor", "--samples", "64", "--layers", "8", "--epochs", "2", "--batch-size", "16"]


def _invoke(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env)


def one_line_error(result, code=2):
    """The single line a failing command prints (stdout and stderr together), checked."""
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error:") and "Traceback" not in result.output, result.output
    assert "internal error" not in result.output
    return lines[0]


@pytest.fixture
def fast_ticks(monkeypatch):
    """Progress lines every 0.1 s instead of every 2 s, so that a short run shows several."""
    monkeypatch.setattr(progress, "INTERVAL", 0.1)
    monkeypatch.setattr(progress, "_TICK", 0.01)


@pytest.fixture
def slow_steps(monkeypatch):
    """Each training step takes at least 30 ms: a run of 8 steps lasts long enough for ticks."""
    real = nl.Trainer._step

    def slow(self, *args, **kwargs):
        time.sleep(0.03)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(nl.Trainer, "_step", slow)


@pytest.fixture
def small_model(tmp_path):
    path = tmp_path / "m.npz"
    nl.Sequential([nl.Dense(2, 4, activation="tanh"), nl.Dense(4, 2)], loss="softmax_cross_entropy",
                  seed=0).save(path)
    return str(path)


# ---------------------------------------------------------------- progress
def test_a_piped_bar_writes_periodic_plain_lines(fast_ticks):
    stream = io.StringIO()
    with progress.Bar(10, "counting", shown=True, stream=stream) as bar:
        for _ in range(5):
            bar.update(1, "going")
            time.sleep(0.08)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2, lines
    assert all(re.fullmatch(r"counting: \d+/10 steps \(\d+%\), going \[\d+ s\]", line) for line in lines), lines
    n_before = len(lines)
    time.sleep(0.3)  # a closed bar writes nothing more
    assert len(stream.getvalue().splitlines()) == n_before


def test_progress_is_off_in_the_library_and_under_nnlab_quiet(fast_ticks, monkeypatch):
    assert not progress.enabled()
    for force, quiet, shown in ((False, "", False), (True, "", True), (True, "1", False), (True, "0", True)):
        monkeypatch.setenv("NNLAB_QUIET", quiet)
        with progress.bar(3, "x", force=force) as bar:
            assert bar.shown is shown


def test_train_piped_prints_progress_lines_on_stderr_and_results_on_stdout(fast_ticks, slow_steps):
    result = _invoke(*TRAIN, "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout holds the JSON alone
    assert data["steps"] == 8
    ticks = [line for line in result.stderr.splitlines() if line.startswith("training: ")]
    assert len(ticks) >= 2, result.stderr
    assert all(re.match(r"training: \d/8 steps", line) for line in ticks)


def test_quiet_prints_no_progress_and_restores_the_environment(fast_ticks, slow_steps, monkeypatch):
    monkeypatch.delenv("NNLAB_QUIET", raising=False)
    result = _invoke("--quiet", *TRAIN)
    assert result.exit_code == 0, result.output
    assert "training: " not in result.stderr
    assert "epoch 2/2" in result.stdout
    assert "NNLAB_QUIET" not in os.environ and not progress.enabled()


def test_fit_progress_true_counts_every_step(fast_ticks, slow_steps, capsys):
    X, y = nl.datasets.load("xor", n=32, seed=0)
    net = nl.Sequential([nl.Dense(2, 4, activation="tanh"), nl.Dense(4, 2)], loss="softmax_cross_entropy", seed=0)
    trainer = nl.Trainer(net, "adam")
    trainer.compiled_epochs = False
    trainer.fit(X, y, epochs=2, batch_size=8, progress=True)
    err = capsys.readouterr().err
    counts = [int(m) for m in re.findall(r"training: (\d)/8 steps", err)]
    assert counts and counts == sorted(counts), err
    trainer.fit(X, y, epochs=1, batch_size=8)  # progress=False: silent
    assert "training" not in capsys.readouterr().err
    trainer.fit(X, y, epochs=1, batch_size=8, progress="the small net")  # a label names the bar
    assert re.search(r"^the small net: \d/4 steps", capsys.readouterr().err, re.M)


def test_demo_piped_names_its_phase(fast_ticks, monkeypatch):
    from nnlab.demos import dead_relu

    real = dead_relu.run

    def slow(**kw):
        time.sleep(0.3)
        return real(**kw)

    monkeypatch.setattr(dead_relu, "run", slow)
    result = _invoke("demo", "dead-relu", "--steps", "20", "--depth", "2", "--width", "4")
    assert re.search(r"^demo dead-relu", result.stderr, re.M), result.stderr
    quiet = _invoke("--quiet", "demo", "dead-relu", "--steps", "20", "--depth", "2", "--width", "4")
    assert "demo dead-relu" not in quiet.stderr


# ---------------------------------------------------------------- memory and size limits
def test_limits_helpers():
    assert limits.parse_bytes("4G") == 4 * 2**30 and limits.parse_bytes("512M") == 512 * 2**20
    assert limits.parse_bytes("1000") == 1000 and limits.parse_bytes("1.5GiB") == 3 * 2**29
    for bad in ("", "lots", "-1G", "0"):
        with pytest.raises(ValueError):
            limits.parse_bytes(bad)
    assert limits.format_bytes(3 * 2**40) == "3.0 TiB" and limits.format_bytes(5 * 2**20) == "5 MiB"
    assert limits.dense_params([2, 3, 1]) == 3 * 3 + 4 * 1
    with pytest.raises(ResourceError, match=r"^x needs about 2\.0 GiB of memory but 1\.0 GiB is available; reduce y$"):
        limits.require(2 * 2**30, "x", "y", available=2**30)
    assert limits.require(2**20, "x", "y", available=2**30) == 2**20


def test_memory_limit_from_the_environment(monkeypatch):
    monkeypatch.setenv("NNLAB_MEMORY_LIMIT", "3M")
    assert limits.available_bytes() == 3 * 2**20
    monkeypatch.setenv("NNLAB_MEMORY_LIMIT", "plenty")
    with pytest.raises(ResourceError, match="NNLAB_MEMORY_LIMIT"):
        limits.available_bytes()


def test_a_network_too_large_for_memory_is_refused_before_allocating():
    t0 = time.process_time()
    with pytest.raises(ResourceError, match=r"a network of 1,000,001,000,000 parameters needs about .* TiB.*reduce "
                                            r"the layer widths"):
        nl.Sequential([nl.Dense(10**6, 10**6)])
    assert time.process_time() - t0 < 5  # nothing was allocated or initialised


def test_a_workspace_too_large_for_memory_is_refused():
    net = nl.Sequential([nl.Dense(1000, 1000), nl.Dense(1000, 1)])
    with pytest.raises(ResourceError, match=r"a batch of 1,000,000,000 rows .* TiB.*reduce the batch size"):
        net._workspace(10**9)
    assert net._ws == {}


def test_fit_refuses_a_run_larger_than_memory(monkeypatch):
    X, y = nl.datasets.load("xor", n=32, seed=0)
    net = nl.Sequential([nl.Dense(2, 4, activation="tanh"), nl.Dense(4, 2)], loss="softmax_cross_entropy", seed=0)
    before = net.params()[0].copy()
    monkeypatch.setenv("NNLAB_MEMORY_LIMIT", "1K")
    with pytest.raises(ResourceError, match="training with batch_size=8 .*reduce batch_size"):
        nl.Trainer(net, "adam").fit(X, y, epochs=1, batch_size=8)
    np.testing.assert_array_equal(net.params()[0], before)


@pytest.mark.parametrize("epochs,needle", [
    (2**70, r"a fit of ~10\^21 epochs \(~10\^21 steps\) needs about .* PiB of memory"),
    (10**400, r"a fit of ~10\^400 epochs \(~10\^400 steps\) needs about 10\^387 PiB of memory"),
    (10**9, r"a fit of 1,000,000,000 epochs \(4,000,000,000 steps\) needs about .* GiB of memory"),
])
def test_fit_refuses_more_epochs_than_its_history_can_hold(epochs, needle, monkeypatch):
    """Every step of a fit is kept in its History: a count of epochs whose history would not fit in
    memory is refused before any step (it would otherwise run for ever), naming epochs and max_steps."""
    monkeypatch.setenv("NNLAB_MEMORY_LIMIT", "16G")  # (the 10^9 case on a machine of any size)
    X, y = nl.datasets.load("xor", n=32, seed=0)
    net = nl.Sequential([nl.Dense(2, 4, activation="tanh"), nl.Dense(4, 2)], loss="softmax_cross_entropy", seed=0)
    before = net.params()[0].copy()
    tr = nl.Trainer(net, "adam")
    with pytest.raises(ResourceError, match=needle + r".*reduce epochs \(or set max_steps\)"):
        tr.fit(X, y, epochs=epochs, batch_size=8)
    np.testing.assert_array_equal(net.params()[0], before)
    assert tr.optimizer.state_dict()["step"] == 0
    history = tr.fit(X, y, epochs=epochs, batch_size=8, max_steps=3)  # bounded by max_steps: it runs
    assert len(history.loss) == 3 and "max_steps=3" in history.stopped


@pytest.mark.parametrize("args,needle", [
    (["train", "--data", "xor", "--layers", "1000000x3"], r"TiB of memory .*reduce --layers"),
    (["train", "--data", "digits", "--layers", "200000,200000"], r"1\.5 TiB of memory .*reduce --layers"),
    (["demo", "init", "--depth", "200", "--width", "2048", "--batch", "100000"],
     r"demo init \(depth=200, width=2048, batch=100000\) needs about 1\.\d TiB .*reduce --depth, --width or --batch"),
    (["demo", "selu", "--depth", "500", "--wide", "4096", "--batch", "100000"], r"TiB .*reduce --depth"),
    (["demo", "lstm", "--T", "1000", "--hidden", "512", "--samples", "100000", "--test", "100000", "--batch",
      "100000"], r"TiB .*reduce --samples"),
    (["demo", "exploding", "--depth", "200", "--width", "1024", "--batch", "100000", "--steps", "10000"],
     r"GiB .*reduce --depth"),
    (["demo", "dead-relu", "--steps", "100000", "--width", "1024", "--depth", "100"],
     r"demo dead-relu \(.*\) would run about 1e\+17 floating-point operations.*reduce --steps, --depth or --width"),
    (["demo", "optimizers", "--steps", "100000", "--depth", "100", "--width", "1024", "--samples", "100000"],
     r"reduce --steps"),
    (["demo", "vanishing", "--depth", "100000", "--width", "100000"], r"PiB .*reduce --depth"),
    (["train", "--data", "xor", "--samples", "1000000000"], r"--samples.*range"),
    (["train", "--data", "xor", "--epochs", "1000000000"], r"--epochs.*range"),
])
def test_runs_larger_than_memory_fail_fast_in_one_line(args, needle):
    t0 = time.process_time()
    line = one_line_error(_invoke(*args))
    assert re.search(needle, line), line
    assert time.process_time() - t0 < 10  # refused before any allocation or training


def test_samples_are_checked_against_memory(monkeypatch):
    line = one_line_error(_invoke("train", "--data", "xor", "--samples", "10000000", env={"NNLAB_MEMORY_LIMIT": "100M"}))
    assert re.search(r"10,000,000 samples of xor needs about .* GiB of memory but 100 MiB is available; "
                     r"reduce --samples", line), line


def test_diagnose_steps_are_bounded(small_model):
    line = one_line_error(_invoke("diagnose", small_model, "--data", "xor", "--steps", "100000000"))
    assert "--steps" in line and "100000000" in line
    line = one_line_error(_invoke("diagnose", small_model, "--data", "xor", "--steps", "1000000",
                                  env={"NNLAB_MEMORY_LIMIT": "100M"}))
    assert "reduce --steps or --batch-size" in line


def test_memory_error_is_one_line_not_internal(monkeypatch):
    def no_room(*args, **kwargs):
        raise MemoryError("Unable to allocate 3.00 TiB")

    monkeypatch.setattr(nl.datasets, "load", no_room)
    line = one_line_error(_invoke("train", "--data", "xor"))
    assert line.startswith("Error: out of memory: Unable to allocate 3.00 TiB")


# ---------------------------------------------------------------- outputs checked before work
def _refused_before_training(result):
    line = one_line_error(result)
    assert "epoch" not in result.output and "data " not in result.output
    return line


def test_train_checks_save_and_json_before_training(tmp_path):
    missing = tmp_path / "no" / "m.npz"
    assert "folder of" in _refused_before_training(_invoke(*TRAIN, "--save", str(missing)))
    assert "is a directory" in _refused_before_training(_invoke(*TRAIN, "--save", str(tmp_path)))
    a_file = tmp_path / "f"
    a_file.write_text("")
    line = _refused_before_training(_invoke(*TRAIN, "--json", str(a_file / "x.json")))
    assert "is not a directory" in line and "--json" in line
    same = str(tmp_path / "out")
    line = _refused_before_training(_invoke(*TRAIN, "--json", same, "--save", same))
    assert "--json and --save name the same file" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no file left behind by the checks


def test_a_folder_that_refuses_files_is_named(tmp_path, monkeypatch):
    real_open = os.open

    def refuse(path, *args, **kwargs):  # the folder refuses new files; everything else opens as usual
        if os.fspath(path).startswith(str(tmp_path)):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    target = str(tmp_path / "m.npz")
    line = _refused_before_training(_invoke(*TRAIN, "--save", target))
    assert f"cannot write '{target}'" in line and "Permission denied" in line
    with pytest.raises(ModelFileError, match=f"cannot save {re.escape(target)}: Permission denied"):
        nl.Sequential([nl.Dense(2, 1)]).save(target)


@pytest.mark.parametrize("args", [
    ["demo", "vanishing", "--json", "{missing}"],
    ["demo", "vanishing", "--plot", "{missing}.png"],
    ["demo", "ewa", "--json", "{dir}"],
    ["demo", "swish", "--plot", "{dir}"],
    ["bench", "--json", "{missing}"],
])
def test_every_output_option_is_checked_first(tmp_path, args):
    args = [a.format(missing=str(tmp_path / "no" / "x.json"), dir=str(tmp_path)) for a in args]
    line = one_line_error(_invoke(*args))
    assert ("does not exist" in line or "is a directory" in line), line


def test_diagnose_json_is_checked_first(small_model, tmp_path):
    line = one_line_error(_invoke("diagnose", small_model, "--data", "xor", "--json", str(tmp_path / "no" / "d.json")))
    assert "--json" in line and "does not exist" in line


# ---------------------------------------------------------------- options without effect
@pytest.mark.parametrize("args,needle", [
    (["train", "--layers", ""], "write 'none'"),
    (["train", "--layers", "none", "--activation", "tanh"], "--layers none has none"),
    (["--threads", "100000", "activations"], "more than this machine's"),
    (["bench", "--configs", "tiny,tiny"], "'tiny' given twice"),
    (["bench", "--optimizers", "adam,adam"], "'adam' given twice"),
    (["demo", "vanishing", "--config", "relu/he_normal", "--config", "relu/he_normal"], "'relu/he_normal' given twice"),
    (["bench", "--report", "{report}", "--quick"], "--quick would have no effect"),
    (["bench", "--report", "{report}", "--configs", "tiny"], "--configs would have no effect"),
])
def test_options_without_effect_are_errors(tmp_path, args, needle):
    report = tmp_path / "r.json"
    report.write_text("{}")
    line = one_line_error(_invoke(*[a.format(report=report) for a in args]))
    assert needle in line, line


@pytest.mark.parametrize("extra", [["--lr", "0.1"], ["--optimizer", "sgd"], ["--batch-size", "8"]])
def test_diagnose_training_options_need_steps(small_model, extra):
    line = one_line_error(_invoke("diagnose", small_model, "--data", "xor", *extra))
    assert f"{extra[0]} acts only on training steps; add --steps K (or drop it)" in line


def test_diagnose_names_every_option_without_effect(small_model):
    line = one_line_error(_invoke("diagnose", small_model, "--data", "xor", "--lr", "0.1", "--batch-size", "8"))
    assert "--lr, --batch-size act only on training steps" in line


# ---------------------------------------------------------------- files that are not models
def test_a_text_file_named_npz_is_not_a_model(tmp_path):
    bad = tmp_path / "model.npz"
    bad.write_text("hello, I am text\n")
    with pytest.raises(ModelFileError) as info:
        nl.load(bad)
    assert "is not an nnlab model file (not an .npz archive" in str(info.value)
    assert "pickle" not in str(info.value)
    for args in (["diagnose", str(bad), "--data", "xor"], ["train", "--model", str(bad), "--data", "xor"]):
        line = one_line_error(_invoke(*args))
        assert "not an nnlab model file" in line and "pickle" not in line, line


def test_an_archive_with_pickled_members_is_refused_without_pickle_advice(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, config=np.array([{"a": 1}], dtype=object), params=np.zeros(3))
    with pytest.raises(ModelFileError, match="pickled data is never loaded") as info:
        nl.load(path)
    assert "allow_pickle" not in str(info.value)
