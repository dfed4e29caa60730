"""The ``nnlab`` command line (click). Commands parse options, call the library, and print.

nnlab (and with it Numba) is imported inside the commands only, so ``nnlab --help`` is instant.
Errors: an :class:`nnlab.errors.NnlabError` or a bad option prints one line ``Error: ...`` on stderr
and exits 2; any other exception prints one line ``internal error: ...`` and exits 1. Set
``NNLAB_DEBUG=1`` to get the traceback instead.
"""

import functools
import json
import math
import os
import re
import shutil
import sys
import textwrap
import time

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
        except MemoryError as exc:  # an estimate fell short: still one line, never 'internal error'
            if _debug():
                raise
            click.echo(f"Error: out of memory{': ' + _one_line(exc) if str(exc) else ''} -- the run needs more "
                       "memory than the machine has; reduce its sizes (see the command's --help)", err=True)
            sys.exit(EXIT_USAGE)
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


def device_option(fn=None, *, real_gpu=False):
    """``--device cpu|cuda`` for a command that trains or runs networks: "cuda" makes the GPU the
    default device of the networks the command creates (``nl.backend.set_device``, and
    ``NNLAB_DEVICE`` for the processes it starts); an unusable GPU is a one-line DeviceError.
    ``real_gpu``: refuse Numba's simulator too (timings)."""
    if fn is None:
        return lambda f: device_option(f, real_gpu=real_gpu)

    @functools.wraps(fn)
    def wrapper(*args, device="cpu", **kwargs):
        if device != "cpu":
            import nnlab as nl

            nl.backend.set_device(device)
            if real_gpu and nl.backend.info()["cuda"]["gpu"] == "simulator":
                raise nl.errors.DeviceError("this command measures a real GPU; Numba's CUDA simulator "
                                            "(NUMBA_ENABLE_CUDASIM=1) only runs the tests")
            os.environ["NNLAB_DEVICE"] = device
        return fn(*args, **kwargs)

    return click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
                        help="Where the networks run: the CPU, or an NVIDIA GPU (cuda; see docs/gpu.md).")(wrapper)


# ---------------------------------------------------------------- the group
@click.group(cls=NnlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nnlab")
@click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N",
              help="Threads for the matrix products (OpenBLAS), at most the machine's cores; 1 on a machine whose "
                   "cores are busy.  [default: OpenBLAS's own: all cores, or $OPENBLAS_NUM_THREADS]")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bars, progress lines or notices on stderr (the same as NNLAB_QUIET=1); "
                   "results and errors are still printed.")
@click.pass_context
def cli(ctx, threads, quiet):
    """nnlab: see, measure and fix vanishing and exploding gradients.

    Errors print one line and exit 2 (bad input) or 1 (internal); set NNLAB_DEBUG=1 for tracebacks.
    Progress goes to stderr (a bar on a terminal, a line every few seconds otherwise), results to
    stdout; --quiet turns progress off.
    """
    cores = os.cpu_count() or 1
    if threads is not None and threads > cores:
        raise click.BadParameter(f"{threads} is more than this machine's {cores} cores", param_hint="'--threads'")
    _set_progress(ctx, quiet)
    if threads is not None:
        # read by OpenBLAS when NumPy (and SciPy) load it -- later, when a command imports nnlab,
        # and in the subprocesses a command starts
        os.environ["OPENBLAS_NUM_THREADS"] = str(threads)
        if "numpy" in sys.modules:  # already loaded (the CLI called from Python): set it in place
            from nnlab import backend

            backend.set_num_threads(threads)


_PROGRESS = {"on": False}


def _set_progress(ctx, quiet):
    """Progress on for this command (off with --quiet, which sets NNLAB_QUIET=1 for the compile
    notices and the subprocesses too); both undone when the command ends."""
    before = os.environ.get("NNLAB_QUIET")
    if quiet:
        os.environ["NNLAB_QUIET"] = "1"
    _PROGRESS["on"] = True

    def restore():
        _PROGRESS["on"] = False
        if before is None:
            os.environ.pop("NNLAB_QUIET", None)
        else:
            os.environ["NNLAB_QUIET"] = before
        mod = sys.modules.get("nnlab.progress")
        if mod is not None:
            mod.enable(False)

    ctx.call_on_close(restore)


