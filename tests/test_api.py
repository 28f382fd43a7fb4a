"""hookd.admin.api: the runs API as an operator's script would call it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from starlette.testclient import TestClient

from hookd import store as stores
from hookd.admin.api import create_app
from hookd.store.sqlite import db as dbmod
from hookd.store.sqlite.deliveries import DeliveryStore
from hookd.store.sqlite.runs import RunStore
from tests.pipeline_util import config, flow, record


class Wakes:
    """Counts the store's wake-up calls (the daemon wires them to the worker's poke)."""

    def __init__(self) -> None:
        self.pokes = 0

    def poke(self) -> None:
        self.pokes += 1


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, SimpleNamespace, dict[str, str]]]:
    state = tmp_path / "state"
    ids = record(state, "deploy", [{"n": 1}, {"n": 2}])
    conn = dbmod.open_db(state)
    deliveries, runs = DeliveryStore(conn), RunStore(conn)
    claimed = deliveries.claim(2)
    ok = runs.create(ids[0], "deploy", status="running")
    runs.step_started(ok.id, "a", 0, "log", 1, {"message": "hi"})
    runs.step_finished(ok.id, "a", "succeeded", output={"message": "hi"})
    runs.finish(ok.id, "succeeded")
    bad = runs.create(ids[1], "deploy", status="running")
    runs.finish(bad.id, "failed", "step a: status 500")
    deliveries.finish(claimed[0].id, "done")
    deliveries.finish(claimed[1].id, "failed", "boom")
    conn.close()
    store = stores.open(config(state, [flow("deploy", [])]).settings)
    state_obj = SimpleNamespace(store=store, worker=Wakes())
    store.deliveries.on_arrival(state_obj.worker.poke)
    yield TestClient(create_app(store)), state_obj, {"ok": ok.id, "bad": bad.id,
                                                      "d_bad": ids[1]}
    store.close()


def test_list_and_filters(setup: tuple[TestClient, SimpleNamespace, dict[str, str]]) -> None:
    client, _, ids = setup
    runs = client.get("/api/runs").json()["runs"]
    assert [r["id"] for r in runs] == [ids["bad"], ids["ok"]]
    assert "steps" not in runs[0]
    failed = client.get("/api/runs", params={"status": "failed"}).json()["runs"]
    assert [(r["id"], r["error"]) for r in failed] == [(ids["bad"], "step a: status 500")]
    assert client.get("/api/runs", params={"flow": "other"}).json() == {"runs": []}
    assert len(client.get("/api/runs", params={"limit": 1}).json()["runs"]) == 1


@pytest.mark.parametrize("query", [{"status": "weird"}, {"limit": "ten"}])
def test_bad_queries_are_400(setup: tuple[TestClient, SimpleNamespace, dict[str, str]],
                             query: dict[str, str]) -> None:
    client, _, _ = setup
    r = client.get("/api/runs", params=query)
    assert r.status_code == 400 and "error" in r.json()


def test_get_run_with_steps(setup: tuple[TestClient, SimpleNamespace, dict[str, str]]) -> None:
    client, _, ids = setup
    doc = client.get(f"/api/runs/{ids['ok']}").json()
    assert doc["status"] == "succeeded"
    assert (doc["steps"][0]["id"], doc["steps"][0]["output"]) == ("a", {"message": "hi"})
    assert client.get("/api/runs/unknown").status_code == 404


def test_replay_run_and_delivery(setup: tuple[TestClient, SimpleNamespace, dict[str, str]]) -> None:
    client, state, ids = setup
    r = client.post(f"/api/runs/{ids['bad']}/replay")
    assert r.status_code == 202 and r.json() == {"delivery": ids["d_bad"]}
    assert state.worker.pokes == 1
    again = client.post(f"/api/deliveries/{ids['d_bad']}/replay")
    assert again.status_code == 409  # already queued
    assert client.post("/api/deliveries/nope/replay").status_code == 404
    assert client.post(f"/api/deliveries/{ids['bad']}/replay").status_code == 404  # a run id
