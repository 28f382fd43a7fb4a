"""A real hookd ingest process for end-to-end tests, the crash test and bench/bench_ingest.py.

    python tests/ingest_launcher.py --state DIR --port N [--mode hookd|bare] [--consume]
                                    [--worker inline|process] [--store sqlite|postgresql]

`--mode hookd` serves `hookd.ingest.app.create_app` (routing, verification, schema, dedup,
durable group-commit inbox) under uvicorn; `--mode bare` serves the baseline the
benchmark compares against: a starlette app that only checks the GitHub HMAC and answers
202. `--consume` also runs a stand-in for the pipeline worker (requeue at start, then
claim → done), so a test can see deliveries *processed* after a crash. `--worker` runs
the real pipeline worker instead — in the listener's process or in a child
(`hookd.runs.worker_process`) — with the ``push`` flow given one ``log`` step, so the
ingest benchmark can measure the listener while deliveries are being processed.
`--store postgresql` keeps everything in the PostgreSQL database whose URL is in
``$HOOKD_LAUNCHER_STORE_URL`` (`STORE_URL_ENV`: never on a command line, where ``ps``
shows it): the store is started on uvicorn's event loop (its pool and LISTEN session
belong to that loop) and the server secret is read from the store, as the daemon does.

`make_config` builds the config in code (no YAML loader needed): a GitHub-shaped connector
plus connectors for each other verification kind, and one flow per case the tests need.
`subscription(config, state_dir, flow)` gives a client the callback URL and signing secret
(`store_server_secret(config)` first, for a PostgreSQL store: its secret is in the database).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hookd.config.model import Config, Flow, Retention, SecretRef, Settings, StoreSetting, Trigger
from hookd.connectors.model import Connector, Operation, Verification, WebhookTrigger
from hookd.subscriptions import tokens
from hookd.subscriptions.desired import desired_for_flow

DATA = Path(__file__).resolve().parent / "data"
# The environment variable that holds a PostgreSQL store's URL (`store_setting`).
STORE_URL_ENV = "HOOKD_LAUNCHER_STORE_URL"

# A partial push-event schema, as a connector's x-ms-notification-content would give it.
PUSH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ref", "after", "repository"],
    "properties": {
        "ref": {"type": "string"},
        "before": {"type": "string"},
        "after": {"type": "string"},
        "repository": {
            "type": "object",
            "required": ["full_name"],
            "properties": {"full_name": {"type": "string"}, "id": {"type": "integer"}},
        },
        "pusher": {"type": "object", "properties": {"name": {"type": "string"}}},
        "commits": {"type": "array", "items": {"type": "object"}},
    },
}
ITEM_SCHEMA: dict[str, Any] = {"type": "object", "required": ["id"]}


def _webhook_connector(name: str, verification: Verification, **extra: Any) -> Connector:
    op = Operation("webhook-trigger", "POST", "/hooks", trigger="single")
    return Connector(
        name=name,
        host="upstream.invalid",
        operations={op.operation_id: op},
        webhooks={
            op.operation_id: WebhookTrigger(
                op.operation_id,
                notification_url=("body", "config", "url"),
                notification_schema=extra.pop("schema", None),
                secret_path=("body", "config", "secret"),
                batch=extra.pop("batch", False),
            )
        },
        verification=verification,
        **extra,
    )


def connectors() -> dict[str, Connector]:
    manual = Operation("manual", "POST", "/", trigger="single")
    return {
        "github": _webhook_connector(
            "github",
            Verification("hmac-sha256", header="X-Hub-Signature-256", prefix="sha256="),
            schema=PUSH_SCHEMA,
            delivery_id_header="X-GitHub-Delivery",
            event_header="X-GitHub-Event",
            ping_event="ping",
        ),
        "gitea": _webhook_connector(
            "gitea", Verification("hmac-sha256", header="X-Gitea-Signature"),
            delivery_id_header="X-Gitea-Delivery", event_header="X-Gitea-Event",
        ),
        "gitlab": _webhook_connector(
            "gitlab", Verification("token", header="X-Gitlab-Token"),
            delivery_id_header="X-Gitlab-Event-UUID", event_header="X-Gitlab-Event",
        ),
        "stdhooks": _webhook_connector(
            "stdhooks", Verification("standard-webhooks"), delivery_id_header="webhook-id",
        ),
        "batcher": _webhook_connector(
            "batcher", Verification("hmac-sha256", header="X-Signature"),
            schema=ITEM_SCHEMA, batch=True,
        ),
        "http": Connector(name="http", operations={"manual": manual}, request_trigger=True),
    }


def _flow(name: str, connector: str, operation: str = "webhook-trigger", **kw: Any) -> Flow:
    return Flow(name=name, trigger=Trigger(connector, operation, connection=None), **kw)


def make_config(state_dir: Path, public_url: str = "http://127.0.0.1:8080", **settings: Any) -> Config:
    flows = [
        _flow("push", "github"),  # payload_validation: warn (the default)
        _flow("strict", "github", payload_validation="reject"),
        _flow("paused", "github", enabled=False),
        _flow("gitea", "gitea"),
        _flow("gitlab", "gitlab"),
        _flow("standard", "stdhooks"),
        _flow("items", "batcher", payload_validation="reject"),
        _flow("open", "http", "manual"),
        _flow("signed", "http", "manual", verify_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    ]
    return Config(
        directory=state_dir,
        settings=Settings(
            public_url=public_url,
            state_dir=state_dir,
            retention=Retention(dedup_window=3600.0),
            **settings,
        ),
        connectors=connectors(),
        connections={},
        flows={f.name: f for f in flows},
    )


@dataclass(frozen=True)
class Target:
    """Where and how a client sends to one flow."""

    subscription_id: str
    path: str  # /hooks/<id>/<token>
    secret: str
    verification: Verification


def store_setting(kind: str) -> StoreSetting:
    """hookd.yaml's ``store:`` for `kind`: PostgreSQL's URL as a reference to
    `STORE_URL_ENV`, resolved only where the store opens (also in a worker process)."""
    if kind == "postgresql":
        return StoreSetting("postgresql", SecretRef("env", STORE_URL_ENV))
    return StoreSetting()


def store_server_secret(config: Config) -> bytes:
    """The server secret of `config`'s store, created (and the store migrated) if new:
    for a PostgreSQL store, call it before `subscription` and before the launcher starts."""
    import asyncio

    from hookd import store as stores

    async def read() -> bytes:
        store = stores.open(config.settings, role="cli")
        await store.start()
        try:
            return await store.server_secret()
        finally:
            await store.aclose()

    return asyncio.run(read())


def subscription(config: Config, state_dir: Path, flow_name: str,
                 server_secret: bytes | None = None) -> Target:
    """Where to send to `flow_name`; `server_secret` defaults to the SQLite store's file."""
    if server_secret is None:
        server_secret = tokens.load_or_create_server_secret(state_dir)
    flow = config.flows[flow_name]
    connector = config.connectors[flow.trigger.connector]
    sub = desired_for_flow(flow, connector, config.settings.public_url, server_secret)
    assert sub is not None
    secret = sub.secret
    verification = connector.verification
    if isinstance(flow.verify_secret, str):
        secret = flow.verify_secret
        verification = Verification("standard-webhooks")
    token = tokens.callback_token(server_secret, sub.id)
    return Target(sub.id, f"/hooks/{sub.id}/{token}", secret, verification)


