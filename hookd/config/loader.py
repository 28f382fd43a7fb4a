"""Load a config directory into the typed model (`hookd.config.model.Config`), or say why not.

This is the edge where YAML becomes frozen objects: past `load_config` nothing reads a
raw dict. Loading never raises on bad input; it collects every problem as a `Diagnostic`
(file:line:col, key path, hint) so that `hookd check` and a daemon reload can show all of
them at once, and returns no `Config` when any is an error: a broken file must never be
applied (the daemon keeps the last good config).

The stages, each reporting and going on with what it could read:

1. parse each YAML file keeping positions (`hookd.config.yamlpos`);
2. validate each item (a file may hold one flow/connection or a list) against its JSON
   Schema (`hookd.config.schema`); an item with schema errors is not built further;
3. build the model: defaults, durations/sizes to numbers, secret references to
   `SecretRef`, paths made absolute;
4. cross-file checks and secret resolution (`hookd.config.check`).

Directory layout: ``hookd.yaml``, ``connections/*.yaml``, ``flows/*.yaml`` (``.yml``
too, sorted by name), ``connectors/`` (read by `hookd.connectors.loader`).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hookd.config import actions
from hookd.config import schema as schemacheck
from hookd.config import secrets as secrets_mod
from hookd.config.check import (
    Located,
    SecretContext,
    admin_exposure,
    check_config,
    unknown_connection,
)
from hookd.config.model import (
    CLAIM_LEASE,
    MIN_CLAIM_LEASE,
    Action,
    Admin,
    Config,
    Connection,
    Egress,
    Flow,
    Limits,
    Listener,
    MaybeSecret,
    OAuthConfig,
    Pos,
    ReconcilePolicy,
    Retention,
    RetryPolicy,
    SecretRef,
    Settings,
    Step,
    StoreSetting,
    Trigger,
)
from hookd.config.steps import strings
from hookd.config.units import parse_duration, parse_size
from hookd.config.yamlpos import Document, KeyPath
from hookd.config.yamlpos import load as load_yaml
from hookd.connectors.model import Connector
from hookd.diagnostics import Diagnostic, has_errors

SETTINGS_FILE = "hookd.yaml"
_YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class LoadResult:
    """What `load` found. `io_error` is True when a file could not be read at all (as
    opposed to read and found wrong): `hookd check` exits 2 for it, not 1."""

    config: Config | None
    diagnostics: list[Diagnostic] = field(default_factory=list)
    io_error: bool = False


def load_config(
    directory: Path | str,
    *,
    resolve_secrets: bool = True,
    env: Mapping[str, str] | None = None,
    connectors: Mapping[str, Connector] | None = None,
) -> tuple[Config | None, list[Diagnostic]]:
    """The config in `directory` and every problem found (sorted); None when any error.

    `env` (default ``os.environ``) supplies ``$STATE_DIRECTORY``,
    ``$CREDENTIALS_DIRECTORY`` and ``${env:…}`` secrets. `connectors` replaces the
    connectors `hookd.connectors.loader.load_connectors` would find (tests build them directly).
    With `resolve_secrets=False` references are checked for form but not resolved
    (``hookd check --offline-secrets``, e.g. in CI without the production secrets).
    """
    result = load(directory, resolve_secrets=resolve_secrets, env=env, connectors=connectors)
    return result.config, result.diagnostics


def load(
    directory: Path | str,
    *,
    resolve_secrets: bool = True,
    env: Mapping[str, str] | None = None,
    connectors: Mapping[str, Connector] | None = None,
) -> LoadResult:
    """`load_config` with the I/O-error flag (see `LoadResult`). `Config.revision` stays
    empty: the revision (git or a content hash) is the daemon's to compute
    (`hookd.daemon.revision`), so that loading a config runs no program."""
    # Loading allocates many small, acyclic objects: the cyclic GC would walk them again
    # and again for nothing (a fifth of the time of `hookd check` on 1,000 flows).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _load(Path(directory), resolve_secrets, env, connectors)
    finally:
        if was_enabled:
            gc.enable()


def _load(
    directory: Path,
    resolve_secrets: bool,
    env: Mapping[str, str] | None,
    connectors: Mapping[str, Connector] | None,
) -> LoadResult:
    root = directory.absolute()
    environ = os.environ if env is None else env
    loader = _Loader(root, environ)
    if not root.is_dir():
        loader.io_error = True
        loader.out.append(Diagnostic(root, 0, 0, "error", "config directory does not exist"
                                     if not root.exists() else "not a directory"))
        return loader.result(None)

    settings = loader.settings()
    if connectors is None:
        from hookd.connectors import (
            loader as openapi,  # the connector loader: heavier, and another module's noun
        )

        found, problems = openapi.load_connectors(root)
        loader.out.extend(problems)
        connectors = found
    connections = loader.connections()
    flows = loader.flows(connectors)
    if settings is None:
        return loader.result(None)
    ctx = None
    if resolve_secrets:
        ctx = SecretContext(env=environ, base_dir=root,
                            credentials_dir=environ.get("CREDENTIALS_DIRECTORY"))
    # A connection refused for its own errors (a bad secret reference) is still defined:
    # each flow naming it would otherwise add a misleading "unknown connection".
    follow_on = {unknown_connection(name) for name in loader.refused_connections}
    loader.out.extend(d for d in check_config(settings, connectors, connections, flows,
                                              secrets=ctx) if d.message not in follow_on)
    if has_errors(loader.out):
        return loader.result(None)
    config = Config(
        directory=root,
        settings=settings,
        connectors=dict(connectors),
        connections={c.item.name: c.item for c in connections},
        flows={f.item.name: f.item for f in flows},
        empty_flow_files=tuple(loader.empty_flow_files),
    )
    return loader.result(config)


class _Loader:
    """Reads the files of one directory, collecting diagnostics as it goes."""

    def __init__(self, root: Path, env: Mapping[str, str]) -> None:
        self.root = root
        self.env = env
        self.out: list[Diagnostic] = []
        self.io_error = False
        self.refused_connections: set[str] = set()
        self.empty_flow_files: list[Path] = []

    def result(self, config: Config | None) -> LoadResult:
        return LoadResult(config, sorted(self.out), self.io_error)

    def _read(self, path: Path) -> Document | None:
        try:
            doc, problems = load_yaml(path)
        except OSError as exc:
            self.io_error = True
            self.out.append(Diagnostic(path, 0, 0, "error", f"cannot read file: {exc.strerror or exc}"))
            return None
        self.out.extend(problems)
        return doc

    def _files(self, sub: str) -> list[Path]:
        folder = self.root / sub
        if not folder.is_dir():
            return []
        try:
            return sorted(p for p in folder.iterdir() if p.suffix in _YAML_SUFFIXES and not p.name.startswith("."))
        except OSError as exc:
            self.io_error = True
            self.out.append(Diagnostic(folder, 0, 0, "error", f"cannot list directory: {exc.strerror or exc}"))
            return []

    def _items(self, path: Path, kind: str) -> list[tuple[Any, Document, KeyPath]]:
        """The items of a file that holds one object or a list, each schema-checked."""
        doc = self._read(path)
        if doc is None:
            return []
        if doc.data is None or doc.data == []:
            if kind == "flow":
                self.empty_flow_files.append(path)
            self.out.append(Diagnostic(
                path, 1, 1, "warning", f"empty {kind} file",
                hint="a running daemon refuses a reload that empties a file that had "
                     "flows; delete the file to remove what it held" if kind == "flow" else ""))
            return []
        if isinstance(doc.data, list):
            entries: list[tuple[Any, KeyPath]] = [(item, (i,)) for i, item in enumerate(doc.data)]
        else:
            entries = [(doc.data, ())]
        good: list[tuple[Any, Document, KeyPath]] = []
        for data, prefix in entries:
            problems = schemacheck.validate(kind, data, doc, prefix)
            self.out.extend(problems)
            if not problems:
                if isinstance(doc.data, list) and "name" not in data:
                    self.out.append(doc.diagnostic(prefix, f"a {kind} in a list needs a 'name'"))
                    continue
                good.append((data, doc, prefix))
        return good

    # ----------------------------------------------------------------------- hookd.yaml

    def settings(self) -> Settings | None:
        path = self.root / SETTINGS_FILE
        if not path.exists():
            alt = self.root / "hookd.yml"
            if not alt.exists():
                self.out.append(Diagnostic(path, 0, 0, "error", f"no {SETTINGS_FILE} in the config directory",
                                           hint="hookd.yaml needs at least public_url: https://…"))
                return None
            path = alt
        doc = self._read(path)
        if doc is None:
            return None
        data = {} if doc.data is None else doc.data
        problems = schemacheck.validate("hookd", data, doc)
        self.out.extend(problems)
        if problems:
            return None
        settings = build_settings(data, self.root, self.env, Pos(path, *doc.pos(())))
        if settings.claim_lease < MIN_CLAIM_LEASE:
            self.out.append(doc.diagnostic(
                ("claim_lease",), f"claim_lease must be at least {MIN_CLAIM_LEASE:g}s",
                hint="a renewal is due every third of the lease and may wait 10 s for the "
                     f"store; {CLAIM_LEASE:g}s is the default"))
            return None
        exposed = admin_exposure(settings)
        if exposed is not None:
            self.out.append(doc.diagnostic(
                ("listen", "admin", "host"), exposed, severity="warning",
                hint="bind it to 127.0.0.1 (the default) and reach it over SSH or a reverse "
                     "proxy; if it must listen wider, firewall the port and list the names "
                     "clients use in admin.hosts"))
        if isinstance(settings.store.url, str) and str(settings.store) != settings.store.url:
            self.out.append(doc.diagnostic(
                ("store",), "the store URL holds a password in hookd.yaml",
                severity="warning",
                hint="keep the password out of the config: store: ${credential:hookd-db-url}"
                " (or ${env:…}, ${file:…}), or a password file (~/.pgpass, PGPASSFILE)"))
        return settings

    # ----------------------------------------------------------------------- connections

    def connections(self) -> list[Located[Connection]]:
        out: list[Located[Connection]] = []
        for path in self._files("connections"):
            for data, doc, prefix in self._items(path, "connection"):
                located = self._connection(data, doc, prefix)
                if located is not None:
                    out.append(located)
        return out

    def _connection(self, data: Mapping[str, Any], doc: Document, prefix: KeyPath) -> Located[Connection] | None:
        params: dict[str, MaybeSecret] = {}
        ok = True
        for name, value in (data.get("parameters") or {}).items():
            secret = self._secret(value, doc, (*prefix, "parameters", name))
            if secret is None:
                ok = False
            else:
                params[name] = secret
        oauth = self._oauth(data.get("oauth"), doc, (*prefix, "oauth"))
        if not ok or oauth is False:
            self.refused_connections.add(data.get("name") or doc.file.stem)
            return None
        conn = Connection(
            name=data.get("name") or doc.file.stem,
            connector=data["connector"],
            parameters=params,
            base_url=data.get("base_url"),
            parameter_set=data.get("parameter_set"),
            pos=Pos(doc.file, *doc.pos(prefix)),
            oauth=oauth if isinstance(oauth, OAuthConfig) else None,
        )
        return Located(conn, doc, prefix)

    def _oauth(self, data: Mapping[str, Any] | None, doc: Document, path: KeyPath) -> OAuthConfig | bool:
        """The ``oauth:`` block (schema-checked already); True when absent, False after an error."""
        if data is None:
            return True
        refs: dict[str, MaybeSecret | None] = {}
        for key in ("client_id", "client_secret", "refresh_token"):
            if key in data:
                refs[key] = self._secret(data[key], doc, (*path, key))
                if refs[key] is None:
                    return False
        client_id = refs["client_id"]
        assert client_id is not None  # required by the schema
        scopes = data.get("scopes")
        return OAuthConfig(
            client_id=client_id,
            client_secret=refs.get("client_secret"),
            scopes=tuple(scopes) if scopes is not None else None,
            refresh_token=refs.get("refresh_token"),
            tenant=data.get("tenant"),
            resource=data.get("resource"),
            redirect_uri=data.get("redirect_uri"),
            authorization_url=data.get("authorization_url"),
            token_url=data.get("token_url"),
        )

    def _secret(self, value: Any, doc: Document, path: KeyPath) -> MaybeSecret | None:
        """A literal or a `SecretRef` (``${file:…}`` made absolute); None after an error."""
        if not isinstance(value, str):
            return _scalar_text(value)
        problem = secrets_mod.ref_problem(value)
        if problem:
            self.out.append(doc.diagnostic(path, problem,
                                           hint="write the whole value as ${env:NAME}, ${file:PATH} or ${credential:NAME}"))
            return None
        ref = secrets_mod.parse_ref(value)
        if ref is None:
            return value
        if ref.kind == "file" and not Path(ref.name).expanduser().is_absolute():
            return SecretRef("file", str(self.root / ref.name))
        return ref

    # ----------------------------------------------------------------------- flows

    def flows(self, connectors: Mapping[str, Connector]) -> list[Located[Flow]]:
        out: list[Located[Flow]] = []
        for path in self._files("flows"):
            for data, doc, prefix in self._items(path, "flow"):
                flow = self._flow(data, doc, prefix, connectors)
                if flow is not None:
                    out.append(Located(flow, doc, prefix))
        return out

    def _flow(
        self, data: Mapping[str, Any], doc: Document, prefix: KeyPath, connectors: Mapping[str, Connector]
    ) -> Flow | None:
        errors_before = len(self.out)
        t = data["trigger"]
        operation = t.get("operation") or _only_trigger(connectors.get(t["connector"]))
        trigger = Trigger(
            connector=t["connector"],
            operation=operation,
            connection=t.get("connection"),
            parameters=dict(t.get("parameters") or {}),
            body=dict(t.get("body") or {}),
            pos=Pos(doc.file, *doc.pos((*prefix, "trigger"))),
        )
        steps = tuple(
            self._step(raw, i, doc, (*prefix, "steps", i)) for i, raw in enumerate(data.get("steps") or [])
        )
        verify = data.get("verify_secret")
        verify_secret = None if verify is None else self._secret(verify, doc, (*prefix, "verify_secret"))
        if isinstance(verify_secret, str):
            self.out.append(doc.diagnostic((*prefix, "verify_secret"), "verify_secret is written in the file",
                                           severity="warning", hint="use a reference such as ${env:HOOK_SECRET}"))
        if len(self.out) > errors_before and has_errors(self.out[errors_before:]):
            return None
        for i, raw in enumerate(data.get("steps") or []):
            for path, text in strings(raw, (*prefix, "steps", i)):
                problem = secrets_mod.ref_problem(text)
                if problem:
                    self.out.append(doc.diagnostic(
                        path, problem,
                        hint="inside a longer string use a template: \"Bearer {{ secrets['env:TOKEN'] }}\""))
        return Flow(
            name=data.get("name") or doc.file.stem,
            trigger=trigger,
            steps=steps,
            enabled=data.get("enabled", True),
            concurrency=data.get("concurrency"),
            payload_validation=data.get("payload_validation", "warn"),
            verify_secret=verify_secret,
            description=data.get("description", ""),
            pos=Pos(doc.file, *doc.pos(prefix)),
        )

    def _step(self, raw: Mapping[str, Any], index: int, doc: Document, path: KeyPath) -> Step:
        retry = raw.get("retry") or {}
        defaults = RetryPolicy()
        timeout = raw.get("timeout")
        return Step(
            id=raw.get("id") or f"step{index + 1}",
            action=build_action(raw, self.root),
            if_=raw.get("if"),
            foreach=raw.get("foreach"),
            timeout=None if timeout is None else parse_duration(timeout),
            retry=RetryPolicy(
                attempts=retry.get("attempts", defaults.attempts),
                backoff=retry.get("backoff", defaults.backoff),
                delay=parse_duration(retry.get("delay", defaults.delay)),
                max_delay=parse_duration(retry.get("max_delay", defaults.max_delay)),
            ),
            continue_on_error=raw.get("continue_on_error", False),
            pos=Pos(doc.file, *doc.pos(path)),
        )


# --------------------------------------------------------------------------- builders
# These take schema-valid data, so they index and convert without re-checking.


def build_settings(data: Mapping[str, Any], root: Path, env: Mapping[str, str], pos: Pos | None = None) -> Settings:
    """`Settings` from a schema-valid hookd.yaml; relative paths are relative to `root`."""
    listen = data.get("listen") or {}
    default = Settings(public_url="")
    rec = data.get("reconcile") or {}
    rp = ReconcilePolicy()
    ret = data.get("retention") or {}
    rd = Retention()
    log = data.get("log") or {}
    state_dir = state_dir_setting(data.get("state_dir"), root, env)
    return Settings(
        public_url=str(data["public_url"]).rstrip("/"),
        public=_listener(listen.get("public"), default.public),
        admin=_listener(listen.get("admin"), default.admin),
        state_dir=state_dir,
        store=store_setting(data.get("store"), root),
        max_body=parse_size((data.get("limits") or {}).get("max_body", default.max_body)),
        limits=_limits(data.get("limits") or {}),
        egress=Egress(allow=tuple((data.get("egress") or {}).get("allow") or ()),
                      deny_private=bool((data.get("egress") or {}).get("deny_private", False))),
        admin_auth=_admin(data.get("admin") or {}, root),
        workers=data.get("workers", default.workers),
        shutdown_timeout=parse_duration(data.get("shutdown_timeout", default.shutdown_timeout)),
        claim_lease=parse_duration(data.get("claim_lease", default.claim_lease)),
        env_allow=tuple(data.get("env") or ()),
        reconcile=ReconcilePolicy(
            interval=parse_duration(rec.get("interval", rp.interval)),
            jitter=float(rec.get("jitter", rp.jitter)),
            max_deletes=rec.get("max_deletes", rp.max_deletes),
            concurrency=rec.get("concurrency", rp.concurrency),
            on_start=rec.get("on_start", rp.on_start),
            timeout=parse_duration(rec.get("timeout", rp.timeout)),
            retries=rec.get("retries", rp.retries),
        ),
        retention=Retention(
            max_age=parse_duration(ret.get("max_age", rd.max_age)),
            max_runs=ret.get("max_runs", rd.max_runs),
            dedup_window=parse_duration(ret.get("dedup_window", rd.dedup_window)),
        ),
        log_format=log.get("format", default.log_format),
        log_level=log.get("level", default.log_level),
        worker_mode=(data.get("worker") or {}).get("mode", default.worker_mode),
        pos=pos,
    )


def store_setting(value: Any, root: Path) -> StoreSetting:
    """hookd.yaml's `store:` (schema-valid): absent or ``sqlite`` is the SQLite file; a
    URL or a secret reference (``${file:…}`` anchored at `root`) is PostgreSQL."""
    if value is None or value == "sqlite":
        return StoreSetting()
    url: MaybeSecret = secret_refs(str(value), root)
    return StoreSetting("postgresql", url)


def state_dir_setting(state: object, root: Path, env: Mapping[str, str]) -> Path:
    """The state directory: hookd.yaml's `state_dir` (relative to `root`), else
    ``$STATE_DIRECTORY``, else ``root/state``. Also used by `hookd runs`, which must find
    the store while the rest of the config is broken."""
    if state is not None:
        return (root / Path(str(state)).expanduser()).absolute()
    if env.get("STATE_DIRECTORY"):
        # systemd's StateDirectory= may list several, colon-separated: the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    return root / "state"


def _limits(data: Mapping[str, Any]) -> Limits:
    d = Limits()
    return Limits(
        max_headers=parse_size(data.get("max_headers", d.max_headers)),
        header_timeout=parse_duration(data.get("header_timeout", d.header_timeout)),
        body_timeout=parse_duration(data.get("body_timeout", d.body_timeout)),
        idle_timeout=parse_duration(data.get("idle_timeout", d.idle_timeout)),
        max_connections=data.get("max_connections", d.max_connections),
    )


def _admin(data: Mapping[str, Any], root: Path) -> Admin:
    token = data.get("token")
    return Admin(
        token=None if token is None else secret_refs(str(token), root),
        hosts=tuple(str(h).lower() for h in data.get("hosts") or ()),
        open_metrics=bool(data.get("open_metrics", True)),
    )


def _listener(data: Mapping[str, Any] | None, default: Listener) -> Listener:
    data = data or {}
    return Listener(host=data.get("host", default.host), port=data.get("port", default.port))


def build_action(raw: Mapping[str, Any], root: Path | None = None) -> Action:
    """The one action of a schema-valid step.

    A value that is exactly one secret reference becomes a `SecretRef` (``${file:…}``
    anchored at `root`), which the pipeline resolves when the step runs; templates see
    it as a constant.
    """
    built: Action = actions.build(secret_refs(raw, root))
    return built


def secret_refs(value: Any, root: Path | None = None) -> Any:
    """`value` with every string that is exactly one secret reference made a `SecretRef`."""
    if isinstance(value, str):
        ref = secrets_mod.parse_ref(value)
        if ref is None:
            return value
        if ref.kind == "file" and root is not None and not Path(ref.name).expanduser().is_absolute():
            return SecretRef("file", str(root / ref.name))
        return ref
    if isinstance(value, Mapping):
        return {k: secret_refs(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [secret_refs(v, root) for v in value]
    return value


def _only_trigger(connector: Connector | None) -> str:
    """The connector's trigger when it has exactly one (so ``operation`` may be omitted)."""
    if connector is None:
        return ""
    triggers = [op.operation_id for op in connector.operations.values() if op.is_trigger]
    return triggers[0] if len(triggers) == 1 else ""


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
