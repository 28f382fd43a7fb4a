"""Executing a plan against the upstreams and the store — recording every step.

Crash safety. Before any upstream create, the subscription's row is committed with
status ``pending`` (one transaction for the whole batch). If the process dies after the
upstream's 201 but before the row says ``active``, the next pass lists the scope, finds a
hook carrying that subscription's callback URL and *adopts* it — no duplicate. A create
answered 422 "already exists" (GitHub's answer when a timed-out create did succeed) is
resolved the same way, by listing. Completion records (active / failed / removed) go
through `hookd.reconcile.writer.GroupWriter`, so 1,000 creates do not cost 1,000 fsyncs.
404/410 on delete means it is already gone (where to delete: `hookd.reconcile.targets`).

The only part of reconcile that changes anything, hence its own module. Nothing here logs
a secret: messages carry ids, flows and `hookd.upstream.client` error texts, which are
built without query strings or bodies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from hookd.config.model import Connection
from hookd.connectors.model import Connector
from hookd.reconcile.observer import Observer
from hookd.reconcile.report import Outcome, Progress, Report, Result
from hookd.reconcile.targets import (
    delete_target,
    no_delete_request,
    scope_connection,
    scope_connector,
)
from hookd.reconcile.writer import GroupWriter
from hookd.store.interface import Subscriptions
from hookd.store.records import SubscriptionRow, Update
from hookd.subscriptions import plan as planning
from hookd.subscriptions.desired import DesiredSubscription
from hookd.upstream.client import PermanentError, UpstreamError, dig

if TYPE_CHECKING:
    import httpx

# The logger keeps the name it had before the split: operators filter on it.
log = logging.getLogger("hookd.reconcile.reconciler")

# Test hook for the crash test: after the first upstream 201, write this file and hang,
# so a test can SIGKILL the process between the upstream's answer and our write.
PAUSE_ENV = "HOOKD_TEST_PAUSE_AFTER_CREATE"


class Executor(Observer):
    """Applies a plan: the upstream requests and the store updates of each item."""

    store: Subscriptions
    progress: Progress | None

    async def apply(self, the_plan: planning.Plan) -> Report:
        started = time.monotonic()
        report = Report(the_plan)
        writer = GroupWriter(self.store)
        # Intent first, in one transaction: pending rows before any create, "deleting"
        # before any delete.
        intents: list[Update] = []
        for item in the_plan.items:
            if item.action in ("create", "replace") and item.desired is not None:
                intents.append(Update("upsert", item.sub_id, row=_pending_row(
                    item.desired, last_error=_still_failing(item.row))))
            # Not for a replace: its old hook keeps delivering (the server answers 410 for
            # "deleting") until the new one exists.
            if item.action == "delete" and item.row is not None:
                intents.append(Update("set", item.row.id, fields={"status": "deleting"}))
        if intents:
            await self.store.apply_many(intents)

        work = [i for i in the_plan.items if i.action != "keep"]
        # Creates, replaces and adoptions before plain deletes: never leave a flow without
        # a hook longer than needed.
        first = [i for i in work if i.action in ("create", "replace", "update", "adopt",
                                                 "forget")]
        later = [i for i in work if i.action in ("delete", "blocked")]
        sem = asyncio.Semaphore(self.concurrency)
        done = 0
        total = len(work)
        writer.start()

        async def run(item: planning.PlanItem) -> None:
            nonlocal done
            async with sem:
                try:
                    outcome = await self._execute(item, writer)
                except Exception as exc:  # one item's bug must not abandon the others
                    log.exception("reconcile step crashed", extra={"subscription": item.sub_id})
                    outcome = Outcome(item.sub_id, item.flow, item.action, "failed",
                                      f"internal error: {type(exc).__name__}: {exc}")
            report.outcomes.append(outcome)
            done += 1
            if self.progress is not None:
                self.progress(done, total)
            level = logging.WARNING if outcome.result in ("failed", "unmanageable") \
                else logging.INFO
            log.log(level, f"subscription {item.action}", extra={
                "subscription": item.sub_id, "flow": item.flow, "result": outcome.result,
                "detail": outcome.detail})

        try:
            await asyncio.gather(*(run(i) for i in first))
            await asyncio.gather(*(run(i) for i in later))
        finally:
            await writer.close()
        order = {i.sub_id + i.action: n for n, i in enumerate(work)}
        report.outcomes.sort(key=lambda o: order.get(o.sub_id + o.action, 0))
        report.duration = time.monotonic() - started
        return report

    async def _execute(self, item: planning.PlanItem, writer: GroupWriter) -> Outcome:
        def outcome(result: Result, detail: str = "") -> Outcome:
            return Outcome(item.sub_id, item.flow, item.action, result, detail)

        if item.action == "blocked":
            return outcome("blocked", item.reason)
        if item.action == "forget":
            writer.put(Update("remove", item.sub_id))
            return outcome("ok", item.reason)
        if item.action == "adopt":
            assert item.desired is not None and item.hook is not None
            row = _pending_row(item.desired)
            writer.put(Update("upsert", row.id, row=_replace_row(
                row, status="active", upstream_id=item.hook.upstream_id,
                location=item.hook.location)))
            return outcome("ok", f"adopted upstream hook {item.hook.upstream_id}")
        if item.action in ("create", "replace"):
            assert item.desired is not None
            error = await self._create(item.desired, writer)
            if error:
                return outcome("failed", error)
            if item.action == "create":
                return outcome("ok", "created")
            if item.row is not None:
                writer.put(Update("set", item.row.id, fields={"status": "deleting"}))
            old = await self._delete(item.row, item.hook, writer)
            if old[0] != "ok":
                return outcome(old[0], f"new hook created; deleting the old one: {old[1]}")
            return outcome("ok", f"created; replaced {item.old_id}")
        if item.action == "update":
            return outcome(*await self._update(item, writer))
        if item.action == "delete":
            result, detail = await self._delete(item.row, item.hook, writer)
            return outcome(result, detail)
        return outcome("ok")

    async def _update(self, item: planning.PlanItem, writer: GroupWriter) -> tuple[Result, str]:
        """Set a drifted hook's settings back: the connector's update operation
        (``x-hookd-update``) when it declares one, else delete the hook and create it
        again under the same subscription (same callback URL: a create first would be
        refused as a duplicate)."""
        assert item.desired is not None and item.hook is not None
        d, hook = item.desired, item.hook
        connector = self.config.connectors[d.connector]
        update = connector.webhooks[d.operation].update
        if update is not None:
            try:
                connection = self._connection(d.connection)
                params = {**d.parameters, update.id_param: hook.upstream_id}
                request = await self.upstream.build_request(
                    connector, update.operation_id, connection, params, d.body)
                await self.upstream.send(request)
            except UpstreamError as exc:
                return "failed", str(exc)
            return "ok", f"updated upstream hook {hook.upstream_id}"
        result, detail = await self._delete(item.row, hook, writer)
        if result != "ok":
            return result, f"deleting the changed hook: {detail}"
        writer.put(Update("upsert", d.id, row=_pending_row(d)))
        error = await self._create(d, writer)
        if error:
            return "failed", f"deleted the changed hook {hook.upstream_id}; creating it again: {error}"
        return "ok", f"recreated upstream hook {hook.upstream_id} with hookd's settings"

    # ------------------------------------------------------------------ create

    async def _create(self, d: DesiredSubscription, writer: GroupWriter) -> str:
        """Create `d` upstream and record it; "" on success, else the error text."""
        connector = self.config.connectors[d.connector]
        webhook = connector.webhooks[d.operation]
        try:
            connection = self._connection(d.connection)
            request = await self.upstream.build_request(connector, d.operation, connection,
                                                  d.parameters, d.body)
            response = await self.upstream.send(request)
        except PermanentError as exc:
            if exc.status == 422 or exc.status == 409:
                found = await self._find_existing(d)
                if found is not None:
                    writer.put(Update("set", d.id, fields={
                        "status": "active", "upstream_id": found.upstream_id,
                        "location": found.location, "last_error": None}))
                    return ""
            writer.put(Update("set", d.id, fields={"status": "failed", "last_error": str(exc)}))
            return str(exc)
        except UpstreamError as exc:
            # Retries exhausted: the create may still have happened (timeout after the
            # write); the row stays pending so the next pass looks before creating again.
            writer.put(Update("set", d.id, fields={"status": "pending", "last_error": str(exc)}))
            return str(exc)
        _maybe_pause()
        location = response.headers.get("location")
        if location:
            location = urljoin(str(request.url), location)
        upstream_id = None
        try:
            data = response.json() if response.content else None
        except ValueError:
            data = None
        id_field = webhook.delete.id_field or (webhook.list.id_field if webhook.list else "id")
        value = dig(data, id_field) if isinstance(data, Mapping) else None
        if value is not None:
            upstream_id = str(value)
        writer.put(Update("set", d.id, fields={
            "status": "active", "location": location, "upstream_id": upstream_id,
            "last_error": None}))
        return ""

    async def _find_existing(self, d: DesiredSubscription) -> planning.ObservedHook | None:
        if not d.scope:
            return None
        try:
            hooks = await self._list_scope(d.scope, d.connector, d.operation)
        except (UpstreamError, KeyError, ValueError):
            return None
        return next((h for h in hooks if h.owned_id == d.id), None)

    # ------------------------------------------------------------------ delete

    async def _delete(
        self,
        row: SubscriptionRow | None,
        hook: planning.ObservedHook | None,
        writer: GroupWriter,
    ) -> tuple[Result, str]:
        """Delete one hook upstream; removes its row when it is gone."""
        connector_name = row.connector if row is not None else scope_connector(hook)
        operation = row.operation if row is not None else None
        connector = self.config.connectors.get(connector_name or "")
        sub_id = row.id if row is not None else None
        if connector is None:
            return self._unmanageable(
                sub_id, writer, f"connector '{connector_name}' is no longer configured")
        connection_name = row.connection if row is not None else scope_connection(hook)
        try:
            connection = self._connection(connection_name)
            request = await self._delete_request(connector, operation, connection, row, hook)
        except (PermanentError, KeyError) as exc:
            return self._unmanageable(sub_id, writer, str(exc))
        if request is None:
            return self._unmanageable(sub_id, writer,
                                      no_delete_request(connector, operation, row, hook))
        try:
            await self.upstream.send(request)
        except PermanentError as exc:
            if exc.status not in (404, 410):
                return self._fail_delete(sub_id, writer, str(exc))
        except UpstreamError as exc:
            return self._fail_delete(sub_id, writer, str(exc))
        if sub_id is not None:
            writer.put(Update("remove", sub_id))
        what = hook.upstream_id if hook is not None else (row.upstream_id if row else "")
        return "ok", f"deleted upstream hook {what or ''}".strip()

    async def _delete_request(
        self,
        connector: Connector,
        operation: str | None,
        connection: Connection | None,
        row: SubscriptionRow | None,
        hook: planning.ObservedHook | None,
    ) -> httpx.Request | None:
        target = delete_target(connector, operation, row, hook)
        if target is None:
            return None
        if target.url is not None:
            return await self.upstream.request_for_url("DELETE", target.url, connector,
                                                       connection, origin=target.origin)
        return await self.upstream.build_request(connector, target.operation, connection,
                                                 target.parameters)

    def _unmanageable(self, sub_id: str | None, writer: GroupWriter,
                      why: str) -> tuple[Result, str]:
        text = f"unmanageable: cannot delete ({why})"
        if sub_id is not None:
            writer.put(Update("set", sub_id, fields={"status": "orphaned", "last_error": text}))
        return "unmanageable", text

    def _fail_delete(self, sub_id: str | None, writer: GroupWriter,
                     why: str) -> tuple[Result, str]:
        if sub_id is not None:
            writer.put(Update("set", sub_id, fields={"status": "deleting", "last_error": why}))
        return "failed", why


def _still_failing(row: SubscriptionRow | None) -> str | None:
    """The error a retried create keeps while it runs: a subscription that failed stays
    shown as failing ("retrying", `hookd.daemon.status.shown_state`) until the create
    succeeds, rather than looking healthy for the length of the pass."""
    if row is None or row.status not in ("failed", "pending"):
        return None
    return row.last_error


def _pending_row(d: DesiredSubscription, *, last_error: str | None = None) -> SubscriptionRow:
    return SubscriptionRow(
        id=d.id, flow=d.flow, fingerprint=d.fingerprint, connector=d.connector,
        operation=d.operation, connection=d.connection, scope=d.scope,
        parameters={k: str(v) if not isinstance(v, str | int | float | bool) else v
                    for k, v in d.public_parameters.items()},
        location=None, upstream_id=None, secret=d.secret, status="pending",
        last_error=last_error,
    )


def _replace_row(row: SubscriptionRow, **changes: Any) -> SubscriptionRow:
    return dataclasses.replace(row, **changes)



def _maybe_pause() -> None:
    path = os.environ.get(PAUSE_ENV)
    if path:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        sys.stderr.flush()
        time.sleep(3600)  # the test SIGKILLs us here; blocking the loop is the point
