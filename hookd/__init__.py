"""hookd — a self-hosted, GitOps webhook daemon.

Connectors (OpenAPI 2.0 with the Power Automate extensions), connections and flows live
in a directory of YAML; hookd reconciles the webhooks those flows need against the
upstream services and runs each flow's steps for every notification it receives.
"""

__version__ = "0.1.0"
