"""The grid of a sweep: named axes (lists of values) and fixed settings, checked before anything runs.

A point is one dict holding every setting of :data:`SETTINGS` (the defaults filled in); its
:func:`point_key` is a short hash of that dict, stable across processes, machines and reruns, so a
results file can say which points are done.

>>> from nnlab import sweep
>>> g = sweep.Grid({"depth": [2, 4], "seed": [0, 1]}, fixed={"width": 8})
>>> len(g), g.points()[1]["depth"], g.points()[1]["seed"], g.points()[1]["width"]
(4, 2, 1, 8)
>>> sweep.point_key(g.points()[0]) == sweep.point_key(dict(g.points()[0]))
True
"""

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import NnlabError


class GridError(NnlabError, ValueError):
    """A grid (or its TOML file) names an unknown axis or setting, or gives a bad value."""


class SweepError(NnlabError, RuntimeError):
    """A sweep cannot run: a missing optional dependency, an unreachable scheduler, a bad results file."""


@dataclass(frozen=True)
class Setting:
    """One setting of the built-in training point: ``kind`` is int, float, bool, choice or list."""

    name: str
    kind: str
    default: object
    help: str
    low: float = None
    low_open: bool = False
    axis: bool = True


def _choices(name):
    from .. import activations, datasets, optim
    from .. import init as _init

    if name == "data":
        return datasets.names()
    if name == "activation":
        return activations.names()
    if name == "init":
        return ["meanfield", *_init.names()]
    if name == "optimizer":
        return [n.lower() for n in optim.names()]
    if name == "dtype":
        return ["float32", "float64"]
    if name == "record":
        return list(RECORDS)
    raise KeyError(name)


RECORDS = ("grad_norms", "verdicts")
"""What a point can record besides its losses and accuracies: ``grad_norms`` (per-layer ‖∂L/∂W_l‖ at
initialisation and at the end, and the fitted per-layer decay rate), ``verdicts`` (the names of the
:class:`~nnlab.GradientMonitor` verdicts that fired during training)."""

SETTINGS = {s.name: s for s in (
    Setting("data", "choice", "digits", "bundled data set (nnlab.datasets.load)"),
    Setting("samples", "int", 0, "rows used (a fixed subset, the same for every point); 0 = all", low=0),
    Setting("standardize", "bool", True, "scale every input feature to mean 0, variance 1"),
    Setting("depth", "int", 2, "hidden Dense layers", low=1),
    Setting("width", "int", 64, "units per hidden layer", low=1),
    Setting("activation", "choice", "tanh", "activation of the hidden layers"),
    Setting("init", "choice", "meanfield", "'meanfield' (W ~ N(0, sigma_w2/n_in), b ~ N(0, sigma_b2)) or an "
            "initializer name (biases 0)"),
    Setting("sigma_w2", "float", 1.0, "weight variance times fan-in (init = 'meanfield')", low=0, low_open=True),
    Setting("sigma_b2", "float", 0.0, "bias variance (init = 'meanfield')", low=0),
    Setting("optimizer", "choice", "sgd", "optimizer name (nnlab.optim)"),
    Setting("lr", "float", 0.01, "learning rate", low=0, low_open=True),
    Setting("momentum", "float", 0.0, "SGD momentum", low=0),
    Setting("steps", "int", 200, "training steps (batches)", low=0),
    Setting("batch_size", "int", 64, "rows per step", low=1),
    Setting("clip", "float", 0.0, "clip the global gradient norm to this value; 0 = no clipping", low=0),
    Setting("dtype", "choice", "float32", "float32 or float64"),
    Setting("seed", "int", 0, "seed of the weights and of the batch order", low=0),
    Setting("record", "list", ["grad_norms"], "what to record besides loss and accuracy: grad_norms, verdicts",
            axis=False),
)}


