"""Power Platform policy templates: compiled from apiProperties.json, applied to a request.

A Power Platform connector changes its requests with ``policyTemplateInstances`` in
apiProperties.json, and real connectors rely on them: the tenant's host
(``dynamichosturl``), the credential header (``setheader``), a query parameter
(``setqueryparameter``), the real path and method (``routerequesttoendpoint``), a body
property (``setproperty``). hookd applies them as Power Platform does (Microsoft's
"Policy templates" pages define the fields):

- a template id is matched ignoring case (``dynamicHostUrl`` = ``dynamichosturl``);
- ``x-ms-apimTemplate-operationName`` lists the operations a template changes; absent or
  empty means every operation;
- templates run in the order listed, each on the request as the ones before left it;
- values are text with expressions in them: ``@connectionParameters('name'[, 'default'])``
  (OAuth sub-parameters are names like ``token:TenantId``; a name matches ignoring case
  when nothing matches exactly), ``@queryParameters('name')``,
  ``@headers('name'[, 'default'])`` (also ``@header``); `setproperty` values may embed
  ``{@body().path}``;
- `dynamichosturl`'s result replaces the whole backend URL (scheme, host and basePath):
  the operation's path is appended to it; `routerequesttoendpoint`'s ``newPath`` replaces
  the operation's path under that backend URL (``{param}`` are the operation's
  parameters) and its ``httpMethod`` the method unless it is ``@Request.OriginalHTTPMethod``;
- `setheader` and `setqueryparameter` act on ``existsAction`` ``override`` (the default),
  ``skip`` or ``append``; only the ``Request`` section changes what hookd sends.

What hookd does not apply (other templates, response and failure sections) compiles to a
`Policy` with ``applied=False`` and a reason, so ``hookd check`` can warn and
``hookd connectors NAME`` can list it. Pure code: no I/O, table-tested.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote

Problems = list[tuple[tuple[str | int, ...], str, str]]  # (sub-path, message, hint)

DYNAMIC_HOST = "dynamichosturl"
SET_HEADER = "setheader"
SET_QUERY = "setqueryparameter"
ROUTE = "routerequesttoendpoint"
SET_PROPERTY = "setproperty"
APPLIED = (DYNAMIC_HOST, SET_HEADER, SET_QUERY, ROUTE, SET_PROPERTY)

PARAM = "x-ms-apimTemplateParameter."
OPERATIONS = "x-ms-apimTemplate-operationName"
SECTION = "x-ms-apimTemplate-policySection"
ORIGINAL_METHOD = "@request.originalhttpmethod"
EXISTS_ACTIONS = ("override", "skip", "append")

# @connectionParameters('a'), @queryParameters('a'), @headers('a', 'default'). Quotes may
# be typographic (Microsoft's own pages show ‘…’).
_Q = "['\u2018\u2019]"
_EXPRESSION = re.compile(
    r"@(?P<fn>connectionParameters|queryParameters|headers|header)\(\s*"
    rf"{_Q}(?P<name>[^'\u2018\u2019]*){_Q}\s*(?:,\s*{_Q}(?P<default>[^'\u2018\u2019]*){_Q}\s*)?\)",
    re.IGNORECASE,
)
_BODY_REF = re.compile(r"\{\s*@body\(\)(?P<path>(?:\.[^.{}\s]+)*)\s*\}", re.IGNORECASE)
_BODY_PATH = re.compile(r"^@body\(\)(?P<path>(?:\.[^.\s]+)*)$", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header or query name


class PolicyError(ValueError):
    """A policy cannot build the request (e.g. a path parameter nothing fills)."""


@dataclass(frozen=True)
class Policy:
    """One compiled ``policyTemplateInstances`` entry.

    `value` is the template's main text: the URL template (dynamichosturl), the header or
    query value (setheader, setqueryparameter), the new path (routerequesttoendpoint) or
    the property value (setproperty).
    """

    template: str  # lower-case template id
    title: str = ""
    operations: tuple[str, ...] = ()  # () = every operation
    index: int = 0  # position in policyTemplateInstances
    applied: bool = True
    reason: str = ""  # why hookd does not apply it
    name: str = ""  # setheader / setqueryparameter
    value: str = ""
    exists_action: str = "override"
    method: str = ""  # routerequesttoendpoint: "" keeps the operation's method
    parent: tuple[str, ...] = ()  # setproperty: path of the parent object below the body
    sub_path: tuple[str, ...] = ()  # setproperty: the property, below the parent

    def applies_to(self, operation_id: str | None) -> bool:
        """Does it change `operation_id`'s requests? None = a URL the upstream handed out
        (Location, next link): only templates for every operation, and only those that do
        not rewrite the URL."""
        if operation_id is None:
            return not self.operations and self.template in (SET_HEADER, SET_QUERY)
        return not self.operations or operation_id.lower() in (o.lower() for o in self.operations)

    def describe(self) -> str:
        """``setheader Authorization = Bearer @connectionParameters('api_key')``."""
        if self.template in (SET_HEADER, SET_QUERY):
            action = "" if self.exists_action == "override" else f" ({self.exists_action})"
            return f"{self.template} {self.name} = {self.value}{action}"
        if self.template == DYNAMIC_HOST:
            return f"{self.template} {self.value}"
        if self.template == ROUTE:
            return f"{self.template} {self.method + ' ' if self.method else ''}{self.value}"
        if self.template == SET_PROPERTY:
            return f"{self.template} {'.'.join(('body', *self.parent, *self.sub_path))} = {self.value}"
        return f"{self.template}{' ' + repr(self.title) if self.title else ''}"

    def connection_parameters(self) -> dict[str, bool]:
        """The connection parameters its expressions read → whether a default is given."""
        out: dict[str, bool] = {}
        for m in _EXPRESSION.finditer(self.value):
            if m["fn"].lower() == "connectionparameters":
                name = m["name"]
                out[name] = out.get(name, False) or m["default"] is not None
        return out


# --------------------------------------------------------------------------- compiling


def compile_policies(raw: Any) -> tuple[tuple[Policy, ...], Problems]:
    """``properties.policyTemplateInstances`` → policies; problems point below that key."""
    problems: Problems = []
    if raw is None:
        return (), problems
    if not isinstance(raw, list):
        problems.append(((), "policyTemplateInstances must be a list", ""))
        return (), problems
    out: list[Policy] = []
    for index, entry in enumerate(raw):
        policy = _compile_one(index, entry, problems)
        if policy is not None:
            out.append(policy)
    return tuple(out), problems


def _compile_one(index: int, entry: Any, problems: Problems) -> Policy | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("templateId"), str):
        problems.append(((index,), "a policy template instance needs a 'templateId'", ""))
        return None
    template = entry["templateId"].strip().lower()
    raw_params = entry.get("parameters")
    params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
    title = str(entry.get("title") or "")
    ops_raw = params.get(OPERATIONS)
    if isinstance(ops_raw, str):
        ops_raw = [ops_raw]
    operations = tuple(o for o in ops_raw or () if isinstance(o, str) and o)
    base = Policy(template, title, operations, index)

    def text(key: str) -> str:
        value = params.get(PARAM + key)
        return value if isinstance(value, str) else "" if value is None else json.dumps(value)

    def missing(key: str) -> Policy:
        problems.append(((index, "parameters", PARAM + key),
                         f"{template}: '{PARAM + key}' is missing, so hookd does not apply it", ""))
        return _not_applied(base, f"its '{PARAM + key}' is missing")

    section = str(params.get(SECTION) or "Request").strip().lower()
    if template not in APPLIED:
        return _not_applied(base, "hookd does not implement this template")
    if template in (SET_HEADER, SET_PROPERTY) and section != "request":
        return _not_applied(base, f"it runs on the {section} section; hookd applies request "
                                  "policies only")
    if template == DYNAMIC_HOST:
        url = text("urlTemplate").strip()
        return replace(base, value=url) if url else missing("urlTemplate")
    if template in (SET_HEADER, SET_QUERY):
        name = text("name").strip()
        if not name:
            return missing("name")
        if template == SET_HEADER and not _TOKEN.match(name):
            problems.append(((index, "parameters", PARAM + "name"),
                             f"setheader: '{name}' is not a valid header name, so hookd does "
                             "not apply it", ""))
            return _not_applied(base, f"'{name}' is not a valid header name")
        action = (text("existsAction").strip().lower() or "override")
        if action not in EXISTS_ACTIONS:
            problems.append(((index, "parameters", PARAM + "existsAction"),
                             f"{template}: existsAction '{action}' is not one of "
                             f"{', '.join(EXISTS_ACTIONS)}; treated as override", ""))
            action = "override"
        return replace(base, name=name, value=text("value"), exists_action=action)
    if template == ROUTE:
        path = text("newPath").strip()
        if not path:
            return missing("newPath")
        method = text("httpMethod").strip()
        method = "" if not method or method.lower() == ORIGINAL_METHOD else method.upper()
        return replace(base, value=path, method=method)
    # setproperty
    parent_text = text("newPropertyParentPathTemplate").strip() or "@body()"
    parent = _BODY_PATH.match(parent_text)
    sub = text("newPropertySubPathTemplate").strip()
    if parent is None:
        problems.append(((index, "parameters", PARAM + "newPropertyParentPathTemplate"),
                         f"setproperty: parent path '{parent_text}' is not @body() or "
                         "@body().a.b; hookd does not apply it", ""))
        return _not_applied(base, "its parent path is not a @body() path")
    if not sub:
        return missing("newPropertySubPathTemplate")
    return replace(base, parent=_dotted(parent["path"]), sub_path=tuple(sub.split(".")),
                   value=text("propertyValuePathTemplate"))


def _not_applied(policy: Policy, reason: str) -> Policy:
    return replace(policy, applied=False, reason=reason)


def _dotted(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split(".") if p)


def for_operation(policies: Iterable[Policy], operation_id: str | None) -> list[Policy]:
    """The policies that change `operation_id`'s requests, applied ones and not, in order."""
    return [p for p in policies if p.applies_to(operation_id)]


