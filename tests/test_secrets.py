"""Secret references: parsing, resolution, and errors that never show a value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hookd.config.model import SecretRef
from hookd.config.secrets import SecretError, parse_ref, ref_problem, resolve, resolve_value


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("${env:GITHUB_TOKEN}", SecretRef("env", "GITHUB_TOKEN")),
        ("${file:/etc/hookd/token}", SecretRef("file", "/etc/hookd/token")),
        ("${file:secrets/token}", SecretRef("file", "secrets/token")),
        ("${credential:github-token}", SecretRef("credential", "github-token")),
        ("plain", None),
        ("Bearer ${env:X}", None),
        ("${vault:x}", None),
        ("${env:BAD-NAME}", None),
        ("${credential:../etc/shadow}", None),
        (42, None),
    ],
)
def test_parse_ref(text: object, ref: SecretRef | None) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("${env:X}", ""),
        ("no reference", ""),
        ("Bearer ${env:X}", "must be the whole value"),
        ("${vault:x}", "unknown secret kind 'vault'"),
        ("${env:BAD-NAME}", "not an environment variable name"),
    ],
)
def test_ref_problem_catches_near_misses(text: str, words: str) -> None:
    problem = ref_problem(text)
    assert (words in problem) if words else problem == ""


def test_str_of_a_reference_is_the_reference_not_the_value() -> None:
    ref = SecretRef("env", "TOKEN")
    assert str(ref) == "${env:TOKEN}"
    assert resolve(ref, env={"TOKEN": "s3cret"}) == "s3cret"


def test_env_missing_names_the_variable() -> None:
    with pytest.raises(SecretError) as info:
        resolve(SecretRef("env", "GITHUB_TOKEN"), env={})
    assert str(info.value) == "${env:GITHUB_TOKEN}: environment variable GITHUB_TOKEN is not set"


def test_file_secret_drops_one_trailing_newline_and_is_relative_to_base(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc\n")
    assert resolve(SecretRef("file", "token"), base_dir=tmp_path) == "abc"
    assert resolve(SecretRef("file", str(tmp_path / "token"))) == "abc"
    assert resolve_value("literal") == "literal"


def test_credential_reads_from_the_systemd_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "github-token").write_text("ghp_x")
    ref = SecretRef("credential", "github-token")
    assert resolve(ref, env={"CREDENTIALS_DIRECTORY": str(tmp_path)}) == "ghp_x"
    assert resolve(ref, env={}, credentials_dir=tmp_path) == "ghp_x"
    with pytest.raises(SecretError, match="CREDENTIALS_DIRECTORY is not set"):
        resolve(ref, env={})
    with pytest.raises(SecretError, match="does not exist"):
        resolve(SecretRef("credential", "other"), env={"CREDENTIALS_DIRECTORY": str(tmp_path)})


def test_unusable_secrets_are_errors_that_never_contain_the_value(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        resolve(SecretRef("file", str(tmp_path / "empty")))
    with pytest.raises(SecretError, match="is a directory"):
        resolve(SecretRef("file", str(tmp_path)))
    secret = tmp_path / "locked"
    secret.write_text("TOPSECRETVALUE")
    secret.chmod(0)
    try:
        if os.access(secret, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(SecretError) as info:
            resolve(SecretRef("file", str(secret)))
        assert "not readable" in str(info.value) and "TOPSECRETVALUE" not in str(info.value)
    finally:
        secret.chmod(0o600)
