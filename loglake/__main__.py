"""`python -m loglake`: the same command line as `loglake`."""

from loglake.cli import main

raise SystemExit(main())
