"""Shared test set-up: the slow, obvious reference modules beside the tests (naive.py, reference.py,
optim_naive.py) and cli_checks.py are importable by name. pytest runs with --import-mode=importlib,
which does not put tests/ on sys.path by itself. The ``run`` fixture invokes the ``nnlab`` click
app in-process (a test module may define its own ``run`` for one subcommand)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Whether a command prints "compiling ..." on stderr depends on the state of the kernel cache, so
# it is off in this process, where tests compare what commands print; tests/test_compile_notice.py
# checks it in fresh processes.
import nnlab._compile_notice  # noqa: E402

nnlab._compile_notice.enable(False)


@pytest.fixture
def run():
    from click.testing import CliRunner

    from nnlab_cli.main import cli

    runner = CliRunner()

    def invoke(*args, **kwargs):
        return runner.invoke(cli, list(args), **kwargs)

    return invoke
