"""Reconciling: observe upstreams, plan, execute the plan against upstream and store."""
