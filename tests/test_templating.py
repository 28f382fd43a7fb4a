"""hookd.templating.engine: what a flow author sees when values and conditions render."""

from __future__ import annotations

from typing import Any

import pytest

from hookd.templating import engine as templating
from hookd.templating.engine import TemplateError, body_paths, compile_condition, compile_value

CTX: dict[str, Any] = {
    "trigger": {
        "body": {
            "ref": "refs/heads/main",
            "pusher": {"name": "ada"},
            "commits": [{"id": "c1"}, {"id": "c2"}],
            "repository": {"full_name": "octo/hello"},
            "count": 0,
        },
        "headers": {"x-github-event": "push"},
        "event": "push",
    },
    "steps": {"first": {"output": {"status": 201, "json": {"id": 7}}}},
    "flow": {"name": "f"},
    "env": {"TOPIC": "alerts"},
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain text", "plain text"),
        (42, 42),
        (None, None),
        ("{{ trigger.body.commits | length }}", 2),
        ("{{ trigger.body.commits }}", [{"id": "c1"}, {"id": "c2"}]),
        ("{{ trigger.body.ref == 'refs/heads/main' }}", True),
        ("{{ steps.first.output.json.id }}", 7),
        ("{{ trigger.body.pusher.name }} pushed {{ trigger.body.commits | length }} commit(s)",
         "ada pushed 2 commit(s)"),
        ("https://ntfy.example/{{ env.TOPIC }}", "https://ntfy.example/alerts"),
        # inside text: JSON for containers, lowercase booleans, empty for None
        ("c={{ trigger.body.commits[0] }}", 'c={"id":"c1"}'),
        ("ok={{ 1 == 1 }}", "ok=true"),
        ("x={{ none }}", "x="),
        ("{{ trigger.body.missing | default('none') }}", "none"),
        ("{{ trigger.body.missing.deeper | default('chained') }}", "chained"),
        ("{{ trigger.body.missing == 'x' }}", False),
        ("{{ trigger.body.missing is defined }}", False),
        ("{{ trigger.body | tojson }}".replace("trigger.body", "trigger.body.pusher"),
         '{"name": "ada"}'),
        ("{{ '{\"a\": [1]}' | fromjson }}", {"a": [1]}),
        ("{% for c in trigger.body.commits %}{{ c.id }} {% endfor %}", "c1 c2 "),
        ({"h": {"X-Ref": "{{ trigger.body.ref }}"}, "n": 1}, {"h": {"X-Ref": "refs/heads/main"}, "n": 1}),
        (["{{ trigger.event }}", "lit"], ["push", "lit"]),
        (("a", "{{ flow.name }}"), ("a", "f")),
    ],
)
def test_render(value: Any, expected: Any) -> None:
    assert compile_value(value).render(CTX) == expected


def test_constants_are_marked_constant() -> None:
    assert compile_value({"a": ["x", 1]}).is_constant
    assert not compile_value({"a": ["{{ x }}"]}).is_constant


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("{{ trigger.body.nope }}", ["nope"]),
        ("hi {{ trigger.body.pusher.nick }}", ["nick"]),
        ("{{ nosuch }}", ["nosuch"]),
        ("{{ trigger.body.missing.deeper }}", ["missing"]),
        ("{% for c in trigger.body.nothing %}{% endfor %}", ["nothing"]),
        ("{{ 1 / trigger.body.count }}", ["ZeroDivisionError"]),
    ],
)
def test_runtime_error_names_expression_and_missing_name(source: str, names: list[str]) -> None:
    with pytest.raises(TemplateError) as info:
        compile_value(source).render(CTX)
    message = str(info.value)
    assert source in message
    for name in names:
        assert name in message
    assert "Traceback" not in message


def test_sandbox_blocks_internals() -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        compile_value("{{ trigger.__class__.__mro__ }}").render(CTX)
    with pytest.raises(TemplateError):
        compile_value("{{ trigger.body.commits.append(1) }}").render(CTX)
    assert CTX["trigger"]["body"]["commits"] == [{"id": "c1"}, {"id": "c2"}]


@pytest.mark.parametrize(
    ("source", "line"),
    [("{{ a ", 1), ("{% if %}", 1), ("line one\n{{ a b }}", 2), ("{{ x | nosuchfilter }}", 1)],
)
def test_syntax_errors_at_compile_time(source: str, line: int) -> None:
    with pytest.raises(TemplateError) as info:
        compile_value({"headers": {"X": source}})
    assert info.value.key_path == "headers.X"
    assert info.value.expression == source
    assert info.value.line == line


def test_error_key_path_at_render() -> None:
    with pytest.raises(TemplateError) as info:
        compile_value({"a": [1, {"b": "{{ nope }}"}]}).render(CTX)
    assert info.value.key_path == "a.1.b"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("{{ trigger.body.ref == 'refs/heads/main' }}", True),
        ("trigger.body.ref == 'refs/heads/dev'", False),  # braces optional
        ("trigger.body.commits", True),
        ("{{ trigger.body.count }}", False),
        ("{{ 'false' }}", False),
        (" {{ 'FALSE' }} ", False),
        ("{{ '0' }}", False),
        ("{{ '' }}", False),
        ("{{ 'no' }}", True),
        ("trigger.body.missing == 'x'", False),
    ],
)
def test_conditions(condition: str, expected: bool) -> None:
    assert templating.truthy(compile_condition(condition).render(CTX)) is expected


def test_condition_syntax_error_shows_what_was_written() -> None:
    with pytest.raises(TemplateError) as info:
        compile_condition("trigger.body.ref ==")
    assert info.value.expression == "trigger.body.ref =="


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ("{{ trigger.body.commits | length }}", [("commits",)]),
        ("{{ trigger.body['repository'].name }}", [("repository", "name")]),
        ("{{ trigger.body.commits[0].id }}", [("commits", "0", "id")]),
        ("{{ trigger.body.a[trigger.body.i].x }}", [("a",), ("i",)]),
        ("{{ trigger.headers.x }} {{ steps.a.output }} {{ trigger.body }}", []),
        ("{% if trigger.body.ref %}{{ trigger.body.pusher.name }}{% endif %}",
         [("ref",), ("pusher", "name")]),
        ("{{ trigger.body.x }}{{ trigger.body.x }}", [("x",)]),
        ("no template", []),
        ("{{ broken", []),
    ],
)
def test_body_paths(text: str, paths: list[tuple[str, ...]]) -> None:
    assert body_paths(text) == paths


def test_body_paths_of_braceless_condition() -> None:
    assert body_paths("trigger.body.ref == 'x'", condition=True) == [("ref",)]
    assert body_paths("trigger.body.ref == 'x'") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [("{{ a }}", True), ("{% if %}", True), ("{# c #}", True), ("a { b }", False), (3, False)],
)
def test_is_template(text: Any, expected: bool) -> None:
    assert templating.is_template(text) is expected


def test_render_value() -> None:
    assert templating.render_value({"x": "{{ flow.name }}"}, CTX) == {"x": "f"}
