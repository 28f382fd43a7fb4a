"""Config files: the typed model, loading with positions, schema and cross-file checks, secrets, units."""
