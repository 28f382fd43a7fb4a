"""Write small config directories for tests: ``write_config(tmp_path, flows={...})``."""

from __future__ import annotations

import textwrap
from pathlib import Path

SETTINGS = "public_url: https://hooks.example.net\n"
GITHUB_CONNECTION = "connector: github\nparameters:\n  token: ${env:GITHUB_TOKEN}\n"


def write_config(
    root: Path,
    *,
    flows: dict[str, str] | None = None,
    connections: dict[str, str] | None = None,
    settings: str | None = SETTINGS,
) -> Path:
    """Files are dedented; ``connections`` defaults to one `github` connection."""
    root.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        (root / "hookd.yaml").write_text(textwrap.dedent(settings))
    if connections is None:
        connections = {"github": GITHUB_CONNECTION}
    for sub, files in (("connections", connections), ("flows", flows or {})):
        (root / sub).mkdir(exist_ok=True)
        for name, text in files.items():
            (root / sub / f"{name}.yaml").write_text(textwrap.dedent(text))
    return root


def admin_headers(state: Path, *, mutation: bool = False) -> dict[str, str]:
    """What a client of the admin API sends: the daemon's token (``state/admin.token``),
    and for a POST the JSON content type the admin listener requires."""
    token = (Path(state) / "admin.token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    if mutation:
        headers["Content-Type"] = "application/json"
    return headers
