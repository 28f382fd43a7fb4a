"""Where a hook is deleted: pure decisions over the connector, the row and the listed hook.

Deletes use the ``Location`` the upstream returned, else the connector's delete
operation with the upstream id, else the hook's API URL from the list; without any of
these the row becomes ``orphaned`` and is reported as "unmanageable: cannot delete".
Kept apart from the executor (which sends the request) and the preview (which shows it)
because both must choose the same target, and a pure function is testable without an
upstream.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hookd.connectors.model import Connector
from hookd.store.records import SubscriptionRow
from hookd.subscriptions import plan as planning


@dataclass(frozen=True)
class DeleteTarget:
    """Where a hook is deleted: a URL the upstream gave (`url`, with the `origin` request
    whose answer it was), else the connector's delete `operation` with `parameters`."""

    url: str | None = None
    origin: tuple[str, Mapping[str, Any]] | None = None
    operation: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


def delete_target(connector: Connector, operation: str | None, row: SubscriptionRow | None,
                  hook: planning.ObservedHook | None) -> DeleteTarget | None:
    """The recorded Location, else the delete operation with the upstream id, else the
    listed hook's own URL; None when there is no way to delete it."""
    if row is not None and row.location:
        return DeleteTarget(row.location, (row.operation, row.parameters) if row.operation else None)
    upstream_id = (row.upstream_id if row is not None else None) or (
        hook.upstream_id if hook is not None else None)
    webhook = connector.webhooks.get(operation) if operation else None
    if webhook is None and hook is not None:
        webhook = next(iter(connector.webhooks.values()), None)
    strategy = webhook.delete if webhook is not None else None
    if upstream_id and strategy is not None and strategy.kind == "operation" \
            and strategy.operation_id and strategy.id_param:
        params: dict[str, Any] = dict(row.parameters) if row is not None else {}
        if hook is not None and not params:
            params = dict(json.loads(hook.scope)[2])
        params[strategy.id_param] = upstream_id
        create_op = connector.operations.get(operation or "")
        delete_op = connector.operations[strategy.operation_id]
        if create_op is not None:
            params = align_path_params(create_op.path, delete_op.path, params)
        return DeleteTarget(operation=strategy.operation_id, parameters=params)
    if hook is not None and hook.location:
        return DeleteTarget(hook.location)
    return None


def align_path_params(create_path: str, delete_path: str,
                      params: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the delete path's parameters that the create path names differently.

    Real specs rename them: Survey123 creates under ``/api/survey/{surveyId}/webhook/add``
    and deletes ``/api/survey/{surveyItemId}/webhook/{webhookId}``; TrueDialog has
    ``{AccountId}`` and ``{accountId}``. A parameter missing by name is taken from the
    create path's parameter in the same segment, else one equal ignoring case.

    >>> align_path_params("/s/{surveyId}/webhook/add", "/s/{surveyItemId}/webhook/{id}",
    ...                   {"surveyId": "S1", "id": "7"})
    {'surveyId': 'S1', 'id': '7', 'surveyItemId': 'S1'}
    """
    out = dict(params)
    create = create_path.strip("/").split("/")
    lower = {k.lower(): k for k in params}
    for i, segment in enumerate(delete_path.strip("/").split("/")):
        if not (segment.startswith("{") and segment.endswith("}")):
            continue
        name = segment[1:-1]
        if name in out:
            continue
        if i < len(create) and create[i].startswith("{") and create[i][1:-1] in params:
            out[name] = params[create[i][1:-1]]
        elif name.lower() in lower:
            out[name] = params[lower[name.lower()]]
    return out



def no_delete_request(connector: Connector, operation: str | None,
                       row: SubscriptionRow | None, hook: planning.ObservedHook | None) -> str:
    """The real reason no delete request could be built (the operator acts on it)."""
    upstream_id = (row.upstream_id if row is not None else None) or (
        hook.upstream_id if hook is not None else None)
    webhook = connector.webhooks.get(operation) if operation else None
    strategy = webhook.delete if webhook is not None else None
    has_operation = strategy is not None and strategy.kind == "operation"
    if not upstream_id and has_operation:
        return ("no Location and no upstream id were recorded for it, so the connector's "
                "delete operation has nothing to name (the create may never have "
                "completed); if no hook is left upstream, `hookd subscriptions forget ID`")
    return (f"no Location was returned and connector '{connector.name}' declares no delete "
            "operation; delete the hook upstream by hand, then `hookd subscriptions forget ID`")


def scope_connector(hook: planning.ObservedHook | None) -> str | None:
    return str(json.loads(hook.scope)[0]) if hook is not None else None


def scope_connection(hook: planning.ObservedHook | None) -> str | None:
    if hook is None:
        return None
    value = json.loads(hook.scope)[1]
    return None if value is None else str(value)