# --------------------------------------------------------------------------- expressions


def evaluate(text: str, *, connection: Callable[[str], str | None],
             query: Callable[[str], str | None], header: Callable[[str], str | None]) -> str:
    """`text` with every expression replaced by its value ("" or the default when unset)."""

    def one(m: re.Match[str]) -> str:
        fn = m["fn"].lower()
        lookup = connection if fn == "connectionparameters" else query if fn == "queryparameters" \
            else header
        value = lookup(m["name"])
        if value is None or value == "":
            return m["default"] or ""
        return value

    return _EXPRESSION.sub(one, text)


def references(text: str) -> list[tuple[str, str, str | None]]:
    """``[(function, name, default)]`` of the expressions in `text` (function lower-case,
    ``header`` for both spellings)."""
    out = []
    for m in _EXPRESSION.finditer(text):
        fn = m["fn"].lower()
        out.append(("header" if fn.startswith("header") else fn, m["name"], m["default"]))
    return out


# --------------------------------------------------------------------------- applying


@dataclass
class Draft:
    """A request being built, before it becomes an ``httpx.Request``.

    `path` is a template: ``{name}`` are filled from `path_params` (URL-quoted) when the
    URL is made, so a routed path can use the operation's parameters.
    """

    method: str
    base_url: str  # scheme://host/basePath, no trailing slash
    path: str
    path_params: dict[str, str] = field(default_factory=dict)
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None  # JSON value; None = no JSON body
    form: list[tuple[str, str]] = field(default_factory=list)  # formData parameters
    applied: list[str] = field(default_factory=list)  # Policy.describe() of each applied
    absolute: bool = False  # `path` is a whole URL given by the upstream (Location, next)

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)

    def set_header(self, name: str, value: str, action: str = "override") -> None:
        existing = self.header(name)
        if existing is not None and action == "skip":
            return
        if existing is not None and action == "append":
            value = f"{existing},{value}"
        low = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != low] + [(name, value)]

    def query_value(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)

    def set_query(self, name: str, value: str, action: str = "override") -> None:
        exists = any(k == name for k, _ in self.query)
        if exists and action == "skip":
            return
        if exists and action == "override":
            self.query = [(k, v) for k, v in self.query if k != name]
        self.query.append((name, value))

    def url(self) -> str:
        """The URL without its query string (the query travels in `query`)."""
        if self.absolute:
            return self.path

        def fill(m: re.Match[str]) -> str:
            name = m[1]
            if name in self.path_params:
                return quote(self.path_params[name], safe="")
            value = self.query_value(name)
            if value is not None:
                return quote(value, safe="")
            raise PolicyError(f"nothing fills '{{{name}}}' in the path {self.path}")

        path = _PLACEHOLDER.sub(fill, self.path)
        if not path.startswith("/"):
            path = "/" + path
        return self.base_url.rstrip("/") + path


