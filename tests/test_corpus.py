"""The whole Power Platform corpus (../shared): loads or is reported, and agrees with the
manifest's independent scan on webhook triggers and notification-URL paths."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

from hookd.cli.commands import connectors as command
from hookd.connectors import loader as openapi

BENCH = Path(__file__).resolve().parent.parent / "bench" / "corpus_agreement.py"
# Unparseable on purpose (see the manifest's notes): reported as errors, not loaded.
UNPARSEABLE = {"XSOAR", "Icon Horse", "CognitiveServicesTextAnalytics"}


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corpus_agreement", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_connector_directory_loads_or_is_reported(shared_dir: Path) -> None:
    corpus = shared_dir / "corpus" / "powerplatform"
    connectors, diags = openapi.load_connector_dir(corpus)
    directories = {p.name for p in corpus.iterdir() if p.is_dir()}
    assert directories - set(connectors) == UNPARSEABLE
    errors = {d.file.parent.name for d in diags if d.is_error and d.file.name != "manifest.json"}
    assert errors == UNPARSEABLE
    for d in diags:
        if d.is_error and d.file.name != "manifest.json":
            assert d.line > 0 and d.col > 0, d.format()


def test_agreement_with_the_manifest_is_at_least_98_percent(shared_dir: Path) -> None:
    corpus = shared_dir / "corpus" / "powerplatform"
    manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    connectors, diags, root = command.collect(corpus)
    document = command.to_json(connectors, diags, root)
    agree, total, lines = bench_module().compare(manifest, document)
    assert total >= 150
    assert agree / total >= 0.98, "\n".join(lines)


def test_dirty_files_load_with_warnings(shared_dir: Path) -> None:
    corpus = shared_dir / "corpus" / "powerplatform"
    for name, warning in [
        ("DocuSignDemo", "trailing comma"),
        ("envoy", "trailing comma"),
        ("SignNow", "byte-order mark"),
        ("Bronnoysundregistrene", "read as Latin-1"),
        ("Yelp", "read as Latin-1"),
        ("RecordedFutureV2", "duplicate JSON keys (operationId, x-ms-visibility)"),
    ]:
        connector, diags = openapi.load_connector(corpus / name)
        assert connector is not None, name
        assert any(warning in d.message and d.severity == "warning" for d in diags), name


def test_polling_only_connectors_have_no_webhooks(shared_dir: Path) -> None:
    corpus = shared_dir / "corpus" / "powerplatform"
    manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    for entry in manifest:
        if entry["group"] != "polling-only":
            continue
        connector, _ = openapi.load_connector(corpus / entry["corpus_dir"])
        assert connector is not None
        assert connector.webhooks == {}
        assert len(connector.polling) == entry["summary"]["n_polling_triggers"], entry["corpus_dir"]
