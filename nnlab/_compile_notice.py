"""Say when Numba compiles a kernel (the first run on an empty cache), so no command sits silent.

:func:`install` registers a listener for Numba's ``numba:compile`` event, which fires only when a
compiled function is not found in the cache. At the start of an outermost compile it prints one
line to stderr naming what compiles, e.g. ``compiling the dense executor: training step
(float32) -- first run only, ~5 s``; while the compile lasts longer than ~2 s it keeps reporting:
a tqdm spinner with the elapsed time on a terminal, a plain line every ~2 s when stderr is piped.
Set ``NNLAB_QUIET=1`` (the CLI's ``--quiet``) to turn it off; it is read at each compile.

Numba's event does not fire for a C callback (``numba.cfunc``: the LSTM's threaded sweeps, the
noise generator, the ``np.dot`` fallback), whose compile would then pass in silence or as a few
lines naming internal helpers: :func:`compiling` wraps such a compile, names it, and keeps the
dispatcher compiles inside it quiet; it says nothing when the callback loads from the cache.
"""

import contextlib
import os
import sys
import threading
import time

# the entry points' words and a rough cold compile time of the dense executor on a quiet 2-core
# machine (seconds; docs/performance.md, "Cold start"): the executors for more kinds take longer
_ENTRY = {
    "loss_and_grad": ("forward, loss and backward pass", 15),
    "loss_and_grad_call": ("gradient pass", 1),
    "loss_only": ("forward pass and loss", 8),
    "run_forward": ("forward pass", 8),
    "run_backward": ("backward pass", 10),
    "train_step": ("training step", 30),
    "train_epoch": ("training epoch", 30),
    "eval_chunks": ("evaluation", 8),
    "observe": ("gradient statistics pass", 25),
}
_OTHER = {"labels_ok": "the batch check", "targets_ok": "the batch check", "act_map": "the activation map",
          "opt_update": "the optimizer update", "clip_flat": "gradient clipping"}
