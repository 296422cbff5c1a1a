"""``python -m slimforge.cli``: the same as the ``slimforge`` command."""

from slimforge.cli import main

raise SystemExit(main())
