"""``nnlab sweep FILE.toml``: run a grid of training runs (:mod:`nnlab.sweep`) and stream the rows to a
JSON Lines file; a rerun resumes."""

import os

import click

from .main import cli, device_option


@cli.command()
@click.argument("grid_file", metavar="FILE.toml", type=click.Path(dir_okay=False))
@click.option("--results", "results_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.jsonl",
              help="The results file (JSON Lines, one row per point)  [default: [sweep] results of the file, "
                   "else FILE.jsonl beside it]")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on an existing Dask cluster (tcp://host:8786) instead of an embedded one.")
@click.option("--workers", type=click.IntRange(min=0), default=None, metavar="N",
              help="Worker processes of the embedded Dask cluster  [default: one per core]; 0 runs the points "
                   "in this process (no Dask needed).")
@click.option("--retry-failed", is_flag=True, help="Run the points recorded as failed again.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines (also NNLAB_QUIET=1).")
@device_option
def sweep(grid_file, results_path, scheduler, workers, retry_failed, quiet):
    """Run every point of a grid of training runs, in parallel on Dask.

    FILE.toml has a [grid] table of axes (depth = [10, 20], sigma_w2 = {start = 1, stop = 4, num = 7}, ...),
    a [fixed] table of settings shared by every point, and optionally [sweep] (results, scheduler, workers).
    Each point's row (params, metrics, status, error, wall time, nnlab version) is appended to the results
    file as it completes; a rerun with the same file skips the points already there. Exits 0 when every
    point succeeded, 1 when some failed. Details: docs/sweeps.md.
    """
    from nnlab import sweep as nl_sweep

    spec = nl_sweep.load(grid_file)
    results = results_path or spec.results
    folder = os.path.dirname(os.path.abspath(results))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"no folder {folder!r} for the results file", param_hint="'--results'")
    scheduler = scheduler or spec.scheduler
    workers = spec.workers if workers is None else workers
    before = len(nl_sweep.read_results(results))
    rows = nl_sweep.run(spec.grid, results, scheduler=scheduler, workers=workers,
                        progress=False if quiet else None, retry_failed=retry_failed)
    failed = [r for r in rows if r["status"] != "ok"]
    ok = len(rows) - len(failed)
    if not quiet:
        ran = f", {before} row(s) were already in the file" if before else ""
        click.echo(f"{len(rows)} points: {ok} ok, {len(failed)} failed{ran}; results in {results}")
        for r in failed[:5]:
            axes = {k: r["params"][k] for k in spec.grid.axes}
            click.echo(f"  failed {axes}: {r['error']}")
    if failed:
        raise click.exceptions.Exit(1)
