"""Load connectors: Swagger 2.0 + Power Platform extensions → `hookd.connectors.model.Connector`.

A connector is either the Power Platform layout, unchanged
(``<name>/apiDefinition.swagger.json`` + ``apiProperties.json``), or one OpenAPI file
(``<name>.json|yaml|yml``). Built-in connectors (github, gitlab, gitea, http) ship in the
package (`builtin_dir`); a connector of the same name in a config directory replaces one.

Why this is more than ``json.load``: the facts hookd acts on sit deep and indirect in real
specs. The callback-URL property (``x-ms-notification-url``) is found by walking the
trigger's *own* request — its parameters and its body schema through ``$ref`` and
``allOf`` — never by property name and never by scanning definitions no operation uses.
The notification schema (``x-ms-notification-content``) sits on the path item in real
files although the documentation says the operation; both are read. When the upstream's
``Location`` header is missing, the DELETE to use comes from ``x-hookd-delete`` or a
best match by path (`hookd.connectors.refs.match_delete`), and the model says which.

Bad input never raises: every problem becomes a `Diagnostic` with ``file:line:col``
and the loader keeps going. A connector is dropped (None) only when its spec cannot be
read at all or is not Swagger 2.0.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path

from hookd.connectors.builder import build_connector
from hookd.connectors.documents import (
    PROPERTIES_FILE,
    SINGLE_FILE_SUFFIXES,
    SPEC_FILE,
    Document,
    find_file,
    read_document,
    read_properties,
)
from hookd.connectors.model import Connector
from hookd.diagnostics import Diagnostic

__all__ = ["PROPERTIES_FILE", "SPEC_FILE", "Document", "build_connector", "builtin_dir",
           "find_file", "load_connector", "load_connector_dir", "load_connectors", "read_document"]


# --------------------------------------------------------------------------- public API


def builtin_dir() -> Path:
    """Where the built-in connectors are: in the installed package, else the repo checkout."""
    here = Path(__file__).resolve().parent
    packaged = here / "builtin"
    return packaged if packaged.is_dir() else here.parent.parent / "connectors"


def load_connectors(config_dir: Path | None) -> tuple[dict[str, Connector], list[Diagnostic]]:
    """Built-ins, then ``<config_dir>/connectors/`` (a same-named connector there wins)."""
    connectors, diags = load_connector_dir(builtin_dir(), builtin=True)
    if config_dir is not None and (config_dir / "connectors").is_dir():
        own, more = load_connector_dir(config_dir / "connectors")
        connectors.update(own)
        diags.extend(more)
    return connectors, diags


def load_connector_dir(
    directory: Path, *, builtin: bool = False
) -> tuple[dict[str, Connector], list[Diagnostic]]:
    """Every connector in `directory`: subdirectories (Power Platform layout) and files."""
    with _gc_paused():
        return _load_connector_dir(directory, builtin)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Loading builds some 10^5 acyclic dicts and lists; the cyclic garbage collector
    would scan them over and over for nothing (about a sixth of the corpus' load time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_connector_dir(directory: Path, builtin: bool) -> tuple[dict[str, Connector], list[Diagnostic]]:
    connectors: dict[str, Connector] = {}
    diags: list[Diagnostic] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        return {}, [Diagnostic(directory, 0, 0, "error", f"cannot read directory: {exc.strerror}")]
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if find_file(entry, SPEC_FILE) is None:
                diags.append(Diagnostic(entry, 0, 0, "warning",
                                        f"no {SPEC_FILE} here: not a connector, skipped"))
                continue
            name = entry.name
        elif entry.suffix.lower() in SINGLE_FILE_SUFFIXES:
            name = entry.stem
        else:
            continue
        if name in connectors:
            diags.append(Diagnostic(entry, 0, 0, "error",
                                    f"a second connector named '{name}' (the first is "
                                    f"{connectors[name].source}): this one is ignored"))
            continue
        connector, more = load_connector(entry, builtin=builtin)
        diags.extend(more)
        if connector is not None:
            connectors[name] = connector
    return connectors, diags


def load_connector(path: Path, *, builtin: bool = False) -> tuple[Connector | None, list[Diagnostic]]:
    """One connector from a Power Platform directory or a single OpenAPI file."""
    if path.is_dir():
        spec_path = find_file(path, SPEC_FILE)
        if spec_path is None:
            return None, [Diagnostic(path, 0, 0, "error", f"no {SPEC_FILE} in this directory")]
        name = path.name
    else:
        spec_path, name = path, path.stem
    spec = read_document(spec_path)
    if spec.value is None:
        return None, spec.diagnostics
    properties: Document | None = None
    diags = list(spec.diagnostics)
    if path.is_dir():
        properties, more = read_properties(path)
        diags.extend(more)
    connector, more = build_connector(name, spec, properties, builtin=builtin)
    return connector, diags + more