def progress():
    """nnlab.progress, turned on for this command (imports nnlab: call it inside a command)."""
    from nnlab import progress as mod

    mod.enable(_PROGRESS["on"])
    return mod


def notice(text):
    """One line on stderr unless progress output is off (--quiet, NNLAB_QUIET=1)."""
    if _PROGRESS["on"] and not progress().quiet():
        click.echo(text, err=True)


def demo_warmup(name, typical=True):
    """Around a demo's run: nnlab.warmup.demo_session (waits for a background compile of this demo's
    kernels, starts the background warm-up on an empty cache) with its lines on stderr. ``typical``:
    the run uses the demo's default dtype (the kernels its warm-up target compiles)."""
    from nnlab import backend, warmup

    return warmup.demo_session(name, notify=notice, wait=lambda: progress().phase("waiting for the warm-up"),
                               typical=typical and backend.get_device() == "cpu")


def _check_out_folder(path, option):
    """One-line error before any work when ``path`` cannot be written: a missing folder, a folder
    that is a file or that refuses a new file, a path that is a folder or an unwritable file."""
    if not path or path == "-":
        return
    import tempfile

    full = os.path.abspath(os.path.expanduser(path))
    hint = f"'{option}'"
    if os.path.isdir(full):
        raise click.BadParameter(f"{path!r} is a directory; give a file name", param_hint=hint)
    folder = os.path.dirname(full)
    if not os.path.exists(folder):
        raise click.BadParameter(f"folder of {path!r} does not exist", param_hint=hint)
    if not os.path.isdir(folder):
        raise click.BadParameter(f"{folder!r}, the folder of {path!r}, is not a directory", param_hint=hint)
    if os.path.exists(full) and not os.access(full, os.W_OK):
        raise click.BadParameter(f"{path!r} is not writable", param_hint=hint)
    try:  # the files are written atomically: a temporary file in the same folder, then renamed
        fd, tmp = tempfile.mkstemp(prefix=".nnlab-check-", dir=folder)
    except OSError as exc:
        raise click.BadParameter(f"cannot write {path!r}: folder {folder!r}: {exc.strerror or exc}",
                                 param_hint=hint) from None
    os.close(fd)
    os.unlink(tmp)


def check_outputs(*pairs):
    """Check every (path, option) pair with :func:`_check_out_folder`, and that no two name the same file."""
    seen = {}
    for path, option in pairs:
        if not path or path == "-":
            continue
        _check_out_folder(path, option)
        key = os.path.realpath(os.path.expanduser(path))
        if key in seen:
            raise click.UsageError(f"{seen[key]} and {option} name the same file {path!r}")
        seen[key] = option


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
    """Small networks covering the three losses and every layer kind: (label, net, X, y)."""
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
    # every other layer kind, in training mode (fixed dropout masks) and in eval mode
    X = rng.standard_normal((8, 4))
    for mode in ("train", "eval"):
        add(f"residual+batchnorm+layernorm+dropout/{mode}",
            [nl.Dense(4, 5, activation="tanh"), nl.Residual([nl.Dense(5, 5, activation="softplus"), nl.Dense(5, 5)]),
             nl.BatchNorm(5), nl.Activation("sigmoid"), nl.Dropout(0.3),
             nl.Residual([nl.Dense(5, 3, activation="tanh")], projection=True), nl.LayerNorm(3),
             nl.Dense(3, 2)], "mse", X, rng.standard_normal((8, 2)))
        add(f"highway+maxout+rbf+alpha_dropout/{mode}",
            [nl.Dense(4, 4, activation="selu", init="lecun_normal"), nl.AlphaDropout(0.2),
             nl.Highway(4, activation="tanh"),
             nl.Maxout(4, 3, k=2, bias_init=nl.init.get("normal", std=1.0)), nl.RBF(3, 4, learnable_gamma=True),
             nl.Dense(4, 3)], "softmax_cross_entropy", X, rng.integers(0, 3, size=8))
        if mode == "eval":
            for _, net, _, _ in cases[-2:]:
                net.eval()
    S = rng.standard_normal((5, 6, 2))
    add("rnn+lstm sequences/mse",
        [nl.RNN(2, 3, return_sequences=True), nl.LSTM(3, 4, return_sequences=True), nl.Dense(4, 1)],
        "mse", S, rng.standard_normal((5, 6, 1)))
    add("lstm many-to-one/softmax_cross_entropy", [nl.LSTM(2, 4), nl.Dense(4, 3)],
        "softmax_cross_entropy", S, rng.integers(0, 3, size=5))
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
@device_option
def gradcheck(as_json, seed):
    """Check every analytic derivative against float64 central differences.

    Every registered activation (dA/dZ and each learnable hyperparameter, plus gelu's tanh
    approximation and a learnable 'scaled' wrapper) and a few small networks covering the three
    losses. Prints the worst element of each check; exits 1 if any check fails.
    """
    from nnlab import activations as acts
    from nnlab import gradcheck as gc

    results = []  # (kind, CheckResult)
    act_cases, net_cases = _activation_cases(), _network_cases(seed)
    with progress().bar(len(act_cases) + len(net_cases), "gradient checks", "check") as bar:
        for label, name, params in act_cases:
            bar.set(label)
            act = acts.get(name, **params)
            for r in gc.check_activation(act):
                results.append(("activation", r))
            bar.update()
        for label, net, X, y in net_cases:
            bar.set(f"network {label}")
            r = gc.check_network(net, X, y)
            r.name = f"network {label} ({net.n_params} params)"
            results.append(("network", r))
            bar.update()
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
class _DemoGroup(click.Group):
    """The ``demo`` group. The commands of the registry ``nnlab.demos.DEMOS`` (cli/demos.py) are
    added on first use, so that ``nnlab --help`` does not import nnlab and Numba."""

    def list_commands(self, ctx):
        _demos.register_all(self)
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        if name not in self.commands:
            _demos.register_all(self)
        return super().get_command(ctx, name)


