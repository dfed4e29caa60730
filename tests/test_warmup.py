"""The kernel-cache warm-up (nnlab.warmup, ``nnlab warmup``): targets, marks keyed on the kernel
stamp, child processes, the locks that keep a demo and the warm-up from compiling the same kernels
twice, and the background process the first demo starts. Processes get a fresh, empty
``NUMBA_CACHE_DIR`` each; the cheap targets (demo:ewa, demo:swish) keep them short."""

import json
import os
import subprocess
import sys
import threading
import time

import filelock
import pytest

from nnlab import warmup
from nnlab.errors import UnknownNameError


def _env(cache, **extra):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), NNLAB_QUIET="1", NNLAB_WARMUP="0")
    env.update(extra)
    return env


def _py(code, env, timeout=240):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout)


STATUS = "import json; from nnlab import warmup; print(json.dumps(warmup.status(['demo:ewa', 'demo:swish'])))"


def test_resolve_orders_groups_and_rejects_unknown_names():
    assert warmup.resolve(["step:float32-sgd", "demo:ewa", "demo:ewa"]) == ["demo:ewa", "step:float32-sgd"]
    assert warmup.resolve("demos") == [f"demo:{n}" for n in __import__("nnlab").demos.names()]
    assert set(warmup.resolve(["steps"])) == {t for t in warmup.TARGETS if t.split(":")[0] in ("step", "fit", "monitor")}
    assert warmup.resolve(None) == list(warmup.TARGETS) == warmup.resolve("all")
    with pytest.raises(UnknownNameError, match="unknown warm-up target 'demo:nope'.*demo:vanishing"):
        warmup.resolve(["demo:nope"])


def test_every_demo_has_tiny_sizes_its_options_accept():
    from nnlab import demos

    assert set(warmup.DEMO_SIZES) == set(demos.names())
    for name, sizes in warmup.DEMO_SIZES.items():
        options = {o.name: o for o in demos.get(name).OPTIONS}
        for key, value in sizes.items():
            if name == "vanishing":  # its options are written out in the command; run() checks them
                assert key in ("depth", "width", "batch")
                continue
            assert options[key].check(value) == value


def test_marks_hold_only_for_the_current_kernel_stamp(tmp_path):
    import nnlab
    from nnlab import _config

    stamp = warmup._stamp()
    assert stamp == _config.kernel_stamp(nnlab.__version__)  # the stamp that keys the kernel cache
    assert not warmup.done("demo:ewa", str(tmp_path), stamp)
    warmup._mark("demo:ewa", str(tmp_path), stamp)
    assert warmup.done("demo:ewa", str(tmp_path), stamp)
    assert not warmup.done("demo:ewa", str(tmp_path), stamp + "x")  # an edit or upgrade drops the cache
    assert not warmup.done("demo:swish", str(tmp_path), stamp)


