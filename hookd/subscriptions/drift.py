"""Drift of a hook's settings: what the upstream's list says differs from what hookd asked.

Where a connector's list operation returns each hook's configuration (GitHub, GitLab,
Gitea: events, active, URL, content type), a hook someone changed in the upstream's
settings — deactivated, events edited — is found by comparing the listed item with the
body hookd would send to create it: every setting the body gives and the item also
has must be equal. Settings the list does not return are not compared (they cannot be
checked), nor the callback URL and the signing secret (the URL is how the hook is found,
upstreams mask the secret). Lists of plain values compare as sets (event order is not a
setting); scalars compare as text, so ``"0"`` equals ``0`` and ``True`` equals ``"true"``.

Pure: `hookd.subscriptions.plan` calls `changes` for each hook it would keep.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def changes(wanted: Any, listed: Any, *, skip: tuple[str, ...] = ()) -> list[str]:
    """``["events: ['push'] upstream, hookd wants ['issues']", …]`` — empty when the
    listed hook matches; `skip` are values never compared (callback URL, secret)."""
    out: list[str] = []
    _compare(wanted, listed, (), frozenset(s for s in skip if s), out)
    return out


def _compare(wanted: Any, listed: Any, path: tuple[str, ...], skip: frozenset[str],
             out: list[str]) -> None:
    if isinstance(wanted, Mapping):
        if not isinstance(listed, Mapping):
            return
        for key, value in wanted.items():
            if key in listed:
                _compare(value, listed[key], (*path, str(key)), skip, out)
        return
    if isinstance(wanted, str) and wanted in skip:
        return
    if _same(wanted, listed):
        return
    out.append(f"{'.'.join(path)}: {_show(listed)} upstream, hookd wants {_show(wanted)}")


def _same(wanted: Any, listed: Any) -> bool:
    if isinstance(wanted, list) and isinstance(listed, list):
        if all(not isinstance(v, dict | list) for v in (*wanted, *listed)):
            return {_text(v) for v in wanted} == {_text(v) for v in listed}
        return len(wanted) == len(listed) and all(
            _same(a, b) for a, b in zip(wanted, listed, strict=True))
    if isinstance(wanted, Mapping) or isinstance(listed, Mapping | list) or isinstance(wanted, list):
        return bool(wanted == listed)
    return _text(wanted) == _text(listed)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
