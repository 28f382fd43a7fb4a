"""The one typed model of a config directory.

`hookd.config.loader.load_config` turns the YAML files into these frozen objects; nothing past
the loader reads a raw dict. Values that are templates (step inputs, trigger parameters)
stay as JSON-like data (`Value`) whose strings may contain ``{{ … }}``: they are compiled
at load time by `hookd.templating.engine` and rendered at run time. Secrets are `SecretRef`s,
resolved only where they are used (`hookd.config.secrets`), never stored in the model as text.

Durations are seconds (float) and sizes are bytes (int): the loader parses "5m", "25MiB".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hookd.config import actions

# The action inputs are part of the model (`Step.action`): re-exported, as `model.HttpAction`.
from hookd.config.actions.call import CallAction as CallAction
from hookd.config.actions.http import HttpAction as HttpAction
from hookd.config.actions.log import LogAction as LogAction
from hookd.config.actions.notify import NotifyAction as NotifyAction
from hookd.config.actions.run import RunAction as RunAction
from hookd.config.actions.set import SetAction as SetAction

if TYPE_CHECKING:
    from hookd.connectors.model import Connector

# JSON-like value as written in YAML; strings may be templates or `${…}` secret refs.
Value = Any


@dataclass(frozen=True)
class Pos:
    """Where a thing was written: file and 1-based line/column (0 when unknown)."""

    file: Path
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}" if self.line else str(self.file)


@dataclass(frozen=True)
class SecretRef:
    """A reference to a secret: ``${env:NAME}``, ``${file:PATH}`` or ``${credential:NAME}``.

    `str()` never shows the value, only the reference, so it is safe to log.
    """

    kind: Literal["env", "file", "credential"]
    name: str

    def __str__(self) -> str:
        return f"${{{self.kind}:{self.name}}}"


# A connection parameter or other setting that may be a literal or a secret reference.
MaybeSecret = str | SecretRef


# --------------------------------------------------------------------------- hookd.yaml


@dataclass(frozen=True)
class Listener:
    host: str
    port: int


@dataclass(frozen=True)
class ReconcilePolicy:
    interval: float = 600.0  # seconds between scheduled reconciles
    jitter: float = 0.1  # fraction of interval added at random
    max_deletes: int = 5  # a pass never deletes more than this (blocked beyond)
    concurrency: int = 8  # upstream calls in flight during apply
    on_start: bool = True  # reconcile once when the daemon starts
    timeout: float = 30.0  # per upstream request
    retries: int = 4  # retryable failures per upstream call before giving up this pass


@dataclass(frozen=True)
class Retention:
    max_age: float = 30 * 86400.0  # seconds a delivery/run is kept
    max_runs: int = 100_000  # runs kept at most (oldest pruned first)
    dedup_window: float = 7 * 86400.0  # seconds a delivery id is remembered for dedup


@dataclass(frozen=True)
class StoreSetting:
    """Where the state lives (hookd.yaml `store:`): the SQLite file in `state_dir` (the
    default, no server), or a PostgreSQL database that several replicas share.

    `url` is a ``postgresql://`` URL or a secret reference to one (it usually holds a
    password); it is resolved only when the store is opened.
    """

    kind: Literal["sqlite", "postgresql"] = "sqlite"
    url: MaybeSecret | None = None

    def __str__(self) -> str:
        """What logs and `hookd status` may show: never the password."""
        if self.kind == "sqlite":
            return "sqlite"
        if isinstance(self.url, SecretRef):
            return str(self.url)
        return _without_password(str(self.url))


def _without_password(url: str) -> str:
    """`url` with the password of its ``user:password@`` part masked.

    >>> _without_password("postgresql://hookd:s3cret@db.internal/hookd")
    'postgresql://hookd:***@db.internal/hookd'
    """
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


@dataclass(frozen=True)
class Limits:
    """What one client may hold on the listeners (docs/server.md, "Limits")."""

    max_headers: int = 64 * 1024  # bytes of request line + headers; more → 431
    header_timeout: float = 10.0  # connection (or last answer) → end of headers
    body_timeout: float = 60.0  # end of headers → end of body
    idle_timeout: float = 5.0  # keep-alive: an idle connection after an answer
    max_connections: int = 4096  # public listener; lowered to fit the open-file limit


@dataclass(frozen=True)
class Egress:
    """Where `http` and `notify` steps may send requests to (docs/pipeline.md, "Egress")."""

    allow: tuple[str, ...] = ()  # host patterns a templated (or redirected) host must match
    deny_private: bool = False  # also refuse loopback, link-local and private addresses


@dataclass(frozen=True)
class Admin:
    """Who may use the admin listener's API (docs/daemon.md, "Admin authentication")."""

    token: MaybeSecret | None = None  # None: generated into the state directory
    hosts: tuple[str, ...] = ()  # Host names accepted besides loopback and the bind address
    open_metrics: bool = True  # /metrics without a token (Prometheus scrapers)


# How long a worker's claim on a delivery lasts without renewal (hookd.yaml `claim_lease`;
# the worker renews every third of it). It bounds how soon another replica resumes the
# runs of one that died: between two thirds of it and all of it after the death. 30 s
# keeps that under half a minute, while a renewal stays safe: once one is due, two
# thirds of the lease (20 s) remain, room for a renewal that waits the longest any store
# call waits (10 s: hookd.store.errors.LOCK_WAIT, the PostgreSQL pool's POOL_WAIT) and
# fails, and another that succeeds. The lower bound keeps room for the one that waits:
# at 20 s, 13 s remain once a renewal is due.
CLAIM_LEASE = 30.0
MIN_CLAIM_LEASE = 20.0


