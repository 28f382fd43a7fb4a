"""YAML parsing with positions: diagnostics must point at the right line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from hookd.config.yamlpos import key_path, load, parse

F = Path("flow.yaml")

FLOW = """\
name: demo
trigger:
  connector: github
steps:
  - id: first
    log: hi
  - id: second
    http:
      url: "https://example.net/{{ x }}"
      headers: {A: b}
"""


def test_every_key_path_has_the_line_and_column_of_its_value() -> None:
    doc, problems = parse(FLOW, F)
    assert problems == [] and doc is not None
    assert doc.pos(("steps", 1, "http", "url")) == (9, 12)
    assert doc.key_pos(("steps", 1, "http", "url")) == (9, 7)
    assert doc.pos(("steps", 1)) == (7, 5)
    assert doc.pos(("steps", 1, "http", "headers", "A")) == (10, 20)
    assert doc.pos(("trigger", "connector")) == (3, 14)


def test_a_missing_key_falls_back_to_the_nearest_written_ancestor() -> None:
    doc, _ = parse(FLOW, F)
    assert doc is not None
    assert doc.pos(("steps", 0, "log", "nothing", "here")) == doc.pos(("steps", 0, "log")) == (6, 10)
    d = doc.diagnostic(("steps", 1, "http", "method"), "missing")
    assert (d.line, d.col, d.key) == (9, 7, "steps[1].http.method")  # where the mapping starts
    d = doc.diagnostic(("steps", 1, "http"), "missing", at_key=True)
    assert (d.line, d.col) == (8, 5)  # the key that holds the incomplete mapping


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("steps", 1, "http", "url"), "steps[1].http.url"),
        ((0, "trigger"), "[0].trigger"),
        ((), ""),
        (("a",), "a"),
    ],
)
def test_key_path_text(path: tuple[str | int, ...], text: str) -> None:
    assert key_path(path) == text


def test_only_true_and_false_are_booleans_and_dates_stay_text() -> None:
    doc, _ = parse("events: [push, on, yes, no, off]\nflag: true\nwhen: 2024-05-01\n404: x\n", F)
    assert doc is not None
    assert doc.data == {"events": ["push", "on", "yes", "no", "off"], "flag": True,
                        "when": "2024-05-01", "404": "x"}


def test_a_key_written_twice_is_an_error_at_the_second_one() -> None:
    doc, problems = parse("a: 1\nb:\n  c: 1\n  c: 2\n", F)
    assert doc is not None and doc.data == {"a": 1, "b": {"c": 2}}
    [p] = problems
    assert (p.line, p.col, p.severity, p.key) == (4, 3, "error", "b.c")
    assert "duplicate key 'c'" in p.message and "line 3" in p.hint


def test_merge_keys_fill_missing_keys_and_keep_the_written_positions() -> None:
    doc, problems = parse("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n", F)
    assert problems == [] and doc is not None
    assert doc.data["c"] == {"x": 1, "y": 3}
    assert doc.pos(("c", "y")) == (4, 6)


@pytest.mark.parametrize(
    ("text", "line", "col", "words"),
    [
        ("a: 1\nb: 'unclosed\nc: 3\n", 2, 4, "quoted scalar"),  # points where the quote opens
        ("a:\n  b: 1\n   c: 2\n", 3, 5, "mapping values are not allowed"),
        ("a: [1, 2\nb: 3\n", 2, 2, "expected ','"),
        ("a: 1\n---\nb: 2\n", 2, 1, "single document"),
        ("a: &x [*x]\n", 1, 4, "recursive alias"),
    ],
)
def test_syntax_errors_carry_line_and_column(text: str, line: int, col: int, words: str) -> None:
    doc, [problem] = parse(text, F)
    assert doc is None
    assert (problem.line, problem.col, problem.severity) == (line, col, "error")
    assert words in problem.message + problem.hint


def test_empty_file_is_a_document_without_data() -> None:
    doc, problems = parse("# only a comment\n", F)
    assert doc is not None and doc.data is None and problems == []


def test_load_reads_utf8_with_bom_and_reports_other_bytes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_bytes(b"\xef\xbb\xbfname: caf\xc3\xa9\n")
    doc, problems = load(good)
    assert doc is not None and doc.data == {"name": "café"} and problems == []
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: 1\nname: caf\xe9\n")
    doc, [problem] = load(bad)
    assert doc is None and problem.line == 2 and "not UTF-8" in problem.message
    with pytest.raises(OSError):
        load(tmp_path / "missing.yaml")


def test_unclosed_quote_and_bracket_positions_are_as_docs_check_md_says() -> None:
    """Issue 16 item 18: the docs promised "where it opens" for brackets too."""
    _, [quote] = parse("name: x\nsteps:\n  - log: 'abc\n  - log: y\n", F)
    assert (quote.line, quote.col) == (3, 10)  # the quote
    _, [bracket] = parse("name: x\ntrigger: [abc\nsteps: []\n", F)
    assert (bracket.line, bracket.col) == (3, 6) and "at line 2" in bracket.hint
    docs = " ".join((Path(__file__).resolve().parent.parent / "docs" / "check.md").read_text().split())
    assert ("for an unclosed quote: where the quote opens; for an unclosed bracket: where the "
            "parser gave up, with a hint naming the line where the bracket opens") in docs
