"""The line that says a kernel compiles (an empty kernel cache), its progress reports, and quiet."""

import io
import os
import subprocess
import sys
import types

import numba
import numpy as np

from nnlab import _compile_notice as CN

_SMALL = "import numpy as np; from nnlab.kernels import cpu; cpu.n_nonfinite(np.zeros((2, 2)))"


def _run(cache, quiet):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    env.pop("NNLAB_QUIET", None)
    if quiet:
        env["NNLAB_QUIET"] = "1"
    proc = subprocess.run([sys.executable, "-c", _SMALL], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_a_compile_on_an_empty_cache_is_announced_on_stderr_even_when_piped(tmp_path):
    err = _run(tmp_path, quiet=False)
    assert "compiling kernel n_nonfinite (float64) -- first run only" in err
    assert "compiling" not in _run(tmp_path, quiet=False)  # now loaded from the cache: nothing compiles


def test_quiet_turns_the_announcement_off(tmp_path):
    assert "compiling" not in _run(tmp_path, quiet=True)


def test_the_executor_entry_points_are_named():
    f32 = numba.typeof(np.zeros(3, np.float32))
    i64, f64 = numba.typeof(np.zeros((2, 2), np.int64)), numba.typeof(np.zeros(3))
    head = [i64, numba.typeof(np.zeros((2, 2))), i64]  # ops, hp (float64 for every network), tens
    assert CN.describe("train_step_k2", head + [f32]) == ("the executor for dense layers: training step (float32)", 30)
    words, _ = CN.describe("loss_and_grad_kc02", head + [f64])
    assert words == "the executor for dense/RNN/LSTM layers: forward, loss and backward pass (float64)"
    assert CN.describe("observe", [])[0] == "the executor for every layer kind: gradient statistics pass"
    assert CN.describe("gemm", [])[0] == "kernel gemm"


def test_a_long_compile_keeps_reporting_when_piped(monkeypatch):
    monkeypatch.setattr(CN, "INTERVAL", 0.05)
    stream = io.StringIO()
    ticker = CN._Ticker("the thing", stream)
    for _ in range(400):  # until the first report, at most ~20 s on a loaded machine
        if "still compiling the thing" in stream.getvalue():
            break
        ticker.done.wait(0.05)
    ticker.stop()
    assert "still compiling the thing" in stream.getvalue()


def test_a_compile_report_pauses_the_periodic_progress_lines(monkeypatch):
    from nnlab import progress

    stream = io.StringIO()
    ticker = CN._Ticker("the thing", stream)  # a pipe: it prints its own lines
    try:
        assert progress._held[0] == 1
    finally:
        ticker.stop()
    assert progress._held[0] == 0
    ticker.stop()  # stopping twice releases once
    assert progress._held[0] == 0


def test_the_notice_follows_enable_and_quiet(capsys, monkeypatch):
    listener = CN._Listener()
    ev = types.SimpleNamespace(data={"dispatcher": None, "args": ()})
    monkeypatch.delenv("NNLAB_QUIET", raising=False)
    was = CN._state["on"]
    try:
        for on, quiet, shown in ((True, None, True), (False, None, False), (True, "1", False)):
            CN.enable(on)
            if quiet:
                monkeypatch.setenv("NNLAB_QUIET", quiet)
            listener.on_start(ev)
            listener.on_end(ev)
            assert ("compiling kernel" in capsys.readouterr().err) is shown
    finally:
        CN.enable(was)


def test_the_executors_of_every_kind_group_are_cached():
    """Each group's executor is generated in the process; it must still be written to (and loaded
    from) Numba's cache, or every process would compile it anew."""
    from numba.core.registry import CPUDispatcher

    from nnlab.kernels import cpu, kinds_set

    for kinds in cpu.EXECUTOR_KINDS:
        ks = kinds_set(kinds)
        generated = [name for name, obj in vars(ks).items()
                     if isinstance(obj, CPUDispatcher) and obj is not getattr(cpu, name, None)]
        assert "loss_and_grad" in generated and "train_step" in generated
        for name in generated:
            assert getattr(ks, name).stats.cache_path is not None, (sorted(kinds), name)


def test_a_long_compile_points_to_the_warmup_once_per_process(monkeypatch, capsys):
    from types import SimpleNamespace

    from nnlab import _compile_notice as N

    monkeypatch.setattr(N, "_state", {"on": True})
    monkeypatch.setattr(N, "describe", lambda name, args: ({"big": "the executor", "small": "a check"}[name],
                                                           {"big": 30, "small": 5}[name]))
    monkeypatch.setattr(N, "_Ticker", lambda what, stream: None)
    monkeypatch.delenv("NNLAB_QUIET", raising=False)
    listener = N._Listener()
    for name in ("small", "big", "big"):
        listener.on_start(SimpleNamespace(data={"dispatcher": SimpleNamespace(py_func=SimpleNamespace(__name__=name)),
                                                "args": ()}))
        listener.on_end(None)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "compiling a check -- first run only, ~5 s"
    assert lines[1] == ("compiling the executor -- first run only, ~30 s "
                        "(`nnlab warmup` compiles the common kernels ahead of use)")
    assert lines[2] == "compiling the executor -- first run only, ~30 s"


def test_a_callback_compile_is_announced_once_it_lasts_and_hides_the_compiles_inside(monkeypatch, capsys):
    """Numba reports no compile of a C callback: ``compiling`` names it after ANNOUNCE_AFTER
    seconds, keeps the dispatcher compiles inside it quiet, and says nothing for a short block."""
    monkeypatch.setattr(CN, "_state", {"on": True})
    monkeypatch.delenv("NNLAB_QUIET", raising=False)
    monkeypatch.setattr(CN, "ANNOUNCE_AFTER", 0.05)
    CN.install()
    with CN.compiling("the quick thing"):
        pass
    assert capsys.readouterr().err == ""

    fresh = numba.njit(lambda x: x + 1)  # a new dispatcher: its compile fires Numba's event
    err = ""
    with CN.compiling("the slow thing"):
        assert fresh(1) == 2
        for _ in range(400):  # until the announcement, at most ~20 s on a loaded machine
            err += capsys.readouterr().err
            if "the slow thing" in err:
                break
            CN.time.sleep(0.05)
    err += capsys.readouterr().err
    assert "compiling the slow thing -- first run only" in err
    assert "compiling kernel" not in err and "<lambda>" not in err  # the compile inside was not announced
    fresh2 = numba.njit(lambda x: x + 2)
    assert fresh2(1) == 3
    assert "compiling kernel <lambda>" in capsys.readouterr().err  # outside a block: announced as before
    assert CN._installed.impl.depth == 0


def _double(x):
    return 2.0 * x


def test_callbacks_name_what_compiles(monkeypatch):
    from nnlab.kernels import blas

    seen = []
    real = CN.compiling

    def spy(what):
        seen.append(what)
        return real(what)

    monkeypatch.setattr(CN, "compiling", spy)
    cb = blas.callback(_double, numba.float64(numba.float64), "the doubling")
    assert cb.ctypes(2.5) == 5.0
    assert seen == ["the doubling"]
