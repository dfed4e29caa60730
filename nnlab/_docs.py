"""Generate ``docs/activations.md`` from the activation registry, and the text helpers the CLI shares.

The registry (:mod:`nnlab.activations`) is the single source: each entry's formula, derivative,
hyperparameters and documented :class:`~nnlab.activations.Facts` are printed here exactly as the
tests assert them. Rewrite the file after changing the registry with::

    python -m nnlab._docs            # rewrites docs/activations.md
    python -m nnlab._docs --check    # exit 1 if docs/activations.md is stale

``tests/test_docs.py`` fails while the file differs from :func:`render_activations_md`.

>>> from nnlab import activations
>>> interval((0.0, 1.0), (False, True))
'(0, 1]'
>>> interval((-math.inf, math.inf), (True, True))
'(-∞, ∞)'
>>> derivative_text(activations.entry("relu").facts)
'{0, 1}'
"""

import math
import sys
from pathlib import Path

__all__ = ["render_activations_md", "write_activations_md", "activations_md_path", "num", "interval",
           "range_text", "derivative_text", "params_text", "facts_lines", "noise_text", "entry_record"]


# ---------------------------------------------------------------- small formatters
def num(x, digits=6):
    """A float as short text: integers without a decimal point, ±∞ as symbols, else ``digits`` significant."""
    x = float(x)
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if math.isnan(x):
        return "nan"
    if x == 0:
        return "0"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.{digits}g}"


def interval(bounds, closed, digits=6):
    """``(low, high)`` with brackets from ``closed``; an infinite end is always open."""
    lo, hi = bounds
    left = "[" if closed[0] and math.isfinite(lo) else "("
    right = "]" if closed[1] and math.isfinite(hi) else ")"
    return f"{left}{num(lo, digits)}, {num(hi, digits)}{right}"


def range_text(facts, digits=6):
    """The range of f as an interval."""
    return interval(facts.range, facts.range_closed, digits)


def derivative_text(facts, digits=6):
    """The values of f': a finite set ``{...}`` when documented, else the interval, else ``?``."""
    if facts.deriv_values is not None:
        return "{" + ", ".join(num(v, digits) for v in facts.deriv_values) + "}"
    if facts.deriv_range is not None:
        return interval(facts.deriv_range, facts.deriv_closed, digits)
    return "?"


def params_text(entry, digits=6):
    """``alpha=1 (slope)``, one per hyperparameter, learnable ones marked; '–' when none."""
    parts = []
    for p in entry.params:
        s = f"{p.name}={num(p.default, digits)}"
        if p.learnable:
            s += " learnable"
        parts.append(s)
    for opt, choices in (entry.variants or {}).items():
        parts.append(f"{opt}={'|'.join(choices)}")
    return ", ".join(parts) if parts else "–"


def noise_text(entry):
    """How a randomised activation draws its noise, or ''."""
    if entry.noise == "uniform":
        return ("training: α = lower + (upper - lower)·u with u ~ U(0, 1), one draw per unit and row, "
                "seeded; eval: u = 0.5, i.e. α = (lower + upper)/2")
    if entry.noise == "normal":
        return "training: ε = σ·u with u ~ N(0, 1), one draw per unit and row, seeded; eval: ε = 0"
    return ""


def facts_lines(entry, digits=6, compact=False):
    """The documented facts of ``entry`` beyond range and f' range, as short lines.

    ``compact`` (the CLI table) leaves out the limits at ±∞, where |f'| peaks and the noise recipe.
    """
    f = entry.facts
    out = []
    if f.at_zero is not None:
        if compact:
            out.append(f"f(0) = {num(f.at_zero[0], digits)}, f'(0) = {num(f.at_zero[1], digits)}")
        else:
            out.append(f"f(0) = {num(f.at_zero[0], digits)}, f'(0) = {num(f.at_zero[1], digits)}"
                       + (" (one-sided value used at the kink)" if 0.0 in f.kinks else ""))
    if f.limits is not None and not compact:
        (fm, dm), (fp, dp) = f.limits
        out.append(f"z → -∞: f → {num(fm, digits)}, f' → {num(dm, digits)}; "
                   f"z → +∞: f → {num(fp, digits)}, f' → {num(dp, digits)}")
    if f.minimum is not None:
        out.append(f"minimum f = {num(f.minimum[1], digits)} at z = {num(f.minimum[0], digits)}")
    if f.max_abs_deriv_at is not None and not compact:
        out.append("|f'| is largest at z = " + ", ".join(num(z, digits) for z in f.max_abs_deriv_at))
    if f.kinks:
        out.append(("kinks at z = " if compact else "kinks (f' jumps) at z = ")
                   + ", ".join(num(z, digits) for z in f.kinks))
    out.extend(f.identities)
    noise = noise_text(entry)
    if noise and not compact:
        out.append(noise)
    return out


