"""Every webhook connector of the corpus, used unchanged, through ``hookd apply``.

For each connector: a config directory with the connector, a connection giving every
parameter of its first parameter set, and a flow on its first webhook trigger; ``hookd
apply`` runs in-process with its HTTP rerouted (Host kept) to one generic fake upstream
on 127.0.0.1 (`tests.fakes.corpus_upstream`); then the flow is removed and ``hookd
apply`` runs again. The requests are compared with what the connector's own files say
Power Platform sends — computed here from the raw JSON, independently of hookd's
loader: host and path (spec or ``dynamichosturl``, ``routerequesttoendpoint``), method,
credentials (``securityDefinitions`` + apiProperties), ``setheader``,
``setqueryparameter`` and ``setproperty`` effects, the callback URL where
``x-ms-notification-url`` is, and the DELETE: Power Automate deletes a webhook through
the ``Location`` its create answered, so the fake answers one (on the connector's host)
and the DELETE must go there with the connection's credentials and the every-operation
header and query policies.

``test_corpus_pass_rate`` asserts ≥ 98% and prints each failure with its reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hookd.connectors import lenientjson
from tests.fakes.corpus_upstream import CorpusUpstream, Rerouting, Seen

PUBLIC = "https://hooks.example.net"
EXPR = re.compile(r"@(connectionParameters|queryParameters|headers?)\(\s*'([^']*)'\s*"
                  r"(?:,\s*'([^']*)'\s*)?\)", re.IGNORECASE)
MIN_PASS_RATE = 0.98


# ----------------------------------------------------------------------------- reading


def read(path: Path) -> Any:
    if not path.is_file():
        return None
    return lenientjson.load(path).value


def resolve(spec: Any, node: Any) -> Any:
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target.get(part) if isinstance(target, dict) else None
        node = target
    return node


def operation(spec: Any, op_id: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """(method, path, operation, path item) of `op_id`."""
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if isinstance(op, dict) and op.get("operationId") == op_id:
                return method.upper(), path, op, item
    raise KeyError(op_id)


def parameters(spec: Any, op: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    out = [resolve(spec, p) for p in [*(item.get("parameters") or []), *(op.get("parameters") or [])]]
    return [p for p in out if isinstance(p, dict)]


def sample(node: dict[str, Any], text: str) -> Any:
    """A value of a parameter or schema: its default, first enum value, else by type."""
    if node.get("default") is not None:
        return node["default"]
    if node.get("enum"):
        return node["enum"][0]
    kind = node.get("type")
    if kind == "boolean":
        return True
    if kind in ("integer", "number"):
        return 1
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return text


def required_values(spec: Any, schema: Any, depth: int) -> Any:
    """An object with a value for every required property, recursively."""
    if not isinstance(schema, dict) or depth > 6:
        return None
    props = schema.get("properties") or {}
    if schema.get("type", "object") != "object" or not isinstance(props, dict):
        return None
    out: dict[str, Any] = {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    for name in required:
        prop = resolve(spec, props.get(name)) or {}
        if prop.get("x-ms-notification-url"):
            continue
        if prop.get("type", "object") == "object" and prop.get("properties"):
            out[name] = required_values(spec, prop, depth + 1) or {}
        else:
            out[name] = sample(prop, "bv" + slug(name))
    return out


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()) or "x"


# ----------------------------------------------------------------------------- expectations


class Case:
    """One connector: the inputs hookd is given and what its requests must be."""

    def __init__(self, directory: Path, entry: dict[str, Any]) -> None:
        self.dir = directory
        self.name = directory.name
        self.spec = read(directory / "apiDefinition.swagger.json")
        props = read(directory / "apiProperties.json")
        self.props = props.get("properties", {}) if isinstance(props, dict) else {}
        spec = self.spec
        # The first webhook trigger (the manifest also lists webhook actions).
        trigger = next((t for t in entry["summary"]["webhook_triggers"]
                        if "x-ms-trigger" in operation(spec, t["operationId"])[2]),
                       entry["summary"]["webhook_triggers"][0])
        self.trigger = trigger
        self.op_id = trigger["operationId"]
        self.method, self.path, self.op, self.item = operation(self.spec, self.op_id)
        self.policies = [p for p in self.props.get("policyTemplateInstances") or []
                         if isinstance(p, dict)]
        self.set_name, self.param_types = self._parameter_set()
        self.connection = self._connection_values()
        self.params = self._trigger_parameters()

    # inputs

    def _parameter_set(self) -> tuple[str | None, dict[str, str]]:
        sets = self.props.get("connectionParameterSets")
        if isinstance(sets, dict) and sets.get("values"):
            first = sets["values"][0]
            return first.get("name"), {k: str(v.get("type", "string")) for k, v in
                                       (first.get("parameters") or {}).items() if isinstance(v, dict)}
        params = self.props.get("connectionParameters") or {}
        return None, {k: str(v.get("type", "string")) for k, v in params.items() if isinstance(v, dict)}

    def _connection_values(self) -> dict[str, str]:
        leading = set()
        for p in self.policies:
            for key in ("x-ms-apimTemplateParameter.urlTemplate",):
                m = re.match(r"\s*@connectionParameters\(\s*'([^']*)'", str(
                    (p.get("parameters") or {}).get(key, "")))
                if m:
                    leading.add(m[1])
        out: dict[str, str] = {}
        read = {m[2] for p in self.policies for v in (p.get("parameters") or {}).values()
                for m in EXPR.finditer(str(v)) if m[1].lower() == "connectionparameters" and not m[3]}
        declared = {n.lower() for n in self.param_types}
        for name in {n for n in read if n.lower() not in declared}:
            out[name] = f"https://{slug(name)}.tenant.test" if name in leading else "cp" + slug(name)
        for name, kind in self.param_types.items():
            if kind.lower() == "oauthsetting":
                out[name] = "tok-" + slug(self.name)
            elif name.lower() in {n.lower() for n in leading}:
                out[name] = f"https://{slug(name)}.tenant.test"
            elif kind.lower() == "securestring":
                out[name] = "sec" + slug(name)
            elif kind.lower() in ("string", "int", "bool"):
                out[name] = "cp" + slug(name)
        if not self.param_types:  # no apiProperties parameters: hookd derives them
            for d in (self.spec.get("securityDefinitions") or {}).values():
                kind = d.get("type") if isinstance(d, dict) else None
                if kind == "basic":
                    out.update(username="user", password="secpass")
                elif kind == "apiKey":
                    out["api_key"] = "seckey"
                elif kind == "oauth2":
                    out["token"] = "tok-" + slug(self.name)
        return out

    def _trigger_parameters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in parameters(self.spec, self.op, self.item):
            where, name = p.get("in"), p.get("name")
            if where == "body" or not isinstance(name, str) or not (p.get("required") or where == "path"):
                continue
            out[name] = sample(p, f"{where[0]}v{slug(name)}")
        return out

    def body(self) -> Any:
        """Values for the body's required properties (hookd fills the callback URL)."""
        for p in parameters(self.spec, self.op, self.item):
            if p.get("in") == "body":
                value = required_values(self.spec, resolve(self.spec, p.get("schema")), 0)
                return value if isinstance(value, dict) else None
        return None

    def text(self, name: str) -> str:
        """A trigger parameter as the request carries it."""
        value = self.params[name]
        return str(value).lower() if isinstance(value, bool) else str(value)

    # expectations

    def applies(self, policy: dict[str, Any], op_id: str) -> bool:
        ops = (policy.get("parameters") or {}).get("x-ms-apimTemplate-operationName") or []
        ops = [ops] if isinstance(ops, str) else ops
        return not ops or op_id.lower() in (str(o).lower() for o in ops)

    def of(self, template: str, op_id: str) -> list[dict[str, Any]]:
        return [p.get("parameters") or {} for p in self.policies
                if str(p.get("templateId", "")).lower() == template and self.applies(p, op_id)]

    def fill(self, text: str, query: dict[str, str], headers: dict[str, str]) -> str:
        def one(m: re.Match[str]) -> str:
            fn, name, default = m[1].lower(), m[2], m[3]
            if fn == "connectionparameters":  # exact, else ignoring case (Impexium)
                folded = {k.lower(): v for k, v in self.connection.items()}
                return self.connection.get(name) or folded.get(name.lower()) or default or ""
            source = query if fn == "queryparameters" else headers
            return source.get(name.lower() if source is headers else name) or default or ""
        return EXPR.sub(one, text)

    def base(self, op_id: str) -> str:
        schemes = self.spec.get("schemes") or ["https"]
        base = f"{schemes[0]}://{self.spec.get('host', '')}{self.spec.get('basePath') or ''}"
        for p in self.of("dynamichosturl", op_id):
            base = self.fill(str(p.get("x-ms-apimTemplateParameter.urlTemplate", "")), self.query(),
                             self.headers())
            if "://" not in base:
                base = "https://" + base.lstrip("/")
        return base.rstrip("/")

    def query(self) -> dict[str, str]:
        return {p["name"]: self.text(p["name"]) for p in parameters(self.spec, self.op, self.item)
                if p.get("in") == "query" and p.get("name") in self.params}

    def headers(self) -> dict[str, str]:
        return {p["name"].lower(): self.text(p["name"]) for p in parameters(self.spec, self.op, self.item)
                if p.get("in") == "header" and p.get("name") in self.params}

    def route(self, op_id: str, method: str, path: str) -> tuple[str, str]:
        for p in self.of("routerequesttoendpoint", op_id):
            path = self.fill(str(p.get("x-ms-apimTemplateParameter.newPath", path)), self.query(), {})
            wanted = str(p.get("x-ms-apimTemplateParameter.httpMethod") or "")
            if wanted and not wanted.lower().startswith("@request"):
                method = wanted.upper()
        return method, path

    def url_of(self, op_id: str, method: str, path: str, values: dict[str, str]) -> tuple[str, str, str]:
        """(method, host, path regex) the request for `op_id` must have."""
        method, path = self.route(op_id, method, path)
        base = self.base(op_id)
        scheme_host, _, base_path = base.partition("://")[2].partition("/")
        full = "/" + "/".join(s for s in (base_path.strip("/"), path.strip("/")) if s)
        pattern = ""
        for part in re.split(r"(\{[^}]+\})", full):
            if part.startswith("{") and part.endswith("}"):
                value = values.get(part[1:-1])
                pattern += re.escape(value) if value is not None else "[^/]+"
            else:
                pattern += re.escape(part)
        return method, scheme_host.lower(), pattern + "/?"

    def credentials(self, op_id: str) -> list[tuple[str, str, str | None]]:
        """[(where, name, value)] each request must carry (value None: present)."""
        out: dict[tuple[str, str], str | None] = {}
        types = {k: v.lower() for k, v in self.param_types.items()}
        defs = {k: v for k, v in (self.spec.get("securityDefinitions") or {}).items()
                if isinstance(v, dict)}
        c = self.connection
        if any(t == "oauthsetting" for t in types.values()) or (
                not types and any(d.get("type") == "oauth2" for d in defs.values())):
            out[("header", "authorization")] = "Bearer tok-" + slug(self.name)
        elif "username" in c and "password" in c:
            import base64

            raw = base64.b64encode(f"{c['username']}:{c['password']}".encode()).decode()
            out[("header", "authorization")] = f"Basic {raw}"
        else:
            keys = [(k, d) for k, d in defs.items() if d.get("type") == "apiKey"]
            secrets = [n for n, t in types.items() if t == "securestring"]
            for key, d in keys:
                candidates = [key, str(d.get("name")), "api_key"]
                if len(keys) == 1 and len(secrets) == 1:
                    candidates.append(secrets[0])
                param = next((n for n in candidates if n in c), None)
                if param is not None:
                    where = "query" if d.get("in") == "query" else "header"
                    name = str(d["name"])
                    out[(where, name.lower() if where == "header" else name)] = c[param]
        headers = {k[1]: v or "" for k, v in out.items() if k[0] == "header"}
        for template, where in (("setheader", "header"), ("setqueryparameter", "query")):
            for p in self.of(template, op_id):
                if str(p.get("x-ms-apimTemplate-policySection", "Request")).lower() != "request":
                    continue
                name = str(p.get("x-ms-apimTemplateParameter.name", ""))
                if where == "header" and not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                    continue  # not a header name: nothing can send it
                key = (where, name.lower() if where == "header" else name)
                action = str(p.get("x-ms-apimTemplateParameter.existsAction") or "override").lower()
                value = self.fill(str(p.get("x-ms-apimTemplateParameter.value", "")), self.query(), headers)
                if action == "skip" and key in out:
                    continue
                out[key] = None if action == "append" else value
        return [(w, n, v) for (w, n), v in out.items()]

    def properties(self) -> list[tuple[tuple[str, ...], Any]]:
        """[(body path, value)] setproperty puts in the create's body (simple ones)."""
        out = []
        for p in self.of("setproperty", self.op_id):
            parent = str(p.get("x-ms-apimTemplateParameter.newPropertyParentPathTemplate", ""))
            value = str(p.get("x-ms-apimTemplateParameter.propertyValuePathTemplate", ""))
            if str(p.get("x-ms-apimTemplate-policySection", "Request")).lower() != "request" \
                    or "{@" in value or not parent.lower().startswith("@body()"):
                continue
            path = tuple(x for x in parent[len("@body()"):].split(".") if x)
            path += tuple(str(p.get("x-ms-apimTemplateParameter.newPropertySubPathTemplate")).split("."))
            try:
                parsed = json.loads(value) if value.strip()[:1] in "[{" else value
            except ValueError:
                parsed = value
            out.append((path, parsed))
        return out


