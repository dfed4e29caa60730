"""The ``nnlab`` command line (click). Commands parse options, call the library, and print.

nnlab (and with it Numba) is imported inside the commands only, so ``nnlab --help`` is instant.
Errors: an :class:`nnlab.errors.NnlabError` or a bad option prints one line ``Error: ...`` on stderr
and exits 2; any other exception prints one line ``internal error: ...`` and exits 1. Set
``NNLAB_DEBUG=1`` to get the traceback instead.
"""

import json
import math
import os
import shutil
import sys
import textwrap
import threading
from contextlib import contextmanager

import click

EXIT_USAGE = 2
EXIT_INTERNAL = 1
# click >= 8.2 raises this for a group called without a command (it shows the group's help)
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


# ---------------------------------------------------------------- error handling
def _one_line(text):
    return " ".join(str(text).split())


def _nnlab_error_type():
    """nnlab's base error class if nnlab was imported (an NnlabError cannot exist otherwise)."""
    mod = sys.modules.get("nnlab.errors")
    return getattr(mod, "NnlabError", None)


def _debug():
    return os.environ.get("NNLAB_DEBUG", "").strip() not in ("", "0")


class NnlabGroup(click.Group):
    """A click group whose errors are one line on stderr and never a traceback (unless NNLAB_DEBUG=1)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # a group called without a command: its help
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:  # bad options, unknown commands
            msg = _one_line(exc.format_message())
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                msg += f" (see '{ctx.command_path} --help')"
            click.echo(f"Error: {msg}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except Exception as exc:
            base = _nnlab_error_type()
            if base is not None and isinstance(exc, base):
                if _debug():
                    raise
                click.echo(f"Error: {_one_line(exc)}", err=True)
                sys.exit(EXIT_USAGE)
            if _debug():
                raise
            click.echo(f"internal error: {type(exc).__name__}: {_one_line(exc)} "
                       "(set NNLAB_DEBUG=1 for the traceback)", err=True)
            sys.exit(EXIT_INTERNAL)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


@contextmanager
def _slow_notice(message, after=1.5):
    """Print ``message`` to stderr if the block is still running after ``after`` seconds (TTY only)."""
    if not sys.stderr.isatty():
        yield
        return
    timer = threading.Timer(after, lambda: click.echo(message, err=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


COMPILING = "compiling Numba kernels (first run only; later runs load them from the cache)..."


def _term_width():
    return max(80, min(shutil.get_terminal_size((100, 24)).columns, 140))


def _pack(parts, width, indent):
    """Lines of at most ``width`` chars joining ``parts`` with '; ', breaking between parts when possible."""
    lines, cur = [], ""
    room = width - len(indent) - 1  # leave room for the ';' that ends a continued line
    for part in parts:
        cand = f"{cur}; {part}" if cur else part
        if len(cand) <= room:
            cur = cand
            continue
        if cur:
            lines.append(cur + ";")
        if len(part) <= room:
            cur = part
        else:
            wrapped = textwrap.wrap(part, room, break_on_hyphens=False)
            lines.extend(wrapped[:-1])
            cur = wrapped[-1]
    if cur:
        lines.append(cur)
    return [indent + line for line in lines]


def _dump_json(obj):
    return json.dumps(obj, indent=2, allow_nan=False)


# ---------------------------------------------------------------- the group
@click.group(cls=NnlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nnlab")
def cli():
    """nnlab: see, measure and fix vanishing and exploding gradients.

    Errors print one line and exit 2 (bad input) or 1 (internal); set NNLAB_DEBUG=1 for tracebacks.
    """


# ---------------------------------------------------------------- nnlab activations
@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON instead of a table.")
def activations(as_json):
    """The activation registry: formula, range, derivative range and documented facts.

    Facts are at the default hyperparameters; '[' or ']' marks an attained end of an interval,
    '{...}' the finite set of values f' takes.
    """
    from nnlab import _docs
    from nnlab import activations as acts

    entries = acts.entries()
    scaled = acts.SCALED_DOC
    if as_json:
        records = [_docs.entry_record(e) for e in entries]
        records.append({"name": scaled[0], "formula": scaled[1], "derivative": scaled[2], "doc": scaled[3],
                        "wrapper": True})
        click.echo(_dump_json(records))
        return
    width = _term_width()
    cols = [("name", 13), ("f(z)", min(30, width // 3)), ("range", 15), ("f'", 0)]
    cols[-1] = ("f'", width - sum(w for _, w in cols[:-1]) - 2 * (len(cols) - 1))
    header = "  ".join(name.ljust(w) for name, w in cols).rstrip()
    click.echo(header)
    click.echo("-" * min(width, len(header) + 20))
    indent = " " * (cols[0][1] + 2)
    for e in entries:
        cells = [e.name, e.formula, _docs.range_text(e.facts, 4), _docs.derivative_text(e.facts, 4)]
        wrapped = [textwrap.wrap(c, w) or [""] for c, (_, w) in zip(cells, cols)]
        for k in range(max(len(w) for w in wrapped)):
            line = "  ".join((w[k] if k < len(w) else "").ljust(cw) for w, (_, cw) in zip(wrapped, cols))
            click.echo(line.rstrip())
        details = [f"f' = {e.derivative}"]
        ptext = _docs.params_text(e, 4)
        if ptext != "–":
            details.append(ptext)
        details += _docs.facts_lines(e, 4, compact=True)
        for line in _pack(details, width, indent):
            click.echo(line)
    click.echo(f"{scaled[0]:<{cols[0][1]}}  {scaled[1]}")
    for line in _pack([f"f' = {scaled[2]}", scaled[3]], width, indent):
        click.echo(line)
    click.echo(f"\n{len(entries) + 1} activations (incl. the 'scaled' wrapper); details in docs/activations.md")


# ---------------------------------------------------------------- nnlab gradcheck
def _network_cases(seed):
    """Small networks covering the three losses: (label, net, X, y)."""
    import numpy as np

    import nnlab as nl

    rng = np.random.default_rng([seed, 2])
    cases = []

    def add(label, layers, loss, X, y):
        net = nl.Sequential(layers, loss=loss, seed=seed, dtype="float64")
        cases.append((label, net, X, y))

    X = rng.standard_normal((6, 3))
    add("tanh/mse", [nl.Dense(3, 5, activation="tanh", init="xavier_normal"),
                     nl.Dense(5, 4, activation="tanh", init="xavier_normal"),
                     nl.Dense(4, 2)], "mse", X, rng.standard_normal((6, 2)))
    X = rng.standard_normal((8, 4))
    add("relu+swish/softmax_cross_entropy",
        [nl.Dense(4, 6, activation="relu", init="he_normal", bias_init=0.1),
         nl.Dense(6, 5, activation="swish"), nl.Dense(5, 3)],
        "softmax_cross_entropy", X, rng.integers(0, 3, size=8))
    X = rng.standard_normal((7, 4))
    add("prelu+sigmoid/bce", [nl.Dense(4, 5, activation="prelu", init="he_normal"),
                              nl.Dense(5, 4, activation="sigmoid"),
                              nl.Dense(4, 2)], "bce", X, rng.integers(0, 2, size=(7, 2)).astype(float))
    X = rng.standard_normal((6, 3))
    add("selu+gelu(tanh)+acon_c+scaled(tanh)/mse",
        [nl.Dense(3, 4, activation="selu", init="lecun_normal"),
         nl.Dense(4, 4, activation=nl.activations.get("gelu", approximate="tanh")),
         nl.Dense(4, 4, activation="acon_c"),
         nl.Dense(4, 3, activation=nl.activations.get("scaled", base="tanh", a=1.7159, learnable=True)),
         nl.Dense(3, 1)], "mse", X, rng.standard_normal(6))
    return cases


def _activation_cases():
    """(label, name, params) for every registered activation plus variants."""
    from nnlab import activations as acts

    cases = []
    for name in acts.names():
        if name == "scaled":
            cases.append(("scaled(tanh, a=1.7159, learnable)", "scaled",
                          dict(base="tanh", a=1.7159, learnable=True)))
            continue
        cases.append((name, name, {}))
        if name == "gelu":
            cases.append(("gelu(approximate='tanh')", "gelu", dict(approximate="tanh")))
    return cases


def _result_record(kind, r):
    return {"kind": kind, "name": r.name, "ok": bool(r.ok), "n_checked": r.n_checked, "where": r.where,
            "index": None if r.index is None else list(r.index),
            "analytic": r.analytic if math.isfinite(r.analytic) else None,
            "numeric": r.numeric if math.isfinite(r.numeric) else None,
            "abs_error": r.abs_error if math.isfinite(r.abs_error) else None,
            "rel_error": r.rel_error if math.isfinite(r.rel_error) else None}


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the networks' weights and data.")
def gradcheck(as_json, seed):
    """Check every analytic derivative against float64 central differences.

    Every registered activation (dA/dZ and each learnable hyperparameter, plus gelu's tanh
    approximation and a learnable 'scaled' wrapper) and a few small networks covering the three
    losses. Prints the worst element of each check; exits 1 if any check fails.
    """
    from nnlab import activations as acts
    from nnlab import gradcheck as gc

    results = []  # (kind, CheckResult)
    with _slow_notice(COMPILING):
        for _label, name, params in _activation_cases():
            act = acts.get(name, **params)
            for r in gc.check_activation(act):
                results.append(("activation", r))
        for label, net, X, y in _network_cases(seed):
            r = gc.check_network(net, X, y)
            r.name = f"network {label} ({net.n_params} params)"
            results.append(("network", r))
    n_fail = sum(not r.ok for _, r in results)
    n_pass = len(results) - n_fail
    summary = f"{n_pass} passed, {n_fail} failed"
    if as_json:
        click.echo(_dump_json({"eps": gc.EPS, "atol": gc.ATOL, "rtol": gc.RTOL, "seed": seed,
                               "passed": n_pass, "failed": n_fail,
                               "results": [_result_record(k, r) for k, r in results]}))
    else:
        click.echo(f"central differences in float64: eps={gc.EPS:g}, pass if |analytic - numeric| <= "
                   f"atol + rtol*|numeric| (atol={gc.ATOL:g}, rtol={gc.RTOL:g})")
        for _, r in results:
            click.echo(str(r))
        click.echo(summary)
    if n_fail:
        raise click.exceptions.Exit(1)


# ---------------------------------------------------------------- nnlab demo ...
@cli.group()
def demo():
    """Demos that reproduce a claim of the source texts and say whether it held."""


BLOCKS = " ▏▎▍▌▋▊▉█"


def _bar(value, lo, hi, width):
    """A bar of ``width`` cells for log10(value) on the axis [lo, hi] (eighth-cell resolution)."""
    if not (value > 0 and math.isfinite(value)):
        return "·".ljust(width)
    frac = (math.log10(value) - lo) / (hi - lo) if hi > lo else 1.0
    eighths = max(1, round(min(max(frac, 0.0), 1.0) * width * 8))
    full, rest = divmod(eighths, 8)
    return ("█" * full + (BLOCKS[rest] if rest else "")).ljust(width)


def _layer_label(i, n):
    return f"{i}" + (" out" if i == n else "")


def _render_vanishing(res):
    rows, n = res.rows, res.n_layers
    width = _term_width()
    out = [*textwrap.wrap(f"claim: {res.claim}.", width, subsequent_indent="       "), "",
           *textwrap.wrap(f"{res.depth} hidden Dense({res.width}, {res.width}) layers + linear output "
                          f"Dense({res.width}, 1), loss mse, batch {res.batch}, seed {res.seed}, {res.dtype}",
                          width), ""]
    # the table
    cw = max(12, *(len(r.activation) + 2 for r in rows), *(len(r.init) + 2 for r in rows))
    out.append("‖∂L/∂W_l‖ (Frobenius norm of the weight gradient) per layer")
    lab = len(_layer_label(n, n))
    out.append("layer".ljust(lab) + "".join(r.activation.rjust(cw) for r in rows))
    out.append(" " * lab + "".join(r.init.rjust(cw) for r in rows))
    for i in range(n):
        out.append(_layer_label(i + 1, n).rjust(lab) + "".join(f"{r.grad_norms[i]:.2e}".rjust(cw) for r in rows))
    out.append("")
    # the chart: one bar column per configuration, a shared log10 axis
    vals = [v for r in rows for v in r.grad_norms if v > 0 and math.isfinite(v)]
    lo = math.floor(math.log10(min(vals))) if vals else -1
    hi = math.ceil(math.log10(max(vals))) if vals else 0
    hi = hi if hi > lo else lo + 1
    bw = max(8, min(30, (width - lab - 2) // len(rows) - 2))
    per_cell = (hi - lo) / bw
    out.append(f"log10 ‖∂L/∂W_l‖: each bar spans 1e{lo:+d} .. 1e{hi:+d} ({per_cell:.2g} decades per █)")
    out.append("layer".ljust(lab) + "  " + "  ".join(r.label[:bw].ljust(bw) for r in rows).rstrip())
    for i in range(n):
        bars = "  ".join(_bar(r.grad_norms[i], lo, hi, bw) for r in rows)
        out.append(_layer_label(i + 1, n).rjust(lab) + "  " + bars.rstrip())
    out.append("")
    # ratios and verdicts
    lw = max(len(r.label) for r in rows)
    out.append(f"ratio = ‖∂L/∂W_1‖ / ‖∂L/∂W_{n}‖ (first hidden layer / output layer)")
    out.append("verdict: vanishing if ratio < 1e-3, exploding if ratio > 1e3, else healthy")
    for r in rows:
        ratio = f"{r.ratio:.2e}" if math.isfinite(r.ratio) else str(r.ratio)
        out.append(f"  {r.label.ljust(lw)}  ratio {ratio}  {r.verdict}")
    out.append("")
    out += textwrap.wrap(f"claim held: {'yes' if res.held else 'no'} ({res.reason})", width,
                         subsequent_indent="    ")
    return "\n".join(out)


@demo.command()
@click.option("--depth", type=click.IntRange(min=1), default=20, show_default=True,
              help="Number of hidden layers (the output layer comes on top).")
@click.option("--width", type=click.IntRange(min=1), default=32, show_default=True, help="Units per hidden layer.")
@click.option("--batch", type=click.IntRange(min=1), default=128, show_default=True, help="Rows of the input batch.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of data and weights.")
@click.option("--config", "configs", multiple=True, metavar="ACT/INIT",
              help="An activation/initializer pair to compare (repeatable); default sigmoid/xavier_normal, "
                   "tanh/xavier_normal, relu/he_normal, selu/lecun_normal.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE", help="Also write the numbers as JSON to FILE ('-' prints only the JSON).")
def vanishing(depth, width, batch, seed, configs, dtype, json_path):
    """Deep nets side by side: does the gradient vanish before it reaches the first layer?

    Builds DEPTH hidden layers per activation/initializer, runs one forward/backward pass on a seeded
    batch, and prints ‖∂L/∂W_l‖ for every layer as a table and a log-scale chart, the ratio
    first/last layer with its verdict, and whether the claim held (exit 0 if it did, 1 if not).
    """
    from nnlab.demos import vanishing as demo_vanishing

    if json_path and json_path != "-" and not os.path.isdir(os.path.dirname(os.path.abspath(json_path))):
        raise click.BadParameter(f"folder of {json_path!r} does not exist", param_hint="'--json'")
    with _slow_notice(COMPILING):
        res = demo_vanishing.run(depth=depth, width=width, batch=batch, seed=seed,
                                 configs=list(configs) or None, dtype=dtype)
    text = _dump_json(res.to_dict()) if json_path else None
    if json_path == "-":
        click.echo(text)
    else:
        click.echo(_render_vanishing(res))
        if json_path:
            _write_text(json_path, text + "\n")
            click.echo(f"wrote {json_path}")
    if not res.held:
        raise click.exceptions.Exit(1)


def _write_text(path, text):
    """Write ``text`` to ``path`` atomically (a temporary file in the same folder, then rename)."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".nnlab-", suffix=".json", dir=directory)
    except OSError as exc:
        raise click.FileError(path, hint=exc.strerror or str(exc)) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise click.FileError(path, hint=exc.strerror or str(exc)) from None
        raise


def main():
    """Console-script entry point (``nnlab``)."""
    cli(prog_name="nnlab")


if __name__ == "__main__":
    main()
