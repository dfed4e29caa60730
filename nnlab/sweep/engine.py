"""Running a grid: in this process, on an embedded Dask ``LocalCluster``, or on any Dask cluster.

The client (this process) submits one task per point, writes each row to the results file as its
task completes (appended, flushed, ``os.fsync``), and shows the progress. A worker that dies loses
no point: Dask runs its task again elsewhere, and the client writes each point once. A rerun with
the same results file skips the points already there.
"""

import json
import os
import socket
import sys
import time
import traceback

from .grid import SETTINGS, Grid, GridError, SweepError, point_key

THREAD_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}
"""The environment of the embedded cluster's workers: one thread each (one worker per core)."""

MISSING_DASK = ('running a sweep on Dask needs dask.distributed: pip install "nnlab[sweep]" '
                '(or run it in this process: workers=0, nnlab sweep --workers 0)')


def _version():
    from .. import __version__

    return __version__


def _worker_address():
    """The Dask worker running this task, or None outside a worker."""
    if "distributed" not in sys.modules:
        return None
    try:
        return sys.modules["distributed"].get_worker().address
    except Exception:
        return None


def execute(fn, key, params):
    """Run one point and return its row; an exception becomes a row with status 'failed'."""
    t0 = time.perf_counter()
    row = {"key": key, "params": params}
    try:
        metrics = fn(params)
        if not isinstance(metrics, dict):
            raise TypeError(f"the point function must return a dict of metrics; got {type(metrics).__name__}")
        json.dumps(metrics, allow_nan=False)  # JSON-safe, or a failed point rather than a broken file
        row.update(status="ok", error=None, metrics=metrics)
    except Exception as exc:  # a point that raises is recorded, and the sweep goes on
        where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        at = f" (at {os.path.basename(where[0].filename)}:{where[0].lineno})" if where else ""
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}{at}", metrics=None)
    row["wall_time"] = round(time.perf_counter() - t0, 4)
    row["host"] = socket.gethostname()
    row["worker"] = _worker_address()
    row["nnlab_version"] = _version()
    return row