# ----------------------------------------------------------------------------- checks


def check_request(case: Case, seen: Seen, op_id: str, method: str, path: str,
                  values: dict[str, str]) -> list[str]:
    want_method, want_host, pattern = case.url_of(op_id, method, path, values)
    problems = []
    if seen.method != want_method:
        problems.append(f"method {seen.method}, expected {want_method}")
    if seen.host.lower() != want_host:
        problems.append(f"host {seen.host}, expected {want_host}")
    if not re.fullmatch(pattern, seen.path):
        problems.append(f"path {seen.path}, expected /{pattern.strip('/?')}/")
    query = dict(seen.query)
    for where, name, value in case.credentials(op_id):
        got = seen.headers.get(name) if where == "header" else query.get(name)
        if got is None or value is not None and got != value:
            problems.append(f"{where} {name}: {'missing' if got is None else 'wrong value'}")
    by_policy = any(str(p.get("x-ms-apimTemplateParameter.name", "")).lower() == "user-agent"
                    for p in case.of("setheader", op_id))
    if not by_policy and not seen.headers.get("user-agent", "").startswith("hookd/"):
        problems.append("no hookd User-Agent")
    return problems


def check_create(case: Case, seen: Seen) -> list[str]:
    problems = check_request(case, seen, case.op_id, case.method, case.path,
                             {k: case.text(k) for k in case.params})
    where, *rest = case.trigger["notification_url"][0].split(".")
    url: Any = seen.body if where == "body" else dict(seen.query).get(rest[0]) \
        if where == "query" else seen.headers.get(rest[0].lower())
    for key in rest if where == "body" else ():
        url = url.get(key) if isinstance(url, dict) else (url[0] if isinstance(url, list) and url else None)
        if isinstance(url, list):
            url = url[0] if url else None
    if not (isinstance(url, str) and url.startswith(PUBLIC + "/hooks/")):
        problems.append(f"callback URL not at {case.trigger['notification_url'][0]}")
    for path, value in case.properties():
        got: Any = seen.body
        for key in path:
            got = got.get(key) if isinstance(got, dict) else None
        if got != value:
            problems.append(f"setproperty {'.'.join(path)}: {got!r}, expected {value!r}")
    return problems


