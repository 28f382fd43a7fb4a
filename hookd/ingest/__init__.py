"""The public callback listener: the ASGI app that verifies, records and answers."""
