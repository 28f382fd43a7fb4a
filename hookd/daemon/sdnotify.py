"""Tell systemd how the daemon is doing: the sd_notify protocol in a few lines of stdlib.

With ``Type=notify`` systemd waits for ``READY=1`` before it considers hookd started,
shows ``STATUS=`` in ``systemctl status``, expects ``WATCHDOG=1`` pings when
``WatchdogSec=`` is set, and learns about reloads and shutdown from ``RELOADING=1`` and
``STOPPING=1``. The protocol is one datagram of ``KEY=VALUE`` lines sent to the Unix
socket named in ``$NOTIFY_SOCKET`` (a leading ``@`` means the Linux abstract namespace),
so a native dependency (libsystemd) is not worth its weight.

Everything here is a no-op when ``$NOTIFY_SOCKET`` is unset (not run by systemd, or
tests), and send errors are swallowed: a broken notify socket must never stop the daemon.

>>> Notifier(env={}).send(READY=1)
False
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def encode(**fields: object) -> bytes:
    """The datagram for some fields, in the order given.

    >>> encode(READY=1, STATUS="3 flows")
    b'READY=1\\nSTATUS=3 flows'
    """
    # A newline inside a value would start a new assignment: flatten it.
    return "\n".join(f"{k}={str(v).replace(chr(10), ' ')}" for k, v in fields.items()).encode()


def socket_address(value: str) -> str | bytes | None:
    """The address to send to for a ``$NOTIFY_SOCKET`` value (``@name`` is abstract).

    >>> socket_address("@/org/freedesktop/systemd1/notify")
    b'\\x00/org/freedesktop/systemd1/notify'
    >>> socket_address("/run/systemd/notify")
    '/run/systemd/notify'
    >>> socket_address("") is None
    True
    """
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock: and other forms are not supported; stay silent


def watchdog_interval(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings: half of ``$WATCHDOG_USEC``, or None.

    systemd sets ``WATCHDOG_PID`` when the watchdog is meant for another process.

    >>> watchdog_interval({"WATCHDOG_USEC": "20000000"})
    10.0
    >>> watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, pid=2) is None
    True
    >>> watchdog_interval({}) is None
    True
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner.isdigit() and int(owner) != (os.getpid() if pid is None else pid):
        return None
    return usec / 2 / 1_000_000


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``RELOADING=1`` wants it (``MONOTONIC_USEC=``)."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; silent when there is none."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog = watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: object) -> bool:
        """Send one message; True when it was handed to the socket."""
        if self.address is None or not fields:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(self.address)
                # Never block the event loop: if the receiver's queue is full (a stalled
                # systemd, a test that stopped reading), this message is dropped.
                sock.send(encode(**fields), socket.MSG_DONTWAIT)
        except OSError:  # includes BlockingIOError
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}))

    def reloading(self) -> bool:
        return self.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec())

    def stopping(self) -> bool:
        return self.send(STOPPING=1)

    def status(self, text: str) -> bool:
        return self.send(STATUS=text)

    def ping(self) -> bool:
        return self.send(WATCHDOG=1)


async def watchdog_loop(notifier: Notifier) -> None:
    """Ping the watchdog from the event loop, so a blocked loop is what systemd notices."""
    import asyncio

    if notifier.watchdog is None or not notifier.enabled:
        return
    while True:
        notifier.ping()
        await asyncio.sleep(notifier.watchdog)