def check_delete(case: Case, seen: list[Seen], outcome: dict[str, Any], sub_id: str,
                 host: str) -> list[str]:
    deletes = [s for s in seen if s.method != "GET"]
    if outcome["result"] != "ok":
        return [f"delete: {outcome['result']}: {outcome['detail']}"]
    if len(deletes) != 1 or (deletes[0].method, deletes[0].path) != (
            "DELETE", f"/__subscriptions/{sub_id}"):
        return [f"expected DELETE of the Location, got {[(s.method, s.path) for s in deletes]}"]
    # "\0": an operation no filter names, so only every-operation policies count.
    problems = [p for p in check_request(case, deletes[0], "\0", "DELETE", "", {})
                if not p.startswith(("path", "host"))]
    if deletes[0].host != host:
        problems.append(f"host {deletes[0].host}, the Location's is {host}")
    return [f"delete: {p}" for p in problems]


# ----------------------------------------------------------------------------- running


def write_case(root: Path, case: Case) -> Path:
    import yaml

    cfg = root / "config"
    (cfg / "connectors").mkdir(parents=True)
    (cfg / "connections").mkdir()
    (cfg / "flows").mkdir()
    (cfg / "hookd.yaml").write_text(f"public_url: {PUBLIC}\n")
    (cfg / "connectors" / "corpus").symlink_to(case.dir)
    conn: dict[str, Any] = {"connector": "corpus", "parameters": case.connection}
    if case.set_name:
        conn["parameter_set"] = case.set_name
    (cfg / "connections" / "c.yaml").write_text(yaml.safe_dump(conn))
    flow: dict[str, Any] = {"name": "f", "trigger": {
        "connector": "corpus", "operation": case.op_id, "connection": "c", "parameters": case.params}}
    body = case.body()
    if body:
        flow["trigger"]["body"] = body
    (cfg / "flows" / "f.yaml").write_text(yaml.safe_dump(flow))
    return cfg


