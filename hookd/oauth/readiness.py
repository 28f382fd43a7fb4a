"""Which ``oauth:`` connections cannot authenticate, and the command that fixes each.

``hookd check`` (online) and ``hookd status`` ask the same question — does this connection
have a token it can use, or a way to get one — and must give the same answer, so it is
decided here once: the provider must be one hookd knows (or the connection names its
endpoints), and the stored tokens must be usable (`hookd.oauth.tokens.problem`: none
yet, refused at the last refresh, expired without a refresh token). Pure: the caller
passes the stored tokens in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hookd.config.model import Config, Connection
from hookd.connectors.oauth import for_parameter_set
from hookd.oauth import providers
from hookd.oauth.tokens import TokenSet, problem


@dataclass(frozen=True)
class Unready:
    connection: Connection
    problem: str
    fix: str = ""  # what to do; "" = run `hookd connect NAME`

    @property
    def hint(self) -> str:
        return self.fix or f"run `hookd connect {self.connection.name}`"

    def message(self) -> str:
        return f"connection '{self.connection.name}': {self.problem}; {self.hint}"


def used_connections(config: Config) -> set[str]:
    """Connections an enabled flow uses (trigger or ``call`` step)."""
    names: set[str] = set()
    for flow in config.flows.values():
        if flow.enabled:
            names.add(flow.trigger.connection or "")
            names.update(getattr(s.action, "connection", None) or "" for s in flow.steps)
    names.discard("")
    return names


def unready(config: Config, tokens_of: Callable[[str], TokenSet | None], now: float,
            names: Iterable[str] | None = None) -> list[Unready]:
    """The ``oauth:`` connections among `names` (default: all) that cannot authenticate."""
    wanted = set(config.connections) if names is None else set(names)
    out: list[Unready] = []
    for name in sorted(wanted):
        conn = config.connections.get(name)
        if conn is None or conn.oauth is None:
            continue
        connector = config.connectors.get(conn.connector)
        settings = for_parameter_set(connector.oauth, conn.parameter_set) \
            if connector is not None else None
        explicit = bool(conn.oauth.authorization_url and conn.oauth.token_url)
        if settings is not None and not explicit and settings.provider not in providers.GENERIC \
                and settings.provider not in providers.PROVIDERS:
            out.append(Unready(conn, f"identity provider '{settings.provider}' is not known to "
                                     "hookd", "set oauth.authorization_url and oauth.token_url"))
            continue
        why = problem(tokens_of(name), now, seeded=conn.oauth.refresh_token is not None)
        if why:
            out.append(Unready(conn, why))
    return out
