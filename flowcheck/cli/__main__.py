"""``python -m flowcheck.cli``: the ``flowcheck`` command."""

import sys

from flowcheck.cli.main import main

sys.exit(main())
