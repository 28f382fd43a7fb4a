"""Subscriptions: callback tokens, the desired subscriptions of a config, and the pure plan."""
