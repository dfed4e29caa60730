"""``nnlab diagnose``: the gradient-health monitor on a saved model and a dataset."""

import math
import sys

import click

from .main import (
    MAX_SAMPLES,
    MAX_SEQ_LEN,
    _dump_json,
    _term_width,
    _write_text,
    check_outputs,
    cli,
    device_option,
    load_dataset,
    progress,
)

EXIT_FIRED = 1
MAX_STEPS = 1_000_000  # --steps: the monitor keeps every step's statistics


def _optimizer(nl, optimizer, lr):
    opt_cls = nl.optim.REGISTRY.get(optimizer.lower())
    if opt_cls is None:
        nl.optim.get(optimizer)  # raises UnknownNameError listing the names
    return nl.optim.get(optimizer, **({} if lr is None else {"lr": lr}))


def _num(x, fmt="{:.2e}"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return fmt.format(x)


def _pct(x):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.0f}%"


def _layer_key(layer):
    """(width, name) of a layer for the architecture line: a dense layer by its activation."""
    if type(layer).__name__ == "Dense":
        return layer.n_out, layer.activation.label
    return layer.n_out if layer.n_out is not None else "", layer.label


def _architecture(net):
    """'2 -> 16 sigmoid x12 -> 2 identity': runs of equal layers compressed."""
    parts, k, layers = [], 0, net.layers
    while k < len(layers):
        j = k
        key = _layer_key(layers[k])
        while j < len(layers) and _layer_key(layers[j]) == key:
            j += 1
        parts.append(f"{key[0]} {key[1]}".strip() + (f" x{j - k}" if j - k > 1 else ""))
        k = j
    return f"{net.n_in} -> " + " -> ".join(parts)


def _table(mon, steps):
    """Per-layer statistics of the last recorded step."""
    rows = mon.layer_summary()
    cols = [("layer", "{layer}"), ("where", "{where}"), ("kind", "{kind}"), ("activation", "{activation}"),
            ("shape", "{shape}"),
            ("‖∂L/∂W‖", "{grad_norm}"), ("‖E‖", "{error_norm}"), ("‖W‖", "{weight_norm}"),
            ("‖ΔW‖/‖W‖", "{update_ratio}"), ("dead", "{dead}"), ("saturated", "{saturated}"),
            ("non-finite", "{nonfinite}"), ("subnormal", "{subnormal}")]
    cells = []
    for r in rows:
        cells.append({
            "layer": str(r["layer"]), "where": r["name"].split(" ", 1)[0], "kind": r["kind"],
            "activation": r["activation"] if r["kind"] == "Dense" else "-",
            "shape": f"{r['shape'][0]}x{r['shape'][1]}",
            "grad_norm": _num(r["grad_norm"]), "error_norm": _num(r["error_norm"]),
            "weight_norm": _num(r["weight_norm"]),
            "update_ratio": _num(r["update_ratio"]) if steps > 0 else "-",
            "dead": _pct(r["dead_fraction"]), "nonfinite": str(r["nonfinite"]),
            "saturated": _pct(r["saturated_fraction"]) if r["activation_saturates"] else "-",
            "subnormal": f"{r['subnormal']}/{r['n_grad']}" if r["subnormal"] else "0",
        })
    texts = [[fmt.format(**c) for _, fmt in cols] for c in cells]
    widths = [max(len(h), *(len(t[k]) for t in texts)) for k, (h, _) in enumerate(cols)]
    left = {0, 1, 2, 3, 4}
    line = lambda items: "  ".join(x.ljust(w) if k in left else x.rjust(w)  # noqa: E731
                                   for k, (x, w) in enumerate(zip(items, widths))).rstrip()
    return [line([h for h, _ in cols])] + [line(t) for t in texts]


def _time_chart(mon, charts, width):
    """‖∂L/∂h_t‖ per time step of every recurrent layer at the last recorded step: a heat map
    (layers x steps) and the ratio between the first and the last step."""
    norms = mon.time_grad_norms()
    import numpy as np

    labels = list(norms)
    rows = np.array([norms[k] for k in labels])
    lines = [charts.heatmap(rows, row_labels=[k.split(" ", 1)[0] for k in labels], max_cols=max(20, width - 10),
                            title="log10 ‖∂L/∂h_t‖, recurrent layers (rows) x time steps t = 1..T (columns)")]
    for k in labels:
        v = norms[k]
        ratio = v[0] / v[-1] if v[-1] > 0 else float("nan")
        lines.append(f"  {k}: ‖∂L/∂h_1‖ = {_num(float(v[0]))}, ‖∂L/∂h_T‖ = {_num(float(v[-1]))}, "
                     f"ratio first/last {_num(float(ratio))}")
    return lines


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, metavar="NAME",
              help="Dataset: digits, xor, spirals, moons (classification), sine (regression) or adding "
                   "(sequences, regression).")
