"""Kernel-cache warm-up: compile the kernels of the demos and of common training steps ahead of use.

Numba compiles nnlab's kernels the first time they run and keeps them in its on-disk cache
(``cache=True``), so only a process that meets an empty cache pays: ~10-30 s per executor on a
2-core machine (see docs/performance.md, "Cold start"). This module compiles them before they are
needed -- in the foreground (``nnlab warmup``, :func:`warmup`, on every core with ``jobs``), or in
one low-priority background process that the first ``nnlab demo`` on an empty cache starts, so that
the other demos and a first :meth:`nnlab.Trainer.step` load from the cache instead.

A *target* is one thing a user runs (:data:`TARGETS`): ``demo:NAME`` runs demo NAME at a tiny size,
``step:DTYPE-OPT`` one :meth:`~nnlab.Trainer.step` of a dense network (and its ``predict``) with
optimizer OPT, ``fit:DTYPE-OPT`` one epoch of :meth:`~nnlab.Trainer.fit` (with validation data),
``monitor:float64-adam`` the same with a :class:`~nnlab.GradientMonitor` and global-norm clipping. Compiled kernels depend on
types and code paths, not on sizes, so the tiny runs compile what the full-size runs use. Each
target runs in a child process, as a new user's process would (which per-optimizer training step a
process compiles depends on the first optimizer it steps with).

Coordination goes through files beside Numba's cache of nnlab (:func:`state_dir`): a lock per
target, held while a process compiles it (a demo waits for a background process that is compiling
its own kernels instead of compiling them a second time, and the warm-up skips a target a running
demo holds and comes back to it), a ``.done`` mark per target keyed on the kernel-cache stamp (an
edit or an upgrade that drops the cache drops the marks too), and the background process's pid.
Numba writes each cache file to a temporary name and renames it, so a warm-up that is stopped or
killed leaves no half-written kernel behind.

``NNLAB_WARMUP=0`` turns the automatic background warm-up off; ``NNLAB_WARMUP_TARGETS`` (a comma
list of target names) replaces the list it compiles.

>>> from nnlab import warmup
>>> warmup.resolve(["demo:vanishing", "step:float32-sgd"])
['demo:vanishing', 'step:float32-sgd']
>>> warmup.resolve(["demos"])[:2]
['demo:vanishing', 'demo:meanfield']
"""

import contextlib
import json
import os
import subprocess
import sys
import time

ENV = "NNLAB_WARMUP"
TARGETS_ENV = "NNLAB_WARMUP_TARGETS"

# tiny sizes at which each demo runs the same kernels as at its default size
DEMO_SIZES = {
    "vanishing": dict(depth=3, width=8, batch=16),
    "meanfield": dict(depth=8, width=8, batch=8, seeds=1),
    "exploding": dict(depth=3, width=8, batch=16, steps=3),
    "residual": dict(depth=4, width=8, samples=32, steps=3),
    "batchnorm": dict(depth=4, width=8, samples=32, steps=3),
    "lstm": dict(hidden=4, samples=64, test=32, batch=16, epochs=1),
    "dead-relu": dict(depth=3, width=8, steps=20),
    "optimizers": dict(depth=3, width=8, steps=10, samples=32),
    "selu": dict(depth=4, wide=64, narrow=64, batch=16),
    "swish": dict(points=101),
    "init": dict(depth=3, width=8, batch=8),
    "ewa": dict(days=10),
    "phase": dict(width=8, steps=2, samples=64, workers=1),
}

STEP_DTYPES = ("float64", "float32")
STEP_OPTIMIZERS = ("sgd", "adam")


def _targets():
    from . import demos

    out = {f"demo:{name}": f"the kernels of nnlab demo {name}" for name in demos.names()}
    for kind, what in (("step", "a first Trainer.step (and predict) of a dense network"),
                       ("fit", "a first Trainer.fit epoch of a dense network")):
        for opt in STEP_OPTIMIZERS:
            for dtype in STEP_DTYPES:
                out[f"{kind}:{dtype}-{opt}"] = f"{what}, {dtype}, {opt}"
    out["monitor:float64-adam"] = ("a first Trainer.fit epoch of a dense network with a GradientMonitor and "
                                   "global-norm clipping, float64, adam")
    return out