@cli.group(cls=_DemoGroup)
def demo():
    """Demos that reproduce a claim of the source texts and say whether it held."""


def _render_vanishing(res):
    from nnlab.demos import vanishing as demo_vanishing

    return demo_vanishing.render(res, _term_width())


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
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE.png", help="Also draw the per-layer norms to a PNG (needs matplotlib).")
@device_option
def vanishing(depth, width, batch, seed, configs, dtype, json_path, plot_path):
    """Deep nets side by side: does the gradient vanish before it reaches the first layer?

    Builds DEPTH hidden layers per activation/initializer, runs one forward/backward pass on a seeded
    batch, and prints ‖∂L/∂W_l‖ for every layer as a table and a log-scale chart, the mean-field
    prediction of the per-layer gradient ratio (χ = σ_w²·E[φ'(h)²]) beside the measured one, the
    ratio first/last layer with its verdict, and whether the claim held (exit 0 if it did, 1 if not;
    0 with "claim not tested" when the --config list lacks the configurations the claim is about).
    """
    from nnlab.demos import vanishing as demo_vanishing

    twice = sorted({c for c in configs if configs.count(c) > 1}, key=configs.index)
    if twice:
        raise click.BadParameter(f"{', '.join(map(repr, twice))} given twice", param_hint="'--config'")
    _demos.check_demo_outputs(json_path, plot_path)
    from nnlab.demos import _sizes

    _sizes.check("vanishing", dict(depth=depth, width=width, batch=batch))
    with demo_warmup("vanishing", typical=dtype == "float64"), progress().phase("demo vanishing"):
        res = demo_vanishing.run(depth=depth, width=width, batch=batch, seed=seed,
                                 configs=list(configs) or None, dtype=dtype)
    _demos.emit(demo_vanishing, res, json_path, plot_path)


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


# ---------------------------------------------------------------- nnlab train
_LAYER_TOKEN = re.compile(r"\s*(\d+)\s*(?:[x×*]\s*(\d+))?\s*")
MAX_HIDDEN_LAYERS = 1000
MAX_SAMPLES = 10**7     # --samples: beyond this the data need gigabytes and an epoch minutes
MAX_SEQ_LEN = 100_000   # --seq-len
MAX_EPOCHS = 10**6      # --epochs


