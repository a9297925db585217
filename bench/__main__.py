"""``make bench``: runs every benchmark module and writes bench/results/*.json.

python -m bench              all benchmarks
python -m bench bus chain    only these
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
# Every bench/<name>.py is a benchmark; this order runs the platform first.
ORDER = ("bus", "chain", "gas", "ledger", "identity_consent", "records")


def available() -> list[str]:
    names = {p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_")}
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def main(selected: list[str]) -> int:
    known = available()
    names = selected or known
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {known}", file=sys.stderr)
        return 2
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "summary.json"
    # A partial run updates its own entries and keeps the others' last results.
    summary: dict[str, object] = json.loads(out.read_text()) if out.exists() else {}
    summary["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    for name in names:
        print(f"== bench {name} ==", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"bench.{name}")
        summary[name] = {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "results": module.run(RESULTS_DIR),
        }
        print(f"== bench {name}: {time.monotonic() - started:.0f} s ==", flush=True)
    out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"results in {RESULTS_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
