"""The SQLite store: one WAL file in the state directory, the group-commit inbox and every PRAGMA."""
