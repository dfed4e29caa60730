"""``nnlab warmup``: compile the kernels of the demos and of common training steps ahead of use
(:mod:`nnlab.warmup` does the work; this module parses, calls it and prints)."""

import os

import click

from .main import cli, notice, progress


@cli.command()
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option("--jobs", type=click.IntRange(min=1, max=64), default=None, metavar="N",
              help="Processes compiling in parallel, one core each.  [default: the machine's cores]")
@click.option("--list", "list_", is_flag=True, help="List the targets and whether each is compiled; compile nothing.")
@click.option("--background", is_flag=True,
              help="Start one low-priority background process instead and return at once.")
@click.option("--stop", is_flag=True, help="End the background warm-up (what it compiled stays cached).")
def warmup(targets, jobs, list_, background, stop):
    """Compile nnlab's kernels into Numba's cache before first use.

    A new process compiles each executor it meets on an empty cache (10-30 s each on 2 cores);
    after a warm-up the demos and the first training steps of dense networks load them instead.
    TARGET is demo:NAME, step:DTYPE-OPT, fit:DTYPE-OPT, or a group: all (the default), demos,
    steps; --list shows them. The first `nnlab demo` on an empty cache starts a background
    warm-up by itself (NNLAB_WARMUP=0 turns that off). Exits 1 if a target failed.
    """
    from nnlab import warmup as mod

    chosen = mod.resolve(list(targets) or None)
    if sum((list_, background, stop)) > 1:
        raise click.UsageError("--list, --background and --stop go one at a time")
    if jobs is not None and (list_ or background or stop):
        raise click.UsageError("--jobs applies to a foreground warm-up only")
    if list_:
        st = mod.status(chosen)
        for name, ok in st["targets"].items():
            click.echo(f"{name:22s} {'compiled' if ok else 'not compiled':13s} {mod.TARGETS[name]}")
        pid = st["background_pid"]
        running = f"running, pid {pid}" if pid else "not running"
        click.echo(f"background warm-up: {running}; "
                   f"marks in {st['folder'] or '(no writable kernel cache folder)'}")
        return
    if stop:
        pid = mod.stop()
        click.echo(f"stopped the background warm-up (pid {pid})" if pid else "no background warm-up is running")
        return
    if background:
        pid = mod.start_background(chosen)
        click.echo(f"warming up in the background, pid {pid}" if pid else
                   "nothing to start: every target is compiled, a background warm-up runs already, "
                   "or there is no writable kernel cache folder")
        return
    jobs = jobs or os.cpu_count() or 1
    notice(f"compiling {len(chosen)} targets in {min(jobs, len(chosen))} processes")
    failed = []
    prog = progress()
    with prog.bar(len(chosen), "warm-up", unit="target") as bar:
        def report(rec):
            what = {"compiled": f"compiled in {rec['seconds']:.1f} s ({rec['compiled']} functions)",
                    "cached": "already compiled",
                    "error": f"failed: {rec.get('error')}"}[rec["status"]]
            prog.write(f"{rec['target']:22s} {what}")
            if rec["status"] == "error":
                failed.append(rec["target"])
            bar.update()

        mod.warmup(chosen, jobs=jobs, report=report)
    if failed:
        raise click.ClickException(f"the warm-up of {', '.join(failed)} failed")
