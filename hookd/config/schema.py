"""Validate YAML documents against hookd's JSON Schemas, with positions and plain words.

The schemas in ``hookd/config/schemas/`` serve two readers: editors (through a
``# yaml-language-server: $schema=…`` line) and `hookd check`. jsonschema's own messages
("Additional properties are not allowed ('tiemout' was unexpected)") name neither the
line nor the fix; here every error becomes a `Diagnostic` at the line:col of the value (or
of the key, for an unknown key), with the key path and a hint ("did you mean 'timeout'?").

Validators are compiled once per process, and most items are valid: `hookd check` on a
thousand flows first asks a fastjsonschema validator (generated Python, much faster:
docs/adr/0007) and only runs jsonschema, which reports every error with its path, on the items that fail.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

import fastjsonschema

from hookd.config.yamlpos import Document, KeyPath
from hookd.diagnostics import Diagnostic, did_you_mean

if TYPE_CHECKING:  # jsonschema takes 0.1 s to import: only needed when a file is invalid
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

# File kind → (schema file, the $defs entry one item of the file is checked against).
KINDS = {
    "hookd": ("hookd.schema.json", None),
    "connection": ("connection.schema.json", "connection"),
    "flow": ("flow.schema.json", "flow"),
}


@functools.cache
def schema(kind: str) -> dict[str, Any]:
    """The parsed JSON Schema of a file kind (as shipped in the package)."""
    name, _ = KINDS[kind]
    text = resources.files("hookd.config").joinpath("schemas", name).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@functools.cache
def validator(kind: str) -> Draft202012Validator:
    """A compiled validator for ONE item of the kind (a flow, not a list of flows).

    Files may hold one item or a list; the loader splits lists and validates each item
    so that errors are about that item, not about "not valid under any of oneOf".
    """
    from jsonschema import Draft202012Validator

    full = schema(kind)
    _, item = KINDS[kind]
    target = full if item is None else {"$ref": f"#/$defs/{item}", "$defs": full["$defs"]}
    return Draft202012Validator(target)


@functools.cache
def fast_validator(kind: str) -> Any:
    """A fastjsonschema validator for one item: a yes/no answer, no error list.

    fastjsonschema knows drafts 4 to 7; our schemas use nothing of 2020-12 that draft 7
    lacks (``$defs`` is only the place the JSON pointers point into).
    """
    full = copy.deepcopy(schema(kind))
    _, item = KINDS[kind]
    target = {k: v for k, v in full.items() if k != "$schema"}
    if item is not None:
        target = {"$ref": f"#/$defs/{item}", "$defs": full["$defs"]}
    # "Exactly one of these keys" as oneOf makes the generated code raise and catch an
    # exception per branch that does not match; `_one_of_keys_ok` counts instead.
    for sub in target.get("$defs", {}).values():
        if isinstance(sub, dict) and "x-hookd-one-of-keys" in sub:
            sub.pop("oneOf", None)
    target["$schema"] = "http://json-schema.org/draft-07/schema#"
    namespace: dict[str, Any] = {}
    # Generated from our own packaged schema, in this process, never read from disk: an
    # on-disk bytecode cache meant exec-ing bytes that whoever can write ~/.cache could
    # change, to save a few per cent of a start-up (docs/adr/0006-no-validator-cache.md).
    code = compile(fastjsonschema.compile_to_code(target), f"<hookd {kind} schema>", "exec")
    exec(code, namespace)  # noqa: S102 - code generated from our own schema, just now
    return namespace["validate"]


def _one_of_keys_ok(kind: str, data: Any) -> bool:
    """The step rule the fast validator leaves out: exactly one action key per step."""
    if kind != "flow" or not isinstance(data, Mapping):
        return True
    keys = schema("flow")["$defs"]["step"]["x-hookd-one-of-keys"]
    steps = data.get("steps")
    if not isinstance(steps, list):
        return True
    return all(not isinstance(step, Mapping) or sum(k in step for k in keys) == 1 for step in steps)


def validate(kind: str, data: Any, doc: Document, prefix: KeyPath = ()) -> list[Diagnostic]:
    """Diagnostics for `data` (found at `prefix` in `doc`) against the kind's schema."""
    try:
        fast_validator(kind)(data)
    except fastjsonschema.JsonSchemaException:
        pass  # invalid: let jsonschema say exactly why and where
    else:
        if _one_of_keys_ok(kind, data):
            return []
    out: list[Diagnostic] = []
    for error in validator(kind).iter_errors(data):
        out.extend(explain(error, doc, prefix))
    return out