def _check_value(setting, value, where):
    """The value converted to the setting's kind, or GridError naming ``where``."""
    name, kind = setting.name, setting.kind
    bad = f"{where}: {name} must be "
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise GridError(f"{bad}an integer; got {value!r}")
        value = int(value)
        if setting.low is not None and value < setting.low:
            raise GridError(f"{bad}>= {setting.low:g}; got {value}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise GridError(f"{bad}a number; got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise GridError(f"{bad}finite; got {value!r}")
        if setting.low is not None and (value < setting.low or (setting.low_open and value == setting.low)):
            raise GridError(f"{bad}{'>' if setting.low_open else '>='} {setting.low:g}; got {value:g}")
        return value
    if kind == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise GridError(f"{bad}true or false; got {value!r}")
        return bool(value)
    if kind == "choice":
        known = _choices(name)
        if not isinstance(value, str) or value.lower() not in [k.lower() for k in known]:
            raise GridError(f"{bad}one of {', '.join(known)}; got {value!r}")
        return value.lower() if name in ("optimizer", "data") else value
    if kind == "list":
        known = _choices(name)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or any(v not in known for v in value):
            raise GridError(f"{bad}a list of {', '.join(known)}; got {value!r}")
        return sorted(set(value))
    raise AssertionError(kind)


def _scalar(value, name, where):
    """A JSON scalar for a free-form grid (a custom point function)."""
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        raise GridError(f"{where}: {name} must be finite; got {value!r}")
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise GridError(f"{where}: {name} must be a number, a string or a boolean; got {value!r}")
    return value


def expand(name, values, where="grid"):
    """The list of an axis: a list as given, or ``{start, stop, num}`` (evenly spaced, both ends
    included; ``log = true`` for geometric spacing; integers rounded for int settings)."""
    if isinstance(values, dict):
        unknown = set(values) - {"start", "stop", "num", "log"}
        if unknown or not {"start", "stop", "num"} <= set(values):
            raise GridError(f"{where}: axis {name} as a table needs start, stop and num (and optionally log); "
                            f"got {sorted(values)}")
        start, stop, num, log = values["start"], values["stop"], values["num"], values.get("log", False)
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, stop))
        if not ok or isinstance(num, bool) or not isinstance(num, int) or num < 1 or not isinstance(log, bool):
            raise GridError(f"{where}: axis {name}: start and stop must be numbers, num an integer >= 1, log true "
                            f"or false; got {values!r}")
        if log and (start <= 0 or stop <= 0):
            raise GridError(f"{where}: axis {name}: a log axis needs start > 0 and stop > 0")
        pts = np.geomspace(start, stop, num) if log else np.linspace(start, stop, num)
        setting = SETTINGS.get(name)
        if setting is not None and setting.kind == "int":
            out = []
            for v in (int(round(float(p))) for p in pts):
                if v not in out:
                    out.append(v)
            return out
        return [round(float(p), 12) for p in pts]
    if isinstance(values, (list, tuple)):
        if not values:
            raise GridError(f"{where}: axis {name} is empty")
        return list(values)
    raise GridError(f"{where}: axis {name} must be a list of values or a table {{start, stop, num}}; got {values!r}")


class Grid:
    """The product of named ``axes`` (name -> list of values, or ``{start, stop, num}``), every
    point also holding the ``fixed`` settings and the defaults of :data:`SETTINGS`.

    ``known``: the settings a point may have (default :data:`SETTINGS`, the built-in training
    point); ``None`` for a custom point function (any names, JSON scalars, no defaults).
    ``where``: how errors name the source (a file name). The first axis varies slowest.
    """

    def __init__(self, axes, fixed=None, known=SETTINGS, where="grid", lines=None):
        if not isinstance(axes, dict) or not axes:
            raise GridError(f"{where}: a grid needs at least one axis (a dict name -> list of values); got {axes!r}")
        fixed = dict(fixed or {})
        self.known = known
        lines = lines or {}

        def at(section, name):
            line = lines.get((section, name))
            return f"{where}:{line}" if line else where

        self.axes = {}
        for name, values in axes.items():
            loc = at("grid", name)
            if known is not None:
                if name not in known:
                    raise GridError(f"{loc}: unknown axis {name!r}; known: {', '.join(k for k in known if known[k].axis)}")
                if not known[name].axis:
                    raise GridError(f"{loc}: {name} is a setting of every point, not an axis; put it in [fixed]")
            vals = expand(name, values, loc)
            vals = [(_check_value(known[name], v, loc) if known is not None else _scalar(v, name, loc)) for v in vals]
            dup = [v for i, v in enumerate(vals) if v in vals[:i]]
            if dup:
                raise GridError(f"{loc}: axis {name} repeats {dup[0]!r}")
            self.axes[name] = vals
        self.fixed = {}
        for name, value in fixed.items():
            loc = at("fixed", name)
            if name in self.axes:
                raise GridError(f"{loc}: {name} is both an axis and a fixed setting")
            if known is not None:
                if name not in known:
                    raise GridError(f"{loc}: unknown setting {name!r}; known: {', '.join(known)}")
                self.fixed[name] = _check_value(known[name], value, loc)
            else:
                self.fixed[name] = _scalar(value, name, loc)
        if known is not None:
            self._check_combinations(where)

    def _check_combinations(self, where):
        names = set(self.axes) | set(self.fixed)
        inits = self.axes.get("init", [self.fixed.get("init", SETTINGS["init"].default)])
        if "meanfield" not in inits and names & {"sigma_w2", "sigma_b2"}:
            raise GridError(f"{where}: sigma_w2 and sigma_b2 set the 'meanfield' initialisation; init is "
                            f"{', '.join(map(repr, inits))}")
        opts = self.axes.get("optimizer", [self.fixed.get("optimizer", "sgd")])
        moms = self.axes.get("momentum", [self.fixed.get("momentum", 0.0)])
        if any(m for m in moms) and any(o != "sgd" for o in opts):
            raise GridError(f"{where}: momentum is a setting of the sgd optimizer; optimizer is "
                            f"{', '.join(map(repr, opts))} (set the others' hyperparameters by their defaults)")

    def __len__(self):
        n = 1
        for v in self.axes.values():
            n *= len(v)
        return n

    def points(self):
        """Every point as a dict of all its settings, the last axis varying fastest."""
        base = {} if self.known is None else {k: s.default for k, s in self.known.items()}
        base.update(self.fixed)
        out = [dict(base)]
        for name, values in self.axes.items():
            out = [{**p, name: v} for p in out for v in values]
        return out

    def __repr__(self):
        axes = ", ".join(f"{k}×{len(v)}" for k, v in self.axes.items())
        return f"Grid({axes}: {len(self)} points)"


