"""plan(): table tests of the pure decision — what each situation leads to, and why."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.store.sqlite.subscriptions import SubscriptionRow
from hookd.subscriptions.desired import DesiredSubscription
from hookd.subscriptions.plan import Observed, ObservedHook, Plan, plan

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
    ("create timed out, then removed, unlistable", [],
     [row("a-1", "pending", upstream_id=None, location=None, last_error="timed out")], UNLISTED,
     [("forget", "a-1")], "never completed; a hook of ours listed later is deleted then"),
    ("reported unmanageable by an earlier version", [],
     [row("a-1", "orphaned", upstream_id=None, location=None,
          last_error="unmanageable: cannot delete (no Location was returned …)")], UNLISTED,
     [("forget", "a-1")], "never created upstream"),
    ("never created, trigger changed", [want("a-2", "a")],
     [row("a-1", "failed", upstream_id=None, location=None, last_error="401 bad")], listed(),
     [("create", "a-2"), ("forget", "a-1")], "401 bad"),
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


def test_held_deletes_are_blocked_with_the_reason_and_replaces_still_happen() -> None:
    p = plan([want("b-2", "b")], [row("a-1"), row("b-1", upstream_id="2")],
             listed(hook("1", "a-1"), hook("2", "b-1")),
             max_deletes=5, hold_deletes="flow file flows/a.yaml is empty")
    assert summary(p) == [("replace", "b-2"), ("blocked", "a-1")]
    assert p.by_action("blocked")[0].reason.endswith(
        "delete held back: flow file flows/a.yaml is empty")


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


def test_settings_changed_upstream_is_an_update_never_a_secret_leak() -> None:
    d = replace(want("a-1"), secret="TOPSECRET", body={
        "active": True, "events": ["push"],
        "config": {"url": "https://h/hooks/a-1/hkd1_x", "secret": "TOPSECRET"}})
    listed_hook = replace(hook("1", "a-1"), settings={
        "active": False, "events": ["push"],
        "config": {"url": "https://h/hooks/a-1/hkd1_x", "secret": "********"}})
    p = plan([d], [row("a-1")], listed(listed_hook), max_deletes=0)
    (item,) = p.items
    assert (item.action, item.reason) == ("update", "changed upstream: active: false upstream, "
                                                    "hookd wants true")
    assert p.has_changes and "TOPSECRET" not in repr(p) and "hkd1_" not in item.reason
    same = replace(listed_hook, settings={"active": True, "events": ["push"]})
    assert summary(plan([d], [row("a-1")], listed(same), max_deletes=0)) == [("keep", "a-1")]


def test_secrets_never_in_plan_repr() -> None:
    d = replace(want("a-1"), secret="TOPSECRET", body={"config": {"secret": "TOPSECRET"}})
    p = plan([d], [], listed(), max_deletes=5)
    assert "TOPSECRET" not in repr(p) and "hkd1_" not in repr(p)


# ----------------------------------------------------------------------------- properties

_IDS = [f"f{n}-{v}" for n in range(4) for v in (1, 2)]
_STATUSES = ["pending", "active", "failed", "deleting", "orphaned"]


@st.composite
def situations(draw: Any) -> tuple[list[DesiredSubscription], list[SubscriptionRow], Observed, int]:
    wanted_ids = draw(st.lists(st.sampled_from(_IDS), unique=True, max_size=4))
    # at most one desired subscription per flow, as desired_subscriptions guarantees
    by_flow: dict[str, str] = {}
    for sub_id in wanted_ids:
        by_flow.setdefault(sub_id.split("-")[0], sub_id)
    desired = [want(i) for i in by_flow.values()]
    recorded = [row(i, draw(st.sampled_from(_STATUSES)), upstream_id=str(n),
                    location=draw(st.sampled_from([None, f"https://api/hooks/{n}"])))
                for n, i in enumerate(draw(st.lists(st.sampled_from(_IDS), unique=True)))]
    hooks = [hook(str(100 + n), draw(st.sampled_from([None, *_IDS])),
                  prefix=draw(st.booleans()))
             for n in range(draw(st.integers(0, 6)))]
    observed = listed(*hooks) if draw(st.booleans()) else UNLISTED
    return desired, recorded, observed, draw(st.integers(0, 3))


@settings(max_examples=120, deadline=None)
@given(situations())
def test_plan_invariants(case: tuple[list[DesiredSubscription], list[SubscriptionRow], Observed, int]) -> None:
    desired, recorded, observed, max_deletes = case
    p = plan(desired, recorded, observed, max_deletes=max_deletes)
    # Every desired subscription is handled exactly once.
    handled = [i.sub_id for i in p.items if i.action in ("create", "replace", "adopt", "keep")]
    assert sorted(handled) == sorted(d.id for d in desired)
    # Deletes never exceed the limit, and each targets something hookd recorded or provably owns.
    deletes = p.by_action("delete")
    assert len(deletes) <= max_deletes
    for item in deletes + p.by_action("blocked"):
        assert item.row is not None or (item.hook is not None and item.hook.owned_id is not None)
        assert item.desired is None or item.hook is not None  # only duplicates of wanted ones
    # Nothing wanted is deleted as "no longer wanted".
    wanted = {d.id for d in desired}
    assert all(i.row is None or i.row.id not in wanted for i in deletes)
    # Hooks whose URL hookd did not mint are never touched.
    touched = {i.hook.upstream_id for i in p.items if i.hook is not None and i.action != "keep"}
    foreign = {h.upstream_id for hs in observed.hooks.values() for h in hs if h.owned_id is None}
    assert not touched & foreign
    # Deterministic.
    assert plan(list(reversed(desired)), list(reversed(recorded)), observed,
                max_deletes=max_deletes) == p
