"""Micro-measurement: the per-request metric calls, hand-written registry vs prometheus-client.

Not a benchmark of the ingest path (bench/bench_ingest.py is): the CPU of the calls the
callback listener makes per request (`deliveries.inc`, `request_seconds.observe`,
sometimes `verification_failures.inc`) and per group commit (`observe_commit`), best of
30 x 50,000, for docs/adr/0005-prometheus-client.md. The hand-written module is read
from git (``git show 1bf65c5:hookd/telemetry/metrics.py > /tmp/old_metrics.py``).

    python bench/micro_metrics.py [/tmp/old_metrics.py]
"""

import importlib.util
import sys
import timeit

OLD = sys.argv[1] if len(sys.argv) > 1 else "/tmp/old_metrics.py"
spec = importlib.util.spec_from_file_location("old_metrics", OLD)
assert spec is not None and spec.loader is not None
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
from hookd.telemetry import metrics as new  # noqa: E402

SUB = "sub_0123456789abcdef"


def cases(m: object) -> dict[str, object]:
    d, v, h = m.deliveries, m.verification_failures, m.request_seconds  # type: ignore[attr-defined]
    return {
        "deliveries.inc(sub, flow, outcome)": lambda: d.inc(SUB, "push", "accepted"),
        "request_seconds.observe(t, outcome)": lambda: h.observe(0.0042, "accepted"),
        "verification_failures.inc(sub, flow)": lambda: v.inc(SUB, "push"),
        "observe_commit(20, 20, 0.002)": lambda: m.observe_commit(20, 20, 0.002),  # type: ignore[attr-defined]
    }


rows: list[tuple[str, str, float]] = []
for name, metrics in (("hand-written", old.Metrics()), ("prometheus-client", new.Metrics())):
    for case, f in cases(metrics).items():
        f()  # type: ignore[operator]
        best = min(timeit.repeat(f, number=50_000, repeat=30)) / 50_000  # type: ignore[arg-type]
        rows.append((case, name, best * 1e6))
print("| call | hand-written, µs | prometheus-client, µs | difference |")
print("|---|---|---|---|")
for case in dict.fromkeys(r[0] for r in rows):
    a, b = (r[2] for r in rows if r[0] == case)
    print(f"| `{case}` | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
