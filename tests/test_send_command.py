"""`hookd send`: a real config directory, the built-in github connector, a real server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from hookd import store as stores
from hookd.cli.main import main
from hookd.config.loader import load_config
from hookd.ingest.app import AppState, create_app
from hookd.store.sqlite.db import open_db
from hookd.store.sqlite.deliveries import DeliveryStore
from hookd.subscriptions import tokens
from tests.configdir import write_config

PUSH = Path(__file__).resolve().parent / "data" / "github" / "push.0.json"
FLOW = """
    name: on-push
    trigger:
      connector: github
      operation: webhook-trigger
      connection: github
      parameters: {owner: acme, repo: widgets}
    steps:
      - id: say
        log: {message: "push"}
"""
SIGNED = """
    name: signed
    trigger: {connector: http}
    verify_secret: "${env:HOOK_SECRET}"
    steps:
      - id: say
        log: {message: "signed"}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
    monkeypatch.setenv("HOOK_SECRET", "s3cret-for-the-signed-flow")
    return write_config(tmp_path / "config", flows={"on-push": FLOW, "signed": SIGNED})


@pytest.fixture
def server(config_dir: Path) -> Iterator[tuple[str, Path]]:
    """A running public listener for the config (as `hookd run` would serve it)."""
    config, diagnostics = load_config(config_dir)
    assert config is not None, diagnostics
    state_dir = Path(config.settings.state_dir)
    store = stores.open(config.settings)
    state = AppState(config, store, tokens.load_or_create_server_secret(state_dir))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port,
                                        log_level="warning", lifespan="off", loop="asyncio"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", state_dir
    srv.should_exit = True
    thread.join(10)
    store.close()


def test_send_to_a_running_hookd_is_accepted_and_recorded(
    server: tuple[str, Path], config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, state_dir = server
    args = ["send", "on-push", str(PUSH), "--config", str(config_dir), "--url", url,
            "--delivery-id", "manual-1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("202 delivery ") and "flow on-push" in out
    delivery_id = out.split()[2]
    d = DeliveryStore(open_db(state_dir)).get(delivery_id)
    assert d is not None and d.body == PUSH.read_bytes()
    assert d.event == "push"  # from the file name push.0.json
    assert d.delivery_id == "manual-1"

    assert main(args) == 0  # the same delivery id again: recorded once
    assert "duplicate" in capsys.readouterr().out


def test_send_in_process_records_nothing(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "on-push", str(PUSH), "--config", str(config_dir), "--in-process",
                 "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert '"status": 202' in out
    assert not (config_dir / "state" / "hookd.db").exists()


def test_send_reports_a_refusal(config_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "push.json"
    bad.write_text("{not json")
    assert main(["send", "on-push", str(bad), "--config", str(config_dir), "--in-process"]) == 1
    assert "400 invalid JSON" in capsys.readouterr().out


def test_send_unknown_flow_or_no_daemon(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "nope", str(PUSH), "--config", str(config_dir), "--in-process"]) == 2
    assert "no flow or subscription 'nope'" in capsys.readouterr().err
    # Never ran: no server secret, so no callback URL to sign for.
    assert main(["send", "on-push", str(PUSH), "--config", str(config_dir)]) == 2
    assert "has hookd run" in capsys.readouterr().err


def test_send_signs_with_the_flows_verify_secret(
    server: tuple[str, Path], config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16 item 13: the running listener checks a Standard Webhooks signature made
    with the flow's `verify_secret`; `hookd send` signs with that value."""
    url, state_dir = server
    assert main(["send", "signed", str(PUSH), "--config", str(config_dir), "--url", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("202 delivery ") and "flow signed" in out
    assert DeliveryStore(open_db(state_dir)).get(out.split()[2]) is not None
    assert main(["send", "signed", str(PUSH), "--config", str(config_dir), "--in-process"]) == 0
    assert capsys.readouterr().out.startswith("202 delivery ")


def test_send_prints_an_unexpected_answer_as_json(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hookd.cli.commands import send

    send._print("text", "f", "f-1", 200, {"ok": True})
    assert capsys.readouterr().out == '200 {"ok": true}  flow f\n'


def test_replay_takes_the_upstreams_delivery_id(
    server: tuple[str, Path], config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16 item 17: the id a user has at hand is the upstream's (X-GitHub-Delivery)."""
    url, state_dir = server
    assert main(["send", "on-push", str(PUSH), "--config", str(config_dir), "--url", url,
                 "--delivery-id", "72d3162e-cc78-11e3"]) == 0
    recorded = capsys.readouterr().out.split()[2]
    store = DeliveryStore(open_db(state_dir))
    (claimed,) = store.claim(1)
    store.finish(claimed.id, "failed", "target down")
    assert main(["replay", "72d3162e-cc78-11e3", "--config", str(config_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"queued delivery {recorded} for a new run"
    assert store.get(recorded).status == "queued"  # type: ignore[union-attr]
    assert main(["replay", "72d3162e", "--config", str(config_dir)]) == 1  # not a prefix match
    assert "no run or delivery '72d3162e'" in capsys.readouterr().err
