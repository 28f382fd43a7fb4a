"""How each verification scheme checks and signs a request: one module per kind, one table.

`hookd.connectors.schemes.SCHEMES` is the same list as data for the connector loader
(the kinds, and which need a ``header``); ``tests/test_verify.py`` checks the two agree
and that every scheme's `sign` passes its own `verify`.
"""

from __future__ import annotations

from collections.abc import Mapping

from hookd.callbacks.schemes import hmac_sha256, none, standard_webhooks, token
from hookd.callbacks.schemes.scheme import Scheme

SCHEMES: Mapping[str, Scheme] = {
    m.KIND: m for m in (hmac_sha256, token, standard_webhooks, none)
}
