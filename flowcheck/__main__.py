"""``python -m flowcheck``: the ``flowcheck`` command."""

from flowcheck.cli.main import console

console()
