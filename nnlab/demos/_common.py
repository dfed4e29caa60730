"""What every demo shares: the declaration of its options, the JSON conversion, small helpers.

A demo is a module of :mod:`nnlab.demos` with

* ``NAME`` (the command: ``nnlab demo NAME``), ``CLAIM`` (the sentence it tests), ``SUMMARY`` (one
  line for ``--help`` listings) and ``OPTIONS`` (a tuple of :class:`Option`, the keyword arguments
  of ``run`` that the command line exposes; ``seed`` is always there and not listed);
* ``run(seed=0, **options)`` returning a result object with ``claim``, ``held`` (True, False, or
  None when the settings do not test the claim), ``reason`` and ``to_dict()`` (every number,
  JSON-safe: non-finite floats become ``None``);
* ``render(result, width=100)`` -- the text the command prints (tables and terminal charts);
* ``plot(result, path)`` -- the same as a PNG through matplotlib (``pip install nnlab[plot]``).

``nnlab.demos.DEMOS`` maps each name to its module; the CLI builds one command per entry, so a
new demo is one new module plus one line in that registry.
"""

import dataclasses
import math
import textwrap
from dataclasses import dataclass

import numpy as np

from .. import _validate
from ..errors import HyperparameterError


@dataclass(frozen=True)
class Option:
    """One keyword argument of a demo's ``run``, as the command line shows it (``--name``).

    ``kind`` is ``"int"``, ``"float"``, ``"choice"`` (one of ``choices``), ``"flag"`` (a boolean, a
    bare ``--name`` on the command line) or ``"text"``; ``low`` and
    ``high`` bound numbers (inclusive; ``low_open`` excludes ``low``).
    """

    name: str
    kind: str
    default: object
    help: str
    low: float = None
    high: float = None
    low_open: bool = False
    choices: tuple = ()

    @property
    def flag(self):
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """The validated value (raises :class:`~nnlab.errors.HyperparameterError`)."""
        if self.kind == "int":
            value = _validate.positive_int(value, self.name, minimum=-2**62 if self.low is None else int(self.low))
            if self.high is not None and value > self.high:
                raise HyperparameterError(f"{self.name} must be <= {self.high:g}; got {value}")
            return value
        if self.kind == "float":
            value = _validate.real_scalar(value, self.name)
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                raise HyperparameterError(f"{self.name} must be {'>' if self.low_open else '>='} {self.low:g}; "
                                          f"got {value:g}")
            if self.high is not None and value > self.high:
                raise HyperparameterError(f"{self.name} must be <= {self.high:g}; got {value:g}")
            return value
        if self.kind == "flag":
            if not isinstance(value, (bool, np.bool_)):
                raise HyperparameterError(f"{self.name} must be True or False; got {value!r}")
            return bool(value)
        if self.kind == "choice":
            if value not in self.choices:
                raise HyperparameterError(f"{self.name} must be one of {', '.join(map(str, self.choices))}; "
                                          f"got {value!r}")
            return value
        if not isinstance(value, str):
            raise HyperparameterError(f"{self.name} must be a string; got {value!r}")
        return value


def check_options(options, values):
    """Validate ``values`` (a dict name -> value) against ``options``; returns the checked dict."""
    return {o.name: o.check(values[o.name]) for o in options}


def check_seed(seed):
    return _validate.positive_int(seed, "seed", minimum=0)


def jsonable(obj):
    """A JSON-safe copy: dataclasses and numpy values converted, non-finite floats -> None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    return obj


def norm(a):
    """Frobenius norm in float64 (a plain sum: no BLAS call, whose threads can stall a busy machine)."""
    a = np.asarray(a, dtype=np.float64)
    return float(np.sqrt(np.sum(a * a)))


def weight_norms(net, grads):
    """‖g‖ of each Dense weight gradient (layer 1 first)."""
    return [norm(g) for name, g in zip(net.param_names(), grads) if name.endswith(".W")]


def sci(x, digits=2):
    """'1.23e-04', or 'nan'/'inf'/'-' for non-finite or None."""
    if x is None:
        return "-"
    x = float(x)
    return f"{x:.{digits}e}" if math.isfinite(x) else str(x)


def wrap(text, width, indent="    "):
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False)


def header(result, width, setup):
    """The opening lines every demo prints: the claim and the setup."""
    out = wrap(f"claim: {result.claim}.", width, indent="       ")
    out.append("")
    out += wrap(setup, width, indent="  ")
    return out


def verdict_lines(result, width):
    """The closing line: whether the claim held, and why; ``held`` None means these settings do not
    test the claim (the command then exits 0)."""
    if result.held is None:
        return wrap(f"claim not tested for these settings ({result.reason})", width)
    return wrap(f"claim held: {'yes' if result.held else 'no'} ({result.reason})", width)


def finish(out, result, width):
    """A renderer's lines ``out``, a blank line and :func:`verdict_lines`, as one text fitted to ``width``."""
    return fit("\n".join(out + [""] + verdict_lines(result, width)), width)


def chart_width(width):
    """The plot width of a demo's line charts in a ``width``-column terminal (30 to 70 columns)."""
    return max(30, min(70, width - 12))


def fit(text, width):
    """``text`` with every line longer than ``width`` wrapped (for the legend lines of charts)."""
    out = []
    for line in text.splitlines():
        out += wrap(line, width, indent="  ") if len(line) > width else [line]
    return "\n".join(out)


def table(headers, rows, align=None):
    """Plain-text table: columns right-aligned (or 'l' in ``align``) to their widest cell."""
    cols = len(headers)
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(cols)]
    align = align or ("l" + "r" * (cols - 1))
    lines = []
    for r in cells:
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)]
        lines.append("  ".join(parts).rstrip())
    return lines


def train_steps(trainer, X, y, steps, label):
    """``steps`` full-batch steps of ``trainer`` on (X, y); their losses. Shows a progress bar
    named ``label`` when progress is on (see :mod:`nnlab.progress`)."""
    from .. import progress

    losses = []
    with progress.bar(steps, label) as bar:
        for _ in range(steps):
            losses.append(float(trainer.step(X, y)))
            bar.update()
    return losses


def check_sizes(name, options):
    """Refuse (:class:`~nnlab.errors.ResourceError`) options that need more memory than available or
    more work than a demo runs (see :mod:`nnlab.demos._sizes`)."""
    from . import _sizes

    _sizes.check(name, options)
