"""Reconcile: observe the upstreams, plan, and execute the plan — recording every step.

One pass is `Reconciler.reconcile()` = `observe()` → `hookd.subscriptions.plan.plan()` → `apply()`.
`hookd plan` runs the first two and prints; `hookd apply` and the daemon run all three, so
what plan shows is what apply does.

Crash safety. Before any upstream create, the subscription's row is committed with
status ``pending`` (one transaction for the whole batch). If the process dies after the
upstream's 201 but before the row says ``active``, the next pass lists the scope, finds a
hook carrying that subscription's callback URL and *adopts* it — no duplicate. A create
answered 422 "already exists" (GitHub's answer when a timed-out create did succeed) is
resolved the same way, by listing. Completion records (active / failed / removed) go
through a group-commit writer: whatever finished while the last commit was running is
committed together, so 1,000 creates do not cost 1,000 fsyncs.

Deletes use the ``Location`` the upstream returned, else the connector's delete
operation with the upstream id, else the hook's API URL from the list; without any of
these the row becomes ``orphaned`` and is reported as "unmanageable: cannot delete".
404/410 on delete means it is already gone.

Callers pass a loaded, valid `Config` (`load_config` returns None on error, and a broken
config is never reconciled against). Nothing here logs a secret: messages carry ids,
flows and `hookd.upstream.client` error texts, which are built without query strings or bodies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urljoin

from hookd.config.model import Config, Connection, Settings
from hookd.connectors.model import Connector, WebhookTrigger
from hookd.store.interface import Subscriptions
from hookd.store.records import SubscriptionRow, Update
from hookd.subscriptions import plan as planning
from hookd.subscriptions import tokens
from hookd.subscriptions.desired import DesiredSubscription, desired_subscriptions
from hookd.upstream.client import PermanentError, Upstream, UpstreamError, dig

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("hookd.reconcile.reconciler")

# Test hook for the crash test: after the first upstream 201, write this file and hang,
# so a test can SIGKILL the process between the upstream's answer and our write.
PAUSE_ENV = "HOOKD_TEST_PAUSE_AFTER_CREATE"

Result = Literal["ok", "failed", "blocked", "unmanageable"]


@dataclass(frozen=True)
class Outcome:
    sub_id: str
    flow: str
    action: planning.Action
    result: Result
    detail: str = ""


@dataclass
class Report:
    plan: planning.Plan
    outcomes: list[Outcome] = field(default_factory=list)
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return all(o.result == "ok" for o in self.outcomes if o.action != "blocked")

    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.result in ("failed", "unmanageable")]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "duration": round(self.duration, 3),
            "warnings": list(self.plan.warnings),
            "outcomes": [o.__dict__ for o in self.outcomes],
        }


Progress = Callable[[int, int], None]


class Reconciler:
    """Reconciles one config against its upstreams; passes never overlap."""

    def __init__(
        self,
        config: Config,
        store: Subscriptions,
        upstream: Upstream,
        server_secret: bytes,
        *,
        concurrency: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.upstream = upstream
        self.server_secret = server_secret
        self.concurrency = max(1, concurrency or config.settings.reconcile.concurrency)
        self.progress = progress
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ entry points

    async def reconcile(self, *, allow_deletes: int | None = None) -> Report:
        async with self._lock:
            the_plan = await self.plan(allow_deletes=allow_deletes)
            return await self.apply(the_plan)

    async def plan(self, *, allow_deletes: int | None = None) -> planning.Plan:
        """Observe and decide; writes nothing."""
        desired = desired_subscriptions(self.config, self.server_secret)
        rows = await self.store.all()
        observed = await self.observe(desired, rows)
        limit = self.config.settings.reconcile.max_deletes if allow_deletes is None \
            else allow_deletes
        return planning.plan(desired, rows, observed, max_deletes=limit,
                             hold_deletes=empty_files_hold(self.config))

    # ------------------------------------------------------------------ observe

    async def observe(
        self, desired: list[DesiredSubscription], rows: list[SubscriptionRow]
    ) -> planning.Observed:
        """List every scope once (one list call per repository, plus pages)."""
        scopes: dict[str, tuple[str, str]] = {}  # scope → (connector, operation)
        for d in desired:
            if d.upstream and d.scope:
                scopes.setdefault(d.scope, (d.connector, d.operation))
        for r in rows:
            if r.scope:
                scopes.setdefault(r.scope, (r.connector, r.operation))
        hooks: dict[str, tuple[planning.ObservedHook, ...]] = {}
        unavailable: dict[str, str] = {}
        sem = asyncio.Semaphore(self.concurrency)

        async def one(scope: str, connector_name: str, operation: str) -> None:
            async with sem:
                try:
                    hooks[scope] = await self._list_scope(scope, connector_name, operation)
                except (UpstreamError, KeyError, ValueError) as exc:
                    unavailable[scope] = str(exc) or type(exc).__name__

        await asyncio.gather(*(one(s, c, o) for s, (c, o) in scopes.items()))
        return planning.Observed(hooks, unavailable)

    async def _list_scope(
        self, scope: str, connector_name: str, operation: str
    ) -> tuple[planning.ObservedHook, ...]:
        connector = self.config.connectors.get(connector_name)
        if connector is None:
            raise KeyError(f"connector '{connector_name}' is no longer configured")
        webhook = connector.webhooks.get(operation)
        if webhook is None or webhook.list is None:
            raise KeyError(f"{connector_name}.{operation} declares no list operation")
        _, connection_name, params = json.loads(scope)
        connection = self._connection(connection_name)
        items = await self.upstream.list_all(
            connector, webhook.list.operation_id, connection, params,
            items_field=webhook.list.items_field)
        base = self.upstream.base_url(connector, connection)
        return tuple(self._classify(scope, item, webhook, base) for item in items)

    def _classify(
        self, scope: str, item: Any, webhook: WebhookTrigger, base: str
    ) -> planning.ObservedHook:
        assert webhook.list is not None
        upstream_id = dig(item, webhook.list.id_field)
        url = dig(item, webhook.list.url_field)
        url = url if isinstance(url, str) else None
        self_link = item.get("url") if isinstance(item, Mapping) else None
        location = None
        if (isinstance(self_link, str) and self_link != url and self_link.startswith(base + "/")
                and self_link.rstrip("/").endswith("/" + str(upstream_id))):
            location = self_link
        owned = None
        prefix = False
        if url is not None:
            parsed = tokens.parse_callback_url(self.config.settings.public_url, url)
            if parsed is not None:
                prefix = True
                if tokens.verify_token(self.server_secret, *parsed):
                    owned = parsed[0]
        return planning.ObservedHook(scope, str(upstream_id), url, location, owned, prefix,
                                     settings=item if isinstance(item, Mapping) else None)

    # ------------------------------------------------------------------ apply

    async def apply(self, the_plan: planning.Plan) -> Report:
        started = time.monotonic()
        report = Report(the_plan)
        writer = _GroupWriter(self.store)
        # Intent first, in one transaction: pending rows before any create, "deleting"
        # before any delete.
        intents: list[Update] = []
        for item in the_plan.items:
            if item.action in ("create", "replace") and item.desired is not None:
                intents.append(Update("upsert", item.sub_id, row=_pending_row(item.desired)))
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

    async def _execute(self, item: planning.PlanItem, writer: _GroupWriter) -> Outcome:
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

    async def _update(self, item: planning.PlanItem, writer: _GroupWriter) -> tuple[Result, str]:
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

    async def _create(self, d: DesiredSubscription, writer: _GroupWriter) -> str:
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
        writer: _GroupWriter,
    ) -> tuple[Result, str]:
        """Delete one hook upstream; removes its row when it is gone."""
        connector_name = row.connector if row is not None else _scope_connector(hook)
        operation = row.operation if row is not None else None
        connector = self.config.connectors.get(connector_name or "")
        sub_id = row.id if row is not None else None
        if connector is None:
            return self._unmanageable(
                sub_id, writer, f"connector '{connector_name}' is no longer configured")
        connection_name = row.connection if row is not None else _scope_connection(hook)
        try:
            connection = self._connection(connection_name)
            request = await self._delete_request(connector, operation, connection, row, hook)
        except (PermanentError, KeyError) as exc:
            return self._unmanageable(sub_id, writer, str(exc))
        if request is None:
            return self._unmanageable(sub_id, writer,
                                      _no_delete_request(connector, operation, row, hook))
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

    # ------------------------------------------------------------------ preview

    def preview(self, the_plan: planning.Plan) -> dict[str, list[dict[str, Any]]]:
        """What `hookd plan` shows: per planned change (by subscription id) the exact
        requests apply would send — create, then delete for a replace — secrets, the
        callback URL's token and the signing secret as ``***``. Nothing is sent; a
        request that cannot be built shows its error."""
        out: dict[str, list[dict[str, Any]]] = {}
        for item in the_plan.items:
            shown: list[dict[str, Any]] = []
            if item.action in ("create", "replace") and item.desired is not None:
                shown.append(self._preview_create(item.desired))
            if item.action in ("replace", "delete", "blocked"):
                shown.append(self._preview_delete(item.row, item.hook))
            if shown:
                out[item.sub_id] = shown
        return out

    def _preview_create(self, d: DesiredSubscription) -> dict[str, Any]:
        connector = self.config.connectors[d.connector]
        parsed = tokens.parse_callback_url(self.config.settings.public_url, d.callback_url)
        hide = tuple(x for x in (parsed[1] if parsed else "", d.secret) if x)
        try:
            return self.upstream.preview(connector, d.operation, self._connection(d.connection),
                                         d.parameters, d.body, hide=hide)
        except (PermanentError, KeyError) as exc:
            return {"error": str(exc)}

    def _preview_delete(self, row: SubscriptionRow | None,
                        hook: planning.ObservedHook | None) -> dict[str, Any]:
        connector_name = row.connector if row is not None else _scope_connector(hook)
        connector = self.config.connectors.get(connector_name or "")
        if connector is None:
            return {"error": f"connector '{connector_name}' is no longer configured"}
        try:
            connection = self._connection(row.connection if row is not None
                                          else _scope_connection(hook))
            target = delete_target(connector, row.operation if row is not None else None,
                                   row, hook)
            if target is None:
                return {"error": "unmanageable: no Location was returned and the connector "
                                 "declares no delete operation"}
            if target.url is not None:
                return self.upstream.preview_url("DELETE", target.url, connector, connection)
            return self.upstream.preview(connector, target.operation, connection,
                                         target.parameters)
        except (PermanentError, KeyError) as exc:
            return {"error": str(exc)}

    def _unmanageable(self, sub_id: str | None, writer: _GroupWriter,
                      why: str) -> tuple[Result, str]:
        text = f"unmanageable: cannot delete ({why})"
        if sub_id is not None:
            writer.put(Update("set", sub_id, fields={"status": "orphaned", "last_error": text}))
        return "unmanageable", text

    def _fail_delete(self, sub_id: str | None, writer: _GroupWriter,
                     why: str) -> tuple[Result, str]:
        if sub_id is not None:
            writer.put(Update("set", sub_id, fields={"status": "deleting", "last_error": why}))
        return "failed", why

    # ------------------------------------------------------------------ helpers

    def _connection(self, name: str | None) -> Connection | None:
        if name is None:
            return None
        connection = self.config.connections.get(name)
        if connection is None:
            raise PermanentError(f"connection '{name}' is not configured")
        return connection


@dataclass(frozen=True)
class DeleteTarget:
    """Where a hook is deleted: a URL the upstream gave (`url`, with the `origin` request
    whose answer it was), else the connector's delete `operation` with `parameters`."""

    url: str | None = None
    origin: tuple[str, Mapping[str, Any]] | None = None
    operation: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


