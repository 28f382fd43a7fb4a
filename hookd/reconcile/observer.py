"""Observing the upstreams: list each scope's hooks and tell which are hookd's.

The first step of a pass and all of `hookd plan`'s I/O: one list call per scope (plus
pages), each listed hook classified by its callback URL (owned when the URL's token is
valid for this server secret). Its own module because it only reads upstream; the
executor (which writes) and the preview build on it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from hookd.config.model import Config, Connection
from hookd.connectors.model import WebhookTrigger
from hookd.store.records import SubscriptionRow
from hookd.subscriptions import plan as planning
from hookd.subscriptions import tokens
from hookd.subscriptions.desired import DesiredSubscription
from hookd.upstream.client import PermanentError, Upstream, UpstreamError, dig


class Observer:
    """Lists the upstreams' hooks for a config; the base of the reconciler's parts (they
    share its config, upstream client, server secret and concurrency)."""

    config: Config
    upstream: Upstream
    server_secret: bytes
    concurrency: int

    async def observe(
        self, desired: list[DesiredSubscription], rows: list[SubscriptionRow]
    ) -> planning.Observed:
        """List every scope once (one list call per repository, plus pages)."""
        scopes: dict[str, tuple[str, str]] = {}  # scope → (connector, operation)
        for d in desired:
            if d.upstream and d.scope:
                scopes.setdefault(d.scope, (d.connector, d.operation))
        for r in rows:
            if r.scope:
                scopes.setdefault(r.scope, (r.connector, r.operation))
        hooks: dict[str, tuple[planning.ObservedHook, ...]] = {}
        unavailable: dict[str, str] = {}
        sem = asyncio.Semaphore(self.concurrency)

        async def one(scope: str, connector_name: str, operation: str) -> None:
            async with sem:
                try:
                    hooks[scope] = await self._list_scope(scope, connector_name, operation)
                except (UpstreamError, KeyError, ValueError) as exc:
                    unavailable[scope] = str(exc) or type(exc).__name__

        await asyncio.gather(*(one(s, c, o) for s, (c, o) in scopes.items()))
        return planning.Observed(hooks, unavailable)

    async def _list_scope(
        self, scope: str, connector_name: str, operation: str
    ) -> tuple[planning.ObservedHook, ...]:
        connector = self.config.connectors.get(connector_name)
        if connector is None:
            raise KeyError(f"connector '{connector_name}' is no longer configured")
        webhook = connector.webhooks.get(operation)
        if webhook is None or webhook.list is None:
            raise KeyError(f"{connector_name}.{operation} declares no list operation")
        _, connection_name, params = json.loads(scope)
        connection = self._connection(connection_name)
        items = await self.upstream.list_all(
            connector, webhook.list.operation_id, connection, params,
            items_field=webhook.list.items_field)
        base = self.upstream.base_url(connector, connection)
        return tuple(self._classify(scope, item, webhook, base) for item in items)

    def _classify(
        self, scope: str, item: Any, webhook: WebhookTrigger, base: str
    ) -> planning.ObservedHook:
        assert webhook.list is not None
        upstream_id = dig(item, webhook.list.id_field)
        url = dig(item, webhook.list.url_field)
        url = url if isinstance(url, str) else None
        self_link = item.get("url") if isinstance(item, Mapping) else None
        location = None
        if (isinstance(self_link, str) and self_link != url and self_link.startswith(base + "/")
                and self_link.rstrip("/").endswith("/" + str(upstream_id))):
            location = self_link
        owned = None
        prefix = False
        if url is not None:
            parsed = tokens.parse_callback_url(self.config.settings.public_url, url)
            if parsed is not None:
                prefix = True
                if tokens.verify_token(self.server_secret, *parsed):
                    owned = parsed[0]
        return planning.ObservedHook(scope, str(upstream_id), url, location, owned, prefix,
                                     settings=item if isinstance(item, Mapping) else None)

    def _connection(self, name: str | None) -> Connection | None:
        if name is None:
            return None
        connection = self.config.connections.get(name)
        if connection is None:
            raise PermanentError(f"connection '{name}' is not configured")
        return connection