def path_segment(value: str, what: str) -> str:
    """`value` if it may fill one path segment; `PolicyError` for ``.``, ``..`` and empty.

    A ``/`` in a value is encoded (`Draft.url`), but ``..`` as a whole segment is not
    something encoding can neutralise: URL normalisation (httpx, proxies, the upstream)
    removes it with the segment before, so ``owner=".."`` and ``repo=".."`` turned
    ``/repos/{owner}/{repo}/issues/1/comments`` into ``/issues/1/comments``, with the
    connection's token. Encoded forms (``%2e%2E``, ``%252e``) are refused too, and an
    empty value (``//`` changes the path as well).

    >>> path_segment("hookd/cli", "p")
    'hookd/cli'
    >>> path_segment("%2E%2e", "repo")
    Traceback (most recent call last):
    ...
    hookd.connectors.policies.PolicyError: repo: '%2E%2e' is not allowed as a path segment
    """
    decoded, previous = value, None
    while decoded != previous:  # %252e%252e → %2e%2e → ..
        previous, decoded = decoded, unquote(decoded)
    if decoded.strip() in ("", ".", ".."):
        raise PolicyError(f"{what}: {value!r} is not allowed as a path segment")
    return value


def apply(policies: Sequence[Policy], operation_id: str | None, draft: Draft,
          connection: Mapping[str, str]) -> Draft:
    """Apply, in order, the policies that change `operation_id` (see `Policy.applies_to`)
    to `draft`, in place; returns it. `connection` holds the connection's parameter
    values (secrets resolved) by name — matched ignoring case when no exact name matches
    (Impexium's policy reads 'HostUrl', its parameter is 'hostUrl')."""
    folded = {k.lower(): v for k, v in connection.items()}

    def lookup(name: str) -> str | None:
        value = connection.get(name)
        return value if value is not None else folded.get(name.lower())

    for policy in policies:
        if not policy.applied or not policy.applies_to(operation_id):
            continue
        if draft.absolute and policy.template not in (SET_HEADER, SET_QUERY):
            continue

        def ev(text: str) -> str:
            return evaluate(text, connection=lookup, query=draft.query_value,
                            header=draft.header)

        if policy.template == DYNAMIC_HOST:
            draft.base_url = host_url(ev(policy.value))
        elif policy.template == SET_HEADER:
            draft.set_header(policy.name, ev(policy.value), policy.exists_action)
        elif policy.template == SET_QUERY:
            draft.set_query(policy.name, ev(policy.value), policy.exists_action)
        elif policy.template == ROUTE:
            draft.path = ev(policy.value)
            if policy.method:
                draft.method = policy.method
        elif policy.template == SET_PROPERTY:
            draft.body = set_property(draft.body, policy)
        draft.applied.append(policy.describe())
    return draft


