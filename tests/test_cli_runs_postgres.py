"""`hookd runs`, `hookd runs show` and `hookd replay` on the store hookd.yaml's ``store:``
names: with PostgreSQL, the run history a replica recorded is read (and replayed) from
any host, with only ``store:`` of hookd.yaml read, so a broken flow file does not stop
them; a broken ``store:`` or a database that does not answer is said with its place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.test_daemon import wait_until
from tests.test_scaleout import Cluster, _callback_url, cluster, http_flow

__all__ = ["cluster"]  # the fixture, used by name


def hookd(config: Path, *args: str, db: str, state: Path | None = None
          ) -> subprocess.CompletedProcess[str]:
    # Run as an operator on another host would: its own (empty) state directory.
    where = ["--state-dir", str(state)] if state is not None else []
    return subprocess.run([sys.executable, "-m", "hookd", *args, "--config", str(config),
                           *where], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOOKD_DB": db})


def runs_json(config: Path, db: str, state: Path) -> list[dict[str, object]]:
    listed = hookd(config, "runs", "--format", "json", db=db, state=state)
    assert listed.returncode == 0, listed.stderr
    runs: list[dict[str, object]] = json.loads(listed.stdout)["runs"]
    return runs


def test_runs_recorded_by_a_replica_are_listed_shown_and_replayed_from_elsewhere(
        cluster: Cluster, tmp_path: Path) -> None:
    (cluster.config / "flows" / "greet.yaml").write_text(http_flow(
        "greet", "  - id: say\n    log: {message: \"hello {{ trigger.body.who }}\"}\n"))
    cluster.start(1)
    url = wait_until(lambda: _callback_url(cluster, "greet"), 20, "the flow's callback URL")
    assert httpx.post(url, json={"who": "pg"}, timeout=10).status_code == 202
    elsewhere = tmp_path / "other-host-state"  # no SQLite store there: PostgreSQL it is
    wait_until(lambda: [r for r in runs_json(cluster.config, cluster.url, elsewhere)
                        if r["status"] == "succeeded"], 30, "the replica's run")
    # A flow file broken meanwhile does not matter: only store: is read.
    (cluster.config / "flows" / "broken.yaml").write_text("name: [\n")

    listed = hookd(cluster.config, "runs", db=cluster.url, state=elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert "greet" in listed.stdout and "succeeded" in listed.stdout
    [run] = runs_json(cluster.config, cluster.url, elsewhere)
    shown = hookd(cluster.config, "runs", "show", str(run["id"])[:10], db=cluster.url,
                  state=elsewhere)
    assert shown.returncode == 0, shown.stderr
    assert f"run       {run['id']}" in shown.stdout
    assert "[0] say (log)  succeeded" in shown.stdout
    assert not (elsewhere / "hookd.db").exists()

    replayed = hookd(cluster.config, "replay", str(run["id"]), db=cluster.url, state=elsewhere)
    assert replayed.returncode == 0, replayed.stderr
    assert f"queued delivery {run['delivery']}" in replayed.stdout
    # The replica's worker (woken through the database) runs it: a second attempt.
    again = wait_until(lambda: [r for r in runs_json(cluster.config, cluster.url, elsewhere)
                                if r["attempt"] == 2 and r["status"] == "succeeded"],
                       30, "the replayed run")
    assert again[0]["delivery"] == run["delivery"]
    assert hookd(cluster.config, "runs", "show", "nope", db=cluster.url,
                 state=elsewhere).returncode == 1


def test_a_store_that_cannot_be_opened_is_said_with_its_place(tmp_path: Path,
                                                             postgres_url: str) -> None:
    config = tmp_path / "config"
    config.mkdir()
    yaml = config / "hookd.yaml"
    yaml.write_text("public_url: https://h\nstore: ${env:NOT_SET_ANYWHERE}\n")
    for argv in (("runs",), ("runs", "show", "r1"), ("replay", "r1")):
        missing = hookd(config, *argv, db=postgres_url)
        assert missing.returncode == 2
        assert "hookd.yaml:2:8: error:" in missing.stderr and "NOT_SET_ANYWHERE" in missing.stderr
        assert "hint:" in missing.stderr

    yaml.write_text("public_url: https://h\nstore: mysql://db/hookd\n")
    wrong = hookd(config, "runs", db=postgres_url)
    assert wrong.returncode == 2 and "hookd.yaml:2:8: error:" in wrong.stderr, wrong.stderr

    yaml.write_text("public_url: https://h\nstore: [\n")
    broken = hookd(config, "runs", db=postgres_url)
    assert broken.returncode == 2 and "hookd.yaml:3:" in broken.stderr, broken.stderr
    assert "invalid YAML" in broken.stderr

    yaml.write_text("public_url: https://h\nstore: ${env:HOOKD_DB}\n")
    down = hookd(config, "runs", db="postgresql://hookd:pw@127.0.0.1:1/hookd")
    assert down.returncode == 2, down.stderr
    assert "127.0.0.1" in down.stderr and ":pw@" not in down.stderr
    assert f"store: ({yaml.absolute()}:2:8)" in down.stderr and "hint:" in down.stderr

    fresh = hookd(config, "runs", db=postgres_url)  # a database hookd never migrated
    assert fresh.returncode == 2 and "hookd migrate" in fresh.stderr, fresh.stderr
