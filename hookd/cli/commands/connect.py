"""`hookd connect CONNECTION [DIR]`: authorize an ``oauth:`` connection once, interactively.

Runs the authorization-code grant with PKCE (`hookd.oauth.authorization`): prints the
URL to open, then either waits for the browser's redirect on a loopback listener (the
port of ``oauth.redirect_uri``; without one, a free port, for providers that accept any
loopback port as RFC 8252 §7.3 asks), or, with ``--paste`` on a machine without a
browser, reads the address the browser was redirected to from standard input. The
redirect's ``state`` must be this attempt's; the code is exchanged (with the verifier)
through `hookd.upstream` like every request, and the tokens are stored in the state
directory (`hookd.store.tokens`, ``STATE/oauth/CONNECTION.json``, mode 0600). The daemon
picks them up on its next request: nothing to restart.

Exit codes: 0 connected, 1 the provider refused or the redirect did not come (in time),
2 usage error (unknown connection, not an ``oauth:`` one, a non-loopback redirect URI
without ``--paste``).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from hookd.cli.commands._common import (
    EXIT_ERRORS,
    EXIT_OK,
    UsageError,
    add_config_args,
    add_state_arg,
    load_valid_config,
)

if TYPE_CHECKING:
    import asyncio

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
PAGE = (b"<!doctype html><title>hookd</title><p>hookd received the authorization. "
        b"You can close this window.</p>")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "connect",
        help="authorize an OAuth 2.0 connection (authorization code + PKCE) and store its tokens",
        description="Print the authorization URL of an oauth: connection, wait for the "
        "browser's redirect (or read it with --paste), exchange the code and store the "
        "tokens in the state directory.",
    )
    parser.add_argument("connection", metavar="CONNECTION", help="the connection's name")
    add_config_args(parser)
    add_state_arg(parser)
    parser.add_argument("--paste", action="store_true",
                        help="no listener: paste the address the browser was redirected to")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                        help="how long to wait for the redirect (default 300)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_valid_config(args, "connect", consequence="nothing was stored")
    if config is None:
        return EXIT_ERRORS
    conn = config.connections.get(args.connection)
    if conn is None:
        known = ", ".join(sorted(c for c, v in config.connections.items() if v.oauth)) or "none"
        raise UsageError(f"no connection '{args.connection}' (oauth: connections: {known})")
    if conn.oauth is None:
        raise UsageError(f"connection '{conn.name}' has no oauth: block; nothing to connect")
    # Without a registered redirect_uri: any free port (RFC 8252 loopback redirect), or,
    # for --paste, a loopback address nothing answers (the address bar still shows it).
    redirect = conn.oauth.redirect_uri or (
        "http://127.0.0.1/callback" if args.paste else "http://127.0.0.1:0/callback")
    parts = urlsplit(redirect)
    if not args.paste and (parts.scheme != "http" or parts.hostname not in LOOPBACK):
        raise UsageError(f"redirect_uri {redirect} is not a loopback http:// address hookd can "
                         "listen on; use --paste")
    import asyncio

    return asyncio.run(_connect(args, config, conn, redirect))


async def _connect(args: argparse.Namespace, config: Any, conn: Any, redirect: str) -> int:
    import asyncio
    import secrets

    from hookd.cli.commands.plan import make_upstream
    from hookd.oauth import authorization as authz
    from hookd.oauth.tokens import TokenError
    from hookd.store.tokens import FileTokenStore, open_tokens
    from hookd.upstream import oauth
    from hookd.upstream.errors import UpstreamError

    connector = config.connectors[conn.connector]
    state = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters of [A-Za-z0-9_-] (RFC 7636: 43-128)
    listener: _Listener | None = None
    try:
        if not args.paste:
            listener = await _Listener.start(redirect)
            redirect = listener.redirect_uri
        client = oauth.client(conn, redirect)
        ep = oauth.endpoints(conn, connector)
        url = authz.authorization_url(ep, client, state=state, verifier=verifier,
                                      parameters=oauth.parameters(conn))
        print(f"Open this URL in a browser to authorize connection '{conn.name}':\n\n  {url}\n",
              flush=True)
        if listener is not None:
            print(f"Waiting for the redirect to {redirect} …", file=sys.stderr, flush=True)
            redirected = await asyncio.wait_for(listener.url, args.timeout)
        else:
            print("Then paste the address the browser was redirected to (it may show an "
                  "error page; copy the whole address):", file=sys.stderr, flush=True)
            redirected = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline),
                                                args.timeout)
        code = authz.code_from_redirect(redirected, state)
        store = open_tokens(config.settings)
        async with make_upstream(config) as upstream:
            tokens = await oauth.OAuthTokens(store, upstream).exchange(
                conn, connector, client, code, verifier)
    except TimeoutError:
        print(f"hookd connect: no redirect within {args.timeout:g} s; nothing was stored",
              file=sys.stderr)
        return EXIT_ERRORS
    except (authz.AuthorizationError, TokenError, UpstreamError) as exc:
        print(f"hookd connect: {conn.name}: {exc}; nothing was stored", file=sys.stderr)
        return EXIT_ERRORS
    finally:
        if listener is not None:
            await listener.close()
    refresh = "with a refresh token" if tokens.refresh_token else "without a refresh token"
    where = store.path(conn.name) if isinstance(store, FileTokenStore) else "the database"
    print(f"connection '{conn.name}' connected ({refresh}); tokens stored in {where}")
    return EXIT_OK


class _Listener:
    """A one-shot HTTP listener for the redirect: the first GET on the redirect path
    resolves `url` with the full address it was asked for."""

    def __init__(self, server: asyncio.Server, redirect_uri: str, path: str) -> None:
        self.server = server
        self.redirect_uri = redirect_uri
        self.path = path
        import asyncio

        self.url: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @classmethod
    async def start(cls, redirect: str) -> _Listener:
        import asyncio

        parts = urlsplit(redirect)
        host = (parts.hostname or "127.0.0.1").strip("[]")
        holder: list[_Listener] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await holder[0]._handle(reader, writer)

        try:
            server = await asyncio.start_server(
                handle, host, parts.port if parts.port is not None else 80)
        except OSError as exc:
            raise UsageError(f"cannot listen on {redirect}: {exc.strerror or exc}") from None
        port = server.sockets[0].getsockname()[1]
        netloc = f"{parts.hostname if ':' not in host else f'[{host}]'}:{port}"
        uri = urlunsplit((parts.scheme, netloc, parts.path or "/", "", ""))
        holder.append(cls(server, uri, parts.path or "/"))
        return holder[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        try:
            line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1")
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them matters
            method, target, _ = (line.split(" ", 2) + ["", ""])[:3]
            found = method == "GET" and urlsplit(target).path == self.path
            status = b"200 OK" if found else b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/html; charset=utf-8"
                         b"\r\nConnection: close\r\nContent-Length: "
                         + str(len(PAGE)).encode() + b"\r\n\r\n" + PAGE)
            await writer.drain()
            if found and not self.url.done():
                self.url.set_result(self.redirect_uri.split("?")[0] + "?" + urlsplit(target).query)
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()
