"""The reconcile decision, as a pure function: desired vs recorded vs observed → Plan.

`plan()` does no I/O. `hookd.reconcile.reconciler` gathers its three inputs (the config's desired
subscriptions, the store's rows, the hooks listed upstream) and executes the result;
`hookd plan` prints the very same Plan, which is how "plan prints exactly what the next
apply does" holds by construction.

Actions, each with a reason a human can act on:

``create``   a desired subscription with no hook upstream (new flow, vanished hook,
             interrupted or failed earlier attempt)
``replace``  a flow's trigger changed: create the new hook, then delete the old one (the
             new subscription has a new id and callback URL, so both can coexist)
``update``   a hook that is ours and wanted, but whose settings were changed upstream
             (the list returns them: events, active, content type…): set them back
``adopt``    a hook with one of our callback URLs exists upstream but is not recorded as
             active (a crash between the upstream's 201 and our write): record it
``delete``   a recorded hook no flow wants, or an unrecorded one that provably is ours
             (hookd's callback URL with a valid token) and matches nothing, or a duplicate
``forget``   drop a record whose hook is known not to exist upstream, or that was never
             created (no Location, no upstream id, no hook seen: nothing to delete it
             by) — no upstream call
``keep``     nothing to do
``blocked``  a delete held back by ``max_deletes``, or by `hold_deletes` (the caller's
             reason: an empty flow file)

Hooks that do not carry a callback URL minted by this server are never touched. Replaces
do not count against ``max_deletes``: the flow still exists and gets its new hook first.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from hookd.subscriptions import drift
from hookd.subscriptions.desired import DesiredSubscription

if TYPE_CHECKING:  # the row type only: the plan reads rows, the store module does I/O
    from hookd.store.records import SubscriptionRow

Action = Literal["create", "replace", "update", "adopt", "delete", "forget", "keep", "blocked"]
ACTIONS: tuple[Action, ...] = ("create", "replace", "update", "adopt", "delete", "forget",
                               "blocked", "keep")


@dataclass(frozen=True)
class ObservedHook:
    """One hook listed upstream, already classified against our callback URLs."""

    scope: str
    upstream_id: str
    url: str | None = field(default=None, repr=False)  # where it delivers (may hold a token)
    location: str | None = None  # its API URL when the list says so
    owned_id: str | None = None  # our subscription id when `url` carries a valid token
    hookd_prefix: bool = False  # `url` has our callback prefix (owned or not)
    # The listed item as the upstream returned it (its settings, for drift); holds the
    # callback URL, so never shown.
    settings: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Observed:
    """What the upstreams hold, per scope; scopes that could not be listed say why."""

    hooks: Mapping[str, tuple[ObservedHook, ...]] = field(default_factory=dict)
    unavailable: Mapping[str, str] = field(default_factory=dict)

    def listed(self, scope: str | None) -> bool:
        return scope is not None and scope in self.hooks


@dataclass(frozen=True)
class PlanItem:
    action: Action
    sub_id: str
    flow: str
    reason: str
    desired: DesiredSubscription | None = None
    row: SubscriptionRow | None = None  # the recorded row (for replace: the old one)
    hook: ObservedHook | None = None  # the observed hook (adopt, delete of an unrecorded one)

    @property
    def connector(self) -> str:
        if self.desired is not None:
            return self.desired.connector
        return self.row.connector if self.row is not None else ""

    @property
    def old_id(self) -> str | None:
        """For a replace, the id of the subscription being replaced."""
        return self.row.id if self.action == "replace" and self.row is not None else None


@dataclass(frozen=True)
class Plan:
    items: tuple[PlanItem, ...]
    warnings: tuple[str, ...] = ()
    max_deletes: int = 0

    @property
    def changes(self) -> tuple[PlanItem, ...]:
        """Items that write something (upstream or the store); blocked ones included."""
        return tuple(i for i in self.items if i.action != "keep")

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(ACTIONS, 0)
        for item in self.items:
            out[item.action] += 1
        return out

    def by_action(self, action: Action) -> list[PlanItem]:
        return [i for i in self.items if i.action == action]


def plan(
    desired: Iterable[DesiredSubscription],
    recorded: Iterable[SubscriptionRow],
    observed: Observed,
    *,
    max_deletes: int,
    hold_deletes: str = "",
) -> Plan:
    """Decide what to do. See the module docstring for the actions. `hold_deletes`, when
    given, blocks every delete for that reason (replaces still happen)."""
    wanted = {d.id: d for d in desired if d.upstream}
    rows = {r.id: r for r in recorded}
    mine: dict[str, list[ObservedHook]] = defaultdict(list)
    warnings: list[str] = []
    for scope in sorted(observed.hooks):
        for hook in observed.hooks[scope]:
            if hook.owned_id is not None:
                mine[hook.owned_id].append(hook)
            elif hook.hookd_prefix:
                warnings.append(
                    f"hook {hook.upstream_id} in {scope_text(scope)} has hookd's callback "
                    "prefix but a token this server did not mint (another hookd state "
                    "directory?); left alone")
    for scope, why in sorted(observed.unavailable.items()):
        warnings.append(f"cannot list hooks in {scope_text(scope)}: {why}; drift not checked")

    items: list[PlanItem] = []
    deletes: list[PlanItem] = []

    for sub_id in sorted(wanted):
        d = wanted[sub_id]
        row = rows.get(sub_id)
        hooks = [h for h in mine.get(sub_id, []) if h.scope == d.scope]
        if hooks:
            primary = _primary(hooks, row)
            for extra in hooks:
                if extra is not primary:
                    deletes.append(PlanItem(
                        "delete", sub_id, d.flow,
                        f"duplicate upstream hook {extra.upstream_id} of this subscription",
                        desired=d, hook=extra))
            if row is not None and row.status == "active" and row.upstream_id in (
                    None, primary.upstream_id):
                changed = drift.changes(d.body, primary.settings,
                                        skip=(d.callback_url, d.secret)) \
                    if primary.settings is not None else []
                if changed:
                    items.append(PlanItem("update", sub_id, d.flow,
                                          "changed upstream: " + "; ".join(changed),
                                          d, row, primary))
                else:
                    items.append(PlanItem("keep", sub_id, d.flow, "up to date", d, row, primary))
            else:
                why = ("exists upstream but was never recorded (an earlier apply was "
                       "interrupted)" if row is None or row.status == "pending"
                       else f"exists upstream but is recorded as {row.status}")
                items.append(PlanItem("adopt", sub_id, d.flow, why, d, row, primary))
            continue
        listed = observed.listed(d.scope)
        if row is None:
            items.append(PlanItem("create", sub_id, d.flow, "new subscription", d))
        elif row.status == "active":
            if listed:
                items.append(PlanItem("create", sub_id, d.flow,
                                      "vanished upstream (deleted outside hookd)", d, row))
            else:
                items.append(PlanItem("keep", sub_id, d.flow, "up to date", d, row))
        elif row.status == "pending":
            items.append(PlanItem("create", sub_id, d.flow,
                                  "an earlier attempt was interrupted before it was recorded",
                                  d, row))
        elif row.status == "failed":
            items.append(PlanItem("create", sub_id, d.flow,
                                  f"retrying; last attempt failed: {row.last_error or '?'}",
                                  d, row))
        else:  # deleting / orphaned, but wanted again
            items.append(PlanItem("create", sub_id, d.flow,
                                  f"wanted again while {row.status}", d, row))

    wanted_flows = {d.flow: d for d in wanted.values()}
    for sub_id in sorted(rows):
        if sub_id in wanted:
            continue
        row = rows[sub_id]
        hooks = [h for h in mine.get(sub_id, []) if h.scope == row.scope]
        listed = observed.listed(row.scope)
        if not row.location and not row.upstream_id and not hooks:
            items.append(PlanItem("forget", sub_id, row.flow, _never_created(row, listed),
                                  row=row))
            continue
        if listed and not hooks and row.status != "pending":
            items.append(PlanItem("forget", sub_id, row.flow,
                                  "no longer wanted and already gone upstream", row=row))
            continue
        successor = wanted_flows.get(row.flow)
        reason = (f"trigger changed (superseded by {successor.id})" if successor
                  else "flow removed or disabled")
        recorded_hook = _primary(hooks, row) if hooks else None
        deletes.append(PlanItem("delete", sub_id, row.flow, reason, row=row, hook=recorded_hook))
        for extra in hooks:
            if extra is not recorded_hook:
                deletes.append(PlanItem("delete", sub_id, row.flow,
                                        f"duplicate upstream hook {extra.upstream_id}",
                                        hook=extra))

    for sub_id in sorted(mine):
        if sub_id in wanted or sub_id in rows:
            continue
        for hook in mine[sub_id]:
            deletes.append(PlanItem(
                "delete", sub_id, "",
                "carries hookd's callback URL but matches no flow and no record", hook=hook))

    # A create whose flow also has a delete of an older subscription is a replace.
    creates = {i.flow: n for n, i in enumerate(items) if i.action == "create"}
    remaining: list[PlanItem] = []
    for item in deletes:
        n = creates.pop(item.flow, None) if item.row is not None else None
        if n is not None:
            new = items[n]
            why = f"trigger changed (replaces {item.sub_id})"
            if new.row is not None:  # an earlier attempt at the new one failed or was cut
                why += f"; {new.reason}"
            items[n] = replace(new, action="replace", row=item.row, hook=item.hook, reason=why)
        else:
            remaining.append(item)

    allowed = 0 if hold_deletes else max(0, max_deletes)
    for n, item in enumerate(remaining):
        if n < allowed:
            items.append(item)
        elif hold_deletes:
            items.append(replace(item, action="blocked",
                                 reason=f"{item.reason}; delete held back: {hold_deletes}"))
        else:
            items.append(replace(item, action="blocked", reason=(
                f"{item.reason}; delete blocked: this pass already deletes max_deletes="
                f"{max_deletes} (hookd apply --allow-deletes N overrides once)")))
    order = {a: n for n, a in enumerate(ACTIONS)}
    items.sort(key=lambda i: (order[i.action], i.flow, i.sub_id))
    return Plan(tuple(items), tuple(warnings), max_deletes)


def _never_created(row: SubscriptionRow, listed: bool) -> str:
    """Why a record no flow wants, with no Location, no upstream id and no hook seen, is
    forgotten rather than deleted: there is nothing to delete it by, and keeping it would
    fail every later pass (and `hookd apply`/`teardown`) for good."""
    why = "no longer wanted and never created upstream"
    if row.status == "pending" and not listed:
        # The create may have gone through unseen (a timeout after the write): a later
        # list finds such a hook by its callback URL and deletes it as ours.
        why += " (its create never completed; a hook of ours listed later is deleted then)"
    if row.last_error:
        why += f"; last error: {row.last_error}"
    return why


def _primary(hooks: list[ObservedHook], row: SubscriptionRow | None) -> ObservedHook:
    """The hook the record points at, else the oldest-looking (smallest id) one."""
    if row is not None and row.upstream_id is not None:
        for h in hooks:
            if h.upstream_id == row.upstream_id:
                return h
    return min(hooks, key=lambda h: (len(h.upstream_id), h.upstream_id))


def scope_text(scope: str) -> str:
    """A readable name for a scope key: ``github (connection gh) owner=o repo=r``."""
    try:
        connector, connection, params = json.loads(scope)
    except (ValueError, TypeError):
        return scope
    args = " ".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{connector} (connection {connection}) {args}".strip()