def explain(error: ValidationError, doc: Document, prefix: KeyPath = ()) -> Iterator[Diagnostic]:
    """Turn one jsonschema error into diagnostics a person can act on."""
    path: KeyPath = (*prefix, *error.absolute_path)
    kind = error.validator
    sch: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    inst = error.instance
    if kind == "additionalProperties" and isinstance(inst, Mapping):
        props = sch.get("properties") or {}
        for key in inst:
            if key not in props:
                yield doc.diagnostic((*path, key), f"unknown key '{key}'", at_key=True,
                                     hint=did_you_mean(key, props) or _known(props))
        return
    if kind == "required":
        match = re.match(r"'(.*)' is a required property", error.message)
        name = match.group(1) if match else str(error.validator_value)
        yield doc.diagnostic(path, f"missing required key '{name}'", at_key=True)
        return
    if kind == "oneOf" and "x-hookd-one-of-keys" in sch and isinstance(inst, Mapping):
        keys = list(sch["x-hookd-one-of-keys"])
        present = [k for k in keys if k in inst]
        if present:
            message = f"a step has exactly one action, this one has {' and '.join(present)}"
        else:
            message = "a step needs an action: one of " + ", ".join(keys)
        yield doc.diagnostic(path, message, at_key=True)
        return
    if kind in ("anyOf", "oneOf") and error.context:
        yield from _explain_branches(error, doc, prefix)
        return
    yield doc.diagnostic(path, _message(error, sch, inst), hint=_hint(error, sch, inst))


def _explain_branches(error: ValidationError, doc: Document, prefix: KeyPath) -> Iterator[Diagnostic]:
    """For "matches none of": explain the branch whose type fits, else list the types."""
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        by_branch.setdefault(int(sub.schema_path[0]), []).append(sub)
    fitting = [
        errs for errs in by_branch.values()
        if not any(e.validator == "type" and not e.relative_path for e in errs)
    ]
    if len(fitting) == 1:
        for sub in fitting[0]:
            yield from explain(sub, doc, prefix)
        return
    branches = error.validator_value if isinstance(error.validator_value, list) else []
    wanted = [_type_words(b) for b in branches if isinstance(b, Mapping)]
    path: KeyPath = (*prefix, *error.absolute_path)
    hint = ""
    if path and path[-1] == "run" and isinstance(error.instance, str):
        hint = "run takes an argv list, never a shell string: [\"/usr/bin/prog\", \"arg\"]"
    yield doc.diagnostic(path, f"should be {' or '.join(w for w in wanted if w) or 'something else'}, "
                               f"not {describe(error.instance)}", hint=hint)


def _type_words(schema: Mapping[str, Any]) -> str:
    t = schema.get("type")
    if schema.get("$ref", "").endswith("/status"):
        return "a status code"
    names = {"string": "a string", "array": "a list", "object": "a mapping", "integer": "an integer",
             "number": "a number", "boolean": "true or false", "null": "null"}
    if isinstance(t, list):
        return " or ".join(names.get(str(x), str(x)) for x in t)
    return names.get(t, "") if isinstance(t, str) else ""


def _message(error: ValidationError, sch: Mapping[str, Any], inst: Any) -> str:
    kind = error.validator
    if kind == "type":
        return f"should be {_type_words(sch) or error.validator_value}, not {describe(inst)}"
    if kind == "enum":
        return f"'{inst}' is not one of: {', '.join(map(str, error.validator_value))}"
    if kind == "pattern":
        title = sch.get("title")
        if title in ("duration", "size"):
            return f"'{inst}' is not a {title}"
        if title == "store":  # not echoed: a URL may hold a password
            return "should be sqlite, a postgresql:// URL or a secret reference"
        return f"'{inst}' does not have the expected form"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {"minimum": "at least", "maximum": "at most",
                "exclusiveMinimum": "more than", "exclusiveMaximum": "less than"}[kind]
        return f"{inst} should be {word} {error.validator_value}"
    if kind == "minItems":
        return "should not be an empty list"
    if kind == "minLength":
        return "should not be empty"
    if kind == "minProperties":
        return "should not be an empty mapping"
    if kind == "uniqueItems":
        return "has duplicate items"
    return str(error.message)


def _hint(error: ValidationError, sch: Mapping[str, Any], inst: Any) -> str:
    kind = error.validator
    if kind == "enum" and isinstance(inst, str):
        return did_you_mean(inst, [str(v) for v in error.validator_value])
    if kind == "pattern":
        title = sch.get("title")
        if title == "duration":
            return "a number of seconds, or e.g. 30s, 5m, 1h30m, 2d"
        if title == "size":
            return "a number of bytes, or e.g. 512KiB, 25MiB, 1GB"
        if title == "store":
            return "e.g. store: postgresql://hookd@db.internal/hookd, or ${credential:hookd-db-url}"
        if "[A-Za-z0-9][A-Za-z0-9._-]*" in str(error.validator_value):
            return "use letters, digits, '.', '_' and '-', starting with a letter or digit"
        if "A-Za-z_" in str(error.validator_value):
            return "use letters, digits, '_' and '-', starting with a letter or '_'"
        if "https?" in str(error.validator_value):
            return "an http:// or https:// URL"
    return ""


def describe(value: Any) -> str:
    """A YAML value as a message names it: ``the string 'x'``, ``a mapping``, … (also
    used by `hookd.config.check` for connector parameter types)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string '{value[:40]}'"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, Mapping):
        return "a mapping"
    return "a list" if isinstance(value, list | tuple) else type(value).__name__


def _known(names: Any) -> str:
    listed = sorted(names)
    return f"known keys: {', '.join(listed)}" if listed and len(listed) <= 12 else ""
