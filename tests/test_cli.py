"""The `hookd` command line as a whole: what every invocation pays before a command runs.

Every invocation builds the full parser, so every command module is imported; heavy
dependencies belong inside each command's ``func`` (see `hookd.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hookd.cli.commands._common import config_dir
from hookd.cli.main import build_parser, main

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "config"
HEAVY = ("asyncio", "sqlite3", "httpx", "starlette", "uvicorn", "jinja2", "jsonschema",
         "yaml", "uuid", "hookd.config.model", "hookd.connectors.model", "hookd.config.loader", "hookd.store")


def imported_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    script = f"import sys\n{code}\nimport json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_help_imports_no_heavy_dependency() -> None:
    loaded = imported_after("import hookd.cli.main; hookd.cli.main.build_parser().format_help()")
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_check_imports_no_io_layer() -> None:
    loaded = imported_after(
        "import contextlib, io, hookd.cli.main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        f"    assert hookd.cli.main.main(['check', {str(SHIPPED_CONFIG)!r}]) == 0")
    assert sorted(m for m in ("asyncio", "sqlite3", "httpx", "starlette", "uvicorn")
                  if m in loaded) == []


# ------------------------------------------------------------- the shared argument forms

CONFIG_COMMANDS = ("run", "check", "plan", "apply", "connectors", "subscriptions", "status",
                   "teardown", "runs")


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_config_dir_is_dir_or_config_option(command: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOKD_CONFIG", "/from/env")
    assert config_dir(parse(command, str(tmp_path))) == tmp_path
    assert config_dir(parse(command, "--config", str(tmp_path))) == tmp_path
    assert config_dir(parse(command, "-c", str(tmp_path))) == tmp_path
    assert config_dir(parse(command)) == Path("/from/env")
    monkeypatch.delenv("HOOKD_CONFIG")
    assert config_dir(parse(command)) == Path(".")


@pytest.mark.parametrize("argv", [("send", "flow", "p.json"), ("replay", "r1"), ("runs",),
                                  ("runs", "show", "r1")])
def test_commands_with_other_positionals_take_config_option(argv: tuple[str, ...]) -> None:
    assert config_dir(parse(*argv, "--config", "/etc/hookd")) == Path("/etc/hookd")


@pytest.mark.parametrize("option", ["--state-dir", "--state"])
@pytest.mark.parametrize("command", ["run", "plan", "apply", "subscriptions", "teardown",
                                     "runs", "replay"])
def test_state_dir_option_everywhere(command: str, option: str) -> None:
    extra = ("r1",) if command == "replay" else ()
    assert parse(command, *extra, option, "/var/lib/x").state_dir == Path("/var/lib/x")


def test_runs_show_keeps_the_location_given_before_it() -> None:
    args = parse("runs", "--config", "/etc/hookd", "--state-dir", "/s", "show", "r1")
    assert (config_dir(args), args.state_dir, args.format) == (Path("/etc/hookd"), Path("/s"),
                                                               "text")


def test_dir_and_config_naming_different_directories_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(tmp_path), "--config", str(tmp_path / "other")]) == 2
    assert "name different directories" in capsys.readouterr().err
    assert main(["check", str(SHIPPED_CONFIG), "--config", str(SHIPPED_CONFIG)]) == 0


def test_status_dir_and_admin_exclude_each_other() -> None:
    with pytest.raises(SystemExit) as exc:
        parse("status", "/etc/hookd", "--admin", "http://127.0.0.1:1")
    assert exc.value.code == 2


def test_invalid_config_is_reported_the_same_by_every_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "hookd.yaml").write_text("public_url: 42\n")
    for argv, code in ((["plan"], 1), (["subscriptions"], 1), (["send", "f", "-"], 2)):
        assert main([*argv, "--config", str(tmp_path)]) == code
        err = capsys.readouterr().err
        assert err.startswith("hookd.yaml:1:"), err  # relative to DIR, as `hookd check` prints
        assert f"hookd {argv[0]}: {tmp_path}: invalid config;" in err


@pytest.mark.parametrize("argv", [(c,) for c in CONFIG_COMMANDS] + [
    ("send", "f", "p.json"), ("replay", "r1"), ("runs", "show", "r1"),
    ("subscriptions", "forget", "x-1")])
def test_a_missing_config_dir_is_exit_2_for_every_command(
        argv: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main([*argv, "--config", str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and err.startswith(f"hookd {argv[0]}"), err


def test_runs_and_subscriptions_take_dir_or_a_subcommand() -> None:
    assert (parse("runs", "/etc/hookd").directory, parse("runs", "/etc/hookd").func.__name__) \
        == ("/etc/hookd", "run_list")
    shown = parse("runs", "show", "r1")
    assert (shown.run, shown.func.__name__, shown.directory) == ("r1", "run_show", None)
    forget = parse("subscriptions", "forget", "a-1", "--force", "-c", "/etc/hookd")
    assert (forget.id, forget.force, forget.func.__name__) == ("a-1", True, "run_forget")
    assert config_dir(forget) == Path("/etc/hookd")
    after = parse("subscriptions", "/etc/hookd", "--format", "json")  # options after DIR
    assert (after.directory, after.format) == ("/etc/hookd", "json")
    with pytest.raises(SystemExit):
        parse("runs", "/etc/hookd", "extra")


def test_status_reads_only_listen_admin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hookd.cli.commands.status import admin_url

    (tmp_path / "hookd.yaml").write_text(
        "public_url: 42\nlisten: {admin: {host: 0.0.0.0, port: 9}}\nbogus: [1\n")
    assert main(["status", str(tmp_path)]) == 2  # hookd.yaml does not parse at all
    assert "cannot find the admin listener" in capsys.readouterr().err
    (tmp_path / "hookd.yaml").write_text("public_url: 42\nlisten: {admin: {host: 0.0.0.0, port: 9}}\n")
    assert admin_url(parse("status", str(tmp_path))) == "http://127.0.0.1:9"  # invalid, but readable
    (tmp_path / "hookd.yaml").unlink()
    assert admin_url(parse("status", str(tmp_path))) == "http://127.0.0.1:8081"  # the default
