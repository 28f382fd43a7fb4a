"""How long the `hookd` command line takes to start: `hookd --help` and `hookd check`.

Every `hookd` invocation builds the full parser, so every command module is imported;
a command that imports asyncio, httpx or sqlite3 at module top makes `hookd check` (run
in CI and editor hooks, often) pay for all of them. Command modules therefore import
heavy dependencies inside their ``func``; this bench keeps that honest.

Prints the median wall and CPU time of fresh ``python -m hookd …`` processes next to a
baseline measured in the same run: a Python process that only imports ``argparse`` and
``yaml`` (the least any YAML-reading CLI pays), and the ratio between them. Also prints
the modules the `--help` process imports beyond that baseline, heaviest first
(``-X importtime``), so a regression names its cause.

    python bench/bench_cli.py [--repeat 15] [--config config]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASELINE = [sys.executable, "-c", "import argparse, yaml"]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def heaviest_imports(env: dict[str, str], limit: int) -> list[tuple[int, str]]:
    """Top-level imports of `hookd --help` (cumulative µs), heaviest first."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "hookd", "--help"],
                         env=env, cwd=REPO, capture_output=True, text=True, check=False).stderr
    rows = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  "):
            try:
                rows.append((int(parts[1]), parts[2].strip()))
            except ValueError:
                continue
    return sorted(rows, reverse=True)[:limit]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--config", type=Path, default=REPO / "config")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        # Bytecode compiled once into a private cache, as an installed package has it.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        cases = {
            "baseline (argparse+yaml)": BASELINE,
            "hookd --help": [sys.executable, "-m", "hookd", "--help"],
            "hookd check CONFIG": [sys.executable, "-m", "hookd", "check", str(args.config)],
        }
        for cmd in cases.values():
            timed(cmd, env)  # warm-up: compile, fill the page cache
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
        for _ in range(args.repeat):  # interleaved, so machine load hits all cases alike
            for name, cmd in cases.items():
                samples[name].append(timed(cmd, env))
        base_wall = statistics.median(w for w, _ in samples["baseline (argparse+yaml)"])
        base_cpu = statistics.median(c for _, c in samples["baseline (argparse+yaml)"])
        print(f"{'':28} {'wall ms':>8} {'cpu ms':>8} {'wall/base':>10} {'cpu/base':>9}")
        for name, rows in samples.items():
            wall = statistics.median(w for w, _ in rows)
            cpu = statistics.median(c for _, c in rows)
            print(f"{name:28} {wall * 1000:8.1f} {cpu * 1000:8.1f} "
                  f"{wall / base_wall:10.2f} {cpu / base_cpu:9.2f}")
        print("\nheaviest top-level imports of `hookd --help` (cumulative ms):")
        for micros, name in heaviest_imports(env, 12):
            print(f"  {micros / 1000:7.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
