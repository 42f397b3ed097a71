"""``python -m qmodel``: the command line, as the ``qmodel`` script runs it."""

from qmodel.cli import main

raise SystemExit(main())
