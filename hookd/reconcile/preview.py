"""What `hookd plan` shows: the exact requests apply would send, masked, none sent.

Its own module because it reads the same decisions as the executor (`delete_target`, the
connector's create operation) but must never send or record anything.
"""

from __future__ import annotations

from typing import Any

from hookd.reconcile.observer import Observer
from hookd.reconcile.targets import delete_target, scope_connection, scope_connector
from hookd.store.records import SubscriptionRow
from hookd.subscriptions import plan as planning
from hookd.subscriptions import tokens
from hookd.subscriptions.desired import DesiredSubscription
from hookd.upstream.client import PermanentError


class Preview(Observer):
    """Builds, without sending, the requests of each planned change."""

    def preview(self, the_plan: planning.Plan) -> dict[str, list[dict[str, Any]]]:
        """What `hookd plan` shows: per planned change (by subscription id) the exact
        requests apply would send — create, then delete for a replace — secrets, the
        callback URL's token and the signing secret as ``***``. Nothing is sent; a
        request that cannot be built shows its error."""
        out: dict[str, list[dict[str, Any]]] = {}
        for item in the_plan.items:
            shown: list[dict[str, Any]] = []
            if item.action in ("create", "replace") and item.desired is not None:
                shown.append(self._preview_create(item.desired))
            if item.action in ("replace", "delete", "blocked"):
                shown.append(self._preview_delete(item.row, item.hook))
            if shown:
                out[item.sub_id] = shown
        return out

    def _preview_create(self, d: DesiredSubscription) -> dict[str, Any]:
        connector = self.config.connectors[d.connector]
        parsed = tokens.parse_callback_url(self.config.settings.public_url, d.callback_url)
        hide = tuple(x for x in (parsed[1] if parsed else "", d.secret) if x)
        try:
            return self.upstream.preview(connector, d.operation, self._connection(d.connection),
                                         d.parameters, d.body, hide=hide)
        except (PermanentError, KeyError) as exc:
            return {"error": str(exc)}

    def _preview_delete(self, row: SubscriptionRow | None,
                        hook: planning.ObservedHook | None) -> dict[str, Any]:
        connector_name = row.connector if row is not None else scope_connector(hook)
        connector = self.config.connectors.get(connector_name or "")
        if connector is None:
            return {"error": f"connector '{connector_name}' is no longer configured"}
        try:
            connection = self._connection(row.connection if row is not None
                                          else scope_connection(hook))
            target = delete_target(connector, row.operation if row is not None else None,
                                   row, hook)
            if target is None:
                return {"error": "unmanageable: no Location was returned and the connector "
                                 "declares no delete operation"}
            if target.url is not None:
                return self.upstream.preview_url("DELETE", target.url, connector, connection)
            return self.upstream.preview(connector, target.operation, connection,
                                         target.parameters)
        except (PermanentError, KeyError) as exc:
            return {"error": str(exc)}
