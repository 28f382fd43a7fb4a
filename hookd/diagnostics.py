"""Problems found in a config directory or a connector file, with where they are.

Every loader and checker reports through `Diagnostic` so that `hookd check` can print
all problems at once, sorted, as ``file:line:col: error|warning: message (key path)``,
or as JSON. Loaders never raise on bad input: they append diagnostics and go on.

>>> d = Diagnostic(Path("flows/a.yaml"), 3, 5, "error", "unknown connector 'gihub'",
...                key="trigger.connector", hint="did you mean 'github'?")
>>> d.format()
"flows/a.yaml:3:5: error: unknown connector 'gihub' (trigger.connector); hint: did you mean 'github'?"
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Diagnostic:
    file: Path
    line: int  # 1-based; 0 when unknown
    col: int  # 1-based; 0 when unknown
    severity: Severity
    message: str
    key: str = ""  # dotted key path inside the file, e.g. "steps[1].http.url"
    hint: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def format(self, relative_to: Path | None = None) -> str:
        path = self.file
        if relative_to is not None:
            with contextlib.suppress(ValueError):  # outside the directory: keep as is
                path = self.file.relative_to(relative_to)
        where = f"{path}:{self.line}:{self.col}" if self.line else str(path)
        text = f"{where}: {self.severity}: {self.message}"
        if self.key:
            text += f" ({self.key})"
        if self.hint:
            text += f"; hint: {self.hint}"
        return text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["file"] = str(self.file)
        return data

    def promoted(self) -> Diagnostic:
        """The same diagnostic as an error (``--strict``)."""
        return Diagnostic(self.file, self.line, self.col, "error", self.message, self.key, self.hint)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A hint naming the closest candidate, or "" when nothing is close.

    >>> did_you_mean("gihub", ["github", "gitlab"])
    "did you mean 'github'?"
    """
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else ""


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.is_error for d in diagnostics)
