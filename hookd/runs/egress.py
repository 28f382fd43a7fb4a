"""Where `http` and `notify` steps may send a request (egress policy, docs/pipeline.md).

A step URL is a template, and templates read payloads: ``url:
"http://127.0.0.1:19211{{ trigger.body.path }}"`` with ``path="@127.0.0.1:19202/api/runs"``
sent the request to hookd's admin listener (the text after ``@`` became the host) and
stored its answer as step output. The rules:

1. **The origin is what the config wrote.** When the text before the first template
   reaches the end of the host (``https://api.example.com/…``), the scheme, userinfo,
   host and port are that text, and each ``{{ … }}`` output is percent-encoded for where
   it stands: in the path ``?`` and ``#`` are encoded (``/`` is kept, so
   ``{{ repo.full_name }}`` still works), in the query ``&``, ``=``, ``+`` and ``#`` too.
   `render_url` does this.
2. **Otherwise the host comes from a template** (``"{{ env.URL }}"``, ``"https://{{ h }}/"``,
   the attack above), and it must match ``egress.allow`` (exact names, or
   ``*.example.com`` for subdomains); ``egress.deny_private: true`` also refuses
   loopback, link-local, private and other non-public addresses for it, and such a URL
   may carry no userinfo. Redirects are never followed (a 3xx is the step's output).
3. **No step reaches hookd's own listeners**, literal or not: a URL whose port is the
   public or admin listener's and whose address is this machine's is refused.

Hosts written literally keep working as before (a deploy hook on localhost, a test sink).
`refusal` is the pure decision; `check` is its I/O shell (it resolves the name only when
a rule needs the addresses, and asks the kernel whether an address is this machine's).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from hookd.config.model import Config, Egress, Listener
from hookd.templating import engine as templating
from hookd.templating.analysis import literal_origin

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_EXPRESSION = re.compile(r"(\{\{.*?\}\})", re.DOTALL)
# What an expression's output may keep unencoded, by where it stands.
_SAFE = {"path": "/:@!$&'()*+,;=-._~", "query": ":@!$'()*,;/?-._~", "fragment": ":@!$'()*,;/?-._~"}


@dataclass(frozen=True)
class Target:
    """A step URL as it will be sent, and whether its host came from a template."""

    url: str
    host_from_template: bool = False


def render_url(source: Any, context: Mapping[str, Any]) -> Target | None:
    """Render a step's ``url`` (rule 1); None when it is not a template (a literal, or a
    secret reference resolved elsewhere: written by the operator, so literal).

    >>> render_url("https://h.example/x/{{ p }}?q={{ p }}", {"p": "a?b&c=d#e"}).url
    'https://h.example/x/a%3Fb&c=d%23e?q=a?b%26c%3Dd%23e'
    >>> render_url("http://127.0.0.1:1{{ p }}", {"p": "@10.0.0.1:2/api"})
    Target(url='http://127.0.0.1:1@10.0.0.1:2/api', host_from_template=True)
    """
    if not isinstance(source, str) or not templating.is_template(source):
        return None
    origin = literal_origin(source)
    if origin is None:
        return Target(templating.as_text(templating.render_value(source, context)), True)
    out, where = [origin], "path"
    for part in _EXPRESSION.split(source[len(origin):]):
        if part.startswith("{{") and part.endswith("}}"):
            value = templating.as_text(templating.render_value(part, context))
            out.append(quote(value, safe=_SAFE[where]))
            continue
        out.append(part)
        if "#" in part:
            where = "fragment"
        elif "?" in part and where == "path":
            where = "query"
    return Target("".join(out), False)


# --------------------------------------------------------------------------- the decision


def host_allowed(host: str, allow: Iterable[str]) -> bool:
    """Does `host` match one of `allow` (exact, or ``*.example.com`` for any subdomain)?

    >>> host_allowed("api.example.com", ["*.example.com"]), host_allowed("example.com", ["*.example.com"])
    (True, False)
    >>> host_allowed("HOOKS.internal", ["hooks.internal"])
    True
    """
    host = host.lower().rstrip(".")
    for pattern in allow:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def _unmapped(address: IPAddress) -> IPAddress:
    """``::ffff:127.0.0.1`` is 127.0.0.1 to a dual-stack socket: judge it as such."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public(address: IPAddress) -> bool:
    """False for loopback, link-local, private, shared (CGNAT), multicast, reserved and
    unspecified addresses (also IPv4 mapped into IPv6)."""
    address = _unmapped(address)
    return address.is_global and not address.is_multicast


