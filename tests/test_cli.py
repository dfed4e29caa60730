"""The ``nnlab`` command line: help everywhere, real output, one-line errors, exit codes."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

import nnlab as nl
from nnlab.demos import vanishing
from nnlab_cli.main import cli


def _paths(group, prefix=()):
    yield prefix
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _paths(cmd, prefix + (name,))
        else:
            yield prefix + (name,)


ALL_COMMANDS = list(_paths(cli))


def _assert_one_line_error(result, code=None, start="Error:"):
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(start), result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- help
def test_command_tree():
    assert ("activations",) in ALL_COMMANDS and ("gradcheck",) in ALL_COMMANDS
    assert ("demo", "vanishing") in ALL_COMMANDS


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "nnlab")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_everywhere(run, path, flag):
    result = run(*path, flag)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0 and nl.__version__ in result.output


# ---------------------------------------------------------------- activations
def test_activations_lists_every_name(run):
    result = run("activations")
    assert result.exit_code == 0, result.output
    first_words = {line.split()[0] for line in result.output.splitlines() if line and not line[0].isspace()}
    for name in nl.activations.names():
        # (a name another test module registered in this process is the user's, not the registry's)
        assert name in first_words or nl.activations.entry(name).custom, name
    assert "(0, 0.25]" in result.output  # sigmoid's derivative range, with its brackets
    assert "[0, ∞)" in result.output      # relu's range


def test_activations_fit_a_100_column_terminal(run):
    result = run("activations", env={"COLUMNS": "100"})
    assert max(len(line) for line in result.output.splitlines()) <= 100


def test_activations_json(run):
    result = run("activations", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert [d["name"] for d in data] == nl.activations.names()
    sig = data[1]
    assert sig["name"] == "sigmoid" and sig["facts"]["deriv_range"] == [0.0, 0.25]


# ---------------------------------------------------------------- gradcheck
def test_gradcheck_passes(run):
    result = run("gradcheck")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    m = re.fullmatch(r"(\d+) passed, 0 failed", lines[-1])
    assert m, lines[-1]
    checks = [line for line in lines if line.startswith(("ok ", "FAIL"))]
    assert len(checks) == int(m.group(1))
    text = result.output
    for name in nl.activations.names():
        if name != "scaled":
            assert f"ok   {name}'" in text, name
    assert "gelu(approximate=tanh)'" in text and "scaled(tanh" in text
    assert text.count("ok   network ") >= 3
    for loss in ("mse", "softmax_cross_entropy", "bce"):
        assert f"/{loss} (" in text


def test_gradcheck_json_and_seed(run):
    result = run("gradcheck", "--json", "--seed", "3")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["failed"] == 0 and data["passed"] == len(data["results"]) and data["seed"] == 3
    assert {r["kind"] for r in data["results"]} == {"activation", "network"}


def test_gradcheck_failure_exits_nonzero(run, monkeypatch):
    real = nl.gradcheck.check_activation

    def planted(act, *args, **kwargs):
        results = real(act, *args, **kwargs)
        if getattr(act, "name", act) == "tanh":
            results[0].ok = False
        return results

    monkeypatch.setattr(nl.gradcheck, "check_activation", planted)
    result = run("gradcheck")
    assert result.exit_code == 1
    assert re.search(r"^FAIL tanh'", result.output, re.M)
    assert re.search(r"^\d+ passed, [1-9]\d* failed$", result.output, re.M)


# ---------------------------------------------------------------- demo vanishing
def test_demo_vanishing_small(run):
    expected = vanishing.run(depth=8, width=16)
    result = run("demo", "vanishing", "--depth", "8", "--width", "16")
    assert result.exit_code == (0 if expected.held else 1), result.output
    out = result.output
    assert vanishing.CLAIM in " ".join(out.split())  # wrapped to the terminal width
    assert f"claim held: {'yes' if expected.held else 'no'}" in out
    # the table: one row per layer, the numbers of the result in scientific notation
    rows = [line for line in out.splitlines() if re.match(r"^\s*\d+( out)?\s+\d\.\d\de[-+]\d\d\s", line)]
    assert len(rows) == 9
    for i, line in enumerate(rows):
        assert [float(v) for v in line.split()[-4:]] == pytest.approx(
            [c.grad_norms[i] for c in expected.rows], rel=1e-2)
    for c in expected.rows:
        assert re.search(rf"{re.escape(c.label)}\s+ratio {c.ratio:.2e}\s+{c.verdict}", out)
    assert "█" in out  # the chart


def test_demo_vanishing_default_holds(run):
    result = run("demo", "vanishing")
    assert result.exit_code == 0, result.output
    assert "claim held: yes" in result.output
    assert re.search(r"sigmoid/xavier_normal\s+ratio \d\.\d\de-\d\d\s+vanishing", result.output)
    assert re.search(r"relu/he_normal\s+ratio \d\.\d\de[-+]\d\d\s+healthy", result.output)


@pytest.mark.parametrize("columns", ["80", "100"])
def test_demo_vanishing_fits_the_terminal(run, columns):
    result = run("demo", "vanishing", env={"COLUMNS": columns})
    assert max(len(line) for line in result.output.splitlines()) <= int(columns)


def test_demo_vanishing_not_held_exits_1(run):
    # sigmoid does not vanish over 2 layers: the claim is tested and fails
    result = run("demo", "vanishing", "--depth", "2", "--width", "8", "--config", "sigmoid/xavier_normal",
                 "--config", "relu/he_normal")
    assert result.exit_code == 1, result.output
    assert "claim held: no" in result.output


def test_demo_vanishing_without_the_claims_configurations_is_not_tested(run):
    result = run("demo", "vanishing", "--depth", "2", "--width", "8", "--config", "tanh/xavier_normal")
    assert result.exit_code == 0, result.output
    assert "claim not tested for these settings" in result.output
    assert "claim held" not in result.output


def test_demo_vanishing_json_file(run, tmp_path):
    path = tmp_path / "out.json"
    result = run("demo", "vanishing", "--depth", "6", "--width", "8", "--seed", "2", "--json", str(path))
    data = json.loads(path.read_text())
    expected = vanishing.run(depth=6, width=8, seed=2).to_dict()
    assert data == json.loads(json.dumps(expected))
    assert result.exit_code == (0 if data["held"] else 1)
    assert data["configs"][0]["grad_norms"][0] > 0 and len(data["configs"][0]["grad_norms"]) == 7
    assert "claim held:" in result.output


def test_demo_vanishing_json_stdout(run):
    result = run("demo", "vanishing", "--depth", "3", "--width", "4", "--json", "-", "--dtype", "float32")
    data = json.loads(result.stdout)
    assert data["dtype"] == "float32" and data["depth"] == 3


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("args", [
    ["demo", "vanishing", "--depth", "0"],
    ["demo", "vanishing", "--depth", "abc"],
    ["demo", "vanishing", "--dtype", "float16"],
    ["demo", "vanishing", "--seed", "-1"],
    ["demo", "vanishing", "--width", "2.5"],
    ["demo", "vanishing", "--config", "nope/he_normal"],
    ["demo", "vanishing", "--config", "relu"],
    ["demo", "vanishing", "--width", "1000000"],
    ["demo", "vanishing", "--bogus"],
    ["demo", "nope"],
    ["nope"],
    ["gradcheck", "--seed", "x"],
    ["activations", "extra"],
])
def test_bad_input_is_one_line(run, args):
    _assert_one_line_error(run(*args), code=2)


def test_unwritable_json_path_is_one_line(run, tmp_path):
    _assert_one_line_error(run("demo", "vanishing", "--depth", "2", "--json", str(tmp_path / "no" / "x.json")))


def test_nnlab_error_inside_a_command_is_one_line(run, monkeypatch):
    def boom(**kwargs):
        raise nl.errors.HyperparameterError("something is off\nwith a second line")

    monkeypatch.setattr(vanishing, "run", boom)
    result = run("demo", "vanishing")
    _assert_one_line_error(result, code=2)
    assert "Error: something is off with a second line" in result.output


def test_unexpected_error_is_one_line_internal_error(run, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("kaput")

    monkeypatch.setattr(vanishing, "run", boom)
    monkeypatch.delenv("NNLAB_DEBUG", raising=False)
    result = run("demo", "vanishing")
    _assert_one_line_error(result, code=1, start="internal error: RuntimeError: kaput")
    assert "NNLAB_DEBUG=1" in result.output


def test_debug_mode_shows_the_exception(run, monkeypatch):
    def boom(**kwargs):
        raise RuntimeError("kaput")

    monkeypatch.setattr(vanishing, "run", boom)
    result = run("demo", "vanishing", env={"NNLAB_DEBUG": "1"})
    assert isinstance(result.exception, RuntimeError)  # propagated, so Python prints the traceback


def test_group_without_command_shows_help(run):
    result = run("demo")
    assert "vanishing" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------- the installed program
def _env():
    env = dict(os.environ)
    env.pop("NNLAB_DEBUG", None)
    return env


def test_module_entry_point_and_lazy_import():
    out = subprocess.run([sys.executable, "-m", "nnlab_cli.main", "--help"], capture_output=True, text=True,
                         timeout=60, env=_env())
    assert out.returncode == 0 and "demo" in out.stdout, out.stderr
    # every command, those registered by the sibling modules too, under both module entry points
    for entry in ("nnlab_cli.main", "nnlab_cli"):
        for command in ("bench", "diagnose", "train"):
            sub = subprocess.run([sys.executable, "-m", entry, command, "--help"], capture_output=True, text=True,
                                 timeout=60, env=_env())
            assert sub.returncode == 0 and f"nnlab {command}" in sub.stdout, (entry, command, sub.stderr)
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, nnlab_cli.main; print('numba' in sys.modules, 'nnlab' in sys.modules)"],
        capture_output=True, text=True, timeout=60, env=_env())
    assert probe.stdout.split() == ["False", "False"], "nnlab --help must not import numba or nnlab"


def test_console_script():
    exe = shutil.which("nnlab") or shutil.which("nnlab", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the nnlab console script is not on PATH")
    out = subprocess.run([exe, "demo", "vanishing", "--depth", "0"], capture_output=True, text=True, timeout=60,
                         env=_env())
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("Error:") and not out.stdout
    ok = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60, env=_env())
    assert ok.returncode == 0 and "gradcheck" in ok.stdout
