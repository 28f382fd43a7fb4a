"""Structured logging for the daemon: one event per line, never a secret.

Operators read hookd's logs in two places: on a terminal while trying a config, and in
the journal (or a log shipper) when it runs as a service. So the format follows where
stderr goes — readable text on a TTY, JSON lines otherwise — unless ``log_format`` in
``hookd.yaml`` says ``json`` or ``text``. Events carry their data as fields, passed with
the standard ``extra=``::

    log.info("subscription created", extra={"flow": "deploy", "upstream_id": 42})

    {"ts": "2026-11-27T21:53:03.120Z", "level": "info", "logger": "hookd.reconcile.reconciler",
     "msg": "subscription created", "flow": "deploy", "upstream_id": 42}

Secrets are referenced in YAML and resolved at run time, so a resolved value can end up
in an exception message, a rendered URL or a library's debug line. Rather than trusting
every call site, every value that hookd resolves is registered here (`register_secret`)
and masked in the final text of every line, tracebacks included. That final pass is the
one place redaction happens, so nothing that reaches the handler can bypass it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from hookd.telemetry.throttle import Throttle

MASK = "***"
# Shorter values would mask ordinary words and numbers all over the log; such a
# "secret" offers no protection anyway.
MIN_SECRET_LENGTH = 4

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of msg
}


class Redactor:
    """The registry of secret values and the pass that masks them in text.

    >>> r = Redactor()
    >>> r.add("hunter22")
    >>> r.redact("password is hunter22, really hunter22")
    'password is ***, really ***'
    """

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str | bytes | None) -> None:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not value or len(value) < MIN_SECRET_LENGTH or value in self._values:
            return
        with self._lock:
            self._values.add(value)
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def add_all(self, values: Iterable[str | bytes | None]) -> None:
        for value in values:
            self.add(value)

    def redact(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None else text

    def __len__(self) -> int:
        return len(self._values)


# One per process: secrets are resolved in many modules and logged from many more.
REDACTOR = Redactor()


def register_secret(value: str | bytes | None) -> None:
    """Mask this value in every log line from now on (call it wherever a secret is resolved)."""
    REDACTOR.add(value)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The ``extra=`` fields of a record, in the order given."""
    return {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the event's fields, exc."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in fields_of(record).items():
            event.setdefault(key, value)
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            event["stack"] = record.stack_info
        # json.dumps escapes newlines, so a traceback stays one line.
        return self.redactor.redact(json.dumps(event, default=str, ensure_ascii=False))


def _show(value: Any) -> str:
    """A field value for the text format: bare when unambiguous, else JSON-quoted.

    >>> _show(12), _show("deploy"), _show("two words")
    ('12', 'deploy', '"two words"')
    """
    text = str(value)
    if isinstance(value, int | float) or (text and not any(c in text for c in ' "=\n')):
        return text
    return json.dumps(text, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``21:53:03 INFO  hookd.daemon.lifecycle: config reloaded revision=3f2a1c0 flows=12``."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        message = record.getMessage().replace("\n", "\\n")
        line = f"{clock} {record.levelname:<7} {record.name}: {message}"
        for key, value in fields_of(record).items():
            line += f" {key}={_show(value)}"
        if record.exc_info:
            # Readable on a terminal: the traceback follows, indented.
            tb = self.formatException(record.exc_info)
            line += "\n" + "\n".join("    " + t for t in tb.splitlines())
        return self.redactor.redact(line)


def choose_format(log_format: str, stream: IO[str]) -> str:
    """``json`` or ``text``: ``auto`` picks text on a terminal, JSON otherwise.

    >>> import io
    >>> choose_format("auto", io.StringIO())
    'json'
    >>> choose_format("text", io.StringIO())
    'text'
    """
    if log_format in ("json", "text"):
        return log_format
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def parse_level(level: str | int) -> int:
    """``"info"``, ``"DEBUG"``, ``"warn"`` or a number → a logging level (info if unknown).

    >>> parse_level("debug"), parse_level("warn"), parse_level("nonsense")
    (10, 30, 20)
    """
    if isinstance(level, int):
        return level
    name = level.strip().upper()
    name = {"WARN": "WARNING", "FATAL": "CRITICAL"}.get(name, name)
    value = logging.getLevelName(name)
    return value if isinstance(value, int) else logging.INFO


class FloodFilter(logging.Filter):
    """At most `burst` lines per `per` seconds for each kind of warning or error.

    An unauthenticated client can make libraries log at will (uvicorn logs a warning per
    malformed request: ~2,100 per 10,000), which floods the journal and costs the event
    loop a write per line. A kind is the logger and the message template; info and debug
    lines pass untouched (those that a client can cause throttle themselves:
    `hookd.telemetry.throttle`). The first line of a kind let through after some were
    dropped carries ``suppressed=K``, how many were dropped since the last one shown.

    >>> f = FloodFilter(burst=2, per=60, clock=iter([0, 0, 0, 0, 61]).__next__)
    >>> rec = lambda: logging.makeLogRecord({"name": "x", "levelno": 30, "msg": "bad"})
    >>> [f.filter(rec()) for _ in range(4)]
    [True, True, False, False]
    >>> r = rec(); f.filter(r), r.suppressed
    (True, 2)
    """

    def __init__(self, burst: int = 10, per: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.throttle = Throttle(per=per, burst=burst, clock=clock)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        held = self.throttle.admit((record.name, str(record.msg)))
        if held is None:
            return False
        if held:
            record.suppressed = held
        return True


_HANDLER_NAME = "hookd"


def configure(
    log_format: str = "auto", level: str | int = "info", stream: IO[str] | None = None
) -> logging.Handler:
    """Install hookd's handler on the root logger (replacing an earlier one) and return it.

    Libraries' loggers (uvicorn, apscheduler, httpx) propagate to it, so they get the same
    format and the same redaction.
    """
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    chosen = choose_format(log_format, stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    handler.addFilter(FloodFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
    # Chatty libraries stay at warning unless hookd itself is at debug.
    quiet = logging.WARNING if root.level > logging.DEBUG else logging.DEBUG
    # uvicorn.error logs each listener's start and stop at info; hookd logs its own.
    for name in ("httpx", "httpcore", "apscheduler", "watchfiles", "uvicorn.error"):
        logging.getLogger(name).setLevel(quiet)
    return handler
