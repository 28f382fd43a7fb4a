"""The status page: server-rendered HTML on the admin listener (flows, subscriptions,
deliveries, runs, replay), for operators who want to look rather than read JSON.

`views.routes(...)` is what the daemon mounts at ``/``; `queries` fills the plain
view-model dataclasses of `models` from the store, `session` signs the sign-in cookie and
the CSRF tokens, `chart` draws the 24 h picture as SVG, `live` streams new deliveries and
runs as Server-Sent Events. Templates and the little JavaScript live beside them.
"""
