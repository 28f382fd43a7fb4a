"""Runs: the worker that takes deliveries, the pipeline that runs a flow's steps, the actions."""
