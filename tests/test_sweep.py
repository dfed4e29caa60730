"""Sweeps in this process: the grid and its file format, the results file, resume, failed points, the
command line's one-line errors. The Dask tests are in test_sweep_cluster.py."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import nnlab as nl
from nnlab import sweep
from nnlab.sweep import GridError, SweepError

TINY = dict(width=8, steps=5, samples=64, batch_size=16)


def write(tmp_path, text, name="grid.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# ---------------------------------------------------------------- the grid
def test_grid_is_the_product_of_its_axes_with_defaults_and_fixed_settings():
    g = sweep.Grid({"depth": [1, 2, 3], "sigma_w2": {"start": 1, "stop": 2, "num": 3}}, fixed={"width": 8})
    pts = g.points()
    assert len(g) == len(pts) == 9
    assert [(p["depth"], p["sigma_w2"]) for p in pts[:4]] == [(1, 1.0), (1, 1.5), (1, 2.0), (2, 1.0)]
    assert all(p["width"] == 8 and p["activation"] == sweep.SETTINGS["activation"].default for p in pts)
    assert set(pts[0]) == set(sweep.SETTINGS)
    assert len({sweep.point_key(p) for p in pts}) == 9


def test_point_key_is_stable_and_depends_on_every_setting():
    p = sweep.Grid({"depth": [2]}).points()[0]
    assert sweep.point_key(p) == sweep.point_key(json.loads(json.dumps(p)))
    assert sweep.point_key(p) != sweep.point_key({**p, "lr": p["lr"] * 2})
    # the same key in another process
    code = ("import json,sys; from nnlab.sweep import point_key; "
            "print(point_key(json.loads(sys.argv[1])))")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(p)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == sweep.point_key(p)


def test_int_axes_from_a_range_are_rounded_and_unique():
    assert sweep.expand("depth", {"start": 10, "stop": 200, "num": 6}) == [10, 48, 86, 124, 162, 200]
    assert sweep.expand("lr", {"start": 0.001, "stop": 0.1, "num": 3, "log": True}) == [0.001, 0.01, 0.1]


@pytest.mark.parametrize("axes,fixed,match", [
    ({"detph": [1]}, {}, "unknown axis 'detph'"),
    ({"depth": [0]}, {}, "depth must be >= 1"),
    ({"depth": [1.5]}, {}, "depth must be an integer"),
    ({"depth": []}, {}, "axis depth is empty"),
    ({"depth": [2, 2]}, {}, "repeats 2"),
    ({"lr": [-0.1]}, {}, "lr must be > 0"),
    ({"activation": ["tanhh"]}, {}, "activation must be one of"),
    ({"record": [["verdicts"]]}, {}, "not an axis"),
    ({"depth": [1]}, {"depth": 2}, "both an axis and a fixed"),
    ({"depth": [1]}, {"colour": 2}, "unknown setting 'colour'"),
    ({"init": ["he_normal"]}, {"sigma_w2": 2.0}, "meanfield"),
    ({"optimizer": ["adam"]}, {"momentum": 0.9}, "momentum"),
    ({"depth": {"start": 1, "stop": 3}}, {}, "start, stop and num"),
    ({}, {}, "at least one axis"),
])
def test_bad_grids_raise_grid_errors(axes, fixed, match):
    with pytest.raises(GridError, match=match):
        sweep.Grid(axes, fixed)


# ---------------------------------------------------------------- the TOML file
GOOD = """\
    [sweep]
    results = "out.jsonl"

    [fixed]
    width = 8
    steps = 5
    samples = 64
    batch_size = 16

    [grid]
    depth = [1, 2]
    seed = [0, 1]