def _parse_layers(text):
    """'64,64' -> [64, 64]; '64x20' -> twenty 64s; '128,64x3' mixes both; 'none' -> []."""
    if not text.strip():
        raise click.BadParameter("'' gives no layer widths; write 'none' for a network without hidden layers",
                                 param_hint="'--layers'")
    if text.strip().lower() == "none":
        return []
    widths = []
    for token in text.split(","):
        m = _LAYER_TOKEN.fullmatch(token)
        if not m:
            raise click.BadParameter(f"{text!r}: expected comma-separated widths like '64,64' or "
                                     f"WIDTHxCOUNT like '64x20'; {token.strip()!r} is neither",
                                     param_hint="'--layers'")
        width, count = int(m.group(1)), int(m.group(2) or 1)
        if width < 1 or count < 1:
            raise click.BadParameter(f"{text!r}: widths and counts must be >= 1", param_hint="'--layers'")
        widths += [width] * count
        if len(widths) > MAX_HIDDEN_LAYERS:
            raise click.BadParameter(f"{text!r}: more than {MAX_HIDDEN_LAYERS} hidden layers",
                                     param_hint="'--layers'")
    return widths


def _layers_text(widths):
    """The inverse of :func:`_parse_layers`, runs of 3+ compressed: [64]*20 -> '64x20', [64]*2 -> '64,64'."""
    if not widths:
        return "none"
    parts, k = [], 0
    while k < len(widths):
        j = k
        while j < len(widths) and widths[j] == widths[k]:
            j += 1
        parts.append(f"{widths[k]}x{j - k}" if j - k >= 3 else ",".join([str(widths[k])] * (j - k)))
        k = j
    return ",".join(parts)


