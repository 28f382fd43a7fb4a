"""The connector model: what hookd knows about one OpenAPI 2.0 connector spec.

Built by `hookd.connectors.loader` from a Power Platform connector (``apiDefinition.swagger.json``
+ ``apiProperties.json``) or a single OpenAPI file. Everything here is resolved: body
schemas have no ``$ref`` left (a recursive one becomes ``{"x-hookd-recursive": ref}``),
the notification-URL property is a path, and the facts
hookd needs beyond the Power Automate extensions come from documented ``x-hookd-*``
extensions (see README, "Connector extensions"; docs/connectors.md):

- ``x-hookd-verify``      how notifications are signed (`Verification`)
- ``x-hookd-delivery-id`` header carrying a unique delivery id (dedup)
- ``x-hookd-event``       header carrying the event name, and the ping event
- ``x-hookd-list``        operation listing existing hooks (drift detection)
- ``x-hookd-delete``      operation deleting a hook when ``Location`` is missing
- ``x-hookd-update``      operation setting a drifted hook's settings back
- ``x-hookd-secret``      where the generated per-subscription secret goes in the body
- ``x-hookd-request-trigger`` the trigger registers nothing upstream (`http`)

A path into a request is a tuple whose first item is where it lives:
``("body", "config", "url")`` or ``("query", "callbackUrl")`` or ``("header", "X-Cb")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hookd.connectors.auth import Credential
from hookd.connectors.oauth import OAuthSettings
from hookd.connectors.policies import Policy

Schema = Mapping[str, Any]  # a JSON Schema (Swagger 2.0 flavour), $ref resolved
RequestPath = tuple[str, ...]


@dataclass(frozen=True)
class Parameter:
    name: str
    location: Literal["path", "query", "header", "body", "formData"]
    required: bool = False
    type: str | None = None  # "string", "integer", …; None for body
    default: Any = None
    schema: Schema | None = None  # for body parameters
    description: str = ""
    visibility: str | None = None  # x-ms-visibility: important/advanced/internal


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str  # upper case
    path: str  # e.g. "/repos/{owner}/{repo}/hooks"
    summary: str = ""
    parameters: tuple[Parameter, ...] = ()
    body_schema: Schema | None = None
    trigger: Literal["single", "batch"] | None = None  # x-ms-trigger
    visibility: str | None = None
    responses: Mapping[str, Schema] = field(default_factory=dict)  # status → schema
    location_header: bool = False  # a response declares a Location header
    produces: tuple[str, ...] = ()  # the operation's own ``produces`` (Accept)

    @property
    def is_trigger(self) -> bool:
        return self.trigger is not None

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)


@dataclass(frozen=True)
class DeleteStrategy:
    """How to delete a subscription when the upstream sent no ``Location``.

    `kind`:
      - ``"location"``  only the Location header (no fallback operation known)
      - ``"operation"`` call `operation_id`, filling the parameter `id_param` with the
        upstream id read from the create response at `id_field`
      - ``"none"``      cannot delete without a Location: reported as unmanageable
    `source` says how it was chosen: ``"x-hookd-delete"``, ``"child-path"``,
    ``"sibling"``, ``"shared-prefix"`` or ``""`` (also ``"same-path"``, ``"hook-like"``:
    see `hookd.connectors.refs.match_delete`).
    """

    kind: Literal["location", "operation", "none"]
    operation_id: str | None = None
    id_param: str | None = None
    id_field: str = "id"
    source: str = ""


@dataclass(frozen=True)
class UpdateStrategy:
    """How to set a drifted hook's settings back (``x-hookd-update``): call
    `operation_id` with the trigger's body and parameters, `id_param` = the upstream id."""

    operation_id: str
    id_param: str


@dataclass(frozen=True)
class ListStrategy:
    """How to observe existing hooks upstream (``x-hookd-list``).

    `url_field` is the dotted path of the callback URL inside each listed item
    (GitHub: ``config.url``), `id_field` the upstream id (``id``). Pagination follows
    RFC 8288 ``Link: <…>; rel="next"`` headers.
    """

    operation_id: str
    url_field: str = "config.url"
    id_field: str = "id"
    items_field: str = ""  # "" = the response is the array itself


