"""How hookd deletes, lists and updates the hooks a webhook trigger creates.

``x-hookd-delete``, ``x-hookd-list`` and ``x-hookd-update`` name operations; without
``x-hookd-delete`` the DELETE is a best match by path (`hookd.connectors.refs.match_delete`).
Its own module because these are the operations reconcile sends after the create, and
each is checked against the spec's operations here, once.
"""

from __future__ import annotations

from collections.abc import Mapping

from hookd.connectors import extensions as ext
from hookd.connectors import refs as swagger
from hookd.connectors.model import DeleteStrategy, ListStrategy, Operation, UpdateStrategy
from hookd.connectors.reader import KeyPath, SpecReader
from hookd.connectors.settings import Settings
from hookd.diagnostics import did_you_mean


class Strategies(SpecReader):
    """The delete, list and update strategies of one webhook trigger."""

    def _delete(self, op: Operation, where: KeyPath, settings: Settings,
                operations: dict[str, Operation]) -> DeleteStrategy:
        spec = settings.delete
        if spec is not None:
            if spec.kind != "operation":
                return DeleteStrategy(spec.kind, source=ext.DELETE)
            target = operations.get(spec.operation or "")
            if target is None:
                self.diag("error", f"{ext.DELETE}: no operation '{spec.operation}'",
                          settings.where(ext.DELETE),
                          hint=did_you_mean(spec.operation or "", operations))
                return DeleteStrategy("location")
            if target.method != "DELETE":
                self.diag("warning", f"{ext.DELETE}: '{spec.operation}' is a {target.method}, "
                          "not a DELETE", settings.where(ext.DELETE))
            id_param = spec.id_param or self._new_path_param(op, target)
            if id_param and target.parameter(id_param) is None:
                self.diag("error", f"{ext.DELETE}: '{spec.operation}' has no parameter '{id_param}'",
                          settings.where(ext.DELETE),
                          hint=did_you_mean(id_param, [p.name for p in target.parameters]))
            return DeleteStrategy("operation", target.operation_id, id_param,
                                  spec.id_field or self._id_field(op, id_param), ext.DELETE)
        trigger_names = {p.name.lower() for p in op.parameters}
        deletes = [
            swagger.DeleteCandidate(o.operation_id, o.path, tuple(
                p.name for p in o.parameters
                if p.location in ("query", "header") and p.required and p.name.lower() not in trigger_names))
            for o in operations.values() if o.method == "DELETE"
        ]
        match = swagger.match_delete(op.path, deletes)
        if match is None:
            return DeleteStrategy("location")
        op_id, source, id_param = match
        return DeleteStrategy("operation", op_id, id_param, self._id_field(op, id_param), source)

    @staticmethod
    def _new_path_param(op: Operation, target: Operation) -> str | None:
        mine = {p.name.lower() for p in op.parameters}
        fresh = [p.name for p in target.parameters if p.location == "path" and p.name.lower() not in mine]
        return fresh[-1] if fresh else None

    @staticmethod
    def _id_field(op: Operation, id_param: str | None) -> str:
        """Where the upstream id sits in the create response: the field named like the
        DELETE's id parameter, else ``id``, else a field ending in ``id``."""
        names: list[str] = []
        for status in sorted(op.responses):
            if status.startswith("2"):
                props = op.responses[status].get("properties")
                if isinstance(props, Mapping):
                    names.extend(str(k) for k in props)
        lowered = {n.lower(): n for n in names}
        for wanted in (id_param or "", "id"):
            if wanted.lower() in lowered:
                return lowered[wanted.lower()]
        return next((n for n in names if n.lower().endswith("id")), "id")

    def _target(self, key: str, name: str | None, settings: Settings,
                operations: dict[str, Operation]) -> Operation | None:
        """The operation an extension (`key`) names; an error when there is none."""
        if name is None:
            return None
        target = operations.get(name)
        if target is None:
            self.diag("error", f"{key}: no operation '{name}'", settings.where(key),
                      hint=did_you_mean(name, operations))
        return target

    def _update(self, op: Operation, settings: Settings,
                operations: dict[str, Operation]) -> UpdateStrategy | None:
        spec = settings.update
        target = self._target(ext.UPDATE, spec.operation if spec else None, settings, operations)
        if spec is None or target is None:
            return None
        id_param = spec.id_param or self._new_path_param(op, target)
        if not id_param or target.parameter(id_param) is None:
            self.diag("error", f"{ext.UPDATE}: '{spec.operation}' has no parameter "
                      f"'{id_param or '?'}' for the hook's id", settings.where(ext.UPDATE),
                      hint="give id_param: the parameter that takes the upstream id")
            return None
        return UpdateStrategy(target.operation_id, id_param)

    def _list(self, where: KeyPath, settings: Settings,
              operations: dict[str, Operation]) -> ListStrategy | None:
        spec = settings.list
        target = self._target(ext.LIST, spec.operation if spec else None, settings, operations)
        if spec is None or target is None:
            return None
        if target.method != "GET":
            self.diag("warning", f"{ext.LIST}: '{spec.operation}' is a {target.method}, not a GET",
                      settings.where(ext.LIST))
        return ListStrategy(spec.operation, spec.url_field, spec.id_field, spec.items_field)