def _finite_or_none(x):
    """JSON has no NaN/inf: non-finite floats (a diverged run's losses) become null."""
    if isinstance(x, (list, tuple)):
        return [_finite_or_none(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def _layer_names(net):
    """Each top-level layer's short name, runs compressed: ['Dense (relu) x3', 'BatchNorm', ...]."""
    names, out = [layer.label for layer in net.layers], []
    k = 0
    while k < len(names):
        j = k
        while j < len(names) and names[j] == names[k]:
            j += 1
        out.append(names[k] + (f" x{j - k}" if j - k > 1 else ""))
        k = j
    return out


def _model_for(nl, path, X, n_out, loss_name, dtype, seed):
    """The network of ``--model``: a JSON description (fresh weights) or a saved .npz (its weights),
    checked against the data: input features, outputs, loss."""
    import zipfile

    if zipfile.is_zipfile(path) or path.lower().endswith(".npz"):  # a saved model (nl.load names what is wrong)
        net = nl.load(path)
        if dtype is not None and dtype != net.dtype.name:
            net = net.copy(dtype=dtype)
    else:
        net = nl.model_from_json(path, dtype=dtype, seed=seed)
    if X.shape[-1] != net.n_in:
        raise click.UsageError(f"the model takes {net.n_in} input feature(s) but the data have {X.shape[-1]}")
    if net.n_out != n_out:
        raise click.UsageError(f"the model has {net.n_out} output(s) but the data need {n_out}")
    if net.loss_name != loss_name:
        raise click.UsageError(f"the model's loss is {net.loss_name} but the data need {loss_name}")
    return net


def load_dataset(nl, name, samples, seed, seq_len=None):
    """(canonical name, X, y) of a built-in dataset for ``--data``/``--samples``/``--seed``
    (and ``--seq-len`` for the sequence datasets)."""
    name = name.lower()
    kwargs = {}
    if seq_len is not None:
        if name not in SEQUENCE_DATA:
            raise click.BadParameter(f"{name} is not a sequence dataset (those are: {', '.join(SEQUENCE_DATA)})",
                                     param_hint="'--seq-len'")
        kwargs["T"] = seq_len
    if name == "digits":
        if samples is not None:
            raise click.BadParameter("digits has a fixed size (1797 samples)", param_hint="'--samples'")
    elif name in nl.datasets.TASKS:
        kwargs["seed"] = seed
        if samples is not None:
            kwargs["n"] = samples
    X, y = nl.datasets.load(name, **kwargs)  # an unknown name raises UnknownNameError (exit 2)
    return name, X, y


SEQUENCE_DATA = ("adding",)


def _pct(x):
    return "-" if x is None else f"{100 * x:6.2f}%"


@cli.command()
@click.option("--data", default="digits", show_default=True, metavar="NAME",
              help="Dataset: digits, xor, spirals, moons (classification), sine (regression) or adding "
                   "(sequences (N, T, 2), regression; needs --model with a recurrent network).")
@click.option("--samples", type=click.IntRange(min=4, max=MAX_SAMPLES), default=None, metavar="N",
              help="Samples to generate for xor/spirals/moons/sine/adding (default: the dataset's own; "
                   f"at most {MAX_SAMPLES:,}).")
@click.option("--seq-len", type=click.IntRange(min=2, max=MAX_SEQ_LEN), default=None, metavar="T",
              help=f"Time steps per sequence of a sequence dataset (adding; default 50; at most {MAX_SEQ_LEN:,}).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Build the network from FILE instead of --layers/--activation/--init: a JSON model "
                   "description (the format Sequential.to_json and save write; see docs/layers.md) or a "
                   "saved .npz model (training continues from its weights).")
@click.option("--layers", default="64,64", show_default=True, metavar="SPEC",
              help="Hidden layer widths: '64,64', or WIDTHxCOUNT ('64x20' = 20 layers of 64), or 'none'.")
@click.option("--activation", default="relu", show_default=True, metavar="NAME",
              help="Activation of every hidden layer (see 'nnlab activations').")
@click.option("--init", "init_name", default="he_normal", show_default=True, metavar="NAME",
              help="Weight initializer of every layer (he_normal, xavier_normal, lecun_normal, ...).")
@click.option("--optimizer", default="adam", show_default=True, metavar="NAME",
              help="sgd, adagrad, adadelta, rmsprop, adam, adamw, nadam, adamax, rprop or smorms3 "
                   "(case-insensitive).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, metavar="LR",
              help="Learning rate.  [default: the optimizer's, e.g. 1e-3 for adam]")
@click.option("--momentum", type=click.FloatRange(min=0), default=None, metavar="M",
              help="Momentum (sgd, rmsprop only).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None, metavar="WD",
              help="The optimizer's weight_decay (coupled L2; decoupled for adamw).")
@click.option("--clip-global-norm", type=click.FloatRange(min=0, min_open=True), default=None, metavar="C",
              help="Scale all gradients together to global L2 norm <= C (clip_grad_norm_).")
@click.option("--clip-norm", type=click.FloatRange(min=0, min_open=True), default=None, metavar="C",
              help="Scale each gradient tensor to L2 norm <= C.")
@click.option("--clip-value", type=click.FloatRange(min=0, min_open=True), default=None, metavar="C",
              help="Clamp every gradient element to [-C, C].")
@click.option("--epochs", type=click.IntRange(min=1, max=MAX_EPOCHS), default=20, show_default=True, metavar="N",
              help="Passes over the training set.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, metavar="B",
              help="1 = online training; >= the training set = full batch.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="S",
              help="Seed of data, split, weights and shuffling.")
@click.option("--test-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, metavar="F", help="Fraction of the data held out as the test set.")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True,
              help="Floating-point type of the weights and the data.")
@click.option("--save", "save_path", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE", help="Save the trained network to FILE (.npz; load with nnlab.load).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE", help="Also write history and results as JSON to FILE ('-' prints only the JSON).")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Save the complete training state (network, optimizer, random generators, position in the "
                   "epoch, history) to FILE every --checkpoint-every steps and at the end; continue with --resume.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, metavar="N",
              help="Steps between checkpoints.  [default: every epoch]")
@click.option("--resume", "resume_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Continue the run saved in checkpoint FILE (its network, optimizer and data settings; "
                   "--epochs may extend it); the result is that of a run that never stopped. Checkpoints "
                   "go on into FILE unless --checkpoint says otherwise.")
@click.pass_context
@device_option
def train(ctx, data, samples, seq_len, model_path, layers, activation, init_name, optimizer, lr, momentum, weight_decay,
          clip_global_norm, clip_norm, clip_value, epochs, batch_size, seed, test_fraction, dtype, save_path,
          json_path, checkpoint_path, checkpoint_every, resume_path):
    """Train a Dense network on a built-in dataset with the fused training step.

    Builds DATA's input width -> the --layers hidden layers (--activation, --init) -> an identity
    output layer (one unit per class with softmax cross-entropy, or one unit with mse for sine),
    or any architecture from --model FILE, holds out --test-fraction as the test set and trains for
    --epochs. Prints one line per epoch
    (mean training loss, train and test accuracy) and a summary (test accuracy, wall time, ms per
    step); a progress bar runs on stderr when it is a terminal. Exit 0, or 1 if training stopped
    on a non-finite loss or gradient (the last finite weights are kept and still saved).
    """
    clips = [(name, v) for name, v in (("global_norm", clip_global_norm), ("norm", clip_norm),
                                       ("value", clip_value)) if v is not None]
    if len(clips) > 1:
        raise click.UsageError("give at most one of --clip-global-norm, --clip-norm, --clip-value "
                               "(the fused step runs one clipping)")
    given = lambda name: ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT  # noqa: E731
    if model_path is not None:
        clash = [f"--{n.replace('_name', '').replace('_', '-')}" for n in ("layers", "activation", "init_name")
                 if given(n)]
        if clash:
            raise click.UsageError(f"--model describes the whole network; drop {', '.join(clash)}")
    widths = _parse_layers(layers)
    if model_path is None and not widths and given("activation"):
        raise click.UsageError("--activation sets the hidden layers' activation, and --layers none has none")
    check_outputs((json_path, "--json"), (save_path, "--save"), (checkpoint_path, "--checkpoint"))

    import numpy as np
    if checkpoint_every is not None and checkpoint_path is None and resume_path is None:
        raise click.UsageError("--checkpoint-every needs --checkpoint FILE (or --resume FILE)")

    import nnlab as nl
    from nnlab import limits

    resumed = None
    if resume_path is not None:
        resumed = nl.load_checkpoint(resume_path)
        saved = resumed.checkpoint_metadata.get("nnlab train")
        if not isinstance(saved, dict):
            raise click.BadParameter(f"{resume_path} is a checkpoint, but not of an 'nnlab train' run (its data "
                                     "settings are unknown); continue it with nnlab.load_checkpoint",
                                     param_hint="'--resume'")
        clash = [f"--{n.replace('_name', '').replace('_path', '').replace('_', '-')}"
                 for n in ("model_path", "layers", "activation", "init_name", "optimizer", "lr", "momentum",
                           "weight_decay", "clip_global_norm", "clip_norm", "clip_value", "dtype") if given(n)]
        if clash:
            raise click.UsageError(f"--resume continues the saved network and optimizer; drop {', '.join(clash)}")
        current = {"data": data, "samples": samples, "seq_len": seq_len, "seed": seed, "test_fraction": test_fraction,
                   "batch_size": batch_size}
        for key, value in current.items():
            if given(key) and value != saved.get(key):
                raise click.BadParameter(f"the saved run used {saved.get(key)!r}; a resumed run keeps it",
                                         param_hint=f"'--{key.replace('_', '-')}'")
        data, samples, seq_len, seed, test_fraction, batch_size = (saved.get(k) for k in current)
        if not given("epochs"):
            epochs = saved.get("epochs", epochs)
        if checkpoint_path is None:
            checkpoint_path = resume_path
            if checkpoint_every is None:
                checkpoint_every = saved.get("checkpoint_every")
        optimizer, model_path = resumed.optimizer.name, saved.get("model")
        widths, activation, init_name = saved.get("layers") or [], saved.get("activation"), saved.get("init")

    opt_cls = nl.optim.REGISTRY.get(optimizer.lower()) if isinstance(optimizer, str) else None
    if opt_cls is None:
        nl.optim.get(optimizer)  # raises UnknownNameError listing the names
    hyper = {}
    for key, value, option in (("lr", lr, "--lr"), ("momentum", momentum, "--momentum"),
                               ("weight_decay", weight_decay, "--weight-decay")):
        if value is None:
            continue
        if key not in opt_cls.hyper:
            raise click.BadParameter(f"{opt_cls.__name__} has no {key}", param_hint=f"'{option}'")
        hyper[key] = value
    opt = nl.optim.get(optimizer, **hyper) if resumed is None else resumed.optimizer

    if samples is not None:
        limits.require(limits.dataset_bytes(data.lower(), samples, seq_len or 50),
                       f"{samples:,} samples of {data}", "--samples")
    name, X, y = load_dataset(nl, data, samples, seed, seq_len)
    if X.ndim != 2 and model_path is None:
        raise click.BadParameter(f"{name} is a sequence dataset {X.shape}; --layers builds dense networks: give "
                                 f"--model FILE with a recurrent network (docs/layers.md)", param_hint="'--data'")
    data, task = name, nl.datasets.TASKS[name]
    X_train, y_train, X_test, y_test = nl.datasets.train_test_split(X, y, test_fraction, seed=seed)
    classify = task == "classification"
    n_out = int(y.max()) + 1 if classify else y.reshape(len(y), -1).shape[1]
    loss_name = "softmax_cross_entropy" if classify else "mse"

    if resumed is not None:
        net = resumed.net
        dtype = net.dtype.name
    elif model_path is not None:
        net = _model_for(nl, model_path, X, n_out, loss_name, dtype if given("dtype") else None,
                         seed if given("seed") else None)
        dtype = net.dtype.name
    else:
        sizes = [X.shape[1], *widths, n_out]
        limits.require(limits.network_bytes(limits.dense_params(sizes), limits.dense_workspace(sizes),
                                            min(batch_size, len(X)) + min(len(X), 4096), np.dtype(dtype).itemsize),
                       f"the network {_layers_text(widths)} with batch {batch_size}",
                       "--layers (widths or count) or --batch-size")
        dense, n_in = [], X.shape[1]
        for w in widths:
            dense.append(nl.Dense(n_in, w, activation=activation, init=init_name))
            n_in = w
        dense.append(nl.Dense(n_in, n_out, init=init_name))
        net = nl.Sequential(dense, loss=loss_name, seed=seed, dtype=dtype)
    clip = clips[0] if clips else None
    prog = net._program(X.shape[1] if X.ndim == 3 else 1)
    limits.require(limits.network_bytes(net.n_params, prog.width, min(batch_size, len(X)) + min(len(X), 4096),
                                        net.dtype.itemsize),
                   f"training with batch {batch_size} ({prog.width:,} workspace elements per row)",
                   "--batch-size" + (" or --seq-len" if X.ndim == 3 else ""))
    if resumed is not None:
        trainer = resumed
        clip = None if resumed.clip_kind == 0 else (("value", "norm", "global_norm")[resumed.clip_kind - 1],
                                                     resumed.clip_value)
        hyper = {k: v for k, v in opt.hyperparams().items() if k in ("momentum", "weight_decay") and v}
    else:
        trainer = nl.Trainer(net, opt, clip=clip)
    trainer.checkpoint_metadata = {"nnlab train": {
        "data": data, "samples": samples, "seq_len": seq_len, "seed": seed, "test_fraction": test_fraction,
        "batch_size": batch_size, "epochs": epochs, "checkpoint_every": checkpoint_every, "model": model_path,
        "layers": widths if model_path is None else None, "activation": activation, "init": init_name}}

    steps_per_epoch = -(-len(X_train) // batch_size)
    quiet = json_path == "-"
    say = (lambda line: None) if quiet else click.echo
    opt_text = f"{opt_cls.__name__} lr={opt.lr:g}" + "".join(f", {k}={v:g}" for k, v in hyper.items() if k != "lr")
    say(f"data      {data}: {len(X_train)} train / {len(X_test)} test samples, {_plural(X.shape[-1], 'feature')}, "
        + (f"sequences of {X.shape[1]} steps, " if X.ndim == 3 else "")
        + (f"{n_out} classes" if classify else "regression"))
    if resumed is not None:
        run = resumed._run
        at = "" if run is None else f" at epoch {run.epoch + 1}, step {len(run.history.loss) + 1}"
        say(f"resume    {resume_path}{at}")
    if model_path is not None:
        say(f"network   {model_path}: {len(net.layers)} layers ({', '.join(_layer_names(net))}); "
            f"loss {loss_name}; {net.n_params:,} parameters; {dtype}")
    else:
        say(f"network   {X.shape[1]} -> hidden {_layers_text(widths)} {activation} -> {n_out}; init {init_name}; "
            f"loss {loss_name}; {net.n_params:,} parameters; {dtype}")
    say(f"training  {opt_text}; clip {'none' if clip is None else f'{clip[0]} {clip[1]:g}'}; batch {batch_size} "
        f"({steps_per_epoch} steps/epoch); {epochs} epochs; seed {seed}")

    ew = len(str(epochs))
    bars = progress()
    def each_step(epoch, step, loss):
        """Nothing to do; a step callback makes fit take its per-step loop, which times every step
        (the report below needs the first step apart from the steady state)."""

    def epoch_line(epoch, hist):
        parts = [f"epoch {epoch + 1:>{ew}}/{epochs}", f"loss {hist.epoch_loss[-1]:.4f}"]
        if classify:
            parts += [f"train acc {_pct(hist.accuracy[-1])}", f"test acc {_pct(hist.val_accuracy[-1])}"]
        else:
            parts.append(f"test loss {hist.val_loss[-1]:.4f}")
        parts.append(f"{hist.epoch_time[-1]:.2f} s")
        if not quiet:
            bars.write("  ".join(parts))

    t0 = time.perf_counter()
    history = trainer.fit(X_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True, seed=seed,
                          validation_data=(X_test, y_test), callback=epoch_line, step_callback=each_step,
                          progress=bars.enabled(), checkpoint=checkpoint_path, checkpoint_every=checkpoint_every,
                          resume=resumed is not None and resumed._run is not None)
    wall = time.perf_counter() - t0
    if history.stopped:
        click.echo(f"training stopped: {history.stopped}", err=True)
    test_loss, test_acc = trainer.evaluate(X_test, y_test)
    train_loss, train_acc = trainer.evaluate(X_train, y_train)
    n_steps = len(history.loss)
    # the first step loads (or compiles) the kernels: report it apart from the steady state, whose
    # median is robust to the odd step another process on the machine interrupts
    steady = sorted(history.step_time[1:])
    ms_step = 1e3 * steady[len(steady) // 2] if steady else float("nan")
    ms_mean = 1e3 * sum(steady) / len(steady) if steady else float("nan")
    first_s = history.step_time[0] if history.step_time else float("nan")

    if classify:
        n_right = int(round(test_acc * len(X_test)))
        say(f"test accuracy {100 * test_acc:.2f}% ({n_right}/{len(X_test)}), test loss {test_loss:.4f}; "
            f"train accuracy {100 * train_acc:.2f}%")
    else:
        say(f"test loss {test_loss:.5f} (mse, 1/2 mean squared error); train loss {train_loss:.5f}")
    say(f"{_plural(n_steps, 'step')} in {wall:.2f} s (with per-epoch evaluation); fused training step "
        f"{ms_step:.3f} ms (median; the first took {first_s:.3f} s incl. loading the kernels)")
    if save_path:
        net.save(save_path)
        say(f"saved the network to {save_path}")
    if json_path:
        record = {
            "data": data, "task": task, "n_train": len(X_train), "n_test": len(X_test), "n_features": X.shape[-1],
            "seq_len": X.shape[1] if X.ndim == 3 else None,
            "n_outputs": n_out, "layers": widths if model_path is None else None,
            "activation": activation if model_path is None else None,
            "init": init_name if model_path is None else None, "loss": loss_name,
            "model": None if model_path is None else {"source": model_path, **net.config()},
            "n_params": net.n_params, "dtype": dtype,
            "optimizer": {"name": opt.name, "hyperparams": {k: list(v) if isinstance(v, tuple) else v
                                                            for k, v in opt.hyperparams().items()}},
            "clip": None if clip is None else {"kind": clip[0], "value": clip[1]},
            "epochs": epochs, "batch_size": batch_size, "seed": seed, "test_fraction": test_fraction,
            "steps": n_steps, "wall_time_s": wall, "ms_per_step": ms_step,
            "ms_per_step_mean": ms_mean, "first_step_s": first_s,
            "train_loss": train_loss, "train_accuracy": train_acc,
            "test_loss": test_loss, "test_accuracy": test_acc, "stopped": history.stopped or None,
            "history": {k: _finite_or_none(v) for k, v in history.to_dict().items()},
        }
        record = {k: _finite_or_none(v) if isinstance(v, float) else v for k, v in record.items()}
        text = _dump_json(record)
        if json_path == "-":
            click.echo(text)
        else:
            _write_text(json_path, text + "\n")
            say(f"wrote {json_path}")
    if history.stopped:
        raise click.exceptions.Exit(1)


# Commands kept in sibling modules register themselves on the groups above when imported.
from . import bench as _bench  # noqa: E402,F401
from . import demos as _demos  # noqa: E402,F401
from . import diagnose as _diagnose  # noqa: E402,F401
from . import sweep as _sweep  # noqa: E402,F401
from . import warmup as _warmup  # noqa: E402,F401


def main():
    """Console-script entry point (``nnlab``)."""
    cli(prog_name="nnlab")


if __name__ == "__main__":
    # run as `python -m nnlab_cli.main`: this file is then __main__, a second copy of the module, and
    # the sibling modules above registered their commands on nnlab_cli.main's group, not on this one
    from nnlab_cli.main import main as _package_main

    _package_main()