@dataclass(frozen=True)
class Verification:
    """How a notification proves it came from the upstream (``x-hookd-verify``).

    kinds: ``hmac-sha256`` (HMAC of the raw body in `header`, after `prefix`, hex or
    base64 `encoding`), ``token`` (the secret itself in `header`), ``standard-webhooks``
    (webhook-id/-timestamp/-signature), ``none`` (the unguessable URL is the credential).
    """

    kind: str = "none"  # a key of hookd.connectors.schemes.SCHEMES
    header: str = ""
    prefix: str = ""
    encoding: Literal["hex", "base64"] = "hex"
    tolerance: float = 300.0  # standard-webhooks timestamp tolerance, seconds


@dataclass(frozen=True)
class WebhookTrigger:
    """A trigger that subscribes by sending hookd's callback URL to the upstream."""

    operation_id: str
    notification_url: RequestPath  # e.g. ("body", "config", "url")
    notification_schema: Schema | None = None  # x-ms-notification-content schema
    secret_path: RequestPath | None = None  # where the generated secret goes (x-hookd-secret)
    delete: DeleteStrategy = DeleteStrategy("location")
    list: ListStrategy | None = None
    update: UpdateStrategy | None = None
    batch: bool = False
    # Effective x-hookd-verify/-delivery-id/-event for this trigger: the operation's own
    # declaration, else the spec's top level (the same as the Connector's fields).
    verification: Verification = Verification()
    delivery_id_header: str | None = None
    event_header: str | None = None
    ping_event: str | None = None


@dataclass(frozen=True)
class ConnectionParameter:
    """One entry of apiProperties.json ``connectionParameters``."""

    name: str
    type: str  # "string", "securestring", "oauthSetting", …
    required: bool = False
    description: str = ""

    @property
    def secret(self) -> bool:
        return self.type in ("securestring", "secureobject", "oauthSetting")


@dataclass(frozen=True)
class Auth:
    """How requests to the upstream authenticate (from ``securityDefinitions``).

    kind ``oauth2`` is recognised and, for now, supported with a static bearer token
    taken from the connection parameter `token`.
    """

    kind: Literal["none", "basic", "apikey", "oauth2"] = "none"
    name: str = ""  # apikey: header or query parameter name
    location: Literal["header", "query", ""] = ""
    # The connection parameter holding the credential: apikey → the securestring one of
    # apiProperties.json (else "api_key"), oauth2 → "token"; basic uses username/password.
    parameter: str = ""


@dataclass(frozen=True)
class ParameterSet:
    """One way to connect: apiProperties.json ``connectionParameters`` (name ``""``) or
    one entry of ``connectionParameterSets``, and the credentials it sends
    (`hookd.connectors.auth`)."""

    name: str
    parameters: Mapping[str, ConnectionParameter] = field(default_factory=dict)
    credentials: tuple[Credential, ...] = ()
    title: str = ""


@dataclass(frozen=True)
class Connector:
    name: str  # directory or file stem, as flows refer to it
    title: str = ""
    source: Path | None = None
    builtin: bool = False
    scheme: str = "https"
    host: str = ""
    base_path: str = "/"
    operations: Mapping[str, Operation] = field(default_factory=dict)
    webhooks: Mapping[str, WebhookTrigger] = field(default_factory=dict)  # by operationId
    polling: tuple[str, ...] = ()  # operationIds of polling triggers (not yet supported)
    # The first parameter set's main credential (kept for displays and simple models);
    # requests use `parameter_sets`, or this when there are none.
    auth: Auth = Auth()
    connection_parameters: Mapping[str, ConnectionParameter] = field(default_factory=dict)
    parameter_sets: tuple[ParameterSet, ...] = ()  # the first is the default
    policies: tuple[Policy, ...] = ()  # apiProperties.json policyTemplateInstances, in order
    produces: tuple[str, ...] = ()  # the spec's ``produces``
    verification: Verification = Verification()
    delivery_id_header: str | None = None
    event_header: str | None = None
    ping_event: str | None = None
    # True for the `http` request trigger: no upstream registration at all.
    request_trigger: bool = False
    # apiProperties.json oAuthSettings, per parameter set (`hookd.connectors.oauth`).
    oauth: tuple[OAuthSettings, ...] = ()

    @property
    def base_url(self) -> str:
        base = self.base_path if self.base_path.startswith("/") else "/" + self.base_path
        return f"{self.scheme}://{self.host}{base.rstrip('/')}" if self.host else ""

    def trigger_kind(self, operation_id: str) -> Literal["webhook", "polling", "request"] | None:
        if operation_id in self.webhooks:
            return "webhook"
        if operation_id in self.polling:
            return "polling"
        op = self.operations.get(operation_id)
        if op is not None and op.is_trigger and self.request_trigger:
            return "request"
        return None
