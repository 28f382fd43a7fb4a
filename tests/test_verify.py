"""Signature verification: published test vectors, real payloads, and every way to fail."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from hookd.callbacks.verify import VerificationFailed, sign, verify
from hookd.connectors.model import Verification
from tests.test_daemon import Running, callback_url, daemon_on, http_flow, wait_until

__all__ = ["daemon_on"]  # a fixture

GITHUB = Verification("hmac-sha256", header="X-Hub-Signature-256", prefix="sha256=")
GITEA = Verification("hmac-sha256", header="X-Gitea-Signature")
B64 = Verification("hmac-sha256", header="X-Signature", encoding="base64")
GITLAB = Verification("token", header="X-Gitlab-Token")
STANDARD = Verification("standard-webhooks", tolerance=300.0)
NONE = Verification("none")

# GitHub's published example ("Validating webhook deliveries").
GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIG = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# The Standard Webhooks specification's example.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_BODY = b'{"test": 2432232314}'
SW_HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
SW_NOW = 1614265330.0

ACCEPTED = [
    ("github vector", GITHUB, GH_SECRET, {"x-hub-signature-256": GH_SIG}, GH_BODY, 0.0),
    ("gitea hex, no prefix", GITEA, GH_SECRET, {"x-gitea-signature": GH_SIG[7:]}, GH_BODY, 0.0),
    ("hex is case-insensitive", GITEA, GH_SECRET, {"x-gitea-signature": GH_SIG[7:].upper()}, GH_BODY, 0.0),
    ("base64", B64, GH_SECRET, {"x-signature": "dXEH6g6yUJ/CESIczphLijdXC211hsIsRvQ3nIsEPhc="}, GH_BODY, 0.0),
    ("gitlab token", GITLAB, "tok", {"x-gitlab-token": "tok"}, b"{}", 0.0),
    ("standard webhooks spec example", STANDARD, SW_SECRET, SW_HEADERS, SW_BODY, SW_NOW),
    ("standard webhooks, rotation: second signature matches", STANDARD, SW_SECRET,
     {**SW_HEADERS, "webhook-signature": "v1,AAAA v1a,xyz " + SW_HEADERS["webhook-signature"]},
     SW_BODY, SW_NOW),
    ("standard webhooks, at the edge of tolerance", STANDARD, SW_SECRET, SW_HEADERS, SW_BODY, SW_NOW + 300),
    ("none", NONE, "", {}, b"anything", 0.0),
]

REJECTED = [
    ("github: wrong secret", GITHUB, "other", {"x-hub-signature-256": GH_SIG}, GH_BODY, 0.0, "does not match"),
    ("github: body changed", GITHUB, GH_SECRET, {"x-hub-signature-256": GH_SIG}, GH_BODY + b" ", 0.0, "does not match"),
    ("github: header missing", GITHUB, GH_SECRET, {}, GH_BODY, 0.0, "missing X-Hub-Signature-256"),
    ("github: sha1 header format", GITHUB, GH_SECRET, {"x-hub-signature-256": "sha1=" + GH_SIG[7:]}, GH_BODY, 0.0, "does not start"),
    ("github: not hex", GITHUB, GH_SECRET, {"x-hub-signature-256": "sha256=zz"}, GH_BODY, 0.0, "not hex"),
    ("github: truncated", GITHUB, GH_SECRET, {"x-hub-signature-256": GH_SIG[:-2]}, GH_BODY, 0.0, "does not match"),
    ("github: empty secret never verifies", GITHUB, "", {"x-hub-signature-256": GH_SIG}, GH_BODY, 0.0, "no secret"),
    ("base64: garbage", B64, GH_SECRET, {"x-signature": "!!!"}, GH_BODY, 0.0, "not base64"),
    ("gitlab: wrong token", GITLAB, "tok", {"x-gitlab-token": "tok2"}, b"{}", 0.0, "wrong X-Gitlab-Token"),
    ("gitlab: missing", GITLAB, "tok", {}, b"{}", 0.0, "missing"),
    ("standard: too old", STANDARD, SW_SECRET, SW_HEADERS, SW_BODY, SW_NOW + 301, "tolerance"),
    ("standard: from the future", STANDARD, SW_SECRET, SW_HEADERS, SW_BODY, SW_NOW - 301, "tolerance"),
    ("standard: id changed", STANDARD, SW_SECRET, {**SW_HEADERS, "webhook-id": "msg_other"}, SW_BODY, SW_NOW, "no webhook-signature"),
    ("standard: body changed", STANDARD, SW_SECRET, SW_HEADERS, SW_BODY + b"\n", SW_NOW, "no webhook-signature"),
    ("standard: only another version", STANDARD, SW_SECRET,
     {**SW_HEADERS, "webhook-signature": "v2," + SW_HEADERS["webhook-signature"][3:]}, SW_BODY, SW_NOW, "no webhook-signature"),
    ("standard: timestamp not a number", STANDARD, SW_SECRET, {**SW_HEADERS, "webhook-timestamp": "soon"}, SW_BODY, SW_NOW, "not an integer"),
    ("standard: headers missing", STANDARD, SW_SECRET, {"webhook-id": "x"}, SW_BODY, SW_NOW, "missing"),
    ("standard: wrong secret", STANDARD, "whsec_" + "A" * 32, SW_HEADERS, SW_BODY, SW_NOW, "no webhook-signature"),
]


@pytest.mark.parametrize(("name", "v", "secret", "headers", "body", "now"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_accepted(name: str, v: Verification, secret: str, headers: dict[str, str], body: bytes, now: float) -> None:
    verify(v, secret, headers, body, now=now)


@pytest.mark.parametrize(
    ("name", "v", "secret", "headers", "body", "now", "reason"), REJECTED, ids=[c[0] for c in REJECTED]
)
def test_rejected(
    name: str, v: Verification, secret: str, headers: dict[str, str], body: bytes, now: float, reason: str
) -> None:
    with pytest.raises(VerificationFailed) as info:
        verify(v, secret, headers, body, now=now)
    assert reason in info.value.reason
    assert secret not in info.value.reason or not secret


def test_sign_produces_the_published_vectors() -> None:
    assert sign(GITHUB, GH_SECRET, GH_BODY, now=0) == {"X-Hub-Signature-256": GH_SIG}
    headers = sign(STANDARD, SW_SECRET, SW_BODY, now=SW_NOW, msg_id=SW_HEADERS["webhook-id"])
    assert headers == SW_HEADERS


@pytest.mark.parametrize("v", [GITHUB, GITEA, B64, GITLAB, STANDARD, NONE], ids=lambda v: v.kind + v.header)
def test_sign_then_verify_round_trips_on_real_payloads(v: Verification, shared_dir: Path) -> None:
    for path in sorted((shared_dir / "fixtures" / "github-webhooks").glob("*.json")):
        body = path.read_bytes()
        headers = {k.lower(): val for k, val in sign(v, "s3cret", body, now=1000.0).items()}
        verify(v, "s3cret", headers, body, now=1000.0)
        if v.kind not in ("none", "token"):  # a token does not cover the body
            with pytest.raises(VerificationFailed):
                verify(v, "s3cret", headers, body[:-1], now=1000.0)


def test_the_connector_layer_and_the_callbacks_layer_list_the_same_schemes() -> None:
    from hookd.callbacks.schemes import SCHEMES as IMPLEMENTED
    from hookd.connectors.schemes import SCHEMES as DECLARED

    assert list(IMPLEMENTED) == list(DECLARED)


def test_every_scheme_accepts_what_it_signs_and_refuses_another_body() -> None:
    from hookd.connectors.schemes import SCHEMES as DECLARED

    for kind, spec in DECLARED.items():
        v = Verification(kind, "X-Proof" if spec.needs_header else "")
        headers = {k.lower(): val for k, val in sign(v, "s3cret", b"{}", now=100.0).items()}
        verify(v, "s3cret", headers, b"{}", now=100.0)
        if kind not in ("none", "token"):  # these prove the sender, not the body
            with pytest.raises(VerificationFailed):
                verify(v, "s3cret", headers, b"{ }", now=100.0)


def test_a_replayed_standard_webhooks_message_runs_once(
    daemon_on: Callable[..., Running], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spec makes webhook-id the idempotency key: a captured request resent within the
    tolerance is answered as a duplicate, not run again (issue 16 item 9)."""
    import time

    import httpx

    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    monkeypatch.setenv("HOOK_SECRET", secret)
    text = http_flow("signed").replace(
        "trigger: {connector: http}\n", "trigger: {connector: http}\nverify_secret: ${env:HOOK_SECRET}\n")
    hookd = daemon_on(texts={"signed": text})
    hookd.notify.wait_for("READY")
    url = callback_url(tmp_path)
    body = b'{"n": 1}'
    headers = {**sign(Verification("standard-webhooks"), secret, body, now=time.time(),
                      msg_id="msg_replayed"), "content-type": "application/json"}
    first = httpx.post(url, content=body, headers=headers, timeout=5)
    again = httpx.post(url, content=body, headers=headers, timeout=5)
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json() == {"delivery": first.json()["delivery"], "duplicate": True}
    other = {**sign(Verification("standard-webhooks"), secret, body, now=time.time(),
                    msg_id="msg_other"), "content-type": "application/json"}
    assert httpx.post(url, content=body, headers=other, timeout=5).status_code == 202
    runs = wait_until(lambda: (lambda r: r if len(r) == 2 and all(
        x["status"] == "succeeded" for x in r) else None)(hookd.get("/api/runs").json()["runs"]),
        what="two runs")
    assert len(runs) == 2


def test_every_scheme_is_documented_with_whether_it_needs_a_header() -> None:
    from hookd.connectors.schemes import SCHEMES as DECLARED

    docs = (Path(__file__).resolve().parent.parent / "docs" / "connectors.md").read_text()
    kind_row = next(line for line in docs.splitlines() if line.startswith("| `kind` |"))
    header_row = next(line for line in docs.splitlines() if line.startswith("| `header` |"))
    for kind, spec in DECLARED.items():
        assert f"`{kind}`" in kind_row, f"docs/connectors.md: x-hookd-verify kind {kind}"
        assert (f"`{kind}`" in header_row) is spec.needs_header