def delete_target(connector: Connector, operation: str | None, row: SubscriptionRow | None,
                  hook: planning.ObservedHook | None) -> DeleteTarget | None:
    """The recorded Location, else the delete operation with the upstream id, else the
    listed hook's own URL; None when there is no way to delete it."""
    if row is not None and row.location:
        return DeleteTarget(row.location, (row.operation, row.parameters) if row.operation else None)
    upstream_id = (row.upstream_id if row is not None else None) or (
        hook.upstream_id if hook is not None else None)
    webhook = connector.webhooks.get(operation) if operation else None
    if webhook is None and hook is not None:
        webhook = next(iter(connector.webhooks.values()), None)
    strategy = webhook.delete if webhook is not None else None
    if upstream_id and strategy is not None and strategy.kind == "operation" \
            and strategy.operation_id and strategy.id_param:
        params: dict[str, Any] = dict(row.parameters) if row is not None else {}
        if hook is not None and not params:
            params = dict(json.loads(hook.scope)[2])
        params[strategy.id_param] = upstream_id
        create_op = connector.operations.get(operation or "")
        delete_op = connector.operations[strategy.operation_id]
        if create_op is not None:
            params = align_path_params(create_op.path, delete_op.path, params)
        return DeleteTarget(operation=strategy.operation_id, parameters=params)
    if hook is not None and hook.location:
        return DeleteTarget(hook.location)
    return None


