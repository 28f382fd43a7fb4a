"""The ``run`` action: execute a local command, the way deploy hooks are usually written.

Safety is structural: the command is an argv list handed to ``execve`` — never a shell —
so a payload value such as ``"; rm -rf / #`` or ``$(id)`` reaches the program as one
literal argument (or as an environment value, or on stdin) and is never interpreted.

Input keys (rendered): ``argv`` (list; each item becomes one argument), ``env`` (added
to the base environment), ``cwd``, ``stdin`` (text; a mapping or list is sent as JSON),
``max_output`` (bytes kept of stdout and of stderr each; the rest is read and dropped so
the command never blocks on a full pipe). The command gets its own process group; on the
step's timeout, or when hookd stops, the whole group is killed with SIGKILL, so children
it forked do not outlive it (on Linux it also dies with hookd). Output: ``exit_code``, ``stdout``, ``stderr`` (and
``truncated`` when a cap was hit). A nonzero exit fails the step (retryable).

The base environment is deliberately small: ``PATH``, ``HOME``, ``LANG``, ``LC_ALL``,
``TZ``, ``TMPDIR``, ``USER``, the variables allow-listed in ``env_allow``, and
``HOOKD_FLOW``, ``HOOKD_RUN_ID``, ``HOOKD_DELIVERY_ID`` — hookd's own environment may hold
secrets the command has no business seeing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Mapping
from typing import Any

from hookd.runs.actions import ActionContext, ActionError, as_text

BASE_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")
DEFAULT_MAX_OUTPUT = 1024 * 1024


def base_env(environ: Mapping[str, str], allow: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment a command starts from (see module docstring)."""
    names = BASE_ENV_NAMES + tuple(allow)
    env = {n: environ[n] for n in names if n in environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def argv_of(value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or not value:
        raise ActionError("run: argv must be a non-empty list", retryable=False)
    argv = [as_text(v) for v in value]
    if not argv[0]:
        raise ActionError("run: the program (argv[0]) rendered empty", retryable=False)
    return argv

KIND = "run"  # the step key; hookd.config.actions.run declares its input and schema


async def execute(input: dict[str, Any], ctx: ActionContext) -> Any:
    argv = argv_of(input.get("argv"))
    env = dict(ctx.base_env)
    env.update({"HOOKD_FLOW": ctx.flow, "HOOKD_RUN_ID": ctx.run_id,
                "HOOKD_DELIVERY_ID": ctx.delivery_id})
    env.update({str(k): as_text(v) for k, v in (input.get("env") or {}).items()})
    stdin_value = input.get("stdin")
    stdin: bytes | None = None
    if isinstance(stdin_value, Mapping | list | tuple):
        stdin = json.dumps(stdin_value, ensure_ascii=False).encode()
    elif stdin_value is not None:
        stdin = as_text(stdin_value).encode()
    cap = int(input.get("max_output") or DEFAULT_MAX_OUTPUT)
    cwd = input.get("cwd") or None
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=cwd,
            start_new_session=True,  # own process group, killed as a whole
            preexec_fn=_die_with_parent,
        )
    except FileNotFoundError:
        raise ActionError(f"run: {argv[0]}: no such program (or cwd {cwd!r} missing)",
                          retryable=False) from None
    except PermissionError:
        raise ActionError(f"run: {argv[0]}: permission denied", retryable=False) from None
    except OSError as exc:
        raise ActionError(f"run: {argv[0]}: {exc.strerror}") from None

    try:
        out, err, truncated = await asyncio.wait_for(_communicate(proc, stdin, cap), ctx.timeout)
    except TimeoutError:
        _kill_group(proc)
        await _reap(proc)
        raise ActionError(f"run: {argv[0]}: timed out after {ctx.timeout:g}s (killed)") from None
    except BaseException:  # cancelled (shutdown): leave nothing behind
        _kill_group(proc)
        await _reap(proc)
        raise
    output: dict[str, Any] = {
        "exit_code": proc.returncode,
        "stdout": out.decode("utf-8", "replace"),
        "stderr": err.decode("utf-8", "replace"),
    }
    if truncated:
        output["truncated"] = True
    if proc.returncode != 0:
        raise ActionError(f"run: {argv[0]} exited with {_exit(proc.returncode)}", output=output)
    return output


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # In the child, between fork and exec: if hookd is killed (kill -9, OOM), the command
    # gets SIGKILL instead of living on as an orphan while the resumed run starts the same
    # step again. (Under systemd, KillMode=control-group does the same for the service.)
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


async def _communicate(
    proc: asyncio.subprocess.Process, stdin: bytes | None, cap: int
) -> tuple[bytes, bytes, bool]:
    assert proc.stdout is not None and proc.stderr is not None
    truncated = False

    async def feed() -> None:
        if stdin is None or proc.stdin is None:
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin)
            await proc.stdin.drain()
        proc.stdin.close()

    async def drain(stream: asyncio.StreamReader) -> bytes:
        nonlocal truncated
        kept = bytearray()
        while chunk := await stream.read(65536):
            room = cap - len(kept)
            if room > 0:
                kept += chunk[:room]
            if len(chunk) > room:
                truncated = True
        return bytes(kept)

    _, out, err = await asyncio.gather(feed(), drain(proc.stdout), drain(proc.stderr))
    await proc.wait()
    return out, err, truncated


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _reap(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(proc.wait()), 5)


def _exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"
