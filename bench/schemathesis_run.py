"""schemathesis against the API's OpenAPI schema, in process, with more examples than the test.

    .venv/bin/python -m bench.schemathesis_run [--examples 200]

Same app setup and checks as tests/app/test_schemathesis.py (bench/schemathesis_runner.py: no
5xx; status codes, content types and bodies as declared), derandomized; prints a markdown
table for docs/BENCHMARKS.md and exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.schemathesis_runner import build_app, run_schema


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="per operation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app, headers = build_app(Path(tmp) / "home")
        start = time.monotonic()
        try:
            results = run_schema(app, headers, examples=args.examples)
        finally:
            app.state.engine.dispose()
        seconds = time.monotonic() - start

    print(
        f"schemathesis {importlib.metadata.version('schemathesis')}, up to {args.examples} "
        f"examples per operation (valid and invalid data), {datetime.now(UTC):%Y-%m-%d}, "
        f"{platform.machine()}, {seconds:.0f} s\n"
    )
    print("| operation | examples | 2xx | 5xx | schema violations |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| `{r.label}` | {r.examples} | {r.successes} | {r.server_errors} | {r.violations} |"
        )
    total = sum(r.examples for r in results)
    successes = sum(r.successes for r in results)
    errors = sum(r.server_errors for r in results)
    violations = sum(r.violations for r in results)
    print(
        f"| **{len(results)} operations** | **{total}** | **{successes}** | **{errors}** "
        f"| **{violations}** |"
    )
    for r in results:
        for title, message in r.failures.items():
            print(f"\n{r.label}: {title}\n  {message}")
    return 1 if errors or violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