# ---------------------------------------------------------------------------- processes


def bare_app(secret: str) -> Any:
    """The benchmark baseline: verify the GitHub HMAC over the body, answer 202."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    key = secret.encode()

    async def hook(request: Request) -> JSONResponse:
        body = await request.body()
        given = request.headers.get("x-hub-signature-256", "")
        expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return JSONResponse({"error": "bad signature"}, status_code=401)
        return JSONResponse({"delivery": "x"}, status_code=202)

    return Starlette(routes=[Route("/hooks/{subscription_id}/{token}", hook, methods=["POST"])])


def consume(state_dir: Path, stop: threading.Event) -> None:
    """Stand-in for the pipeline worker: requeue what a crash left running, then finish all."""
    from hookd.store.sqlite.db import open_db
    from hookd.store.sqlite.deliveries import DeliveryStore

    store = DeliveryStore(open_db(state_dir))
    store.requeue_running()
    while not stop.is_set():
        batch = store.claim(200)
        store.finish_many([d.id for d in batch], "done")
        if not batch:
            stop.wait(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["hookd", "bare"], default="hookd")
    parser.add_argument("--window", type=float, default=None, help="group-commit window, s")
    parser.add_argument("--consume", action="store_true")
    parser.add_argument("--worker", choices=["inline", "process"], default=None)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite",
                        help=f"postgresql: the database of ${STORE_URL_ENV}")
    parser.add_argument("--loop", default="auto")
    parser.add_argument("--http", default="auto")
    args = parser.parse_args(argv)
    if args.store == "postgresql" and (args.window is not None or args.consume):
        parser.error("--window and --consume are for the SQLite store")

    import uvicorn

    state_dir: Path = args.state
    config = make_config(state_dir, f"http://127.0.0.1:{args.port}",
                         store=store_setting(args.store))
    if args.worker:
        config = with_log_step(config)
        from hookd.telemetry import logs

        logs.configure("json", "info")  # the `log` step's lines go to stderr, as to the journal
    launched = Launched(config, args.window, args.worker)
    app: Any = launched  # a stand-in: hookd's app is made on uvicorn's loop
    if args.mode == "bare":
        app = bare_app(subscription(config, state_dir, "push").secret)
    stop = threading.Event()
    if args.consume:
        threading.Thread(target=consume, args=(state_dir, stop), daemon=True).start()
    print(f"listening on 127.0.0.1:{args.port} mode={args.mode}", file=sys.stderr, flush=True)
    server_config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
        loop=args.loop, http=args.http, lifespan="off",
    )
    # uvicorn re-raises the SIGINT that stopped it once it has shut down (as uvicorn.run).
    with contextlib.suppress(KeyboardInterrupt):
        launched.server(server_config, bare=args.mode == "bare").run()
    stop.set()
    if launched.report:
        print(launched.report, file=sys.stderr, flush=True)
    return 0


class Commits:
    """The inbox's write transactions as `Inbox.on_commit` reports them (any backend)."""

    def __init__(self) -> None:
        self.requests = self.deliveries = self.commits = self.max_batch = 0
        self.seconds = 0.0

    def __call__(self, requests: int, deliveries: int, seconds: float) -> None:
        self.requests += requests
        self.deliveries += deliveries
        self.commits += 1
        self.max_batch = max(self.max_batch, requests)
        self.seconds += seconds

    def line(self) -> str:
        return (f"inbox: {self.requests} requests, {self.deliveries} deliveries in "
                f"{self.commits} transactions (mean batch "
                f"{self.requests / max(self.commits, 1):.1f}, max {self.max_batch}, mean "
                f"{1000 * self.seconds / max(self.commits, 1):.2f} ms per transaction, "
                "COMMIT included)")