@dataclass(frozen=True)
class Settings:
    public_url: str  # base of callback URLs, e.g. https://hooks.example.net
    public: Listener = Listener("127.0.0.1", 8080)
    admin: Listener = Listener("127.0.0.1", 8081)
    state_dir: Path = Path("state")  # absolute after loading
    store: StoreSetting = StoreSetting()
    max_body: int = 25 * 1024 * 1024
    limits: Limits = Limits()
    egress: Egress = Egress()
    admin_auth: Admin = Admin()
    workers: int = 8  # global pipeline worker limit
    shutdown_timeout: float = 30.0
    claim_lease: float = CLAIM_LEASE  # seconds; read when the worker starts
    env_allow: tuple[str, ...] = ()  # environment variables templates may read as env.X
    reconcile: ReconcilePolicy = ReconcilePolicy()
    retention: Retention = Retention()
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: str = "info"
    # Where the pipeline worker runs: a child process (hookd.runs.worker_process) or the
    # daemon's own event loop; HOOKD_WORKER overrides it (docs/config.md).
    worker_mode: Literal["process", "inline"] = "process"
    pos: Pos | None = None


# --------------------------------------------------------------------------- connections


@dataclass(frozen=True)
class OAuthConfig:
    """A connection's ``oauth:`` block: the operator's own app registration.

    The connector says which provider and which default scopes
    (`hookd.connectors.oauth`); this says who the client is. `authorization_url` /
    `token_url` override the provider's (a sovereign cloud, a self-hosted server).
    Tokens themselves never live here: ``hookd connect`` puts them in the state
    directory (`hookd.store.tokens`); `refresh_token` only seeds a headless install.
    """

    client_id: MaybeSecret
    client_secret: MaybeSecret | None = None
    scopes: tuple[str, ...] | None = None  # None = the connector's
    refresh_token: MaybeSecret | None = None
    tenant: str | None = None  # aad: the directory (default: the connector's, else common)
    resource: str | None = None  # aad: the resource URI (default: the connector's)
    redirect_uri: str | None = None  # default: http://127.0.0.1:<free port>/callback
    authorization_url: str | None = None
    token_url: str | None = None


@dataclass(frozen=True)
class Connection:
    """Named credentials for one connector.

    `parameters` holds the connector's connection parameters (from apiProperties.json,
    e.g. ``api_key``, ``username``/``password``, ``token``) plus hookd's own
    ``base_url`` (overrides the spec's scheme/host/basePath: GitHub Enterprise,
    self-hosted GitLab, tests).
    """

    name: str
    connector: str
    parameters: Mapping[str, MaybeSecret] = field(default_factory=dict)
    base_url: str | None = None
    # Which of the connector's connectionParameterSets (multi-auth) this connection
    # uses, by name; None = the first.
    parameter_set: str | None = None
    pos: Pos | None = None
    oauth: OAuthConfig | None = None  # OAuth 2.0 with tokens from `hookd connect`


# --------------------------------------------------------------------------- flows


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 1  # total attempts, 1 = no retry
    backoff: Literal["exponential", "fixed"] = "exponential"
    delay: float = 1.0  # first delay, seconds
    max_delay: float = 300.0


# One input dataclass per action kind, declared with its schema and builder in
# `hookd.config.actions` (the table the loader, the schema test and the executors share).
Action = HttpAction | CallAction | RunAction | LogAction | SetAction | NotifyAction


@dataclass(frozen=True)
class Step:
    id: str
    action: Action
    if_: str | None = None  # template expression, e.g. "{{ trigger.body.ref == 'refs/heads/main' }}"
    foreach: Value = None  # template yielding a list; the step runs once per item (`item`)
    timeout: float | None = None
    retry: RetryPolicy = RetryPolicy()
    continue_on_error: bool = False
    pos: Pos | None = None

    @property
    def kind(self) -> str:
        return actions.kind_of(self.action)


@dataclass(frozen=True)
class Trigger:
    connector: str
    operation: str  # operationId of an x-ms-trigger operation
    connection: str | None = None
    parameters: Mapping[str, Value] = field(default_factory=dict)  # path/query/header
    body: Mapping[str, Value] = field(default_factory=dict)  # merged over the schema defaults
    pos: Pos | None = None


@dataclass(frozen=True)
class Flow:
    name: str
    trigger: Trigger
    steps: tuple[Step, ...] = ()
    enabled: bool = True
    concurrency: int | None = None  # None = unlimited; 1 serialises the flow
    payload_validation: Literal["reject", "warn", "off"] = "warn"
    # Override of the connector's verification (e.g. a shared secret on the http connector).
    verify_secret: MaybeSecret | None = None
    description: str = ""
    pos: Pos | None = None


# --------------------------------------------------------------------------- whole config


@dataclass(frozen=True)
class Config:
    directory: Path
    settings: Settings
    connectors: Mapping[str, Connector]
    connections: Mapping[str, Connection]
    flows: Mapping[str, Flow]
    revision: str = ""  # git commit of the config dir, else a content hash
    # Flow files that exist but hold no flow (empty, comments only, `[]`): while there
    # is one, reconciles hold deletes back (a truncated file is not "remove my flows").
    empty_flow_files: tuple[Path, ...] = ()