def test_foreground_warmup_compiles_once_and_the_demo_then_loads_from_the_cache(tmp_path):
    env = _env(tmp_path)
    code = ("import json; from nnlab import warmup; "
            "print(json.dumps(warmup.warmup(['demo:swish', 'demo:ewa'], jobs=2)))")
    first = json.loads(_py(code, env).stdout)
    assert sorted(r["target"] for r in first) == ["demo:ewa", "demo:swish"]
    assert all(r["status"] == "compiled" and r["compiled"] > 0 for r in first), first
    assert all(json.loads(_py(STATUS, env).stdout)["targets"].values())
    second = json.loads(_py(code, env).stdout)
    assert all(r["status"] == "cached" and r["compiled"] == 0 for r in second), second
    # the demo at its default size compiles nothing more: the tiny run met the same kernels
    count = ("from numba.core import event\n"
             "n = []\n"
             "class C(event.Listener):\n"
             "    def on_start(self, ev): pass\n"
             "    def on_end(self, ev): n.append(ev.data['dispatcher'].py_func.__qualname__)\n"
             "event.register('numba:compile', C())\n"
             "from nnlab import demos\n"
             "demos.get('swish').run()\n"
             "print(n)\n")
    out = _py(count, env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    # while a fresh cache makes the same run compile (the check above can fail)
    fresh = _py(count, _env(tmp_path / "fresh"))
    assert fresh.stdout.strip() != "[]"


def test_a_target_whose_lock_is_held_waits_for_the_others(tmp_path):
    """A running demo holds its target's lock: the warm-up goes on with the rest and comes back."""
    env = _env(tmp_path)
    folder = json.loads(_py(STATUS, env).stdout)["folder"]
    lock = filelock.FileLock(os.path.join(folder, "demo_swish.lock"))
    lock.acquire()
    proc = subprocess.Popen([sys.executable, "-m", "nnlab.warmup", "demo:swish", "demo:ewa"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(proc.stdout.readline())
        assert first["target"] == "demo:ewa" and first["status"] == "compiled"
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting for the held target
    finally:
        lock.release()
    second = json.loads(proc.stdout.readline())
    assert second["target"] == "demo:swish" and second["status"] == "compiled"
    assert proc.wait(timeout=120) == 0


def _free_from_another_thread(path):
    """Whether another thread could take the lock at ``path`` now (and gives it back)."""
    out = []

    def probe():
        lock = filelock.FileLock(path)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            out.append(False)
        else:
            lock.release()
            out.append(True)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return out[0]


def test_demo_session_waits_for_a_warmup_that_compiles_its_kernels(tmp_path, monkeypatch):
    monkeypatch.setattr(warmup, "state_dir", lambda: str(tmp_path))
    monkeypatch.setenv("NNLAB_WARMUP", "1")
    started = []
    monkeypatch.setattr(warmup, "start_background", lambda targets=None: started.append(list(targets)) or 4321)
    path = str(tmp_path / "demo_swish.lock")
    taken = threading.Event()

    def background():  # the background process compiling demo swish holds its lock for 0.5 s
        with filelock.FileLock(path):
            taken.set()
            time.sleep(0.5)

    t = threading.Thread(target=background)
    t.start()
    taken.wait()
    said, t0 = [], time.monotonic()
    with warmup.demo_session("swish", notify=said.append):
        waited = time.monotonic() - t0
        held_inside = not _free_from_another_thread(path)  # the demo holds the lock while it runs
    t.join()
    assert waited >= 0.4 and held_inside
    assert said[0].startswith("waiting for the background warm-up") and "demo swish" in said[0]
    assert "pid 4321" in said[1] and "NNLAB_WARMUP=0" in said[1]
    assert started and "demo:swish" not in started[0] and "demo:vanishing" in started[0]
    assert _free_from_another_thread(path)  # released when the demo ends
    assert warmup.done("demo:swish", str(tmp_path))  # a typical run compiled the target's kernels
    with warmup.demo_session("init", typical=False):  # e.g. another dtype: other kernels
        pass
    assert not warmup.done("demo:init", str(tmp_path))


def test_demo_session_does_nothing_when_turned_off_or_done(tmp_path, monkeypatch):
    monkeypatch.setattr(warmup, "state_dir", lambda: str(tmp_path))
    monkeypatch.setattr(warmup, "start_background", lambda targets=None: pytest.fail("started a warm-up"))
    monkeypatch.setenv("NNLAB_WARMUP", "0")
    said = []
    with warmup.demo_session("swish", notify=said.append):
        pass
    monkeypatch.setenv("NNLAB_WARMUP", "1")
    stamp = warmup._stamp()
    for t in warmup.TARGETS:
        warmup._mark(t, str(tmp_path), stamp)
    with warmup.demo_session("swish", notify=said.append):
        pass
    assert said == []


def test_first_demo_on_an_empty_cache_starts_the_background_warmup(tmp_path):
    env = _env(tmp_path, NNLAB_WARMUP="1", NNLAB_WARMUP_TARGETS="demo:ewa,demo:swish", NNLAB_QUIET="")
    out = subprocess.run([sys.executable, "-m", "nnlab_cli", "demo", "swish", "--points", "1201"], env=env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    assert "in the background (pid" in out.stderr
    pid = int(out.stderr.split("(pid ")[1].split(",")[0])
    for _ in range(1200):  # the background process ends by itself when its targets are compiled
        if not warmup._pid_alive(pid):
            break
        time.sleep(0.1)
    assert not warmup._pid_alive(pid)
    st = json.loads(_py(STATUS, _env(tmp_path)).stdout)
    assert st["targets"] == {"demo:ewa": True, "demo:swish": True} and st["background_pid"] is None
    again = subprocess.run([sys.executable, "-m", "nnlab_cli", "demo", "swish", "--points", "1201"], env=env,
                           capture_output=True, text=True, timeout=240)
    assert again.returncode == 0 and "background" not in again.stderr  # nothing left to warm up


def test_stop_ends_the_background_warmup(tmp_path):
    env = _env(tmp_path)
    code = ("import time; from nnlab import warmup; pid = warmup.start_background(['demo:init', 'demo:selu']); "
            "print(pid, flush=True); time.sleep(1.0); print(warmup.background_pid() == pid, warmup.stop() == pid)")
    out = _py(code, env)
    lines = out.stdout.split("\n")
    pid = int(lines[0])
    assert lines[1] == "True True", out.stderr
    for _ in range(100):
        if not warmup._pid_alive(pid):
            break
        time.sleep(0.1)
    assert not warmup._pid_alive(pid)


def test_cli_lists_targets_and_refuses_bad_combinations(run):
    res = run("warmup", "--list", "demos")
    assert res.exit_code == 0, res.output
    assert [line.split()[0] for line in res.output.splitlines()[:-1]] == warmup.resolve("demos")
    assert "background warm-up:" in res.output.splitlines()[-1]
    res = run("warmup", "--list", "--stop")
    assert res.exit_code == 2 and "one at a time" in res.output
    res = run("warmup", "--jobs", "2", "--list")
    assert res.exit_code == 2 and "--jobs" in res.output
    res = run("warmup", "demo:nope")
    assert res.exit_code == 2 and "unknown warm-up target 'demo:nope'" in res.output


def test_a_demo_leaves_the_warmups_core_to_it(tmp_path, monkeypatch):
    """While the background warm-up runs, the demo's products use one thread less (a BLAS thread
    waiting for the busy core slows every product), unless the thread count was chosen."""
    import nnlab as nl

    before = nl.backend.get_num_threads()
    if before is None:
        pytest.skip("no bundled OpenBLAS: nnlab does not set the products' threads here")
    monkeypatch.setattr(warmup, "state_dir", lambda: str(tmp_path))
    monkeypatch.setattr(warmup, "start_background", lambda targets=None: None)
    monkeypatch.setattr(warmup, "background_pid", lambda folder=None: 4321)  # a warm-up runs
    monkeypatch.setenv("NNLAB_WARMUP", "1")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    nl.backend.set_num_threads(2)
    try:
        with warmup.demo_session("swish"):
            inside = nl.backend.get_num_threads()
        after = nl.backend.get_num_threads()
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")  # chosen by the user (nnlab --threads 2)
        with warmup.demo_session("init", typical=False):
            chosen = nl.backend.get_num_threads()
        monkeypatch.setattr(warmup, "background_pid", lambda folder=None: None)  # none runs
        monkeypatch.delenv("OPENBLAS_NUM_THREADS")
        with warmup.demo_session("init", typical=False):
            alone = nl.backend.get_num_threads()
    finally:
        nl.backend.set_num_threads(before)
    assert (inside, after, chosen, alone) == (1, 2, 2, 2)
