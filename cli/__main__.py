"""``python -m nnlab_cli``: the ``nnlab`` command."""

from nnlab_cli.main import main

main()