def needs_addresses(target: Target, egress: Egress, listeners: Iterable[Listener]) -> bool:
    """Does `refusal` need the host's addresses (a listener's port, or deny_private)?"""
    parts = urlsplit(target.url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    return (any(port == lst.port for lst in listeners)
            or (target.host_from_template and egress.deny_private))


def refusal(
    target: Target,
    egress: Egress,
    listeners: Mapping[str, Listener],
    addresses: Iterable[IPAddress] = (),
    local: Iterable[IPAddress] = (),
) -> str | None:
    """Why `target` may not be requested, or None (module docstring). `addresses` are
    the host's (when `needs_addresses`), `local` those of them that are this machine's.

    >>> own = {"admin": Listener("127.0.0.1", 8081)}
    >>> lo = [ipaddress.ip_address("127.0.0.1")]
    >>> refusal(Target("http://localhost:8081/api/runs"), Egress(), own, lo)
    "hookd's own admin listener (localhost:8081) is not a step target"
    >>> refusal(Target("https://{{x}}", True), Egress(), own) is None
    False
    >>> refusal(Target("https://api.example.com/x", True), Egress(allow=("*.example.com",)), own)
    """
    parts = urlsplit(target.url)
    if parts.scheme.lower() not in ("http", "https"):
        return f"url must start with http:// or https://, not {target.url[:60]!r}"
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return "url has an invalid port"
    if not host:
        return "url has no host"
    addresses, local = [_unmapped(a) for a in addresses], {_unmapped(a) for a in local}
    for name, listener in listeners.items():
        if port != listener.port:
            continue
        bound = listener.host.lower().strip("[]")
        if host == bound or any(a.is_loopback or a.is_unspecified or a in local
                                for a in addresses):
            return f"hookd's own {name} listener ({host}:{port}) is not a step target"
    if not target.host_from_template:
        return None
    if parts.username is not None or parts.password is not None:
        return "a url whose host comes from a template may not carry user:password@"
    if not host_allowed(host, egress.allow):
        return (f"host {host} comes from a template and is not in egress.allow "
                "(add it there in hookd.yaml, or write the host in the url)")
    if egress.deny_private and any(not is_public(a) for a in addresses):
        return f"host {host} resolves to a non-public address (egress.deny_private)"
    return None


# --------------------------------------------------------------------------- the I/O shell


async def check(target: Target, config: Config | None) -> str | None:
    """`refusal` for `target` under `config`'s policy and listeners, resolving the host
    only when a rule needs it. A name that does not resolve is left to the request."""
    if config is None:
        return refusal(target, Egress(), {})
    settings = config.settings
    listeners = {"public": settings.public, "admin": settings.admin}
    addresses: list[IPAddress] = []
    if needs_addresses(target, settings.egress, listeners.values()):
        addresses = await _resolve(urlsplit(target.url).hostname or "")
    local = [a for a in addresses if _is_local(a)]
    return refusal(target, settings.egress, listeners, addresses, local)


async def _resolve(host: str) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return []
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                              for info in infos))


def _is_local(address: IPAddress) -> bool:
    """Is `address` one of this machine's? The kernel lets a socket bind only to those."""
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((str(address), 0))
    except OSError:
        return False
    return True