def entry_record(entry):
    """A JSON-able description of a registry entry (non-finite numbers as the strings 'inf'/'-inf')."""
    from dataclasses import asdict

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    facts = {k: clean(v) for k, v in asdict(entry.facts).items()}
    return {
        "name": entry.name, "formula": entry.formula, "derivative": entry.derivative,
        "params": [{"name": p.name, "default": p.default, "learnable": p.learnable, "doc": p.doc}
                   for p in entry.params],
        "variants": {k: list(v) for k, v in (entry.variants or {}).items()},
        "noise": entry.noise, "custom": entry.custom, "doc": entry.doc,
        "range": range_text(entry.facts), "derivative_values": derivative_text(entry.facts),
        "facts": facts, "facts_text": facts_lines(entry),
    }


# ---------------------------------------------------------------- the Markdown page
def _cell(text):
    return str(text).replace("|", "\\|")


def _code(text):
    return f"`{text}`" if text else "–"


def _builtin_entries():
    from . import activations

    return [e for e in activations.entries() if not e.custom]


def render_activations_md():
    """The full Markdown of ``docs/activations.md``, generated from the built-in registry entries."""
    from . import activations

    entries = _builtin_entries()
    scaled_name, scaled_f, scaled_d, scaled_doc = activations.SCALED_DOC
    lines = [
        "<!-- Generated from nnlab.activations by `python -m nnlab._docs`; do not edit by hand. -->",
        "",
        "# Activations",
        "",
        f"nnlab has {len(entries)} built-in activations plus the `{scaled_name}` wrapper, all in one registry",
        "(`nnlab.activations`). Each entry carries its forward formula, its derivative dA/dZ, the",
        "derivatives with respect to its hyperparameters, and its documented facts as data: the",
        "property tests assert every fact below and this page is generated from the same data",
        "(`python -m nnlab._docs`), so the two cannot drift apart. `nnlab activations` prints it in the",
        "terminal and `nnlab gradcheck` checks every derivative against float64 central differences.",
        "",
        "```python",
        "import numpy as np",
        "import nnlab as nl",
        "",
        "z = np.linspace(-3.0, 3.0, 7)",
        "nl.activations.names()                       # every name below",
        'act = nl.activations.get("swish", beta=1.0)  # hyperparameters by keyword',
        "act.forward(z); act.derivative(z)            # elementwise, numpy in, numpy out",
        'act.param_names; act.param_derivative(z, "beta")',
        "```",
        "",
        "Facts are stated at the default hyperparameters. Intervals use `[`/`]` for an end that is",
        "attained and `(`/`)` for one that is only approached; a finite set `{...}` lists every value",
        "f' takes (piecewise-linear activations). At a kink the derivative is the documented",
        "one-sided value, and the gradient checker keeps its sample points away from kinks.",
        "For |z| ≤ 1e30 a finite input gives a finite result, or `NonFiniteError` naming the",
        "hyperparameters that overflow it (`leaky_relu` with α = 1e308 at z = −5); beyond that, results",
        "overflow to ±inf as IEEE arithmetic does (the closure of the documented range).",
        "",
        "## Summary",
        "",
        "| name | f(z) | f'(z) | hyperparameters (default) | range of f | values of f' |",
        "|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(f"| `{e.name}` | {_cell(_code(e.formula))} | {_cell(_code(e.derivative))} | "
                     f"{_cell(params_text(e))} | {_cell(range_text(e.facts))} | "
                     f"{_cell(derivative_text(e.facts))} |")
    lines.append(f"| `{scaled_name}` | {_cell(_code(scaled_f))} | {_cell(_code(scaled_d))} | "
                 "base, a=1, learnable=False | a × range of θ | a × values of θ' |")
    lines += ["", "\"learnable\" hyperparameters are trained with the weights: a network gives each layer",
              "its own copy, and `act.param_derivative(z, name)` is the dA/dp the backward pass uses.", ""]

    for e in entries:
        lines += [f"## {e.name}", ""]
        lines.append(f"- f(z) = {_code(e.formula)}")
        lines.append(f"- f'(z) = {_code(e.derivative)}")
        if e.params:
            lines.append("- hyperparameters:")
            for p in e.params:
                kind = "learnable" if p.learnable else "fixed"
                cons = [c for c, on in (("> 0", p.positive), (">= 0", p.nonnegative), ("≠ 0", p.nonzero)) if on]
                extra = f", must be {' and '.join(cons)}" if cons else ""
                doc = f" — {p.doc}" if p.doc else ""
                lines.append(f"  - `{p.name}` = {num(p.default, 17)} ({kind}{extra}){doc}")
        else:
            lines.append("- hyperparameters: none")
        for opt, choices in (e.variants or {}).items():
            lines.append(f"- option `{opt}`: " + ", ".join(f"`{c!r}`" for c in choices)
                         + f" (default `{next(iter(choices))!r}`)")
        lines.append(f"- range of f: {range_text(e.facts)}")
        lines.append(f"- values of f': {derivative_text(e.facts)}")
        for fact in facts_lines(e):
            lines.append(f"- {fact}")
        if e.doc:
            lines += ["", e.doc]
        lines.append("")

    lines += [
        f"## {scaled_name}",
        "",
        f"- f(z) = {_code(scaled_f)}",
        f"- f'(z) = {_code(scaled_d)}",
        f"- {scaled_doc}",
        "- dA/da = θ(z); with `learnable=True` the scale a is trained like any other parameter",
        "  (`act.param_names` ends with `'a'`). The range and derivative bounds of θ are multiplied by a.",
        "",
        "```python",
        'act = nl.activations.get("scaled", base="tanh", a=1.7159, learnable=True)',
        "act.param_names          # ('a',)",
        'act.param_derivative(z, "a")   # tanh(z)',
        "```",
        "",
        "## Registering your own activation",
        "",
        "`nnlab.activations.register(name, forward, derivative, ...)` adds an activation from scalar",
        "Python functions; Numba compiles them (an `ActivationCompileError` names the problem if it",
        "cannot), and the activation then works everywhere a built-in one does: `get`, `Dense`,",
        "`Sequential`, `nnlab.gradcheck.check_activation` and `nnlab gradcheck`.",
        "",
        "```python",
        "import math",
        "import nnlab as nl",
        "",
        "nl.activations.register(",
        '    "scaled_sin",',
        "    lambda z, w: math.sin(w * z),             # forward(z, *params)",
        "    lambda z, w: w * math.cos(w * z),         # dA/dZ",
        '    params={"w": 1.0},                        # name -> default, at most 3',
        '    learnable=("w",),',
        '    param_derivatives={"w": lambda z, w: z * math.cos(w * z)},  # dA/dw, needed if learnable',
        '    formula="sin(wz)", derivative_formula="w·cos(wz)",',
        ")",
        'assert all(nl.gradcheck.check_activation("scaled_sin"))',
        'net = nl.Sequential([nl.Dense(4, 8, activation="scaled_sin"), nl.Dense(8, 1)])',
        'nl.activations.unregister("scaled_sin")',
        "```",
        "",
        "Optional keywords: `facts=` (a `nnlab.activations.Facts`, asserted like the built-ins'),",
        "`kinks=` (points where f' jumps, kept away from by the gradient checker), `doc=`, and",
        "`replace=True` to re-register a name. User-registered activations are not listed on this page.",
        "",
    ]
    return "\n".join(lines)


def activations_md_path():
    """``docs/activations.md`` of the source tree this module lives in."""
    return Path(__file__).resolve().parent.parent / "docs" / "activations.md"


def write_activations_md(path=None):
    """Write :func:`render_activations_md` to ``path`` (default :func:`activations_md_path`); return the path."""
    path = Path(path) if path is not None else activations_md_path()
    path.write_text(render_activations_md(), encoding="utf-8")
    return path


def _main(argv):
    path = activations_md_path()
    if argv[:1] == ["--check"]:
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != render_activations_md():
            print(f"{path} is stale; run `python -m nnlab._docs`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    if argv:
        print("usage: python -m nnlab._docs [--check]", file=sys.stderr)
        return 2
    print(f"wrote {write_activations_md(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