TARGETS = _targets()
"""target name -> what it compiles, in the order a warm-up runs them (the demos in the order of
``nnlab demo --help``, then the training steps)."""

GROUPS = {"all": list(TARGETS), "demos": [t for t in TARGETS if t.startswith("demo:")],
          "steps": [t for t in TARGETS if not t.startswith("demo:")]}
"""The target groups: ``all``, ``demos``, ``steps`` (the training targets)."""


def resolve(names=None):
    """Target names in :data:`TARGETS` order, without repeats, from target names and the groups
    ``all``, ``demos``, ``steps`` (None: all; raises :class:`~nnlab.errors.UnknownNameError`)."""
    from .errors import UnknownNameError

    if names is None:
        return list(TARGETS)
    if isinstance(names, str):
        names = [names]
    want = set()
    for name in names:
        name = str(name).strip()
        if name in GROUPS:
            want.update(GROUPS[name])
        elif name in TARGETS:
            want.add(name)
        else:
            raise UnknownNameError(f"unknown warm-up target {name!r}; known: {', '.join(GROUPS)}, "
                                   f"{', '.join(TARGETS)}")
    return [t for t in TARGETS if t in want]


# ---------------------------------------------------------------- state beside the kernel cache
def state_dir():
    """The folder of the warm-up's locks and marks: ``nnlab-warmup`` in the directory Numba writes
    nnlab's cached kernels to (None where there is none or it cannot be written)."""
    from . import _config

    for d, used in _config.kernel_cache_dirs():
        if used:
            path = os.path.join(d, "nnlab-warmup")
            try:
                os.makedirs(path, exist_ok=True)
            except OSError:
                return None
            return path if os.access(path, os.W_OK) else None
    return None


def _stamp():
    """The kernel-cache stamp, as the import of nnlab computed it (the sources cannot change under
    a running process)."""
    from . import _kernel_stamp

    return _kernel_stamp


def _slug(target):
    return target.replace(":", "_")


def done(target, folder=None, stamp=None):
    """Whether ``target``'s kernels were compiled into the current cache (its mark holds the
    current kernel-cache stamp)."""
    folder = folder or state_dir()
    if folder is None:
        return False
    try:
        with open(os.path.join(folder, _slug(target) + ".done")) as fh:
            return fh.read() == (stamp or _stamp())
    except OSError:
        return False


def _mark(target, folder, stamp):
    tmp = os.path.join(folder, f".{_slug(target)}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(stamp)
    os.replace(tmp, os.path.join(folder, _slug(target) + ".done"))


def _lock(target, folder):
    import filelock

    return filelock.FileLock(os.path.join(folder, _slug(target) + ".lock"))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) counts as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def background_pid(folder=None):
    """The pid of the running background warm-up, or None."""
    folder = folder or state_dir()
    if folder is None:
        return None
    try:
        with open(os.path.join(folder, "background.json")) as fh:
            pid = int(json.load(fh)["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if _pid_alive(pid) else None


def status(targets=None):
    """{"folder", "background_pid", "targets": {name: compiled?}} for ``targets`` (default all)."""
    folder = state_dir()
    stamp = _stamp()
    return {"folder": folder, "background_pid": background_pid(folder),
            "targets": {t: done(t, folder, stamp) for t in resolve(targets)}}


# ---------------------------------------------------------------- running one target
def _run_target(target):
    """Run ``target`` in this process (the child's work)."""
    import numpy as np

    kind, _, name = target.partition(":")
    if kind == "demo":
        from . import demos

        kw = dict(DEMO_SIZES.get(name, {}))
        if name == "phase":
            try:
                import dask.distributed  # noqa: F401
            except ImportError:  # the sweep extra is not installed: the demo cannot run here
                return
        demos.get(name).run(seed=0, **kw)
        return
    import nnlab as nl

    from .kernels import variants

    variants.FIRST.clear()  # as in a new process: the first optimizer picks the per-optimizer step
    dtype, _, opt = name.partition("-")
    monitor = nl.GradientMonitor if kind == "monitor" else None
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 4)).astype(dtype)
    y = rng.integers(0, 3, 16)
    net = nl.Sequential([nl.Dense(4, 8, activation="tanh"), nl.Dense(8, 3)], loss="softmax_cross_entropy",
                        seed=0, dtype=dtype)
    optimizer = nl.optim.SGD(lr=0.1, momentum=0.9) if opt == "sgd" else nl.optim.Adam(lr=0.01)
    if monitor is not None:
        trainer = nl.Trainer(net, optimizer, clip=("global_norm", 1.0), monitor=monitor(net))
    else:
        trainer = nl.Trainer(net, optimizer)
    if kind == "step":
        trainer.step(X, y)
        net.predict(X)
    else:
        trainer.fit(X, y, epochs=1, batch_size=8, validation_data=(X, y))