def host_url(value: str) -> str:
    """A dynamichosturl result as a base URL: ``https://`` when the value has no scheme
    (a connection parameter holding ``contoso.example.com``), no trailing slash."""
    value = value.strip()
    if "://" not in value:
        value = "https://" + value.lstrip("/")
    # A parameter given as a whole URL inside a template that has its own scheme
    # ("https://@connectionParameters('domain')" with "https://x.example"), or ending in
    # "/" before the template's own path: what the operator meant, not a broken URL.
    value = re.sub(r"^(https?://)+(https?://)", r"\2", value, flags=re.IGNORECASE)
    scheme, _, rest = value.partition("://")
    return f"{scheme}://{re.sub('/{2,}', '/', rest)}".rstrip("/")


def set_property(body: Any, policy: Policy) -> Any:
    """`body` with `policy`'s property set below its parent (on each item when the parent
    is a list); parents are created when absent."""
    root = body if isinstance(body, dict | list) else {}
    parent: Any = root
    for key in policy.parent:
        if isinstance(parent, dict):
            parent = parent.setdefault(key, {})
        else:
            break
    targets = parent if isinstance(parent, list) else [parent]
    for target in targets:
        if not isinstance(target, dict):
            continue
        node = target
        for key in policy.sub_path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node.get(key), dict | None) else {}
        node[policy.sub_path[-1]] = property_value(policy.value, root)
    return root


def property_value(template: str, body: Any) -> Any:
    """A setproperty value: a JSON array or object literal as that value, one
    ``{@body().x}`` alone as the value it points at, else text with them filled in."""
    stripped = template.strip()
    if stripped[:1] in ("[", "{") and not _BODY_REF.fullmatch(stripped):
        try:
            return json.loads(stripped)
        except ValueError:
            pass
    whole = _BODY_REF.fullmatch(stripped)
    if whole:
        return _dig(body, _dotted(whole["path"]))

    def one(m: re.Match[str]) -> str:
        value = _dig(body, _dotted(m["path"]))
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value)

    return _BODY_REF.sub(one, template)


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data