def apply(cfg: Path, state: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    from hookd.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["apply", str(cfg), "--state-dir", str(state), "--format", "json", *extra])
    try:
        data = json.loads(out.getvalue())
    except ValueError:
        data = {}
    return rc, data, err.getvalue()


def run_case(case: Case, fake: CorpusUpstream, tmp: Path) -> list[str]:
    create_op = case.op
    ids = ["id"]
    for status, response in (create_op.get("responses") or {}).items():
        schema = resolve(case.spec, (resolve(case.spec, response) or {}).get("schema")) \
            if str(status).startswith("2") else None
        for prop in (schema or {}).get("properties") or {}:
            if str(prop).lower().endswith("id"):
                ids.append(str(prop))
    fake.reset(tuple(ids), True)
    cfg = write_case(tmp, case)
    state = tmp / "state"
    rc, data, err = apply(cfg, state)
    created = [s for s in fake.requests if s.method != "GET"]
    if rc != 0 or len(created) != 1:
        detail = "; ".join(o.get("detail", "") for o in data.get("outcomes", [])) or err.strip()[-300:]
        return [f"create: exit {rc}, {len(created)} request(s): {detail}"]
    problems = check_create(case, created[0])
    sub_id = str(max(int(i) for i in fake.live)) if fake.live else ""
    fake.requests.clear()
    (cfg / "flows" / "f.yaml").unlink()
    rc, data, err = apply(cfg, state, "--allow-deletes", "1")
    outcomes = data.get("outcomes") or [{"result": f"exit {rc}", "detail": err.strip()[-300:]}]
    problems += check_delete(case, list(fake.requests), outcomes[0], sub_id, created[0].host)
    return problems


