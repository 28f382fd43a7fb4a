"""The ``x-hookd-*`` OpenAPI extensions: parse and validate them, nothing else.

Power Automate's extensions say how to *subscribe* (``x-ms-trigger``,
``x-ms-notification-url``) but not what a production receiver needs: how deliveries are
signed, which header carries a delivery id or the event name, how to list hooks for drift
detection, how to delete one when the upstream sent no ``Location``, where the
per-subscription secret goes. Those facts live in ``x-hookd-*`` keys that any connector
may declare (docs/connectors.md, "Connector extensions"), at the spec's top level
(defaults for every trigger) or on a trigger operation (wins).

Each function takes the raw JSON value and a `Problems` list; it returns a typed value
or None and appends ``(sub-path, message, hint)`` for every mistake, so the loader can
report them all with ``file:line:col``. Cross-references (does the operation exist, is it
a DELETE) are checked by `hookd.connectors.loader`, which knows the operations.

>>> problems: Problems = []
>>> parse_verify({"kind": "hmac-sha256", "header": "X-Sig", "prefx": "sha256="}, problems)
Verification(kind='hmac-sha256', header='X-Sig', prefix='', encoding='hex', tolerance=300.0)
>>> problems
[(('prefx',), "unknown key 'prefx'", "did you mean 'prefix'?")]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from hookd.connectors.model import RequestPath, Verification
from hookd.connectors.schemes import SCHEMES
from hookd.diagnostics import did_you_mean

Problems = list[tuple[tuple[str | int, ...], str, str]]

VERIFY = "x-hookd-verify"
DELIVERY_ID = "x-hookd-delivery-id"
EVENT = "x-hookd-event"
LIST = "x-hookd-list"
DELETE = "x-hookd-delete"
UPDATE = "x-hookd-update"
SECRET = "x-hookd-secret"
REQUEST_TRIGGER = "x-hookd-request-trigger"
KNOWN = (VERIFY, DELIVERY_ID, EVENT, LIST, DELETE, UPDATE, SECRET, REQUEST_TRIGGER)

VERIFY_KINDS = tuple(SCHEMES)
REQUEST_LOCATIONS = ("body", "query", "header", "path", "formData")


@dataclass(frozen=True)
class ListSpec:
    operation: str
    url_field: str = "config.url"
    id_field: str = "id"
    items_field: str = ""


@dataclass(frozen=True)
class DeleteSpec:
    kind: Literal["operation", "location", "none"]
    operation: str | None = None
    id_param: str | None = None
    id_field: str | None = None


def unknown_extensions(node: dict[str, Any], problems: Problems) -> None:
    """Flag ``x-hookd-*`` keys that hookd does not know (typos would be silently ignored)."""
    for key in node:
        if isinstance(key, str) and key.startswith("x-hookd-") and key not in KNOWN:
            problems.append(((key,), f"unknown extension '{key}'", did_you_mean(key, KNOWN)))


def _fields(
    raw: Any,
    problems: Problems,
    types: dict[str, type | tuple[type, ...]],
    required: tuple[str, ...] = (),
) -> dict[str, Any] | None:
    """Check an object's keys and value types; return the good fields, None if not an object."""
    if not isinstance(raw, dict):
        problems.append(((), f"must be an object with keys {', '.join(types)}", ""))
        return None
    good: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in types:
            problems.append(((key,), f"unknown key '{key}'", did_you_mean(key, types)))
        elif isinstance(value, bool) and bool not in _as_tuple(types[key]) or not isinstance(value, types[key]):
            problems.append(((key,), f"'{key}' must be {_type_name(types[key])}", ""))
        else:
            good[key] = value
    for key in required:
        if key not in raw:
            problems.append(((), f"missing required key '{key}'", ""))
    return good


def _as_tuple(t: type | tuple[type, ...]) -> tuple[type, ...]:
    return t if isinstance(t, tuple) else (t,)


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "a number", float: "a number", bool: "true or false"}
    return " or ".join(dict.fromkeys(names.get(x, x.__name__) for x in _as_tuple(t)))


def _header(value: Any, problems: Problems, where: tuple[str | int, ...]) -> str | None:
    if not isinstance(value, str) or not value.strip() or any(c in value for c in " :\t\r\n"):
        problems.append((where, "must be an HTTP header name, e.g. 'X-Delivery-Id'", ""))
        return None
    return value


