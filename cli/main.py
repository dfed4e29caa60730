"""The ``nnlab`` command line (click). Commands parse options, call the library, and print."""

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nnlab")
def cli():
    """nnlab: see, measure and fix vanishing and exploding gradients."""


def main():
    cli()
