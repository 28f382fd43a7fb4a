"""The admin listener: health, readiness, metrics and the JSON API."""
