"""Progress on stderr for long runs: training steps, the monitor's steps, the phases of a demo.

On a terminal a :mod:`tqdm` bar (or, for a phase without a count, its name and the elapsed time)
is redrawn in place; when stderr is a file or a pipe a plain line is written instead, at most every
:data:`INTERVAL` seconds and at least that often while anything runs (a ticker thread), so that
no command is silent for longer. Results go to stdout, progress only to stderr: ``--json -``
output stays clean.

The library is silent by default: :meth:`nnlab.Trainer.fit` shows a bar with ``progress=True``,
and the command line turns everything on with :func:`enable` (``nnlab --quiet`` leaves it off).
The environment variable ``NNLAB_QUIET=1`` turns all of it off, whatever was asked.

>>> from nnlab import progress
>>> with progress.bar(3, "counting") as b:   # off: the library default
...     for _ in range(3):
...         b.update()
>>> b.n
3
"""

import os
import shutil
import sys
import threading
import time
import weakref

QUIET_ENV = "NNLAB_QUIET"
INTERVAL = 2.0   # seconds between plain progress lines on a pipe
REFRESH = 0.5    # seconds between redraws of a terminal bar whose count does not move
_TICK = 0.1

_enabled = False
_lock = threading.RLock()
_active = []       # weak references to the open bars and phases, innermost last (a bar dropped unclosed goes)
_last_line = [0.0]  # monotonic time of the last plain line (or of the start of the outermost item)
_ticker = [None]
_held = [0]         # reporters of their own (a compile notice) running: plain lines wait for them


def hold():
    """Another reporter (the compile notice) prints its own plain lines from now on: the periodic
    progress lines pause until :func:`release`, so a pipe gets one line per interval, not two."""
    with _lock:
        _held[0] += 1


def release():
    """End of a :func:`hold`; the next plain progress line comes an interval later."""
    with _lock:
        _held[0] = max(_held[0] - 1, 0)
        _last_line[0] = time.monotonic()


def quiet():
    """True when ``NNLAB_QUIET`` is set (to anything but 0): no progress, no notices."""
    return os.environ.get(QUIET_ENV, "").strip() not in ("", "0")


def enable(on=True):
    """Turn progress output on (the command line does) or off (the library default)."""
    global _enabled
    _enabled = bool(on)


def enabled():
    """Whether :func:`bar` and :func:`phase` show anything unless forced."""
    return _enabled and not quiet()


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _columns(stream):
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


class Bar:
    """A counter of ``total`` units (or of none: a phase) named ``desc``; see the module docstring.
    ``update(n, postfix)`` counts; ``close()`` (or leaving the ``with`` block) removes it. A bar
    made while progress is off counts silently."""

    def __init__(self, total, desc, unit="step", shown=True, stream=None):
        self.total = None if total is None else int(total)
        self.desc, self.unit, self.n, self.postfix = desc, unit, 0, ""
        self.t0 = time.monotonic()
        self.shown = bool(shown)
        self.stream = stream if stream is not None else sys.stderr
        self._tqdm = None
        self._closed = False
        if not self.shown:
            return
        if _isatty(self.stream):
            from tqdm import tqdm

            fmt = None if self.total is not None else "{desc} [{elapsed}]{postfix}"
            sized = _columns(self.stream) > 0  # a terminal that reports no size gets 100 columns
            self._tqdm = tqdm(total=self.total, desc=desc, unit=unit, file=self.stream, leave=False,
                              dynamic_ncols=sized, ncols=None if sized else 100, mininterval=0.1, bar_format=fmt)
        _register(self)

    def update(self, n=1, postfix=None):
        self.n += n
        if postfix is not None:
            self.postfix = str(postfix)
        if self._tqdm is not None:
            if postfix is not None:
                self._tqdm.set_postfix_str(self.postfix, refresh=False)
            self._tqdm.update(n)

    def set(self, postfix):
        """Change the text after the count (a phase's current step) without counting."""
        self.update(0, postfix)

    def line(self):
        """The plain-text state written on a pipe."""
        text = self.desc
        if self.total is not None:
            pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
            text += f": {self.n}/{self.total} {self.unit}s{pct}"
        if self.postfix:
            text += f", {self.postfix}"
        return text

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self.shown:
            _unregister(self)
        if self._tqdm is not None:
            self._tqdm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def bar(total, desc, unit="step", force=False):
    """A :class:`Bar` over ``total`` units, shown when progress is enabled (or ``force``, unless
    ``NNLAB_QUIET`` is set)."""
    return Bar(total, desc, unit, shown=(enabled() or force) and not quiet())


def phase(desc, force=False):
    """A :class:`Bar` without a count: a named phase of a longer run (a ``with`` block)."""
    return bar(None, desc, force=force)


def write(line):
    """Print ``line`` to stdout, clearing and redrawing any terminal bar around it."""
    with _lock:
        bars = [b._tqdm for b in _items() if b._tqdm is not None]
    if bars:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stdout)
    else:
        print(line, file=sys.stdout, flush=True)


def _items():
    """The live open items (call with the lock held)."""
    live = [r() for r in _active]
    _active[:] = [r for r, item in zip(list(_active), live) if item is not None]
    return [item for item in live if item is not None]


def _register(item):
    with _lock:
        if not _items():
            _last_line[0] = time.monotonic()
        _active.append(weakref.ref(item))
        if _ticker[0] is None or not _ticker[0].is_alive():
            _ticker[0] = threading.Thread(target=_tick, name="nnlab-progress", daemon=True)
            _ticker[0].start()


def _unregister(item):
    with _lock:
        _active[:] = [r for r in _active if r() is not None and r() is not item]


def _tick():
    last_refresh = time.monotonic()
    while True:
        time.sleep(_TICK)
        with _lock:
            items = _items()
            if not items:
                _ticker[0] = None
                return
            now = time.monotonic()
            bars = [b for b in items if b._tqdm is not None]
            if bars and now - last_refresh >= REFRESH:  # the elapsed time moves while a step runs
                for b in bars:
                    b._tqdm.refresh()
                last_refresh = now
            plain = [b for b in items if b._tqdm is None]
            if plain and _held[0]:
                _last_line[0] = now
            elif plain and now - _last_line[0] >= INTERVAL:
                elapsed = now - plain[0].t0
                text = " | ".join(b.line() for b in plain)
                room = shutil.get_terminal_size((100, 24)).columns - 8  # fit the lines around it
                text = (text if len(text) <= room else text[:max(room - 3, 10)] + "...") + f" [{elapsed:.0f} s]"
                try:
                    print(text, file=plain[-1].stream, flush=True)
                except (OSError, ValueError):  # a closed stream: nothing left to tell
                    pass
                _last_line[0] = now
