"""The long-running daemon: lifecycle, hot reload, sd_notify, config revision, status."""
