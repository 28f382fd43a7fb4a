"""`hookd send`: post a payload to a flow's callback URL, signed as its connector requires.

For testing a flow by hand (or from a script) without waiting for the upstream: it finds
the flow's subscription, its callback URL and signing secret from the config directory
and the state directory (like the daemon does), signs the file's bytes with the
connector's scheme (GitHub HMAC, GitLab token, Standard Webhooks, …), adds the event and
delivery-id headers the connector names, and prints the answer.

    hookd send FLOW|SUBSCRIPTION PAYLOAD_FILE [--event E] [--delivery-id ID]
               [--url URL] [--config DIR] [--state-dir DIR] [--in-process]
               [--format text|json]

Without `--in-process` it posts to the running daemon's public listener (`--url`, default
from hookd.yaml). With `--in-process` it runs the callback app inside this command
against a throw-away state directory: the answer shows routing, verification and payload
validation, and nothing is recorded or run.

Exit codes: 0 the delivery was accepted (2xx), 1 it was refused (the answer says why),
2 usage or I/O error (bad config, unknown flow, unreadable file, daemon unreachable).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hookd.cli.commands._common import (
    EXIT_OK,
    EXIT_USAGE,
    add_config_args,
    add_format_arg,
    add_state_arg,
    load_valid_config,
    local_url,
    open_existing_store,
    run_on,
    server_secret_for,
)

if TYPE_CHECKING:
    from hookd.config.model import Settings

EXIT_REFUSED = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "send",
        help="post a payload to a flow's callback URL, signed as its connector requires",
        description="Post PAYLOAD_FILE to the callback URL of FLOW (or of subscription id "
        "SUBSCRIPTION), signed with the subscription's secret, with the connector's event "
        "and delivery-id headers, and print the answer.",
    )
    parser.add_argument("target", metavar="FLOW|SUBSCRIPTION")
    parser.add_argument("payload", metavar="PAYLOAD_FILE", help="JSON file to send ('-': stdin)")
    parser.add_argument("--event", "-e", help="event header value (default: the file name up "
                        "to the first '.', e.g. push for push.0.json, when the connector has one)")
    parser.add_argument("--delivery-id", help="delivery-id header value (default: a new UUID)")
    parser.add_argument("--url", help="base URL of the public listener "
                        "(default: from hookd.yaml listen.public)")
    add_config_args(parser, positional=False)
    add_state_arg(parser)
    parser.add_argument("--in-process", action="store_true",
                        help="run the callback app in this process (nothing is recorded)")
    add_format_arg(parser)
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds (default 15)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hookd.callbacks import routing
    from hookd.config import secrets
    from hookd.subscriptions import tokens

    config = load_valid_config(args, "send", consequence="nothing was sent")
    if config is None:
        return EXIT_USAGE
    state_dir = Path(config.settings.state_dir)
    try:
        found_secret = server_secret_for(config.settings, create=False)
    except (ValueError, OSError) as exc:
        print(f"hookd send: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if found_secret is None and not args.in_process:
        print(f"hookd send: no server secret in {state_dir}; has hookd run with this config? "
              "(use --in-process to try without a daemon)", file=sys.stderr)
        return EXIT_USAGE
    # In-process only: any secret gives consistent URLs.
    server_secret = found_secret if found_secret is not None else bytes(32)
    # The same resolver the daemon uses: a flow's `verify_secret` signs with its value.
    table = routing.build(config, server_secret, rows=_store_rows(config.settings),
                          resolve=secrets.resolve_value)
    route = _find_route(table, args.target)
    if route is None:
        flows = ", ".join(sorted(config.flows)) or "none"
        print(f"hookd send: no flow or subscription {args.target!r} (flows: {flows})",
              file=sys.stderr)
        return EXIT_USAGE

    body = sys.stdin.buffer.read() if args.payload == "-" else Path(args.payload).read_bytes()
    headers = build_headers(route, body, args.payload, event=args.event,
                            delivery_id=args.delivery_id, now=time.time())
    path = f"/hooks/{route.subscription_id}/{tokens.callback_token(server_secret, route.subscription_id)}"
    if args.in_process:
        status, answer = _send_in_process(config, server_secret, path, headers, body)
    else:
        base = (args.url or local_url(config.settings.public)).rstrip("/")
        try:
            status, answer = _send_http(base + path, headers, body, args.timeout)
        except OSError as exc:
            print(f"hookd send: cannot reach {base}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    _print(args.format, route.flow, route.subscription_id, status, answer)
    return EXIT_OK if 200 <= status < 300 else EXIT_REFUSED


def build_headers(
    route: Any, body: bytes, payload_name: str, *, event: str | None, delivery_id: str | None,
    now: float,
) -> dict[str, str]:
    """Content type, the connector's event and delivery-id headers, and the signature."""
    import uuid

    from hookd.callbacks.verify import sign

    headers = {"content-type": "application/json", "user-agent": "hookd-send"}
    if route.event_header:
        event = event or (Path(payload_name).name.split(".", 1)[0] if payload_name != "-" else None)
        if event:
            headers[route.event_header] = event
    delivery_id = delivery_id or str(uuid.uuid4())
    if route.delivery_id_header and route.delivery_id_header != "webhook-id":
        headers[route.delivery_id_header] = delivery_id
    signed = sign(route.verification, route.secret, body, now=now,
                  msg_id=delivery_id if route.verification.kind == "standard-webhooks" else None)
    headers.update({k.lower(): v for k, v in signed.items()})
    return headers


