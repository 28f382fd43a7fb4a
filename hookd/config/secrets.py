"""Secret references: ``${env:NAME}``, ``${file:PATH}``, ``${credential:NAME}``.

Config files live in git, so they never hold a secret, only a reference to where it is:
an environment variable, a file (relative paths are relative to the config directory), or
a systemd credential (``LoadCredential=NAME:/path`` in the unit puts it in
``$CREDENTIALS_DIRECTORY/NAME``, readable only by the service). The loader turns a value
that is exactly one reference into a `SecretRef`; the value is read only where it is used.

Errors name the reference and what needs it, never the value, so they are safe to log:

>>> ref = parse_ref("${env:GITHUB_TOKEN}")
>>> ref, str(ref)
(SecretRef(kind='env', name='GITHUB_TOKEN'), '${env:GITHUB_TOKEN}')
>>> resolve(ref, env={})
Traceback (most recent call last):
  ...
hookd.config.secrets.SecretError: ${env:GITHUB_TOKEN}: environment variable GITHUB_TOKEN is not set
>>> parse_ref("plain text") is None
True
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from hookd.config.model import MaybeSecret, SecretRef

KINDS = ("env", "file", "credential")
# The whole value must be one reference; `looks_like_ref` catches the near misses.
_REF = re.compile(r"\$\{(env|file|credential):([^}]+)\}")
_ANY_REF = re.compile(r"\$\{([A-Za-z_]+):([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CREDENTIAL_NAME = re.compile(r"[^/\x00]+")


class SecretError(Exception):
    """A secret that cannot be resolved; the message names the reference, never a value."""

    def __init__(self, ref: SecretRef | str, reason: str, *, needed_by: str = "") -> None:
        self.ref = ref
        self.reason = reason
        self.needed_by = needed_by
        text = f"{ref}: {reason}"
        if needed_by:
            text += f" (needed by {needed_by})"
        super().__init__(text)


def parse_ref(text: object) -> SecretRef | None:
    """The `SecretRef` when `text` is exactly one well-formed reference, else None."""
    if not isinstance(text, str) or not text.startswith("${"):
        return None
    match = _REF.fullmatch(text.strip())
    if match is None:
        return None
    kind, name = match.group(1), match.group(2).strip()
    if kind == "env" and not _ENV_NAME.fullmatch(name):
        return None
    if kind == "credential" and (not _CREDENTIAL_NAME.fullmatch(name) or name in (".", "..")):
        return None
    return SecretRef(kind, name)  # type: ignore[arg-type]


def ref_problem(text: str) -> str:
    """Why `text` is not a usable reference although it contains ``${…:…}``; "" if fine.

    Used by `hookd check`: ``Bearer ${env:X}`` (embedded), ``${vault:x}`` (unknown kind)
    and ``${env:BAD-NAME}`` must not silently become literal strings.
    """
    if parse_ref(text) is not None:
        return ""
    match = _ANY_REF.search(text)
    if match is None:
        return ""
    kind, name = match.group(1), match.group(2)
    if kind not in KINDS:
        return f"unknown secret kind '{kind}' in {match.group(0)} (use env, file or credential)"
    if match.group(0) != text.strip():
        return f"{match.group(0)} must be the whole value, not part of a string"
    if kind == "env":
        return f"'{name}' is not an environment variable name"
    return f"'{name}' is not a valid {kind} name"


def resolve(
    ref: SecretRef,
    *,
    env: Mapping[str, str] | None = None,
    credentials_dir: Path | str | None = None,
    base_dir: Path | None = None,
) -> str:
    """The secret's value. Raises `SecretError` naming `ref` (never the value).

    `env` defaults to ``os.environ``; `credentials_dir` to ``$CREDENTIALS_DIRECTORY``
    (from `env`); `base_dir` anchors relative ``${file:…}`` paths (the config directory).
    A file's single trailing newline is dropped (``echo token > file`` is the common way
    to write one); an empty secret is an error, since it is never what was meant.
    """
    environ = os.environ if env is None else env
    if ref.kind == "env":
        value = environ.get(ref.name)
        if value is None:
            raise SecretError(ref, f"environment variable {ref.name} is not set")
    elif ref.kind == "file":
        path = Path(ref.name).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        value = _read(ref, path, "file")
    elif ref.kind == "credential":
        directory = credentials_dir or environ.get("CREDENTIALS_DIRECTORY")
        if not directory:
            raise SecretError(
                ref,
                "CREDENTIALS_DIRECTORY is not set (add LoadCredential= to the systemd unit)",
            )
        value = _read(ref, Path(directory) / ref.name, "credential")
    else:  # pragma: no cover - SecretRef.kind is a Literal
        raise SecretError(ref, f"unknown secret kind '{ref.kind}'")
    if value == "":
        raise SecretError(ref, "the secret is empty")
    return value


def _read(ref: SecretRef, path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretError(ref, f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise SecretError(ref, f"{what} {path} is a directory") from None
    except PermissionError:
        raise SecretError(ref, f"{what} {path} is not readable by this user") from None
    except UnicodeDecodeError:
        raise SecretError(ref, f"{what} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise SecretError(ref, f"{what} {path} cannot be read: {exc.strerror}") from None
    return text.removesuffix("\n").removesuffix("\r")


def resolve_value(
    value: MaybeSecret,
    *,
    env: Mapping[str, str] | None = None,
    credentials_dir: Path | str | None = None,
    base_dir: Path | None = None,
) -> str:
    """A literal as is, a `SecretRef` resolved (see `resolve`)."""
    if isinstance(value, SecretRef):
        return resolve(value, env=env, credentials_dir=credentials_dir, base_dir=base_dir)
    return value
