"""One module per `hookd` subcommand; see `hookd.cli` for the contract."""
