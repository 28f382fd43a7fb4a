"""`python -m hookd` is the same as the `hookd` console script."""

from hookd.cli import main

raise SystemExit(main())