"""


def test_load_reads_the_three_tables(tmp_path):
    spec = sweep.load(write(tmp_path, GOOD))
    assert len(spec.grid) == 4 and spec.grid.fixed["width"] == 8
    assert spec.results == str(tmp_path / "out.jsonl")
    spec = sweep.load(write(tmp_path, GOOD.replace('results = "out.jsonl"', ""), name="other.toml"))
    assert spec.results == str(tmp_path / "other.jsonl")


@pytest.mark.parametrize("text,match", [
    ("[grid]\ndepth = [1, 2\n", r"grid\.toml:2: malformed TOML"),
    ("[grid]\ndepth = [1]\ndepth = [2]\n", r"grid\.toml:3: malformed TOML"),
    ("[fixed]\nwidth = 8\n\n[grid]\ndetph = [1, 2]\n", r"grid\.toml:5: unknown axis 'detph'"),
    ("[grid]\ndepth = [1]\nlr = [0.1, -1]\n", r"grid\.toml:3: lr must be > 0; got -1"),
    ("[fixed]\nwidht = 8\n[grid]\ndepth = [1]\n", r"grid\.toml:2: unknown setting 'widht'"),
    ("[grids]\ndepth = [1]\n", r"grid\.toml:1: unknown table or key 'grids'"),
    ("[fixed]\nwidth = 8\n", r"no \[grid\] table"),
    ("[sweep]\nworkrs = 2\n[grid]\ndepth = [1]\n", r"grid\.toml:2: unknown key 'workrs' in \[sweep\]"),
])
def test_bad_files_name_the_line(tmp_path, text, match):
    with pytest.raises(GridError, match=match):
        sweep.load(write(tmp_path, text))


def test_cli_bad_files_are_one_line_errors(run, tmp_path):
    for text, needle in [("[grid]\ndepth = [1, 2\n", "grid.toml:2: malformed TOML"),
                         ("[grid]\ndetph = [1]\n", "grid.toml:2: unknown axis 'detph'"),
                         ("[grid]\ndepth = ['a']\n", "grid.toml:2: depth must be an integer")]:
        result = run("sweep", write(tmp_path, text))
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.output
        assert "Traceback" not in result.output
    result = run("sweep", str(tmp_path / "missing.toml"))
    assert result.exit_code == 2 and "cannot read sweep file" in result.output


# ---------------------------------------------------------------- running in this process
def test_rows_have_params_metrics_and_provenance(tmp_path):
    out = tmp_path / "r.jsonl"
    rows = sweep.run({"depth": [1, 4], "seed": [0, 1]}, out, fixed={**TINY, "record": ["grad_norms", "verdicts"]},
                     workers=0, progress=False)
    assert [(r["params"]["depth"], r["params"]["seed"]) for r in rows] == [(1, 0), (1, 1), (4, 0), (4, 1)]
    for r in rows:
        assert r["status"] == "ok" and r["error"] is None and r["nnlab_version"] == nl.__version__
        m = r["metrics"]
        assert 0 <= m["accuracy"] <= 1 and m["steps_done"] == 5 and m["stopped"] == ""
        assert len(m["grad_norms_init"]) == len(m["grad_norms"]) == r["params"]["depth"] + 1
        assert isinstance(m["verdicts"], list) and r["wall_time"] >= 0
        assert r["key"] == sweep.point_key(r["params"])
    assert rows[2]["metrics"]["grad_decay_init"] is not None and rows[0]["metrics"]["grad_decay_init"] is None
    assert rows[0]["metrics"] != rows[1]["metrics"]  # the seed matters
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and sorted(json.loads(x)["key"] for x in lines) == sorted(r["key"] for r in rows)


def test_a_point_repeats_exactly():
    p = sweep.Grid({"depth": [3]}, fixed=TINY).points()[0]
    assert sweep.train_point(p) == sweep.train_point(dict(p))


def test_resume_skips_done_points_and_ignores_a_truncated_last_line(tmp_path):
    out = tmp_path / "r.jsonl"
    calls = []

    def fn(params):
        calls.append(params["x"])
        return {"y": params["x"] ** 2}

    sweep.run({"x": [1, 2]}, out, fn=fn, workers=0, progress=False)
    assert calls == [1, 2]
    with open(out, "a") as f:  # a client killed while writing the third point's row
        f.write('{"key": "abc", "params": {"x": 3}, "sta')
    rows = sweep.run({"x": [1, 2, 3, 4]}, out, fn=fn, workers=0, progress=False)
    assert calls == [1, 2, 3, 4]
    assert [r["metrics"]["y"] for r in rows] == [1, 4, 9, 16]
    keys = [json.loads(x)["key"] for x in out.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 4  # the broken line was cut, every point once
    sweep.run({"x": [1, 2, 3, 4]}, out, fn=fn, workers=0, progress=False)
    assert calls == [1, 2, 3, 4]  # nothing left to do


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    out = tmp_path / "r.jsonl"
    state = {"fail": True}

    def fn(params):
        if params["x"] == 2 and state["fail"]:
            raise ValueError("no good")
        return {"y": params["x"]}

    rows = sweep.run({"x": [1, 2, 3]}, out, fn=fn, workers=0, progress=False)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["error"].startswith("ValueError: no good") and rows[1]["metrics"] is None
    state["fail"] = False
    assert sweep.run({"x": [1, 2, 3]}, out, fn=fn, workers=0, progress=False)[1]["status"] == "failed"
    rows = sweep.run({"x": [1, 2, 3]}, out, fn=fn, workers=0, progress=False, retry_failed=True)
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"]
    assert [r["status"] for r in sweep.read_results(out)] == ["ok", "ok", "ok"]  # the last row of a key wins


def test_a_broken_middle_line_is_an_error_naming_it(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(SweepError, match=r"r\.jsonl:2: not a row"):
        sweep.read_results(out)


def test_progress_lines_when_piped(capsys):
    sweep.run({"x": [1, 2, 3]}, fn=lambda p: {"y": 1}, workers=0, progress=True)
    err = capsys.readouterr().err
    assert "sweep: 3/3 points" in err and "elapsed" in err
    sweep.run({"x": [1, 2, 3]}, fn=lambda p: {"y": 1}, workers=0, progress=False)
    assert capsys.readouterr().err == ""


def test_quiet_env_turns_progress_off(capsys, monkeypatch):
    monkeypatch.setenv("NNLAB_QUIET", "1")
    sweep.run({"x": [1, 2]}, fn=lambda p: {"y": 1}, workers=0)
    assert capsys.readouterr().err == ""


def test_missing_dask_is_one_line_naming_the_extra(monkeypatch, run, tmp_path):
    import builtins

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError("no distributed")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(SweepError, match=r'pip install "nnlab\[sweep\]"'):
        sweep.run({"depth": [1]}, fixed=TINY, progress=False)
    result = run("sweep", write(tmp_path, GOOD))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert 'pip install "nnlab[sweep]"' in result.output
    result = run("sweep", write(tmp_path, GOOD), "--workers", "0", "--quiet")  # in this process: no Dask needed
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 4


def test_cli_runs_in_process_and_resumes(run, tmp_path):
    path = write(tmp_path, GOOD)
    result = run("sweep", path, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "4 points: 4 ok, 0 failed" in result.output
    result = run("sweep", path, "--workers", "0", "--quiet")
    assert result.exit_code == 0 and result.output == ""
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 4
    result = run("sweep", path, "--workers", "0", "--results", str(tmp_path / "no" / "r.jsonl"))
    assert result.exit_code == 2 and "no folder" in result.output


def test_cli_exits_1_when_a_point_fails(run, tmp_path):
    # a net whose activations overflow float32 immediately is not a failure (it stops); a bad data set
    # shape is: the 'adding' data set is a sequence task, which the tabular point cannot train
    path = write(tmp_path, "[fixed]\nwidth = 4\nsteps = 2\n[grid]\ndata = ['xor', 'adding']\n")
    result = run("sweep", path, "--workers", "0", "--quiet")
    assert result.exit_code == 1
    rows = {r["params"]["data"]: r for r in sweep.read_results(os.path.splitext(path)[0] + ".jsonl")}
    assert rows["xor"]["status"] == "ok" and rows["adding"]["status"] == "failed"
    assert "tabular" in rows["adding"]["error"]
