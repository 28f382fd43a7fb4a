"""The verification schemes a connector may declare (``x-hookd-verify.kind``), as data.

The connector loader (pure, below `hookd.callbacks`) needs to know which kinds exist and
which need a ``header``; how each one checks and signs a request is
`hookd.callbacks.schemes`'s, one module per kind, in a table keyed like this one
(``tests/test_verify.py`` checks the two agree). A new scheme is one line here and one
module there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SchemeSpec:
    kind: str
    needs_header: bool  # the upstream puts its proof in a header the connector names


SCHEMES: Mapping[str, SchemeSpec] = {
    spec.kind: spec
    for spec in (
        SchemeSpec("hmac-sha256", needs_header=True),
        SchemeSpec("token", needs_header=True),
        SchemeSpec("standard-webhooks", needs_header=False),  # fixed webhook-* headers
        SchemeSpec("none", needs_header=False),
    )
}
