"""Memory and size limits: estimate what a run needs before allocating it, and refuse early.

Every estimate is in bytes and errs on the large side. :func:`require` compares it with the memory
available (``MemAvailable`` of ``/proc/meminfo``, or the cgroup's limit when that is lower; the
environment variable ``NNLAB_MEMORY_LIMIT``, e.g. ``4G``, overrides both) and raises
:class:`~nnlab.errors.ResourceError` -- one line naming what needs the memory and what to reduce --
instead of letting NumPy allocate until the machine swaps or the kernel kills the process.

>>> from nnlab import limits
>>> limits.format_bytes(3 * 2**30)
'3.0 GiB'
>>> limits.dense_params([784, 256, 10])
203530
"""

import os

from .errors import ResourceError

ENV = "NNLAB_MEMORY_LIMIT"
HEADROOM = 0.9  # use at most this fraction of the available memory
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}

# bytes a training step keeps per parameter besides the parameter: its gradient, the optimizer's
# state (at most three slots: smorms3), and the monitor's copy of the previous weights
_PER_PARAM = 5
# bytes the gradient monitor keeps per recorded step and layer (a row of statistics, float64) and
# per step (loss, norms, batch, the Python objects around them), plus the series built from them
# for the verdicts and the charts
MONITOR_ROW = 15 * 8
MONITOR_STEP = 600
# bytes Trainer.fit's History keeps per step (loss, gradient norm, step time: a Python float and a
# list slot each) and per epoch (five such series)
HISTORY_STEP = 3 * (24 + 8)
HISTORY_EPOCH = 5 * (24 + 8)


def parse_bytes(text):
    """'4G' -> 4294967296, '512M', '1.5GiB', '1000' (bytes); raises ValueError on anything else."""
    s = str(text).strip().upper().replace(" ", "")
    num = s.rstrip("KMGTIB")
    unit = s[len(num):]
    if unit not in _UNITS or not num:
        raise ValueError(f"not a size: {text!r} (expected e.g. 4G, 512M, 1000000)")
    value = float(num) * _UNITS[unit]
    if not value > 0:
        raise ValueError(f"not a positive size: {text!r}")
    return int(value)


def _meminfo():
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup():
    """Room left under the cgroup (v2) memory limit, or None without one."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as fh:
            used = int(fh.read().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def available_bytes():
    """The memory a run may use now (bytes), or None when it cannot be told (then nothing is refused)."""
    env = os.environ.get(ENV, "").strip()
    if env:
        try:
            return parse_bytes(env)
        except ValueError as exc:
            raise ResourceError(f"{ENV}: {exc}") from None
    found = [v for v in (_meminfo(), _cgroup()) if v is not None]
    return int(HEADROOM * min(found)) if found else None


def format_bytes(n):
    """'812 MiB', '3.0 GiB', '12.5 TiB', '2048.0 PiB'; '10^350 PiB' for a count too large for a float."""
    if n >= 2**1000:
        return f"10^{len(str(int(n) // 2**50)) - 1} PiB"
    n = float(n)
    for unit, size in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    if n >= 2**20:
        return f"{n / 2**20:.0f} MiB"
    return f"{n / 2**10:.0f} KiB"


def require(nbytes, what, reduce, available=None):
    """Raise :class:`~nnlab.errors.ResourceError` when ``what`` (e.g. "training with batch_size=4096")
    needs more than the available memory: "``what`` needs about 12.0 TiB of memory but 20.1 GiB is
    available; reduce ``reduce``". Returns ``nbytes``."""
    avail = available_bytes() if available is None else available
    if avail is not None and nbytes > avail:
        raise ResourceError(f"{what} needs about {format_bytes(nbytes)} of memory but {format_bytes(avail)} "
                            f"is available; reduce {reduce}")
    return nbytes


def dense_params(widths):
    """Parameters of a stack of Dense layers through ``widths`` (input, hidden..., output)."""
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


def dense_workspace(widths):
    """Workspace elements per batch row of a Dense stack (input, Z and A of every layer), forward
    and backward buffers together -- an upper bound of what the network program allocates."""
    return 2 * (widths[0] + 2 * sum(widths[1:]))


def network_bytes(n_params, workspace_width, rows, itemsize=8, monitor_layers=0, steps=0):
    """Bytes of a training run: parameters with gradient and optimizer state, the workspace of a
    ``rows``-row batch (``workspace_width`` elements per row, forward and backward), and the
    monitor's history of ``steps`` steps over ``monitor_layers`` layers."""
    total = itemsize * (_PER_PARAM * n_params + rows * workspace_width)
    if monitor_layers:
        total += monitor_bytes(monitor_layers, steps)
    return int(total)


def monitor_bytes(layers, steps):
    """Bytes of a gradient monitor's history: ``steps`` recorded steps of ``layers`` layers (the
    records and the series the verdicts build from them)."""
    return int(3 * steps * (layers * MONITOR_ROW + MONITOR_STEP))


def count(n):
    """An integer for a message: '1,234,567', or '~10^400' when it has more than 15 digits."""
    n = int(n)
    return f"{n:,}" if abs(n) < 10**15 else f"~10^{len(str(abs(n))) - 1}"


def history_bytes(steps, epochs):
    """Bytes of the :class:`~nnlab.trainer.History` of a fit of ``steps`` steps in ``epochs`` epochs."""
    return int(steps * HISTORY_STEP + epochs * HISTORY_EPOCH)


def array_bytes(*shape, itemsize=8):
    """Bytes of an array of ``shape``."""
    n = 1
    for d in shape:
        n *= int(d)
    return n * itemsize


# floats per sample of each built-in dataset (features per step times steps, plus the target), and
# how many copies of them a run holds at once (generation temporaries, the train/test split, the
# float copies the kernels read)
DATA_FLOATS = {"xor": 3, "spirals": 3, "moons": 3, "sine": 2, "digits": 65}
DATA_COPIES = 6


def dataset_bytes(name, n, T=50):
    """Bytes a run on ``n`` samples of the built-in dataset ``name`` holds (sequences: ``T`` steps)."""
    per = 2 * T + 1 if name == "adding" else DATA_FLOATS.get(name, 3)
    return int(DATA_COPIES * 8 * n * per)
