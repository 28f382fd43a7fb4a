"""Template analysis for `hookd check`: payload paths against schemas, and the regex
fast path for simple templates, which must agree with Jinja's own parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookd.templating import analysis as templatecheck
from hookd.templating import engine as templating
from hookd.templating.analysis import schema_path_problem
from tests.sample_connectors import PUSH_SCHEMA


@pytest.mark.parametrize(
    ("path", "result"),
    [
        (("ref",), None),
        (("repository", "full_name"), None),
        (("repository", "owner"), (1, "did you mean 'name'?")),
        (("commits", "0", "id"), None),
        (("commits", "id"), (1, "'commits' is a list: use [0] or a loop")),
        (("labels", "x"), None),
        (("extra", "a", "b"), None),
    ],
)
def test_schema_path_problem(path: tuple[str, ...], result: tuple[int, str] | None) -> None:
    got = schema_path_problem(PUSH_SCHEMA, path)
    assert got == result or (result is not None and got is not None and got[0] == result[0])


def test_schema_path_follows_allof_branches() -> None:
    schema = {"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {"properties": {"c": {}}}}}]}
    assert schema_path_problem(schema, ("b", "c")) is None
    assert schema_path_problem(schema, ("b", "d")) == (1, "keys here: c")


# The regex fast path for simple templates must agree with Jinja's parser.
_PIECES = ["{{", "}}", " ", "trigger", ".", "body", "commits", "[0]", "['x']", "env", "steps",
           "first", "|", "length", "default('')", "default(1)", "==", "!=", "'x'", "7", "a",
           "{%", "%}", "true", "if", "-", "(", ")", "text ", "upper", "bogus_filter"]


def _check_fast_path(source: str) -> None:
    fast = templatecheck.analyse_simple(source, templating.ENVIRONMENT.filters)
    if fast is not None:
        assert fast == templatecheck.analyse_jinja(source, source), source


@pytest.mark.parametrize("source", [
    "{{ trigger.body.pusher.name }} pushed {{ trigger.body.commits | length }} commit(s)",
    "{{ trigger.body.ref == 'refs/heads/main' }}",
    "{{ trigger.body.commits[0].id }}",
    "{{ steps.first.output | default('') }} {{ env.TOPIC }}",
    "https://x/{{ env.TOPIC }}?q={{ trigger.body.a.b }}",
    "{{ trigger.body }}",
    "{{ trigger.body['x'] }}",
    "{{ true }}",
])
def test_simple_template_fast_path_agrees_with_jinja(source: str) -> None:
    if "[" not in source and "true" not in source:
        assert templatecheck.analyse_simple(source, templating.ENVIRONMENT.filters) is not None  # really fast
    _check_fast_path(source)




@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_simple_template_fast_path_agrees_with_jinja_on_generated_text(pieces: list[str]) -> None:
    _check_fast_path("".join(pieces))


_EXPRS = st.builds(
    lambda root, segs, cmp, filters, pad: "{{" + pad + root + "".join(segs) + cmp + "".join(filters) + pad + "}}",
    st.sampled_from(["trigger", "env", "steps", "a", "true", "loop"]),
    st.lists(st.sampled_from([".body", ".commits", "[0]", "[12]", ".first", ".if", "['x']", ".name"]), max_size=5),
    st.sampled_from(["", " == 'x'", " != 3", "=='y'"]),
    st.lists(st.sampled_from([" | length", "|default('')", "| bogus", "|upper", " | default(0)"]), max_size=2),
    st.sampled_from(["", " ", "  "]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_EXPRS, st.sampled_from(["text ", "/", "{%", "}}", "{"])), min_size=1, max_size=4))
def test_fast_path_agrees_on_generated_expressions(parts: list[str]) -> None:
    _check_fast_path("".join(parts))
