"""Webhook triggers: which operations register a callback URL, and where it goes.

The callback-URL property (``x-ms-notification-url``) is found by walking the trigger's
*own* request — its parameters and body schema through ``$ref`` and ``allOf`` — never by
property name; the notification schema (``x-ms-notification-content``) is read from the
path item and the operation. Its own module because this is what makes an operation a
webhook (the rest of the builder reads any operation alike).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hookd.connectors import extensions as ext
from hookd.connectors import refs as swagger
from hookd.connectors.model import (
    Operation,
    Parameter,
    RequestPath,
    Schema,
    Verification,
    WebhookTrigger,
)
from hookd.connectors.reader import KeyPath
from hookd.connectors.settings import Settings
from hookd.connectors.strategies import Strategies

NOTIFICATION_URL = "x-ms-notification-url"
NOTIFICATION_CONTENT = "x-ms-notification-content"


class Triggers(Strategies):
    """The x-hookd-* settings and the `WebhookTrigger` of each trigger operation."""

    def _hookd_settings(self, node: dict[str, Any], where: KeyPath) -> Settings:
        """The x-hookd-* keys of the top level or one operation, validated."""
        settings = Settings()
        problems: ext.Problems = []
        parsers: list[tuple[str, Callable[[Any], None]]] = [
            (ext.VERIFY, lambda v: setattr(settings, "verification", ext.parse_verify(v, problems))),
            (ext.DELIVERY_ID, lambda v: setattr(settings, "delivery_id", ext.parse_delivery_id(v, problems))),
            (ext.EVENT, lambda v: settings.set_event(*ext.parse_event(v, problems))),
            (ext.LIST, lambda v: setattr(settings, "list", ext.parse_list(v, problems))),
            (ext.DELETE, lambda v: setattr(settings, "delete", ext.parse_delete(v, problems))),
            (ext.UPDATE, lambda v: setattr(settings, "update", ext.parse_update(v, problems))),
            (ext.SECRET, lambda v: setattr(settings, "secret", ext.parse_secret_path(v, problems))),
        ]
        for key, parse in parsers:
            if key in node:
                settings.origin[key] = (*where, key)
                parse(node[key])
                self.report(problems, (*where, key))
        return settings

    def _unused_settings(self, raw: dict[str, Any], where: KeyPath, why: str) -> None:
        for key in ext.KNOWN:
            if key in raw and key != ext.REQUEST_TRIGGER:
                self.diag("warning", f"{key} has no effect on this operation: {why}", (*where, key))

    def _webhook(self, op: Operation, where: KeyPath, raw: dict[str, Any], path_item: dict[str, Any],
                 operations: dict[str, Operation], top: Settings) -> WebhookTrigger | None:
        urls: list[RequestPath] = [
            (p.location, p.name) for p in op.parameters
            if p.location != "body" and swagger.truthy(self._raw_param_flag(raw, path_item, p, NOTIFICATION_URL))
        ]
        urls += swagger.marked_paths(op.body_schema, NOTIFICATION_URL)
        if not urls:
            return None
        if len(urls) > 1:
            self.diag("warning", f"{len(urls)} properties are marked {NOTIFICATION_URL}; hookd "
                      f"fills the first, {'.'.join(urls[0])}", where)
        if any(part == "0" for part in urls[0][1:]):
            self.diag("warning", f"the notification URL is inside an array "
                      f"({'.'.join(urls[0])}): hookd puts it in the first item", where)
        mine = self._hookd_settings(raw, where)
        settings = mine.over(top)

        secret = settings.secret
        if secret is None:
            marked = swagger.marked_paths(op.body_schema, ext.SECRET)
            secret = marked[0] if marked else None

        return WebhookTrigger(
            operation_id=op.operation_id,
            notification_url=urls[0],
            notification_schema=self._notification_schema(raw, path_item, where),
            secret_path=secret,
            delete=self._delete(op, where, settings, operations),
            list=self._list(where, settings, operations),
            update=self._update(op, settings, operations),
            batch=op.trigger == "batch",
            verification=settings.verification or Verification(),
            delivery_id_header=settings.delivery_id,
            event_header=settings.event_header,
            ping_event=settings.ping_event,
        )

    def _raw_param_flag(self, raw: dict[str, Any], path_item: dict[str, Any], param: Parameter,
                        flag: str) -> Any:
        for node in [*(path_item.get("parameters") or ()), *(raw.get("parameters") or ())]:
            node = self.resolver.resolve(node)
            if isinstance(node, dict) and node.get("name") == param.name and node.get("in") == param.location:
                return node.get(flag)
        return None

    def _notification_schema(self, raw: dict[str, Any], path_item: dict[str, Any],
                             where: KeyPath) -> Schema | None:
        content = raw.get(NOTIFICATION_CONTENT, path_item.get(NOTIFICATION_CONTENT))
        if content is None:
            return None
        content = self.resolver.resolve(content)
        if not isinstance(content, dict):
            self.diag("warning", f"{NOTIFICATION_CONTENT} must be an object with 'schema'",
                      (*where[:2], NOTIFICATION_CONTENT))
            return None
        schema = content.get("schema")
        if isinstance(schema, dict):
            return schema
        # Some files put the schema itself there, without the {"schema": …} wrapper.
        return content if ("type" in content or "properties" in content) else None
