"""How often hookd's connector loader agrees with the corpus manifest, and how fast it is.

For every connector the manifest of ../shared/corpus/powerplatform lists with webhook
triggers, compare the webhook trigger operationIds and notification-URL paths in
`hookd connectors --format json` with the manifest's (an independent scan: a second
opinion, not an oracle). Prints the agreement, every disagreement with the reason, and
the loading time as a ratio against plain ``json.loads`` of the same files (the floor no
loader can beat), measured in the same run.

    python bench/corpus_agreement.py [CORPUS_DIR] [--min 98]

Exit 1 when agreement is below --min percent.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from hookd.cli.commands import connectors as command

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "powerplatform"

# Where hookd and the manifest's scan disagree and the file shows hookd is right.
# corpus_dir → reason (checked against the file when this was written).
KNOWN_REASONS: dict[str, str] = {}


def expected(entry: dict[str, Any]) -> dict[str, str]:
    """operationId → notification-URL path, as the manifest's scan found them."""
    out: dict[str, str] = {}
    for trigger in entry["summary"].get("webhook_triggers") or ():
        urls = sorted(trigger.get("notification_url") or [])
        out[trigger["operationId"]] = urls[0] if urls else ""
    return out


def found(connector: dict[str, Any] | None) -> dict[str, str]:
    if connector is None:
        return {}
    return {t["operation_id"]: t["notification_url"] or "" for t in connector["triggers"]
            if t["kind"] == "webhook"}


def compare(manifest: list[dict[str, Any]], document: dict[str, Any]) -> tuple[int, int, list[str]]:
    """(connectors agreeing, connectors compared, lines describing each disagreement).

    The manifest's ``webhook_triggers`` list also holds *webhook actions* (an operation
    with an ``x-ms-notification-url`` property but no ``x-ms-trigger``); its
    ``n_webhook_triggers`` counts only the triggers. So a connector agrees when hookd finds
    exactly ``n_webhook_triggers`` webhook triggers and each one is in the manifest's list
    with the same notification-URL path.
    """
    by_name = {c["name"]: c for c in document["connectors"]}
    errors: dict[str, list[str]] = {}
    for d in document["diagnostics"]:
        if d["severity"] == "error":
            errors.setdefault(Path(d["file"]).parent.name, []).append(d["message"])
    agree, total, lines, notes = 0, 0, [], []
    for entry in manifest:
        count = entry["summary"].get("n_webhook_triggers") or 0
        if not count:
            continue
        total += 1
        want = expected(entry)
        name = entry["corpus_dir"]
        got = found(by_name.get(name))
        wrong = {k: v for k, v in got.items() if want.get(k) != v}
        if len(got) == count and not wrong:
            agree += 1
            actions = sorted(set(want) - set(got))
            if actions:
                notes.append(f"  {name}: {', '.join(actions)} (notification URL, no x-ms-trigger)")
            continue
        if name not in by_name:
            why = "; ".join(errors.get(name, ["not loaded"]))
        else:
            why = (f"manifest: {count} webhook triggers in {want}; hookd: {len(got)}, "
                   f"differing: {wrong or '-'}")
        reason = KNOWN_REASONS.get(name, "")
        lines.append(f"  {name}: {why}" + (f"\n    why hookd is right: {reason}" if reason else ""))
    if notes:
        lines.append("agreeing, with webhook *actions* the manifest lists among webhook_triggers:")
        lines.extend(notes)
    return agree, total, lines


def compare_deletes(manifest: list[dict[str, Any]], document: dict[str, Any]) -> tuple[int, int, list[str]]:
    """Informational: hookd's fallback DELETE vs the manifest's "best matching DELETE",
    over webhook triggers where both name one (the manifest also guesses 'elsewhere')."""
    by_name = {c["name"]: c for c in document["connectors"]}
    same, both, lines = 0, 0, []
    for entry in manifest:
        connector = by_name.get(entry["corpus_dir"])
        if connector is None:
            continue
        triggers = {t["operation_id"]: t for t in connector["triggers"] if t["kind"] == "webhook"}
        for want in entry["summary"].get("webhook_triggers") or ():
            got = triggers.get(want["operationId"])
            theirs = want["delete"][2]
            ours = got["delete"]["operation_id"] if got else None
            if not theirs or not ours:
                continue
            both += 1
            if theirs == ours:
                same += 1
            else:
                lines.append(f"  {entry['corpus_dir']} {want['operationId']}: manifest {theirs} "
                             f"({want['delete'][0]}), hookd {ours} ({got['delete']['source'] if got else ''})")
    return same, both, lines


def timed_load(corpus: Path, repeat: int) -> tuple[float, float, dict[str, Any]]:
    """Best wall and CPU seconds of loading the corpus and building the JSON document."""
    wall, cpu, document = float("inf"), float("inf"), {}
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        connectors, diags, root = command.collect(corpus)
        document = command.to_json(connectors, diags, root)
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, document


def baseline(corpus: Path, repeat: int) -> tuple[float, float]:
    """Best wall and CPU seconds of reading and ``json.loads`` of every spec, nothing else."""
    files = sorted(corpus.glob("*/*.json"))
    wall, cpu = float("inf"), float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        for f in files:
            with contextlib.suppress(ValueError):
                json.loads(f.read_bytes().decode("utf-8", "replace").lstrip("\ufeff"))
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--min", type=float, default=98.0, help="required agreement, percent")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs (best is kept)")
    args = parser.parse_args(argv)
    manifest = json.loads((args.corpus / "manifest.json").read_text(encoding="utf-8"))
    floor_wall, floor_cpu = baseline(args.corpus, args.repeat)
    wall, cpu, document = timed_load(args.corpus, args.repeat)
    agree, total, lines = compare(manifest, document)
    percent = 100.0 * agree / total if total else 100.0
    loaded = len(document["connectors"])
    errors = sum(d["severity"] == "error" for d in document["diagnostics"])
    print(f"connectors loaded: {loaded}; error diagnostics: {errors}")
    print(f"webhook connectors agreeing with the manifest: {agree}/{total} = {percent:.1f}%")
    if lines:
        print(("disagreements:\n" if agree < total else "no disagreements\n") + "\n".join(lines))
    same, both, delete_lines = compare_deletes(manifest, document)
    print(f"fallback DELETE agreeing with the manifest's guess (both found one): {same}/{both}")
    if delete_lines:
        print("\n".join(delete_lines))
    print(f"load + JSON of the corpus: wall {wall * 1000:.0f} ms, cpu {cpu * 1000:.0f} ms; "
          f"json.loads alone: wall {floor_wall * 1000:.0f} ms, cpu {floor_cpu * 1000:.0f} ms; "
          f"ratio {wall / floor_wall:.1f}x wall, {cpu / floor_cpu:.1f}x cpu")
    print(f"load average: {os.getloadavg()[0]:.2f} (the machine is shared: compare cpu when busy)")
    return 0 if percent >= args.min else 1


if __name__ == "__main__":
    sys.exit(main())
