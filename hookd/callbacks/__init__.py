"""Callbacks: routing a request to its subscription, signature schemes, payload checks (pure)."""
