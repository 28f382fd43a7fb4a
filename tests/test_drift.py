"""Drift of a hook's settings: the listed hook against the body hookd would create it with."""

from __future__ import annotations

from typing import Any

import pytest

from hookd.subscriptions.drift import changes

WANTED = {"name": "web", "active": True, "events": ["push", "release"],
          "config": {"url": "https://h/hooks/s/tok", "content_type": "json", "secret": "s3cr3t",
                     "insecure_ssl": "0"}}
LISTED = {"id": 1, "name": "web", "active": True, "events": ["release", "push"],
          "config": {"url": "https://h/hooks/s/tok", "content_type": "json", "secret": "********",
                     "insecure_ssl": 0}, "url": "https://api/hooks/1"}


@pytest.mark.parametrize(("edit", "expected"), [
    ({}, []),  # event order, a masked secret, "0" vs 0: no drift
    ({"active": False}, ["active: false upstream, hookd wants true"]),
    ({"events": ["push"]}, ['events: ["push"] upstream, hookd wants ["push", "release"]']),
    ({"config": {**LISTED["config"], "content_type": "form"}},
     ['config.content_type: "form" upstream, hookd wants "json"']),
    ({"name": None}, ['name: null upstream, hookd wants "web"']),
])
def test_changes(edit: dict[str, Any], expected: list[str]) -> None:
    assert changes(WANTED, {**LISTED, **edit}, skip=("https://h/hooks/s/tok", "s3cr3t")) == expected


def test_what_the_list_does_not_return_is_not_compared() -> None:
    assert changes(WANTED, {"id": 1, "config": {"url": "x"}}, skip=("https://h/hooks/s/tok",)) == []
    assert changes(WANTED, "not an object") == []