def align_path_params(create_path: str, delete_path: str,
                      params: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the delete path's parameters that the create path names differently.

    Real specs rename them: Survey123 creates under ``/api/survey/{surveyId}/webhook/add``
    and deletes ``/api/survey/{surveyItemId}/webhook/{webhookId}``; TrueDialog has
    ``{AccountId}`` and ``{accountId}``. A parameter missing by name is taken from the
    create path's parameter in the same segment, else one equal ignoring case.

    >>> align_path_params("/s/{surveyId}/webhook/add", "/s/{surveyItemId}/webhook/{id}",
    ...                   {"surveyId": "S1", "id": "7"})
    {'surveyId': 'S1', 'id': '7', 'surveyItemId': 'S1'}
    """
    out = dict(params)
    create = create_path.strip("/").split("/")
    lower = {k.lower(): k for k in params}
    for i, segment in enumerate(delete_path.strip("/").split("/")):
        if not (segment.startswith("{") and segment.endswith("}")):
            continue
        name = segment[1:-1]
        if name in out:
            continue
        if i < len(create) and create[i].startswith("{") and create[i][1:-1] in params:
            out[name] = params[create[i][1:-1]]
        elif name.lower() in lower:
            out[name] = params[lower[name.lower()]]
    return out


def _pending_row(d: DesiredSubscription) -> SubscriptionRow:
    return SubscriptionRow(
        id=d.id, flow=d.flow, fingerprint=d.fingerprint, connector=d.connector,
        operation=d.operation, connection=d.connection, scope=d.scope,
        parameters={k: str(v) if not isinstance(v, str | int | float | bool) else v
                    for k, v in d.public_parameters.items()},
        location=None, upstream_id=None, secret=d.secret, status="pending",
    )


def _replace_row(row: SubscriptionRow, **changes: Any) -> SubscriptionRow:
    return dataclasses.replace(row, **changes)


def empty_files_hold(config: Config) -> str:
    """Why deletes wait, when a flow file is empty: at start (or in `hookd apply`) there
    is no earlier config to compare with, and a truncated file must not read as "remove
    these flows" (the daemon refuses such a reload outright)."""
    if not config.empty_flow_files:
        return ""
    names = ", ".join(_relative(p, config.directory) for p in config.empty_flow_files)
    return (f"flow file {names} is empty; deletes wait until it has flows again or is "
            "deleted")


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _no_delete_request(connector: Connector, operation: str | None,
                       row: SubscriptionRow | None, hook: planning.ObservedHook | None) -> str:
    """The real reason no delete request could be built (the operator acts on it)."""
    upstream_id = (row.upstream_id if row is not None else None) or (
        hook.upstream_id if hook is not None else None)
    webhook = connector.webhooks.get(operation) if operation else None
    strategy = webhook.delete if webhook is not None else None
    has_operation = strategy is not None and strategy.kind == "operation"
    if not upstream_id and has_operation:
        return ("no Location and no upstream id were recorded for it, so the connector's "
                "delete operation has nothing to name (the create may never have "
                "completed); if no hook is left upstream, `hookd subscriptions forget ID`")
    return (f"no Location was returned and connector '{connector.name}' declares no delete "
            "operation; delete the hook upstream by hand, then `hookd subscriptions forget ID`")


def _scope_connector(hook: planning.ObservedHook | None) -> str | None:
    return str(json.loads(hook.scope)[0]) if hook is not None else None


def _scope_connection(hook: planning.ObservedHook | None) -> str | None:
    if hook is None:
        return None
    value = json.loads(hook.scope)[1]
    return None if value is None else str(value)


def _maybe_pause() -> None:
    path = os.environ.get(PAUSE_ENV)
    if path:
        with open(path, "w") as f:
            f.write(str(os.getpid()))
        sys.stderr.flush()
        time.sleep(3600)  # the test SIGKILLs us here; blocking the loop is the point


class _GroupWriter:
    """Commits store updates in batches: all that arrived while the last commit ran.

    The store runs each commit off the event loop, so the loop keeps sending requests
    meanwhile, and one commit (one fsync) covers every outcome that arrived during the
    last.
    """

    def __init__(self, store: Subscriptions) -> None:
        self.store = store
        self._queue: list[Update] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def put(self, update: Update) -> None:
        self._queue.append(update)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            if self._closing:
                return

    async def flush(self) -> None:
        if not self._queue:
            return
        batch, self._queue = self._queue, []
        await self.store.apply_many(batch)
        self.commits += 1

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()


async def reconcile_once(
    config: Config,
    store: Subscriptions,
    server_secret: bytes,
    *,
    upstream: Upstream | None = None,
    allow_deletes: int | None = None,
    progress: Progress | None = None,
) -> Report:
    """One pass with an upstream client built from the config's policy (for the daemon)."""
    from hookd.upstream.client import RetryPolicy

    policy = config.settings.reconcile
    own = upstream is None
    client = upstream or with_tokens(
        Upstream(timeout=policy.timeout, retry=RetryPolicy(retries=policy.retries)),
        config.settings)
    try:
        reconciler = Reconciler(config, store, client, server_secret, progress=progress)
        return await reconciler.reconcile(allow_deletes=allow_deletes)
    finally:
        if own:
            await client.aclose()


def with_tokens(upstream: Upstream, where: Settings | Path) -> Upstream:
    """`upstream` taking the access tokens of ``oauth:`` connections from the store of
    `where` (its settings, or a state directory; refreshing them there); the one way
    hookd's clients are given tokens."""
    from hookd.store.tokens import open_tokens
    from hookd.upstream.oauth import attach

    return attach(upstream, open_tokens(where))
