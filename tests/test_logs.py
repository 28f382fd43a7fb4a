"""Structured logging: JSON lines off a TTY, text on one, fields kept, secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from hookd.telemetry import logs


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(stream: io.StringIO, log_format: str = "auto", level: str = "info") -> logging.Logger:
    logs.configure(log_format, level, stream)
    return logging.getLogger("hookd.test")


def test_json_lines_when_not_a_tty(restore_root: None) -> None:
    out = io.StringIO()
    log = emit(out)
    log.info("subscription created", extra={"flow": "deploy", "upstream_id": 42})
    log.warning("second event")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    event = json.loads(lines[0])
    assert event["msg"] == "subscription created"
    assert event["level"] == "info"
    assert event["logger"] == "hookd.test"
    assert event["flow"] == "deploy" and event["upstream_id"] == 42
    assert event["ts"].endswith("Z")


def test_text_on_a_tty(restore_root: None) -> None:
    out = FakeTty()
    emit(out).info("config reloaded", extra={"revision": "3f2a1c0", "note": "two words"})
    line = out.getvalue().strip()
    assert "INFO" in line and "hookd.test: config reloaded" in line
    assert 'revision=3f2a1c0 note="two words"' in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_setting_overrides_the_tty_guess(restore_root: None) -> None:
    out = FakeTty()
    emit(out, "json").info("x")
    assert json.loads(out.getvalue())["msg"] == "x"


def test_traceback_stays_on_one_json_line(restore_root: None) -> None:
    out = io.StringIO()
    log = emit(out)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("reload failed")
    (line,) = out.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_level_filters(restore_root: None) -> None:
    out = io.StringIO()
    log = emit(out, level="warning")
    log.info("hidden")
    log.error("shown")
    assert [json.loads(line)["msg"] for line in out.getvalue().splitlines()] == ["shown"]


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_registered_secret_never_appears(restore_root: None, log_format: str) -> None:
    secret = "ghp_s3cr3tT0kenValue"
    logs.register_secret(secret)
    out = io.StringIO()
    log = emit(out, log_format)
    log.info("calling %s", f"https://x/?token={secret}", extra={"auth": f"Bearer {secret}"})
    try:
        raise RuntimeError(f"401 for {secret}")
    except RuntimeError:
        log.exception("failed")
    text = out.getvalue()
    assert secret not in text
    assert text.count(logs.MASK) >= 3


def test_redactor_masks_the_longest_match_and_ignores_tiny_values() -> None:
    r = logs.Redactor()
    r.add("abc")  # too short to be worth masking
    r.add("secret")
    r.add("secret-extended")
    r.add(b"bytes-secret")
    assert r.redact("abc secret-extended secret bytes-secret") == "abc *** *** ***"
    assert len(r) == 3


@pytest.mark.parametrize(
    ("given", "expected"),
    [("info", logging.INFO), ("DEBUG", logging.DEBUG), ("warn", logging.WARNING),
     ("error", logging.ERROR), ("bogus", logging.INFO)],
)
def test_parse_level(given: str, expected: int) -> None:
    assert logs.parse_level(given) == expected