def _child(targets, nice):
    """Compile ``targets`` one after the other; one JSON line per target on stdout. A target whose
    lock another process holds (a demo compiling it) is tried again after the others."""
    import filelock
    from numba.core import event

    if nice:  # run only on a core nothing else wants (Linux's idle class), else at the lowest priority
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError):
            with contextlib.suppress(OSError):
                os.nice(19)
    os.environ["NNLAB_QUIET"] = "1"
    compiled = [0]

    class Count(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            compiled[0] += 1

    event.register("numba:compile", Count())
    folder, stamp = state_dir(), _stamp()
    todo, busy_rounds = list(targets), 0
    while todo:
        later = []
        for target in todo:
            if folder is not None and done(target, folder, stamp):
                _say(target=target, status="cached", seconds=0.0, compiled=0)
                continue
            lock = _lock(target, folder) if folder is not None else contextlib.nullcontext()
            try:
                with (lock.acquire(timeout=0) if folder is not None else lock):
                    t0, compiled[0] = time.perf_counter(), 0
                    try:
                        with contextlib.redirect_stdout(sys.stderr):
                            _run_target(target)
                    except Exception as exc:  # report it and go on with the others
                        _say(target=target, status="error", error=f"{type(exc).__name__}: {exc}",
                             seconds=time.perf_counter() - t0, compiled=compiled[0])
                        continue
                    if folder is not None:
                        _mark(target, folder, stamp)
                    _say(target=target, status="compiled", seconds=time.perf_counter() - t0, compiled=compiled[0])
            except filelock.Timeout:
                later.append(target)
        todo = later
        if todo:
            busy_rounds += 1
            time.sleep(min(0.5 * busy_rounds, 5.0))


def _say(**record):
    sys.__stdout__.write(json.dumps(record) + "\n")
    sys.__stdout__.flush()


def _command(targets, nice=False):
    return [sys.executable, "-m", "nnlab.warmup", *(["--nice"] if nice else []), *targets]


# ---------------------------------------------------------------- foreground and background
def warmup(targets=None, jobs=1, report=None):
    """Compile ``targets`` (names or groups, see :func:`resolve`; default all) into the kernel
    cache in ``jobs`` child processes working in parallel (one core each: use ``jobs=2`` on a
    2-core machine), and return one record per target, in the order they finished: ``target``,
    ``status`` ("compiled", "cached" -- it was compiled before --, or "error" with ``error``),
    ``seconds`` and ``compiled`` (the number of functions Numba compiled for it). ``report(record)``
    is called as each one finishes (the CLI prints a progress line)."""
    from . import _validate

    targets = resolve(targets)
    jobs = _validate.positive_int(jobs, "jobs")
    jobs = min(jobs, max(len(targets), 1))
    shares = [targets[i::jobs] for i in range(jobs)]
    env = dict(os.environ, NNLAB_QUIET="1", **{ENV: "0"})
    procs = [subprocess.Popen(_command(share), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              env=env, text=True) for share in shares if share]
    records, finished = [], False
    try:
        import selectors

        sel = selectors.DefaultSelector()
        for p in procs:
            sel.register(p.stdout, selectors.EVENT_READ)
        open_ = len(procs)
        while open_:
            for key, _ in sel.select():
                line = key.fileobj.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    open_ -= 1
                    continue
                rec = json.loads(line)
                records.append(rec)
                if report is not None:
                    report(rec)
        finished = True
    finally:
        for p in procs:
            if not finished and p.poll() is None:  # interrupted: stop the children too
                p.terminate()
            p.wait()
    missing = set(targets) - {r["target"] for r in records}
    for target in [t for t in targets if t in missing]:  # a child that died before reporting
        rec = dict(target=target, status="error", error="the warm-up process ended before it", seconds=0.0,
                   compiled=0)
        records.append(rec)
        if report is not None:
            report(rec)
    return records


def start_background(targets=None):
    """Start one low-priority (nice 19) background process that compiles ``targets`` (default
    all) that are not compiled yet, and return its pid; None when nothing is left to compile, a
    background warm-up already runs, or there is no writable cache folder. The process runs on
    after the caller exits and ends when done (:func:`stop` ends it sooner)."""
    folder = state_dir()
    if folder is None or background_pid(folder) is not None:
        return None
    stamp = _stamp()
    todo = [t for t in resolve(targets) if not done(t, folder, stamp)]
    if not todo:
        return None
    env = dict(os.environ, NNLAB_QUIET="1", **{ENV: "0"})
    proc = subprocess.Popen(_command(todo, nice=True), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    tmp = os.path.join(folder, f".background.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump({"pid": proc.pid, "started": time.time(), "targets": todo}, fh)
    os.replace(tmp, os.path.join(folder, "background.json"))
    return proc.pid


def stop():
    """End the background warm-up if one runs (what it compiled so far stays cached); returns its
    pid or None."""
    import signal

    pid = background_pid()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    return pid


def auto_enabled():
    """Whether commands may start the background warm-up (``NNLAB_WARMUP`` is not 0)."""
    return os.environ.get(ENV, "1").strip() not in ("0", "", "no", "off", "false")


def auto_targets():
    """What the automatic background warm-up compiles: ``NNLAB_WARMUP_TARGETS`` or all."""
    text = os.environ.get(TARGETS_ENV, "").strip()
    return resolve([t for t in text.split(",") if t.strip()]) if text else resolve()


@contextlib.contextmanager
def demo_session(name, notify=None, wait=None, typical=True):
    """Around one run of demo ``name`` by the command line: when the background warm-up is
    compiling this demo's kernels, wait for it (``wait()`` gives the context to wait in, e.g. a
    progress phase) instead of compiling them twice; hold the demo's lock while it runs; on an
    empty cache start the background warm-up of the rest (``notify(text)`` says so, once); and when
    the run ends without an error and was ``typical`` (on the CPU, with the demo's default dtype:
    the kernels of its target), mark the target compiled. Does nothing with ``NNLAB_WARMUP=0``."""
    import filelock

    folder = state_dir() if auto_enabled() else None
    target = f"demo:{name}"
    if folder is None or target not in TARGETS:
        yield
        return
    stamp = _stamp()
    lock = _lock(target, folder)
    if not done(target, folder, stamp):
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            if notify is not None:
                notify(f"waiting for the background warm-up, which is compiling the kernels of demo {name}")
            with wait() if wait is not None else contextlib.nullcontext():
                lock.acquire()
    threads = None
    try:
        rest = [t for t in auto_targets() if t != target and not done(t, folder, stamp)]
        if rest and background_pid(folder) is None:
            pid = start_background(rest)
            if pid is not None and notify is not None:
                notify(f"compiling the other demos' kernels and common training steps in the background "
                       f"(pid {pid}, low priority; `nnlab warmup --list` shows it, NNLAB_WARMUP=0 turns it off)")
        threads = _leave_a_core(folder)
        yield
        if typical:
            _mark(target, folder, stamp)
    finally:
        if threads is not None:
            from . import backend

            backend.set_num_threads(threads)
        if lock.is_locked:
            lock.release()


def _leave_a_core(folder):
    """While the background warm-up compiles on a core, the matrix products use one thread less
    (unless the thread count was chosen: ``OPENBLAS_NUM_THREADS``, ``nnlab --threads``): a BLAS
    thread that waits for the busy core makes every product several times slower (a demo of many
    small products ran 3x slower). Returns the count to restore, or None."""
    from . import backend

    if background_pid(folder) is None or "OPENBLAS_NUM_THREADS" in os.environ:
        return None
    before = backend.get_num_threads()
    want = max(1, (os.cpu_count() or 1) - 1)
    if before is None or before <= want:
        return None
    backend.set_num_threads(want)
    return before


def main(argv=None):
    """``python -m nnlab.warmup [--nice] TARGET ...``: the child process of :func:`warmup` and
    :func:`start_background` (one JSON line per target on stdout)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    nice = "--nice" in argv
    targets = resolve([a for a in argv if a != "--nice"] or None)
    _child(targets, nice)


if __name__ == "__main__":
    main()
