"""What an action kind declares about itself, in one place (see `hookd.config.actions`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Input = TypeVar("Input")


@dataclass(frozen=True)
class ActionSpec(Generic[Input]):
    """One action kind: its YAML key, its input type, its schema fragment and its builder.

    `kind` is the step key (``http:``) and the executor's name in `hookd.runs.actions`;
    `input` is the frozen dataclass the loader builds (`Step.action`); `schema` is the
    kind's ``$defs`` entry in ``flow.schema.json`` (a test checks the file against it);
    `build` turns a schema-valid YAML value (secret references already `SecretRef`s)
    into an `input`.
    """

    kind: str
    input: type[Input]
    schema: Mapping[str, Any]
    build: Callable[[Any], Input]