@click.option("--samples", type=click.IntRange(min=4, max=MAX_SAMPLES), default=None, metavar="N",
              help=f"Samples to generate for xor/spirals/moons/sine (default: the dataset's own; at most "
                   f"{MAX_SAMPLES:,}).")
@click.option("--seq-len", type=click.IntRange(min=2, max=MAX_SEQ_LEN), default=None, metavar="T",
              help="Time steps per sequence of a sequence dataset (adding; default 50).")
@click.option("--steps", type=click.IntRange(min=0, max=MAX_STEPS), default=0, show_default=True, metavar="K",
              help="0: one loss_and_grads on all samples; K > 0: K training steps on a copy of the model "
                   f"(at most {MAX_STEPS:,}: the monitor keeps every step).")
@click.option("--optimizer", default="adam", show_default=True, metavar="NAME",
              help="Optimizer of the training steps (sgd, adam, rmsprop, ...; with --steps only).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, metavar="LR",
              help="Learning rate of the training steps (with --steps only).  [default: the optimizer's]")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, metavar="B",
              help="Rows per training step (with --steps only).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="S",
              help="Seed of the generated data and of the batch order.")
@click.option("--flush-denormals", is_flag=True,
              help="Flush denormal floats to zero while the monitor runs (x86; see docs/diagnostics.md).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True), default=None,
              metavar="FILE", help="Also write every statistic and verdict as JSON to FILE ('-' prints only the JSON).")
