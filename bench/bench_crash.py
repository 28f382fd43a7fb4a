"""Crash check at scale: 5,000 signed deliveries with concurrency, kill -9 mid-load, restart.

    python bench/bench_crash.py [--deliveries 5000] [--concurrency 32]

Same procedure as tests/test_crash_ingest.py (which runs 400 to stay fast in CI): every
delivery that got a 2xx answer before the kill must be in the store and processed after
the restart, and sending everything again records nothing twice. Exit status 1 on a loss.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_crash_ingest import crash_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--deliveries", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kill-at", type=float, default=0.5, help="fraction acknowledged before the kill")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hookd-crash-") as tmp:
        r = crash_run(Path(tmp), n=args.deliveries, concurrency=args.concurrency,
                      kill_fraction=args.kill_at)
    print(f"sent {r.sent} deliveries, {args.concurrency} concurrent; kill -9 after "
          f"{r.acknowledged} 2xx answers")
    print(f"in the store right after the kill: {r.recorded_at_kill} "
          f"(>= acknowledged: {r.recorded_at_kill >= r.acknowledged})")
    print(f"acknowledged but missing: {len(r.missing)}   acknowledged but not processed after "
          f"restart: {len(r.not_processed)}")
    print(f"after resending all {r.sent}: {r.recorded_after_resend} deliveries recorded, "
          f"{r.resend_failures} wrong answers   ({time.monotonic() - started:.1f} s)")
    ok = not r.missing and not r.not_processed and r.resend_failures == 0 \
        and r.recorded_after_resend == r.sent
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