def parse_verify(raw: Any, problems: Problems) -> Verification | None:
    """``x-hookd-verify``: ``"none"`` or ``{kind, header, prefix, encoding, tolerance}``."""
    if raw == "none":
        return Verification("none")
    fields = _fields(
        raw,
        problems,
        {"kind": str, "header": str, "prefix": str, "encoding": str, "tolerance": (int, float)},
        required=("kind",),
    )
    if fields is None or "kind" not in fields:
        return None
    kind = fields["kind"]
    if kind not in VERIFY_KINDS:
        problems.append(
            (("kind",), f"unknown verification kind '{kind}' (one of {', '.join(VERIFY_KINDS)})",
             did_you_mean(kind, VERIFY_KINDS))
        )
        return None
    header = fields.get("header", "")
    if SCHEMES[kind].needs_header:
        if not header:
            problems.append(((), f"kind '{kind}' needs 'header' (where the upstream puts it)", ""))
            return None
        if _header(header, problems, ("header",)) is None:
            return None
    encoding = fields.get("encoding", "hex")
    if encoding not in ("hex", "base64"):
        problems.append((("encoding",), "encoding must be 'hex' or 'base64'", ""))
        return None
    tolerance = float(fields.get("tolerance", 300.0))
    if tolerance <= 0:
        problems.append((("tolerance",), "tolerance must be a positive number of seconds", ""))
        return None
    return Verification(
        kind=kind,
        header=header,
        prefix=fields.get("prefix", ""),
        encoding=cast(Literal["hex", "base64"], encoding),
        tolerance=tolerance,
    )


def parse_delivery_id(raw: Any, problems: Problems) -> str | None:
    """``x-hookd-delivery-id``: the header name, e.g. ``"X-GitHub-Delivery"``."""
    return _header(raw, problems, ())


def parse_event(raw: Any, problems: Problems) -> tuple[str | None, str | None]:
    """``x-hookd-event``: a header name, or ``{header, ping}`` → (header, ping event)."""
    if isinstance(raw, str):
        return _header(raw, problems, ()), None
    fields = _fields(raw, problems, {"header": str, "ping": str}, required=("header",))
    if fields is None or "header" not in fields:
        return None, None
    return _header(fields["header"], problems, ("header",)), fields.get("ping") or None


def parse_list(raw: Any, problems: Problems) -> ListSpec | None:
    """``x-hookd-list``: an operationId, or ``{operation, url_field, id_field, items_field}``."""
    if isinstance(raw, str) and raw:
        return ListSpec(raw)
    fields = _fields(
        raw,
        problems,
        {"operation": str, "url_field": str, "id_field": str, "items_field": str},
        required=("operation",),
    )
    if fields is None or not fields.get("operation"):
        return None
    for key in ("url_field", "id_field"):
        if key in fields and not fields[key]:
            problems.append(((key,), f"'{key}' must not be empty", ""))
            return None
    return ListSpec(**fields)


def parse_delete(raw: Any, problems: Problems) -> DeleteSpec | None:
    """``x-hookd-delete``: ``"none"``, ``"location"``, an operationId, or
    ``{operation, id_param, id_field}``."""
    if raw in ("none", "location"):
        return DeleteSpec(raw)
    if isinstance(raw, str) and raw:
        return DeleteSpec("operation", raw)
    fields = _fields(
        raw, problems, {"operation": str, "id_param": str, "id_field": str}, required=("operation",)
    )
    if fields is None or not fields.get("operation"):
        return None
    return DeleteSpec(
        "operation", fields["operation"], fields.get("id_param"), fields.get("id_field")
    )


@dataclass(frozen=True)
class UpdateSpec:
    operation: str
    id_param: str | None = None


def parse_update(raw: Any, problems: Problems) -> UpdateSpec | None:
    """``x-hookd-update``: an operationId, or ``{operation, id_param}``."""
    if isinstance(raw, str) and raw:
        return UpdateSpec(raw)
    fields = _fields(raw, problems, {"operation": str, "id_param": str}, required=("operation",))
    if fields is None or not fields.get("operation"):
        return None
    return UpdateSpec(fields["operation"], fields.get("id_param"))


def parse_secret_path(raw: Any, problems: Problems) -> RequestPath | None:
    """``x-hookd-secret`` on an operation or the top level: a dotted request path.

    ``"body.config.secret"``, ``"header.X-Secret"``; a path that does not start with a
    request location is inside the body (``"config.secret"``). (On a body-schema property
    the marker is ``true`` instead, like ``x-ms-notification-url``.)
    """
    if not isinstance(raw, str) or not raw.strip(".") or " " in raw:
        problems.append(((), "must be a dotted request path, e.g. 'body.config.secret'", ""))
        return None
    parts = tuple(raw.split("."))
    if parts[0] not in REQUEST_LOCATIONS:
        parts = ("body", *parts)
    if len(parts) < 2 or not all(parts):
        problems.append(((), f"'{raw}' names no field", ""))
        return None
    return parts


def parse_flag(raw: Any, problems: Problems) -> bool:
    """A ``true``/``false`` marker (``x-hookd-request-trigger``, ``x-hookd-secret`` on a property)."""
    if raw is True or raw == "true":
        return True
    if raw is False or raw == "false":
        return False
    problems.append(((), "must be true or false", ""))
    return False
