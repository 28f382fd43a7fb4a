"""What apiProperties.json adds to a connector: the ways to connect and the policies.

One `ParameterSet` per ``connectionParameterSets`` entry (else ``connectionParameters``),
its credentials from ``securityDefinitions`` (`hookd.connectors.auth`); the policy
templates compiled (`hookd.connectors.policies`) and checked against the operations and
the connection parameters. Its own module because it reads the second document, and a
problem here names apiProperties.json, not the spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hookd.connectors import auth, policies
from hookd.connectors import refs as swagger
from hookd.connectors.auth import Credential
from hookd.connectors.model import Auth, ConnectionParameter, Operation, ParameterSet
from hookd.connectors.policies import Policy
from hookd.connectors.reader import KeyPath, SpecReader, as_dict, as_list


class ApiProperties(SpecReader):
    """The parameter sets and the policies of one connector."""

    def _parameter_sets(self, spec: dict[str, Any]) -> tuple[ParameterSet, ...]:
        """One `ParameterSet` per apiProperties.json way to connect (see
        `hookd.connectors.auth`); derived from ``securityDefinitions`` without one."""
        definitions = spec.get("securityDefinitions")
        for name, definition in as_dict(definitions).items():
            kind = definition.get("type") if isinstance(definition, dict) else None
            if kind not in ("basic", "apiKey", "oauth2"):
                self.diag("warning", f"security definition type '{kind}' is not supported; "
                          "requests will not authenticate with it",
                          ("securityDefinitions", name, "type"))
        out: list[ParameterSet] = []
        for set_name, title, raw in self._raw_parameter_sets():
            params = self._connection_parameters(raw)
            found = auth.credentials(definitions, {n: p.type for n, p in params.items()}, set_name)
            for problem in found.problems:
                self.diag("warning", problem, ("securityDefinitions",))
            if not params:
                params = {n: ConnectionParameter(n, kind, True, text)
                          for n, (kind, text) in auth.derived_parameters(found.credentials).items()}
            out.append(ParameterSet(set_name, params, found.credentials, title))
        return tuple(out)

    def _raw_parameter_sets(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, title, raw parameters) of each connectionParameterSets entry (multi-auth
        wins, as in Power Platform), else of connectionParameters; one empty set without
        apiProperties.json."""
        inner = self._properties()
        params = inner.get("connectionParameters")
        sets = as_dict(inner.get("connectionParameterSets")).get("values")
        if isinstance(params, dict) and not (isinstance(sets, list) and sets):
            self.set_paths[""] = ("properties", "connectionParameters")
            return [("", "", params)]
        out: list[tuple[str, str, dict[str, Any]]] = []
        for index, entry in enumerate(as_list(sets)):
            if isinstance(entry, dict) and isinstance(entry.get("parameters"), dict):
                ui = as_dict(entry.get("uiDefinition"))
                name = str(entry.get("name") or index)
                self.set_paths[name] = ("properties", "connectionParameterSets", "values", index,
                                        "parameters")
                out.append((name, str(ui.get("displayName") or ""), entry["parameters"]))
        return out or [("", "", {})]

    def _properties(self) -> dict[str, Any]:
        props = self.properties.value if self.properties is not None else None
        return as_dict(props.get("properties")) if isinstance(props, dict) else {}

    def _connection_parameters(self, params: dict[str, Any]) -> dict[str, ConnectionParameter]:
        out: dict[str, ConnectionParameter] = {}
        for name, raw in params.items():
            if not isinstance(raw, dict):
                continue
            ui = as_dict(raw.get("uiDefinition"))
            constraints = as_dict(ui.get("constraints"))
            kind = str(raw.get("type") or "string")
            if kind.lower() == "oauthsetting":
                kind = "oauthSetting"
            out[name] = ConnectionParameter(
                name=name,
                type=kind,
                required=swagger.truthy(constraints.get("required")),
                description=str(ui.get("description") or ui.get("displayName") or ""),
            )
        return out

    # ------------------------------------------------------------------ policies

    def _policies(self, sets: tuple[ParameterSet, ...],
                  operations: Mapping[str, Operation]) -> tuple[Policy, ...]:
        """apiProperties.json policyTemplateInstances, compiled; what hookd does not apply
        and connection parameters nothing uses are warnings."""
        where: KeyPath = ("properties", "policyTemplateInstances")
        compiled, problems = policies.compile_policies(
            self._properties().get("policyTemplateInstances"))
        for sub, message, hint in problems:
            self.diag("warning", message, (*where, *sub), hint, doc=self.properties)
        for p in compiled:
            unknown = [o for o in p.operations if o.lower() not in
                       {k.lower() for k in operations}]
            if unknown:
                self.diag("warning", f"policy {p.template} names unknown operation(s) "
                          f"{', '.join(unknown)}", (*where, p.index), doc=self.properties)
            if p.applied:
                continue
            changes = ", ".join(p.operations) if p.operations else "every operation"
            self.diag("warning", f"policy template '{p.template}'"
                      f"{' (' + repr(p.title) + ')' if p.title else ''} is not applied by "
                      f"hookd: {p.reason}; it changes {changes}", (*where, p.index),
                      doc=self.properties)
        used: set[str] = set()
        for p in compiled:
            if p.applied:
                used.update(n.lower() for n in p.connection_parameters())
        for s in sets:
            mine = used | {c.parameter.lower() for c in s.credentials}
            if any(c.kind == "basic" for c in s.credentials):
                mine |= {"username", "password"}
            for name, param in s.parameters.items():
                if name.lower() not in mine and param.type != "oauthSetting" \
                        and not name.startswith("token:"):
                    self.diag("warning", f"connection parameter '{name}'"
                              f"{' of set ' + repr(s.name) if s.name else ''} is used by no "
                              "credential or policy hookd applies: its value is never sent",
                              (*self.set_paths.get(s.name, ("properties",)), name),
                              doc=self.properties)
        return compiled


def main_auth(credentials: tuple[Credential, ...]) -> Auth:
    """The `Auth` summary of a set's first credential."""
    if not credentials:
        return Auth("none")
    c = credentials[0]
    return Auth(c.kind, c.name, c.location, c.parameter)