_OPTIMIZERS = ("SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "NAdam", "Adamax", "Rprop", "SMORMS3")  # by code
_KINDS = {1: "dense", 2: "batch-norm", 3: "layer-norm", 4: "dropout", 5: "alpha-dropout", 6: "add",
          7: "gate", 8: "maxout", 9: "RBF", 10: "RNN", 11: "LSTM"}

INTERVAL = 2.0  # seconds between progress reports
ANNOUNCE_AFTER = 0.5  # seconds a :func:`compiling` block lasts before it is announced (a cache load takes ms)
_state = {"on": True}


def enable(on=True):
    """Turn the compile notices on (the default) or off for this process (``NNLAB_QUIET=1`` turns
    them off as well)."""
    _state["on"] = bool(on)


def quiet():
    """Whether ``NNLAB_QUIET`` asks for no progress output."""
    return os.environ.get("NNLAB_QUIET", "").strip() not in ("", "0")


def describe(name, args):
    """(words naming a compile of function ``name`` with argument types ``args``, estimate or None)."""
    opt = ""
    head, _, tail = name.rpartition("_o")  # a per-optimizer entry point: train_step_k2_o4r
    if head and tail.rstrip("r").isdigit() and int(tail.rstrip("r")) < len(_OPTIMIZERS):
        name = head
        opt = f", {_OPTIMIZERS[int(tail.rstrip('r'))]}" + (" with statistics" if tail.endswith("r") else "")
    base, _, mask = name.rpartition("_k")
    try:
        bits = int(mask, 16)
    except ValueError:
        base, bits = name, None
    args = list(args)
    if base in _ENTRY and len(args) > 3:  # (ops, hp, tens, params, ...): hp is float64 in any network
        args = args[3:]
    floats = {str(a.dtype) for a in args if str(getattr(a, "dtype", "")).startswith("float")}
    # a float32 network's kernels also take float64 arrays (hyperparameters, float64 sums)
    dtype = "float32" if "float32" in floats else "float64" if "float64" in floats else None
    suffix = f" ({dtype})" if dtype else ""
    if base in _ENTRY:
        words, est = _ENTRY[base]
        if bits is None:
            owner = "the executor for every layer kind"
        else:
            owner = "the executor for " + "/".join(w for k, w in _KINDS.items() if bits >> k & 1) + " layers"
        return f"{owner}: {words}{opt}{suffix}", est
    if name in _OTHER:
        return f"{_OTHER[name]}{opt}{suffix}", None
    return f"kernel {name}{suffix}", None


class _Ticker:
    """Reports an ongoing compile every INTERVAL seconds after the first INTERVAL."""

    def __init__(self, what, stream, announce_after=None):
        self.what = what
        self.stream = stream
        self.announce_after = announce_after  # None: announced already; else print the first line after it
        self.t0 = time.perf_counter()
        self.done = threading.Event()
        self.held = not getattr(stream, "isatty", lambda: False)()
        if self.held:  # on a pipe our lines stand in for the periodic progress lines meanwhile
            from . import progress

            progress.hold()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        if self.announce_after is not None:
            if self.done.wait(self.announce_after):
                return
            try:
                print(f"compiling {self.what} -- first run only", file=self.stream, flush=True)
            except Exception:  # a closed stream must not break the computation
                return
        if self.done.wait(INTERVAL):
            return
        tty = getattr(self.stream, "isatty", lambda: False)()
        bar = None
        if not tty:
            self._plain()
            return
        if tty:
            try:
                from tqdm import tqdm

                bar = tqdm(desc=f"compiling {self.what}", total=None, file=self.stream, leave=False,
                           bar_format="{desc}: {elapsed}", mininterval=0.2)
            except ImportError:  # pragma: no cover - tqdm is a dependency
                bar = None
        while True:
            if bar is not None:
                bar.update(0)
                bar.refresh()
                if self.done.wait(0.5):
                    break
            else:
                elapsed = time.perf_counter() - self.t0
                print(f"  ... still compiling {self.what} ({elapsed:.0f} s)", file=self.stream, flush=True)
                if self.done.wait(INTERVAL):
                    break
        if bar is not None:
            bar.close()

    def _plain(self):
        while True:
            elapsed = time.perf_counter() - self.t0
            print(f"  ... still compiling {self.what} ({elapsed:.0f} s)", file=self.stream, flush=True)
            if self.done.wait(INTERVAL):
                return

    def stop(self):
        self.done.set()
        self.thread.join(timeout=1.0)
        if self.held:
            from . import progress

            progress.release()
            self.held = False


class _Listener:
    def __init__(self):
        self.depth = 0
        self.ticker = None

    def on_start(self, ev):
        self.depth += 1
        if self.depth != 1 or quiet() or not _state["on"]:
            return
        d = ev.data.get("dispatcher")
        name = getattr(getattr(d, "py_func", None), "__name__", "kernel")
        what, est = describe(name, ev.data.get("args", ()))
        hint = f", ~{est} s" if est else ""
        if est and est >= 15 and not _state.get("told"):  # once per process: how to avoid the wait
            _state["told"] = True
            hint += " (`nnlab warmup` compiles the common kernels ahead of use)"
        stream = sys.stderr
        try:
            print(f"compiling {what} -- first run only{hint}", file=stream, flush=True)
            self.ticker = _Ticker(what, stream)
        except Exception:  # a closed stream must not break the computation
            self.ticker = None

    def on_end(self, ev):
        self.depth = max(self.depth - 1, 0)
        if self.depth == 0 and self.ticker is not None:
            self.ticker.stop()
            self.ticker = None


_installed = None


@contextlib.contextmanager
def compiling(what):
    """Around a compile that Numba's event does not report (a C callback): ``compiling <what> --
    first run only`` once it has lasted :data:`ANNOUNCE_AFTER` seconds, then the progress reports
    as for a dispatcher; the dispatcher compiles inside it are not announced on their own. Silent
    when it ends sooner (loaded from the cache), inside another compile, or when quiet."""
    impl = _installed.impl if _installed is not None else None
    if impl is None or impl.depth > 0:
        yield
        return
    impl.depth += 1  # (the listener announces outermost compiles only)
    ticker = None
    if not quiet() and _state["on"]:
        try:
            ticker = _Ticker(what, sys.stderr, announce_after=ANNOUNCE_AFTER)
        except Exception:  # a closed stream must not break the computation
            ticker = None
    try:
        yield
    finally:
        impl.depth = max(impl.depth - 1, 0)
        if ticker is not None:
            ticker.stop()


def install():
    """Register the compile listener (once per process)."""
    global _installed
    if _installed is not None:
        return
    from numba.core import event

    class Listener(event.Listener):
        def __init__(self, impl):
            self.impl = impl

        def on_start(self, ev):
            self.impl.on_start(ev)

        def on_end(self, ev):
            self.impl.on_end(ev)

    _installed = Listener(_Listener())
    event.register("numba:compile", _installed)