# ---------------------------------------------------------------- results file
def read_results(path, repair=False):
    """The rows of a results file (JSON Lines), the last row of each point key winning.

    A last line without its newline (a client killed while writing) is ignored -- with
    ``repair=True`` it is also cut from the file, so that appending starts on a fresh line. A
    broken line anywhere else raises :class:`~nnlab.sweep.SweepError` naming it. A missing
    file has no rows.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SweepError(f"cannot read results file {path!r}: {exc.strerror or exc}") from None
    complete = data.rfind(b"\n") + 1
    if complete < len(data) and repair:
        with open(path, "r+b") as f:
            f.truncate(complete)
            f.flush()
            os.fsync(f.fileno())
    rows = {}
    for i, line in enumerate(data[:complete].split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key = row["key"]
        except (ValueError, KeyError, TypeError):
            raise SweepError(f"{path}:{i}: not a row of a sweep results file (delete the line or use another "
                             "results file)") from None
        rows.pop(key, None)
        rows[key] = row
    return list(rows.values())


class _Writer:
    def __init__(self, path):
        self.path = path
        self.f = None
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise SweepError(f"cannot write results file {path!r}: no folder {folder!r}")
            try:
                self.f = open(path, "a", encoding="utf-8")
            except OSError as exc:
                raise SweepError(f"cannot write results file {path!r}: {exc.strerror or exc}") from None

    def write(self, row):
        if self.f is None:
            return
        self.f.write(json.dumps(row, sort_keys=False, allow_nan=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        if self.f is not None:
            self.f.close()


# ---------------------------------------------------------------- progress
def quiet_env():
    return os.environ.get("NNLAB_QUIET", "").strip() not in ("", "0")


def _clock(s):
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """Points done / total with ETA on stderr: a tqdm bar on a terminal, a line every tenth of the
    sweep (or 30 s) when stderr is piped, nothing when disabled."""

    def __init__(self, total, done, enabled, stream=None):
        self.total, self.done, self.failed = total, done, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.start_done = done
        self.last_line = self.t0
        self.bar = None
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=done, unit="point", desc="sweep", file=self.stream,
                                dynamic_ncols=True, smoothing=0.1)
        if enabled and self.bar is None and done:
            self._line()

    def update(self, row):
        self.done += 1
        self.failed += row["status"] != "ok"
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            if self.failed:
                self.bar.set_postfix(failed=self.failed)
            return
        now = time.monotonic()
        step = max(1, self.total // 10)
        if self.done == self.total or (self.done - self.start_done) % step == 0 or now - self.last_line >= 30:
            self._line()
            self.last_line = now

    def _line(self):
        ran = self.done - self.start_done
        elapsed = time.monotonic() - self.t0
        eta = f", ETA {_clock(elapsed / ran * (self.total - self.done))}" if ran and self.done < self.total else ""
        failed = f", {self.failed} failed" if self.failed else ""
        print(f"sweep: {self.done}/{self.total} points{failed}, {_clock(elapsed)} elapsed{eta}", file=self.stream,
              flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---------------------------------------------------------------- executors
def _inprocess(fn, todo, **_):
    for key, params in todo:
        yield execute(fn, key, params)


def _require_dask():
    try:
        import distributed
    except ImportError:
        raise SweepError(MISSING_DASK) from None
    return distributed


def _dask(fn, todo, scheduler=None, workers=None, warm=None):
    distributed = _require_dask()
    import logging

    cluster = None
    try:
        if scheduler:
            try:
                client = distributed.Client(scheduler, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise SweepError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
        else:
            if warm is not None:
                warm()  # compile once here; the workers load Numba's cache
            n = workers or os.cpu_count() or 1
            cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                               dashboard_address=":0", silence_logs=logging.ERROR, env=THREAD_ENV)
            client = distributed.Client(cluster)
    except SweepError:
        raise
    except Exception as exc:
        raise SweepError(f"cannot start the Dask cluster: {type(exc).__name__}: {exc}") from None
    try:
        futures = {client.submit(execute, fn, key, params, key=f"nnlab-point-{key}", pure=False): (key, params)
                   for key, params in todo}
        for fut in distributed.as_completed(futures):
            key, params = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # the task itself failed (e.g. its workers kept dying)
                row = {"key": key, "params": params, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                       "metrics": None, "wall_time": None, "host": None, "worker": None, "nnlab_version": _version()}
            fut.release()
            yield row
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run(grid, results=None, *, fixed=None, fn=None, scheduler=None, workers=None, progress=None,
        retry_failed=False):
    """Run every point of ``grid`` and return their rows (grid order), streaming them to ``results``.

    ``grid``: a :class:`~nnlab.sweep.Grid`, or a dict of axes (with ``fixed`` settings). ``fn``:
    the point function, ``fn(params) -> dict of metrics`` (default :func:`~nnlab.sweep.train_point`;
    a custom one must be importable or picklable on the workers, and takes any setting names).
    ``results``: a JSON Lines file; its rows are kept and the points already there skipped
    (``retry_failed=True`` runs the failed ones again). ``scheduler``: None for an embedded Dask
    ``LocalCluster`` of ``workers`` processes (default one per core), the address of an
    existing Dask cluster's scheduler (``"tcp://host:8786"``), or ``"inprocess"`` to run here one point after another (also ``workers=0``; needs no
    Dask). ``progress``: show points done / total and the ETA on stderr (default: unless
    NNLAB_QUIET=1).

    Each row: ``key``, ``params``, ``status`` ('ok' or 'failed'), ``error``, ``metrics``,
    ``wall_time`` (s), ``host``, ``worker`` (the Dask worker's address; None in this process),
    ``nnlab_version``.
    """
    from . import point as _point

    if isinstance(grid, Grid):
        if fixed:
            raise GridError("give fixed settings inside the Grid, or pass a dict of axes with fixed=")
    else:
        grid = Grid(grid, fixed, known=SETTINGS if fn is None else None)
    if fn is not None and not callable(fn):
        raise GridError(f"fn must be a function params -> dict of metrics; got {fn!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise GridError(f"workers must be an integer >= 0; got {workers!r}")
    if scheduler is not None and not isinstance(scheduler, str):
        raise GridError(f"scheduler must be an address string or 'inprocess'; got {scheduler!r}")
    point_fn = fn or _point.train_point
    points = grid.points()
    keys = [point_key(p) for p in points]
    if len(set(keys)) != len(keys):
        raise GridError("two points of the grid have the same settings")
    results = os.fspath(results) if results is not None else None
    old = {r["key"]: r for r in read_results(results, repair=True)} if results else {}
    todo = [(k, p) for k, p in zip(keys, points)
            if k not in old or (retry_failed and old[k].get("status") != "ok")]
    inprocess = scheduler == "inprocess" or (workers == 0 and not scheduler)
    if not inprocess:
        _require_dask()
    if fn is None:  # the expensive points first: the last ones to finish are short
        todo.sort(key=lambda kp: -_point.cost(kp[1]))
    enabled = (not quiet_env()) if progress is None else bool(progress)
    bar = Progress(len(points), len(points) - len(todo), enabled)
    writer = _Writer(results)
    new = {}
    try:
        if todo:
            warm = (lambda: _point.warm([p for _, p in todo])) if fn is None else None
            rows = (_inprocess(point_fn, todo) if inprocess else
                    _dask(point_fn, todo, scheduler=scheduler, workers=workers, warm=warm))
            for row in rows:
                writer.write(row)
                new[row["key"]] = row
                bar.update(row)
    finally:
        writer.close()
        bar.close()
    return [new.get(k) or old[k] for k in keys]
