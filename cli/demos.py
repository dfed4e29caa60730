"""``nnlab demo ...`` commands beyond ``vanishing`` (which lives in main.py): one command per entry
of the registry :data:`nnlab.demos.DEMOS`, built from the demo module's ``OPTIONS``. Each calls the
module's ``run``, prints ``render(result)``, writes ``--json``/``--plot`` on request, and exits 0
when the demo's claim held or was not tested for the given settings, 1 when it did not hold (bad
input: one line, exit 2).

The registry lives in nnlab, which imports Numba; so that ``nnlab --help`` stays instant the
commands are added when the ``demo`` group is first used (or at once if nnlab is already imported).
"""

import sys

import click

from .main import _dump_json, _term_width, _write_text, check_outputs, demo, demo_warmup, device_option, progress

COMMON_HELP = (
    "Prints the claim, tables and terminal charts, and whether the claim held; exits 0 when it held "
    "(or when these settings do not test it: the output says so), 1 when it did not. --json FILE writes every number ('-' prints only the JSON); --plot FILE.png "
    "draws the pictures with matplotlib (pip install 'nnlab[plot]'). Details: docs/demos.md."
)


def _click_type(opt):
    if opt.kind == "int":
        return click.IntRange(min=None if opt.low is None else int(opt.low),
                              max=None if opt.high is None else int(opt.high))
    if opt.kind == "float":
        return click.FloatRange(min=opt.low, max=opt.high, min_open=opt.low_open)
    if opt.kind == "choice":
        return click.Choice(list(opt.choices))
    return str


def check_demo_outputs(json_path, plot_path):
    """One-line errors for a bad --json or --plot before any work."""
    check_outputs((json_path, "--json"), (plot_path, "--plot"))
    check_plot_path(plot_path)


def check_plot_path(path):
    """One-line errors for a bad --plot before any work: folder, suffix, matplotlib present."""
    if not path:
        return
    check_outputs((path, "--plot"))
    if not path.lower().endswith(".png"):
        raise click.BadParameter(f"{path!r} must end in .png", param_hint="'--plot'")
    from nnlab import charts

    charts.require_matplotlib()  # NnlabError -> "Error: PNG output needs matplotlib: ..." (exit 2)


def write_plot(module, res, path):
    try:
        module.plot(res, path)
    except OSError as exc:
        raise click.FileError(path, hint=exc.strerror or str(exc)) from None


def emit(module, res, json_path, plot_path):
    """Print the rendered result (or only the JSON for --json -), write the files, exit 1 if not held."""
    text = _dump_json(res.to_dict()) if json_path else None
    quiet = json_path == "-"
    if quiet:
        click.echo(text)
    else:
        click.echo(module.render(res, _term_width()))
        if json_path:
            _write_text(json_path, text + "\n")
            click.echo(f"wrote {json_path}")
    if plot_path:
        write_plot(module, res, plot_path)
        if not quiet:
            click.echo(f"wrote {plot_path}")
    if res.held is False:  # None: these settings do not test the claim (the output says so), exit 0
        raise click.exceptions.Exit(1)


def _command(name, module):
    params = [click.Option([o.flag, o.name], is_flag=True, default=o.default, help=o.help) if o.kind == "flag" else
              click.Option([o.flag, o.name], type=_click_type(o), default=o.default, show_default=True, help=o.help)
              for o in module.OPTIONS]
    params += [
        click.Option(["--seed"], type=click.IntRange(min=0), default=0, show_default=True,
                     help="Seed of data and weights."),
        click.Option(["--json", "json_path"], type=click.Path(dir_okay=False, writable=True), default=None,
                     metavar="FILE", help="Also write every number as JSON to FILE ('-' prints only the JSON)."),
        click.Option(["--plot", "plot_path"], type=click.Path(dir_okay=False, writable=True), default=None,
                     metavar="FILE.png", help="Also draw the pictures to a PNG (needs matplotlib)."),
    ]

    def callback(seed, json_path, plot_path, **options):
        check_demo_outputs(json_path, plot_path)
        from nnlab.demos import _sizes

        _sizes.check(name, options)
        with demo_warmup(name), progress().phase(f"demo {name}"):
            res = module.run(seed=seed, **options)
        emit(module, res, json_path, plot_path)

    help_text = f"{module.SUMMARY}\n\nClaim: {module.CLAIM}.\n\n{COMMON_HELP}"
    callback = device_option(callback)
    params += callback.__click_params__
    return click.Command(name, params=params, callback=callback, help=help_text, short_help=module.SUMMARY)


def register_all(group=demo):
    """Add a command for every registry demo the group does not have yet (imports nnlab)."""
    from nnlab import demos

    for name, module in demos.DEMOS.items():
        if name not in group.commands:
            group.add_command(_command(name, module), name)


if "nnlab.demos" in sys.modules:  # nnlab is loaded already (a test, a script): no reason to wait
    register_all()