def _store_rows(settings: Settings) -> dict[str, Any]:
    """The store's subscriptions (read-only; empty when there is no store yet)."""

    from hookd.store.errors import StoreError

    store = open_existing_store(settings, readonly=True)
    if store is None:
        return {}
    try:
        return {r.id: r for r in run_on(store, lambda s: s.subscriptions.all())}
    except StoreError:
        return {}


def _find_route(table: Any, target: str) -> Any:
    routes = table.routes
    if target in routes:
        return routes[target]
    by_flow = [r for r in routes.values() if r.flow == target]
    return by_flow[0] if by_flow else None


def _send_http(url: str, headers: dict[str, str], body: bytes, timeout: float) -> tuple[int, Any]:
    import httpx

    try:
        r = httpx.post(url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise OSError(str(exc)) from None
    return r.status_code, _decode(r.content)


def _send_in_process(
    config: Any, server_secret: bytes, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, Any]:
    import asyncio
    import dataclasses
    import tempfile

    import httpx

    from hookd import store as stores
    from hookd.ingest.app import AppState, create_app

    async def go(state_dir: Path) -> tuple[int, Any]:
        settings = dataclasses.replace(config.settings, state_dir=state_dir)
        store = stores.open(settings)  # a throw-away store in `state_dir`
        state = AppState(dataclasses.replace(config, settings=settings), store, server_secret)
        transport = httpx.ASGITransport(app=create_app(state))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://hookd") as client:
                r = await client.post(path, content=body, headers=headers)
        finally:
            await state.aclose()
            await store.aclose()
        return r.status_code, _decode(r.content)

    with tempfile.TemporaryDirectory(prefix="hookd-send-") as tmp:
        return asyncio.run(go(Path(tmp)))


def _decode(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content.decode("utf-8", "replace")


def _print(fmt: str, flow: str, subscription: str, status: int, answer: Any) -> None:
    if fmt == "json":
        print(json.dumps({"flow": flow, "subscription": subscription, "status": status,
                          "answer": answer}, sort_keys=True))
        return
    if isinstance(answer, dict) and "delivery" in answer:
        extra = " (duplicate: already recorded)" if answer.get("duplicate") else ""
        print(f"{status} delivery {answer['delivery']}{extra}  flow {flow}")
    elif isinstance(answer, dict) and "error" in answer:
        print(f"{status} {answer['error']}  flow {flow}")
        for v in answer.get("violations", []):
            print(f"  {v}")
    else:
        text = answer if isinstance(answer, str) else json.dumps(answer, sort_keys=True)
        print(f"{status} {text}  flow {flow}")
