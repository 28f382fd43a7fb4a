"""Templates: the sandboxed Jinja2 engine and the static analysis `hookd check` runs."""