@click.pass_context
@device_option
def diagnose(ctx, model, data, samples, seq_len, steps, optimizer, lr, batch_size, seed, flush_denormals, json_path):
    """Gradient health of a saved MODEL (.npz from `nnlab train --save` or Sequential.save) on a dataset.

    With --steps 0 (default) runs one loss_and_grads on all samples; with --steps K trains a copy of
    the model for K steps (--optimizer, --lr, --batch-size; the file is never changed) with the
    monitor recording every step. Prints the per-layer statistics of the last step, the gradient
    norms as a chart (a layers x steps heat map of log10 ‖∂L/∂W_l‖ when K > 1), and every verdict
    with its evidence, fired ones with their remedy. Exit 0 when no verdict fired, 1 when one did,
    2 on bad input (a missing or unreadable model file, data that does not fit the model).
    """
    if steps == 0:
        unused = [f"--{n.replace('_', '-')}" for n in ("optimizer", "lr", "batch_size")
                  if ctx.get_parameter_source(n) is not click.core.ParameterSource.DEFAULT]
        if unused:
            raise click.UsageError(f"{', '.join(unused)} {'acts' if len(unused) == 1 else 'act'} only on training "
                                   f"steps; add --steps K (or drop {'it' if len(unused) == 1 else 'them'})")
    check_outputs((json_path, "--json"))

    import numpy as np

    import nnlab as nl
    from nnlab import charts, limits

    net = nl.load(model)  # ModelFileError: one line, exit 2
    if samples is not None:
        limits.require(limits.dataset_bytes(data.lower(), samples, seq_len or 50), f"{samples:,} samples of {data}",
                       "--samples")
    name, X, y = load_dataset(nl, data, samples, seed, seq_len)
    if X.shape[-1] != net.n_in:
        raise click.UsageError(f"the model takes {net.n_in} input feature(s) but dataset {name!r} has "
                               f"{X.shape[-1]}")
    X = X.astype(net.dtype)
    opt = _optimizer(nl, optimizer, lr) if steps else None
    net._prepare(X, y)  # labels that do not fit the model's outputs raise here (exit 2)
    prog = net._program(X.shape[1] if X.ndim == 3 else 1)
    n_layers = len(prog.watched)
    rows = len(X) if steps == 0 else min(batch_size, len(X))
    limits.require(limits.network_bytes(net.n_params, prog.width, rows, net.dtype.itemsize,
                                        monitor_layers=n_layers, steps=max(steps, 1)),
                   f"the monitor over {max(steps, 1):,} step(s) of {rows:,} rows ({n_layers} layers)",
                   "--steps or --batch-size" if steps else "--samples")

    quiet = json_path == "-"
    say = (lambda line="": None) if quiet else click.echo
    stopped = ""
    bar = progress().bar(steps, "monitored training") if steps else progress().phase("gradients of all samples")
    with nl.backend.flush_denormals(flush_denormals), bar:
        if steps == 0:
            mon = nl.GradientMonitor(net)
            mon.observe(X, y)
            mode = f"one loss_and_grads on all {len(X)} samples (no update)"
        else:
            work = net.copy()
            mon = nl.GradientMonitor(work)
            trainer = nl.Trainer(work, opt, monitor=mon)
            rng = np.random.default_rng(seed)
            order = rng.permutation(len(X))
            pos = 0
            for _ in range(steps):
                if pos + batch_size > len(X):
                    order, pos = rng.permutation(len(X)), 0
                idx = order[pos:pos + batch_size]
                pos += batch_size
                trainer.step(np.ascontiguousarray(X[idx]), np.ascontiguousarray(y[idx]))
                bar.update(1, f"loss {trainer.last.loss:.4g}")
                if not trainer.last.applied:
                    stopped = (f"stopped at step {mon.steps}: non-finite "
                               f"{'loss' if not math.isfinite(trainer.last.loss) else 'gradient'} "
                               "(the last finite weights kept)")
                    break
            hp = ", ".join(f"{k}={v:g}" for k, v in opt.hyperparams().items() if k == "lr")
            mode = (f"{steps} training step(s) of {type(opt).__name__} {hp}, batch {min(batch_size, len(X))}, "
                    f"on a copy (the file is not changed)")

    fired = mon.fired()
    say(f"model     {model}: {_architecture(net)}; loss {net.loss_name}; {net.n_params:,} parameters; "
        f"{net.dtype.name}")
    say(f"data      {name}: {len(X)} samples, {X.shape[-1]} feature(s)"
        + (f", sequences of {X.shape[1]} steps" if X.ndim == 3 else ""))
    say(f"monitor   {mode}; flush-to-zero {mon._ftz_text()}")
    if stopped:
        say(f"          {stopped}")
    loss_txt = ", ".join(_num(v, "{:.4g}") for v in (mon.loss[0], mon.loss[-1])) if mon.steps > 1 else \
        _num(mon.loss[0], "{:.4g}")
    say(f"loss      {'first, last ' if mon.steps > 1 else ''}{loss_txt}")
    say()
    say(f"per layer, step {mon.steps}" + (" (the last)" if mon.steps > 1 else "")
        + f": saturated = |z| past the documented threshold (ratio {mon.saturation_ratio:g} of max f')")
    for line in _table(mon, steps):
        say(line)
    say()
    g = mon.series("grad_norm")
    width = _term_width()
    labels = [str(l + 1) for l in range(g.shape[1])]
    if mon.steps > 1:
        say(charts.heatmap(g.T, row_labels=labels, max_cols=max(20, width - 10),
                           title="log10 ‖∂L/∂W_l‖, layers (rows) x steps (columns)"))
    else:
        say("‖∂L/∂W_l‖ per layer")
        say(charts.log_bars(labels, [float(v) for v in g[-1]], width=max(20, min(50, width - 25))))
    say()
    if mon.recurrent:
        for line in _time_chart(mon, charts, width):
            say(line)
        say()
    say("verdicts (docs/diagnostics.md explains each threshold)")
    for v in mon.verdicts():
        say(f"  {v}")
        if v.fired:
            say(f"        remedy: {v.remedy}")
    say()
    if fired:
        say(f"{len(fired)} verdict(s) fired: {', '.join(v.name for v in fired)}")
    else:
        say("no verdict fired")
    if json_path:
        record = {"model": model, "data": name, "samples": len(X), "steps_requested": steps,
                  "mode": mode, "stopped": stopped or None,
                  "optimizer": None if opt is None else {"name": opt.name, "lr": opt.lr},
                  "batch_size": batch_size if steps else None, "seed": seed,
                  "fired": [v.name for v in fired], "monitor": mon.to_dict()}
        text = _dump_json(record)
        if json_path == "-":
            click.echo(text)
        else:
            _write_text(json_path, text + "\n")
            say(f"wrote {json_path}")
    sys.stdout.flush()
    if fired:
        raise click.exceptions.Exit(EXIT_FIRED)
