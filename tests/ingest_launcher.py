"""A real hookd ingest process for end-to-end tests, the crash test and bench/bench_ingest.py.

    python tests/ingest_launcher.py --state DIR --port N [--mode hookd|bare] [--consume]
                                    [--worker inline|process]

`--mode hookd` serves `hookd.ingest.app.create_app` (routing, verification, schema, dedup,
durable group-commit inbox) under uvicorn; `--mode bare` serves the baseline the
benchmark compares against: a starlette app that only checks the GitHub HMAC and answers
202. `--consume` also runs a stand-in for the pipeline worker (requeue at start, then
claim → done), so a test can see deliveries *processed* after a crash. `--worker` runs
the real pipeline worker instead — in the listener's process or in a child
(`hookd.runs.worker_process`) — with the ``push`` flow given one ``log`` step, so the
ingest benchmark can measure the listener while deliveries are being processed.

`make_config` builds the config in code (no YAML loader needed): a GitHub-shaped connector
plus connectors for each other verification kind, and one flow per case the tests need.
`subscription(config, state_dir, flow)` gives a client the callback URL and signing secret.
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

from hookd.config.model import Config, Flow, Retention, Settings, Trigger
from hookd.connectors.model import Connector, Operation, Verification, WebhookTrigger
from hookd.subscriptions import tokens
from hookd.subscriptions.desired import desired_for_flow

DATA = Path(__file__).resolve().parent / "data"

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


def subscription(config: Config, state_dir: Path, flow_name: str) -> Target:
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
    parser.add_argument("--loop", default="auto")
    parser.add_argument("--http", default="auto")
    args = parser.parse_args(argv)

    import uvicorn

    state_dir: Path = args.state
    config = make_config(state_dir, f"http://127.0.0.1:{args.port}")
    if args.worker:
        config = with_log_step(config)
    app: Any
    state: Any = None
    if args.mode == "bare":
        app = bare_app(subscription(config, state_dir, "push").secret)
    else:
        from hookd import store as stores
        from hookd.ingest.app import AppState, create_app

        store = stores.open(config.settings)
        state = AppState(config, store, tokens.load_or_create_server_secret(state_dir))
        if args.window is not None:
            state.inbox.window = args.window  # type: ignore[attr-defined]  # SQLite's inbox
        state.inbox.start()
        app = create_app(state)
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
        if args.worker and state is not None:
            run_with_worker(server_config, state, args.worker)
        else:
            uvicorn.Server(server_config).run()
    stop.set()
    if state is not None:
        wal_mb = (state.store.health.state().wal_bytes or 0) / 1e6
        state.store.close()
        st = state.inbox.stats
        print(
            f"inbox: {st.jobs} requests, {st.deliveries} deliveries in {st.commits} write "
            f"transactions (mean batch {st.jobs / max(st.commits, 1):.1f}, max {st.max_batch}, "
            f"mean {1000 * st.commit_seconds / max(st.commits, 1):.2f} ms in the writer thread) and "
            f"{st.syncs} fsyncs (mean {1000 * st.sync_seconds / max(st.syncs, 1):.2f} ms); "
            f"mean time to durable {1000 * st.latency_seconds / max(st.jobs, 1):.2f} ms "
            f"(commit → fsync start {1000 * st.sync_wait_seconds / max(st.commits, 1):.2f} ms, "
            f"fsync end → loop {1000 * st.resolve_seconds / max(st.syncs, 1):.2f} ms); "
            f"WAL {wal_mb:.1f} MB at the end, started over {st.wal_rewinds} times",
            file=sys.stderr, flush=True,
        )
    return 0


def with_log_step(config: Config) -> Config:
    """The ``push`` flow with one ``log`` step (its lines go to stderr), as a real flow."""
    import dataclasses

    from hookd.config import model
    from hookd.telemetry import logs

    logs.configure("json", "info")
    push = dataclasses.replace(config.flows["push"], steps=(model.Step(
        id="log", action=model.LogAction(message="push to {{ trigger.body.repository.full_name }}",
                                         fields={"after": "{{ trigger.body.after }}"})),))
    return dataclasses.replace(config, flows={**config.flows, "push": push})


def run_with_worker(server_config: Any, state: Any, mode: str) -> None:
    """Run uvicorn with the pipeline worker (``inline`` or ``process``) on its loop."""
    import uvicorn

    class Server(uvicorn.Server):
        async def serve(self, sockets: Any = None) -> None:
            worker: Any
            if mode == "process":
                from hookd.runs.worker_process import ProcessWorker

                worker = ProcessWorker(state, log_format="json", log_level="info")
            else:
                from hookd.runs.worker import Worker

                worker = Worker(state)
            state.store.deliveries.on_arrival(worker.poke)  # as the daemon wires it
            await worker.start()
            try:
                await super().serve(sockets)
            finally:
                await worker.stop(10)

    Server(server_config).run()


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
