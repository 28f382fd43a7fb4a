"""sd_notify: messages reach a real Unix datagram socket, abstract or not; no socket, no-op."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookd.daemon import sdnotify


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()


def test_ready_with_status_arrives_as_one_datagram(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = sdnotify.Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("2 flows, 1 subscriptions active, 0 failing")
    assert sock.recv(4096) == b"READY=1\nSTATUS=2 flows, 1 subscriptions active, 0 failing"


def test_reloading_carries_monotonic_usec(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    sdnotify.Notifier({"NOTIFY_SOCKET": path}).reloading()
    lines = dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())
    assert lines["RELOADING"] == "1"
    assert abs(int(lines["MONOTONIC_USEC"]) - sdnotify.monotonic_usec()) < 5_000_000


def test_stopping_and_watchdog(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = sdnotify.Notifier({"NOTIFY_SOCKET": path})
    notifier.stopping()
    notifier.ping()
    assert [sock.recv(100), sock.recv(100)] == [b"STOPPING=1", b"WATCHDOG=1"]


def test_abstract_namespace_socket() -> None:
    name = f"hookd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        assert sdnotify.Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert sock.recv(100) == b"STATUS=hello"


def test_newline_in_status_cannot_inject_a_field(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    sdnotify.Notifier({"NOTIFY_SOCKET": path}).status("bad\nREADY=1")
    assert sock.recv(100) == b"STATUS=bad READY=1"


@pytest.mark.parametrize(
    "env",
    [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "/nonexistent/hookd/notify.sock"}],
)
def test_without_a_reachable_socket_nothing_fails(env: dict[str, str]) -> None:
    notifier = sdnotify.Notifier(env)
    assert notifier.ready() is False
    assert notifier.stopping() is False


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], expected: float | None
) -> None:
    assert sdnotify.watchdog_interval(env) == expected


def test_watchdog_loop_pings_repeatedly(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = sdnotify.Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})

    async def three_pings() -> list[bytes]:
        task = asyncio.create_task(sdnotify.watchdog_loop(notifier))
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        try:
            return [await asyncio.wait_for(loop.sock_recv(sock, 100), 5) for _ in range(3)]
        finally:
            task.cancel()

    assert asyncio.run(three_pings()) == [b"WATCHDOG=1"] * 3


def test_a_receiver_that_stopped_reading_never_blocks_the_sender(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "full.sock"))  # bound, never read
        notifier = sdnotify.Notifier({"NOTIFY_SOCKET": str(tmp_path / "full.sock")})
        sent = [notifier.ping() for _ in range(5000)]
    assert sent[0] is True
    assert sent[-1] is False  # the queue filled up; later messages were dropped