def sqlite_inbox_line(state: Any) -> str:
    """The SQLite inbox's own statistics (fsyncs, WAL), read before the store closes."""
    wal_mb = (state.store.health.state().wal_bytes or 0) / 1e6
    st = state.inbox.stats
    return (
        f"inbox: {st.jobs} requests, {st.deliveries} deliveries in {st.commits} write "
        f"transactions (mean batch {st.jobs / max(st.commits, 1):.1f}, max {st.max_batch}, "
        f"mean {1000 * st.commit_seconds / max(st.commits, 1):.2f} ms in the writer thread) and "
        f"{st.syncs} fsyncs (mean {1000 * st.sync_seconds / max(st.syncs, 1):.2f} ms); "
        f"mean time to durable {1000 * st.latency_seconds / max(st.jobs, 1):.2f} ms "
        f"(commit → fsync start {1000 * st.sync_wait_seconds / max(st.commits, 1):.2f} ms, "
        f"fsync end → loop {1000 * st.resolve_seconds / max(st.syncs, 1):.2f} ms); "
        f"WAL {wal_mb:.1f} MB at the end, started over {st.wal_rewinds} times"
    )


class Launched:
    """hookd's app made on uvicorn's event loop (`server`), before uvicorn loads it: the
    store started there, the server secret read from it, the worker (if any) beside it,
    and all of it closed there once uvicorn has stopped."""

    def __init__(self, config: Config, window: float | None, worker: str | None) -> None:
        self.config, self.window, self.worker = config, window, worker
        self.report = ""  # the inbox's statistics, once closed

    async def open(self) -> Any:
        from hookd import store as stores
        from hookd.ingest.app import AppState

        store = stores.open(self.config.settings)
        if self.config.settings.store.kind == "postgresql":
            await store.start()  # its pool, LISTEN session and inbox belong to this loop
        elif self.window is not None:
            store.inbox.window = self.window  # type: ignore[attr-defined]  # SQLite's inbox
        # SQLite: the inbox alone, as this launcher always ran it (no health probe thread).
        state = AppState(self.config, store, await store.server_secret())
        state.inbox.start()
        return state

    async def close(self, state: Any, commits: Commits) -> None:
        sqlite = self.config.settings.store.kind == "sqlite"
        report = sqlite_inbox_line(state) if sqlite else ""
        await state.store.aclose()
        self.report = report or commits.line()

    def server(self, server_config: Any, *, bare: bool = False) -> Any:
        """A uvicorn server for `server_config` (`bare`: its app as it is)."""
        import uvicorn

        from hookd.ingest.app import create_app

        launched = self

        class Server(uvicorn.Server):
            # `_serve`, not `serve`: inside uvicorn's signal capture, so the SIGINT that
            # stopped it is re-raised (cancelling this task) only after the teardown.
            async def _serve(self, sockets: Any = None) -> None:
                if bare:
                    await super()._serve(sockets)
                    return
                state = await launched.open()
                self.config.app = create_app(state)  # uvicorn loads it in serve
                commits = Commits()
                state.inbox.on_commit(commits)
                worker = await start_worker(state, launched.worker)
                try:
                    await super()._serve(sockets)
                finally:
                    if worker is not None:
                        await worker.stop(10)
                    await launched.close(state, commits)

        return Server(server_config)


def with_log_step(config: Config) -> Config:
    """The ``push`` flow with one ``log`` step, as a real flow."""
    import dataclasses

    from hookd.config import model

    push = dataclasses.replace(config.flows["push"], steps=(model.Step(
        id="log", action=model.LogAction(message="push to {{ trigger.body.repository.full_name }}",
                                         fields={"after": "{{ trigger.body.after }}"})),))
    return dataclasses.replace(config, flows={**config.flows, "push": push})


async def start_worker(state: Any, mode: str | None) -> Any:
    """The pipeline worker (``inline`` or ``process``) started on this loop, or None."""
    if mode is None:
        return None
    worker: Any
    if mode == "process":
        from hookd.runs.worker_process import ProcessWorker

        worker = ProcessWorker(state, log_format="json", log_level="info")
    else:
        from hookd.runs.worker import Worker

        worker = Worker(state)
    state.store.deliveries.on_arrival(worker.poke)  # as the daemon wires it
    await worker.start()
    return worker


def wait_listening(port: int, timeout: float = 20.0) -> None:
    """Block until 127.0.0.1:`port` accepts connections."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
