"""Sweeps on Dask: an embedded LocalCluster gives exactly the in-process results; a real cluster
(``dask scheduler`` + two ``dask worker`` processes on localhost) survives a killed worker with every
point in the results file exactly once; a killed client resumes with no point twice or missing.
Small on purpose: two workers, tiny nets."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from nnlab import sweep

distributed = pytest.importorskip("distributed")

TINY = dict(width=8, steps=20, samples=128, batch_size=16)
ENV = {**os.environ, **sweep.THREAD_ENV, "NNLAB_QUIET": "1"}


def rows_of(path):
    return [json.loads(line) for line in open(path).read().splitlines()]


def test_local_cluster_gives_exactly_the_in_process_results(tmp_path):
    axes = {"depth": [1, 4], "seed": [0, 1], "sigma_w2": [1.0, 2.5]}
    fixed = {**TINY, "record": ["grad_norms", "verdicts"]}
    here = sweep.run(axes, tmp_path / "here.jsonl", fixed=fixed, workers=0, progress=False)
    there = sweep.run(axes, tmp_path / "there.jsonl", fixed=fixed, workers=2, progress=False)
    assert [r["key"] for r in here] == [r["key"] for r in there]
    assert all(r["status"] == "ok" for r in here + there)
    assert [r["metrics"] for r in here] == [r["metrics"] for r in there]
    assert len({json.dumps(r["metrics"]) for r in there}) == 8  # the points differ from each other
    assert sorted(r["key"] for r in rows_of(tmp_path / "there.jsonl")) == sorted(r["key"] for r in there)


def _spawn(args, log):
    return subprocess.Popen(args, env=ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(pred, timeout, what):
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(20)


GRID = """\
    [fixed]
    depth = 12
    width = 48
    steps = 300
    samples = 256
    batch_size = 32

    [grid]
    sigma_w2 = [1.0, 1.5, 2.0, 2.5]
    seed = [0, 1]
"""


def test_real_cluster_survives_a_killed_worker(tmp_path):
    sched_file = str(tmp_path / "scheduler.json")
    log = open(tmp_path / "cluster.log", "w")
    procs = []
    try:
        procs.append(_spawn([sys.executable, "-m", "distributed.cli.dask_scheduler", "--scheduler-file", sched_file,
                             "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0", "--no-show"], log))
        _wait(lambda: os.path.exists(sched_file) and os.path.getsize(sched_file) > 0, 120, "the scheduler")
        address = json.load(open(sched_file))["address"]
        for i in range(2):
            procs.append(_spawn([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                 "--no-nanny", "--host", "127.0.0.1", "--dashboard-address", ":0", "--name", f"w{i}"],
                                log))
        grid_file = _grid(tmp_path)
        sweep.warm(sweep.load(grid_file).grid.points()[:1])  # the kernels in the cache for the workers
        results = tmp_path / "grid.jsonl"
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
            cli = subprocess.Popen([sys.executable, "-m", "nnlab_cli.main", "sweep", grid_file, "--scheduler",
                                    address, "--quiet"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
            _wait(lambda: results.exists() and len(results.read_text().splitlines()) >= 1 or cli.poll() is not None,
                  300, "the first point")
            busy = {a: ks for a, ks in client.processing().items() if ks}
            assert busy, "no worker is running a point"
            victim_addr, in_flight = sorted(busy.items())[0]
            victim = procs[1 + int(names[victim_addr][1:])]
            at_kill = len(results.read_text().splitlines())
            os.killpg(victim.pid, signal.SIGKILL)  # a worker dies in the middle of a point
            victim.wait(20)
        out, _ = cli.communicate(timeout=600)
        assert cli.returncode == 0, out
        assert at_kill < 7, "the sweep finished before the worker was killed"
        rows = rows_of(results)
        keys = [r["key"] for r in rows]
        assert len(keys) == len(set(keys)) == 8  # every point exactly once
        assert all(r["status"] == "ok" for r in rows)
        by_key = {r["key"]: r for r in rows}
        lost = [k.split("nnlab-point-")[1] for k in in_flight]
        assert lost and all(by_key[k]["worker"] != victim_addr for k in lost)  # run again by the survivor
        assert {r["worker"] for r in rows[at_kill + 1:]} == set(names) - {victim_addr}
        expected = {sweep.point_key(p) for p in sweep.load(grid_file).grid.points()}
        assert set(keys) == expected
    finally:
        for p in reversed(procs):
            _stop(p)
        log.close()


def _grid(tmp_path):
    path = tmp_path / "grid.toml"
    if not path.exists():
        path.write_text(textwrap.dedent(GRID))
    return str(path)


def test_a_killed_client_resumes_with_no_point_twice_or_missing(tmp_path):
    grid_file = _grid(tmp_path)
    results = tmp_path / "grid.jsonl"
    cmd = [sys.executable, "-m", "nnlab_cli.main", "sweep", grid_file, "--workers", "0", "--quiet"]
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait(lambda: results.exists() and len(results.read_text().splitlines()) >= 2 or first.poll() is not None, 300,
          "two points")
    first.send_signal(signal.SIGKILL)  # the client dies mid-sweep
    first.wait(20)
    before = sweep.read_results(results)  # a row cut short by the kill is not one of them
    assert 2 <= len(before) < 8, "the sweep finished before the client was killed"
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = rows_of(results)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == 8  # none twice, none missing
    assert rows[:len(before)] == before  # the rows already there were kept as they were
    assert {sweep.point_key(p) for p in sweep.load(grid_file).grid.points()} == set(keys)
