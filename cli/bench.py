"""``nnlab bench``: the training-step benchmark (:mod:`nnlab.benchmark`) from the command line."""

import contextlib
import json
import sys

import click

from .main import cli, device_option

CONFIGS = ("tiny", "mnist", "deep-narrow", "wide")
OPTIMIZERS = ("sgd-momentum", "adam")
SECTIONS = ("fit", "denormals", "sweeps", "memory", "compile", "demo", "layers")


def _names(option, known):
    """A click callback: a comma-separated subset of ``known`` (checked here, so that a typo is a
    one-line usage error before anything is imported or measured)."""

    def check(ctx, param, value):
        if value is None:
            return None
        names = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in names if v not in known]
        if bad or not names:
            raise click.BadParameter(f"{', '.join(map(repr, bad)) or 'nothing given'}; choose from {', '.join(known)}",
                                     param_hint=option)
        twice = sorted({v for v in names if names.count(v) > 1}, key=names.index)
        if twice:
            raise click.BadParameter(f"{', '.join(map(repr, twice))} given twice", param_hint=option)
        return ",".join(names)

    return check


@cli.command()
@click.option("--quick", is_flag=True, help="Shorter blocks and sweeps, no fit/memory/cold-compile sections "
              "(about 75 s instead of 4-5 minutes).")
@click.option("--configs", default=None, metavar="LIST", callback=_names("--configs", CONFIGS),
              help=f"Comma-separated subset of {','.join(CONFIGS)}  [default: all]")
@click.option("--optimizers", default=None, metavar="LIST", callback=_names("--optimizers", OPTIMIZERS),
              help="Comma-separated subset of sgd-momentum,adam  [default: both]")
@click.option("--repeat", type=click.IntRange(min=1), default=None, metavar="N",
              help="Timed blocks per framework and row  [default: 15; 3 with --quick]")
@click.option("--skip", default=None, metavar="LIST", callback=_names("--skip", SECTIONS),
              help=f"Sections to leave out: {','.join(SECTIONS)}")
@click.option("--wait-quiet", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="On a shared machine: spend up to SECONDS waiting for other processes to go quiet.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, writable=True, allow_dash=True), default=None,
              help="Write every number to this file ('-': JSON alone on stdout, the tables on stderr).")
@click.option("--cold", "cold", default=None, metavar="LIST",
              help="Only the cold-start section: 'all' or demo names, 'new-steps' (first steps of new "
                   "configurations after the demos), 'step' (the first Trainer.step) and 'warmup' (nnlab warmup, "
                   "then that step), comma-separated; each runs in a fresh process, the demos on a kernel cache "
                   "that starts empty (minutes).")
@click.option("--report", "report_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Only print the tables of a saved --json file.")
@click.pass_context
@device_option(real_gpu=True)
def bench(ctx, quick, configs, optimizers, repeat, skip, wait_quiet, json_path, report_path, cold):
    """Time nnlab's fused training step beside PyTorch, JAX and NumPy.

    For each configuration (tiny, mnist-like, deep-narrow, wide; float32) and optimizer, every
    framework first runs one step from the same weights and is checked against a float64
    reference; then steps are timed in round-robin blocks. Prints medians, ratios, GFLOP/s, the
    speed goals of docs/performance.md as MET/MISSED, and more sections (fit, denormals, depth/width sweeps, memory,
    cold/warm compile, the demo's start-up). PyTorch and JAX are optional: a framework that is not
    importable is reported as n/a. The machine should be quiet; compare ratios within one run.
    See docs/performance.md.

    With --device cuda (a real GPU): the four configurations and the LSTM row with nnlab on the GPU
    beside PyTorch CUDA, the kernel launches per step and which matrix product ran (docs/gpu.md).
    """
    if report_path is not None:
        others = [f"--{n.replace('_path', '').replace('_', '-')}" for n in ctx.params
                  if n != "report_path" and ctx.get_parameter_source(n) is not click.core.ParameterSource.DEFAULT]
        if others:
            raise click.UsageError(f"--report only prints a saved file's tables; {', '.join(others)} would have no "
                                   "effect")
    if cold is not None:
        others = [f"--{n}" for n in ("quick", "configs", "optimizers", "repeat", "skip")
                  if ctx.get_parameter_source(n) is not click.core.ParameterSource.DEFAULT]
        if others:
            raise click.UsageError(f"--cold runs only the cold-start section; {', '.join(others)} would have no effect")
    from .main import check_outputs, progress

    check_outputs((json_path, "--json"))
    if ctx.params.get("device") == "cuda":
        _bench_cuda(ctx, quick, configs, optimizers, repeat, skip, json_path, report_path, cold)
        return
    from nnlab import benchmark

    if report_path is not None:
        try:
            benchmark.main(["--report", report_path])
        except (KeyError, TypeError, ValueError, IndexError) as exc:  # ValueError: not JSON at all
            raise click.BadParameter(f"{report_path} is not a file written by 'nnlab bench --json' "
                                     f"({type(exc).__name__}: {exc})", param_hint="--report") from None
        return
    to_stdout = json_path == "-"
    argv = ["--wait-quiet", str(wait_quiet)]
    if cold is not None:
        from nnlab.benchmark import cold_targets

        try:
            cold_targets(cold)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--cold") from None
        argv += ["--cold", cold]
    argv += ["--quick"] if quick else []
    for flag, value in (("--configs", configs), ("--optimizers", optimizers), ("--skip", skip),
                        ("--json", None if to_stdout else json_path)):
        if value is not None:
            argv += [flag, value]
    if repeat is not None:
        argv += ["--repeat", str(repeat)]
    phase = progress().phase("nnlab bench")
    if not to_stdout:
        with phase:
            benchmark.main(argv)
        return
    with contextlib.redirect_stdout(sys.stderr), phase:  # `--json -`: the tables to stderr, the JSON alone on stdout
        results = benchmark.main(argv)
    click.echo(json.dumps(results, indent=2, default=str))


def _bench_cuda(ctx, quick, configs, optimizers, repeat, skip, json_path, report_path, cold):
    """``--device cuda``: the configurations and the LSTM row on the GPU beside PyTorch CUDA
    (:mod:`nnlab.bench_cuda`); the other sections measure the CPU and are not run."""
    given = [f"--{n.replace('_path', '').replace('_', '-')}" for n in ("cold", "report_path", "wait_quiet")
             if ctx.get_parameter_source(n) is not click.core.ParameterSource.DEFAULT]
    if given:
        raise click.UsageError(f"{', '.join(given)} measure(s) the CPU only; leave out --device cuda")
    from nnlab import bench_cuda

    from .main import progress

    argv = ["--quick"] if quick else []
    for flag, value in (("--configs", configs), ("--optimizers", optimizers),
                        ("--json", None if json_path == "-" else json_path)):
        if value is not None:
            argv += [flag, value]
    if repeat is not None:
        argv += ["--repeat", str(repeat)]
    if skip is not None and "layers" in skip.split(","):
        argv += ["--no-lstm"]
    with progress().phase("nnlab bench --device cuda"):
        if json_path != "-":
            bench_cuda.main(argv)
            return
        with contextlib.redirect_stdout(sys.stderr):
            results = bench_cuda.main(argv)
    click.echo(json.dumps(results, indent=2, default=str))