def point_key(params):
    """A stable 16-hex-digit key of a point's settings (the same in every process and rerun)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- TOML files
_TABLES = ("sweep", "fixed", "grid")
SWEEP_KEYS = ("results", "scheduler", "workers")


def _toml():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    return tomllib


def _key_lines(text):
    """{(table, key): line number} for the top-level keys of each table (a plain scan of the file)."""
    out, table = {}, None
    for i, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        m = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]", line)
        if m:
            table = m.group(1)
            out.setdefault(("table", table), i)
            continue
        m = re.match(r"^([A-Za-z0-9_-]+|\"[^\"]*\")\s*=", line)
        if m and table is not None:
            out.setdefault((table, m.group(1).strip('"')), i)
    return out


@dataclass
class SweepFile:
    """A parsed sweep file: its :class:`Grid`, the ``[sweep]`` options and the results path."""

    path: str
    grid: Grid
    results: str
    scheduler: str = None
    workers: int = None


def load(path):
    """Read a sweep file (TOML): ``[grid]`` axes, ``[fixed]`` settings, optional ``[sweep]``
    (``results`` path relative to the file, default the file's name with ``.jsonl``; ``scheduler``;
    ``workers``). Raises :class:`GridError` naming the file and line of the first problem."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise GridError(f"cannot read sweep file {name!r}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GridError(f"{name}: not a UTF-8 text file") from None
    toml = _toml()
    try:
        data = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        if m:
            msg = msg[:m.start()].strip()
            raise GridError(f"{name}:{m.group(1)}: malformed TOML: {msg} (line {m.group(1)}, column {m.group(2)})") \
                from None
        if "(at end of document)" in msg:
            last = len(text.rstrip("\n").splitlines()) or 1
            msg = msg.replace("(at end of document)", "").strip()
            raise GridError(f"{name}:{last}: malformed TOML: {msg} (at the end of the file)") from None
        raise GridError(f"{name}: malformed TOML: {msg}") from None
    lines = _key_lines(text)
    unknown = [k for k in data if k not in _TABLES]
    if unknown:
        line = lines.get(("table", unknown[0])) or lines.get((None, unknown[0]))
        raise GridError(f"{name}{':' + str(line) if line else ''}: unknown table or key {unknown[0]!r}; a sweep file "
                        f"has the tables {', '.join(f'[{t}]' for t in _TABLES)}")
    for t in _TABLES:
        if t in data and not isinstance(data[t], dict):
            raise GridError(f"{name}: {t} must be a table [{t}]")
    if "grid" not in data or not data["grid"]:
        raise GridError(f"{name}: no [grid] table with at least one axis (e.g. depth = [10, 20])")
    opts = data.get("sweep", {})
    for k in opts:
        if k not in SWEEP_KEYS:
            line = lines.get(("sweep", k))
            raise GridError(f"{name}{':' + str(line) if line else ''}: unknown key {k!r} in [sweep]; known: "
                            f"{', '.join(SWEEP_KEYS)}")
    grid = Grid(data["grid"], data.get("fixed", {}), where=name, lines=lines)
    folder = os.path.dirname(os.path.abspath(name))
    results = opts.get("results", os.path.splitext(os.path.basename(name))[0] + ".jsonl")
    if not isinstance(results, str) or not results:
        raise GridError(f"{name}:{lines.get(('sweep', 'results'), '?')}: results must be a file name")
    scheduler = opts.get("scheduler")
    if scheduler is not None and not isinstance(scheduler, str):
        raise GridError(f"{name}:{lines.get(('sweep', 'scheduler'), '?')}: scheduler must be an address string")
    workers = opts.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise GridError(f"{name}:{lines.get(('sweep', 'workers'), '?')}: workers must be an integer >= 0")
    return SweepFile(name, grid, os.path.join(folder, results), scheduler, workers)

