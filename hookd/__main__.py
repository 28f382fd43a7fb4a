"""`python -m hookd` is the same as the `hookd` console script."""

from hookd.cli import main

if __name__ == "__main__":  # a multiprocessing child importing __main__ must not re-run the CLI
    raise SystemExit(main())
