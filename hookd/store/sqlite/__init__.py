"""The SQLite store: one WAL file in the state directory, the group-commit inbox and every
PRAGMA (`store.SqliteStore` is the entry; see its docstring for the connections it holds)."""