def cases(shared: Path) -> Iterator[Case]:
    corpus = shared / "corpus" / "powerplatform"
    manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    for entry in manifest:
        if entry["group"] in ("webhook", "docs-sample") and entry["summary"]["webhook_triggers"]:
            yield Case(corpus / entry["corpus_dir"], entry)


@pytest.fixture
def rerouted(monkeypatch: pytest.MonkeyPatch) -> Iterator[CorpusUpstream]:
    from hookd.upstream import client
    from tests.fakes.github import serve_app

    fake = CorpusUpstream()
    with serve_app(fake) as base:
        original = client.Upstream.__init__

        def init(self: Any, transport: Any = None, **kw: Any) -> None:
            original(self, Rerouting(base), **kw)

        monkeypatch.setattr(client.Upstream, "__init__", init)
        yield fake


def test_corpus_pass_rate(shared_dir: Path, tmp_path: Path, rerouted: CorpusUpstream) -> None:
    results: dict[str, list[str]] = {}
    for n, case in enumerate(cases(shared_dir)):
        try:
            results[case.name] = run_case(case, rerouted, tmp_path / str(n))
        except Exception as exc:  # noqa: BLE001 - a crash is one connector's failure
            results[case.name] = [f"crashed: {type(exc).__name__}: {exc}"]
    failures = {k: v for k, v in results.items() if v}
    report = "\n".join(f"  {k}: {'; '.join(v)}" for k, v in sorted(failures.items()))
    passed = len(results) - len(failures)
    print(f"\ncorpus: {passed}/{len(results)} pass\n{report}")
    assert len(results) >= 150
    assert passed / len(results) >= MIN_PASS_RATE, f"{passed}/{len(results)}\n{report}"
