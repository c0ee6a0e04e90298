"""``python -m flowcheck.cli``: the ``flowcheck`` command."""

from flowcheck.cli.main import console

console()
