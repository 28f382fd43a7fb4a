"""A generic fake upstream driven by any connector spec: serves its trigger and delete paths.

Given a loaded `Connector`, `SpecFake` answers, on 127.0.0.1:

- each webhook trigger operation (its method and path under the spec's basePath): checks
  the credentials the spec declares (basic, API key in header or query, bearer), reads the
  callback URL where ``x-ms-notification-url`` puts it (nested body fields, query, header)
  — 400 when it is missing — and records a subscription. The answer carries the new id at
  the field the delete strategy reads it from, and a ``Location`` header only when the
  spec declares one (relative or absolute, `relative_location`);
- the delete operation the loader chose (child path, sibling path, shared prefix…): finds
  the subscription by the id parameter, 204, or 404 when unknown;
- ``DELETE`` on a Location it handed out.

It checks what a real upstream would: that hookd sends the callback URL at the right
place and deletes the right subscription with the right credentials.
"""

from __future__ import annotations

import base64
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hookd.connectors.model import Connector, Operation

CREDENTIALS = {"username": "fake-user", "password": "fake-pass", "api_key": "fake-key-123",
               "token": "fake-token-456"}


@dataclass
class Subscription:
    id: str
    operation: str
    callback_url: str
    path_params: dict[str, str]
    body: Any


@dataclass
class SpecFake:
    connector: Connector
    relative_location: bool = True
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    log: list[tuple[str, str, int]] = field(default_factory=list)  # method, path, status
    base_url: str = ""

    def __post_init__(self) -> None:
        self._ids = itertools.count(101)
        self._routes: list[tuple[str, re.Pattern[str], Operation, str]] = []
        base = "/" + self.connector.base_path.strip("/")
        base = "" if base == "/" else base
        self.base_path = base
        for op_id in self.connector.webhooks:
            op = self.connector.operations[op_id]
            self._routes.append((op.method, _pattern(base + self._path(op)), op, "create"))
            delete = self.connector.webhooks[op_id].delete
            if delete.kind == "operation" and delete.operation_id:
                dop = self.connector.operations[delete.operation_id]
                self._routes.append((dop.method, _pattern(base + self._path(dop)), dop, "delete"))
        self._routes.append(("DELETE", _pattern(base + "/__subscriptions/{id}"),
                             Operation("__delete", "DELETE", "/__subscriptions/{id}"), "location"))

    def _path(self, op: Operation) -> str:
        """The path the upstream really serves: a routerequesttoendpoint policy's."""
        routed = [p.value for p in self.connector.policies
                  if p.template == "routerequesttoendpoint" and p.applies_to(op.operation_id)]
        return routed[-1] if routed else op.path

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._handle,
                                       methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])

    async def _handle(self, request: Request) -> Response:
        response = await self._dispatch(request)
        self.log.append((request.method, request.url.path, response.status_code))
        return response

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        for method, pattern, op, role in self._routes:
            match = pattern.fullmatch(path)
            if method != request.method or match is None:
                continue
            if not self._authorized(request):
                return JSONResponse({"message": "unauthorized"}, 401)
            params = {k: v for k, v in match.groupdict().items()}
            if role == "create":
                return await self._create(request, op, _names(self._path(op), params))
            if role == "delete":
                delete = next(w.delete for w in self.connector.webhooks.values()
                              if w.delete.operation_id == op.operation_id)
                return self._delete(_names(self._path(op), params).get(delete.id_param or "", ""))
            return self._delete(params.get("p0", ""))
        return JSONResponse({"message": f"no route {request.method} {path}"}, 404)

    def _authorized(self, request: Request) -> bool:
        auth = self.connector.auth
        if auth.kind == "basic":
            raw = base64.b64encode(
                f"{CREDENTIALS['username']}:{CREDENTIALS['password']}".encode()).decode()
            return request.headers.get("authorization") == f"Basic {raw}"
        if auth.kind == "apikey":
            if auth.location == "query":
                return request.query_params.get(auth.name) == CREDENTIALS["api_key"]
            # A setheader policy may wrap it ("Bearer <key>", Calendly).
            return (request.headers.get(auth.name) or "").endswith(CREDENTIALS["api_key"])
        if auth.kind == "oauth2":
            return request.headers.get("authorization") == f"Bearer {CREDENTIALS['token']}"
        return True

    async def _create(self, request: Request, op: Operation, path_params: dict[str, str]) -> Response:
        webhook = self.connector.webhooks[op.operation_id]
        body = await request.json() if await request.body() else None
        where, *rest = webhook.notification_url
        if where == "body":
            url: Any = body
            for key in rest:
                url = url.get(key) if isinstance(url, dict) else None
        elif where == "query":
            url = request.query_params.get(rest[0])
        else:
            url = request.headers.get(rest[0])
        if not isinstance(url, str) or not url.startswith("http"):
            return JSONResponse({"message": "notification URL missing"}, 400)
        sub_id = str(next(self._ids))
        self.subscriptions[sub_id] = Subscription(sub_id, op.operation_id, url, path_params, body)
        answer: dict[str, Any] = {}
        _set(answer, webhook.delete.id_field or "id", sub_id)
        headers = {}
        if op.location_header:
            location = f"{self.base_path}/__subscriptions/{sub_id}"
            headers["Location"] = location if self.relative_location else self.base_url + location
        return JSONResponse(answer, 201, headers=headers)

    def _delete(self, sub_id: str) -> Response:
        if self.subscriptions.pop(sub_id, None) is None:
            return JSONResponse({"message": "not found"}, 404)
        return Response(status_code=204)


def _pattern(template: str) -> re.Pattern[str]:
    """``/a/{x}/b`` → a regex with positional groups p0, p1… (names may not be identifiers)."""
    out, n = "", 0
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{") and part.endswith("}"):
            out += f"(?P<p{n}>[^/]+)"
            n += 1
        else:
            out += re.escape(part)
    return re.compile(out.rstrip("/") + "/?")


def _names(template: str, groups: dict[str, str]) -> dict[str, str]:
    names = re.findall(r"\{([^}]+)\}", template)
    return {name: groups[f"p{i}"] for i, name in enumerate(names)}


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value
