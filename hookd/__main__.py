"""`python -m hookd` is the same as the `hookd` console script."""

from hookd.cli.main import main

if __name__ == "__main__":  # a multiprocessing child importing __main__ must not re-run the CLI
    raise SystemExit(main())
