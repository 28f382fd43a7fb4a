"""Logs and metrics: what every layer reports, with no dependency on any of them."""
