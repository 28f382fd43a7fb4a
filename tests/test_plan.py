"""plan(): table tests of the pure decision — what each situation leads to, and why."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from hookd.desired import DesiredSubscription
from hookd.plan import Observed, ObservedHook, Plan, plan
from hookd.store.subscriptions import SubscriptionRow

SCOPE = '["github","gh",{"owner":"o","repo":"r"}]'


def want(sub_id: str, flow: str | None = None, *, scope: str | None = SCOPE,
         upstream: bool = True) -> DesiredSubscription:
    return DesiredSubscription(
        id=sub_id, flow=flow or sub_id.split("-")[0], connector="github",
        operation="webhook-trigger", connection="gh", upstream=upstream,
        fingerprint="f-" + sub_id, callback_url=f"https://h/hooks/{sub_id}/hkd1_x",
        scope=scope,
    )


def row(sub_id: str, status: str = "active", *, flow: str | None = None,
        upstream_id: str | None = "1", location: str | None = "https://api/hooks/1",
        scope: str | None = SCOPE, last_error: str | None = None) -> SubscriptionRow:
    return SubscriptionRow(
        id=sub_id, flow=flow or sub_id.split("-")[0], fingerprint="f-" + sub_id,
        connector="github", operation="webhook-trigger", connection="gh", scope=scope,
        parameters={}, location=location, upstream_id=upstream_id, secret="s",
        status=status,  # type: ignore[arg-type]
        last_error=last_error,
    )


def hook(upstream_id: str, owned: str | None, *, prefix: bool | None = None) -> ObservedHook:
    return ObservedHook(SCOPE, upstream_id, "https://x", None, owned,
                        owned is not None if prefix is None else prefix)


def listed(*hooks: ObservedHook) -> Observed:
    return Observed({SCOPE: tuple(hooks)})


UNLISTED = Observed()


def summary(p: Plan) -> list[tuple[str, str]]:
    return [(i.action, i.sub_id) for i in p.items]


CASES: list[tuple[str, list[Any], list[Any], Observed, list[tuple[str, str]], str]] = [
    ("new flow", [want("a-1")], [], listed(), [("create", "a-1")], "new subscription"),
    ("new flow, unlistable", [want("a-1", scope=None)], [], UNLISTED, [("create", "a-1")], "new"),
    ("up to date", [want("a-1")], [row("a-1")], listed(hook("1", "a-1")), [("keep", "a-1")], "up to date"),
    ("up to date, unlistable", [want("a-1")], [row("a-1")], UNLISTED, [("keep", "a-1")], "up to date"),
    ("vanished upstream", [want("a-1")], [row("a-1")], listed(), [("create", "a-1")], "vanished"),
    ("crash after 201: pending + found", [want("a-1")], [row("a-1", "pending", upstream_id=None, location=None)],
     listed(hook("7", "a-1")), [("adopt", "a-1")], "interrupted"),
    ("crash after 201, row lost", [want("a-1")], [], listed(hook("7", "a-1")), [("adopt", "a-1")], "never recorded"),
    ("pending, not found", [want("a-1")], [row("a-1", "pending", upstream_id=None, location=None)],
     listed(), [("create", "a-1")], "interrupted"),
    ("failed earlier", [want("a-1")], [row("a-1", "failed", upstream_id=None, location=None, last_error="401 bad")],
     listed(), [("create", "a-1")], "401 bad"),
    ("flow removed", [], [row("a-1")], listed(hook("1", "a-1")), [("delete", "a-1")], "flow removed"),
    ("flow removed, unlistable", [], [row("a-1")], UNLISTED, [("delete", "a-1")], "flow removed"),
    ("flow removed, already gone", [], [row("a-1")], listed(), [("forget", "a-1")], "already gone"),
    ("failed and removed", [], [row("a-1", "failed", upstream_id=None, location=None)], UNLISTED,
     [("forget", "a-1")], "never created"),
    ("trigger changed", [want("a-2", "a")], [row("a-1")], listed(hook("1", "a-1")),
     [("replace", "a-2")], "replaces a-1"),
    ("replace retried after a failed create", [want("a-2", "a")],
     [row("a-1"), row("a-2", "pending", upstream_id=None, location=None)],
     listed(hook("1", "a-1")), [("replace", "a-2")], "interrupted"),
    ("orphan with our URL", [], [], listed(hook("9", "z-1")), [("delete", "z-1")], "matches no flow"),
    ("duplicate of a desired hook", [want("a-1")], [row("a-1", upstream_id="1")],
     listed(hook("1", "a-1"), hook("2", "a-1")), [("delete", "a-1"), ("keep", "a-1")], "duplicate"),
    ("request trigger needs nothing upstream", [want("h-1", upstream=False)], [], listed(), [], ""),
]


@pytest.mark.parametrize("name, desired, recorded, observed, expected, reason", CASES,
                         ids=[c[0] for c in CASES])
def test_plan_table(name: str, desired: list[DesiredSubscription], recorded: list[SubscriptionRow],
                    observed: Observed, expected: list[tuple[str, str]], reason: str) -> None:
    p = plan(desired, recorded, observed, max_deletes=5)
    assert summary(p) == expected
    if expected:
        assert reason in " ".join(i.reason for i in p.items)


def test_others_hooks_are_never_touched() -> None:
    foreign = ObservedHook(SCOPE, "5", "https://ci.example/hook", None, None, False)
    p = plan([want("a-1")], [row("a-1")], listed(hook("1", "a-1"), foreign), max_deletes=5)
    assert summary(p) == [("keep", "a-1")]


def test_our_prefix_with_a_token_we_did_not_mint_is_left_alone_with_a_warning() -> None:
    stranger = hook("5", None, prefix=True)
    p = plan([], [], listed(stranger), max_deletes=5)
    assert p.items == () and "did not mint" in p.warnings[0]


def test_max_deletes_blocks_the_rest_and_says_how_to_override() -> None:
    rows = [row(f"f{n}-1", upstream_id=str(n)) for n in range(10)]
    p = plan([], rows, UNLISTED, max_deletes=3)
    counts = p.counts()
    assert (counts["delete"], counts["blocked"]) == (3, 7)
    assert "--allow-deletes" in p.by_action("blocked")[0].reason


def test_replaces_do_not_count_against_max_deletes() -> None:
    desired = [want(f"f{n}-2", f"f{n}") for n in range(4)]
    rows = [row(f"f{n}-1", flow=f"f{n}") for n in range(4)]
    p = plan(desired, rows, UNLISTED, max_deletes=0)
    assert p.counts()["replace"] == 4 and p.counts()["blocked"] == 0


def test_unlistable_scope_is_a_warning() -> None:
    p = plan([want("a-1")], [row("a-1")], Observed({}, {SCOPE: "403 forbidden"}), max_deletes=5)
    assert summary(p) == [("keep", "a-1")]
    assert "cannot list hooks in github (connection gh) owner=o repo=r: 403" in p.warnings[0]


def test_no_changes_means_nothing_but_keeps() -> None:
    p = plan([want("a-1")], [row("a-1")], listed(hook("1", "a-1")), max_deletes=5)
    assert not p.has_changes


def test_plan_is_deterministic_and_ordered() -> None:
    desired = [want("b-1"), want("a-1")]
    p1 = plan(desired, [row("c-1")], UNLISTED, max_deletes=5)
    p2 = plan(list(reversed(desired)), [row("c-1")], UNLISTED, max_deletes=5)
    assert summary(p1) == summary(p2) == [("create", "a-1"), ("create", "b-1"), ("delete", "c-1")]


def test_secrets_never_in_plan_repr() -> None:
    d = replace(want("a-1"), secret="TOPSECRET", body={"config": {"secret": "TOPSECRET"}})
    p = plan([d], [], listed(), max_deletes=5)
    assert "TOPSECRET" not in repr(p) and "hkd1_" not in repr(p)
