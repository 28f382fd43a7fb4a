"""One module per `hookd` subcommand; see `hookd.cli.main` for the contract."""
