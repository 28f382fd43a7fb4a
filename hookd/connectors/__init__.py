"""Connector definitions: OpenAPI 2.0 loading, Power Platform and x-hookd extensions, $refs, lenient JSON."""
