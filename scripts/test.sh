#!/usr/bin/env bash
# Quick start, command 2: install (with Redis and PostgreSQL), lint, type-check, run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
echo "== fetching SmolLM2-135M-Instruct for the slow test"
export SLIMFORGE_SMOLLM2_DIR="$(.venv/bin/slimforge fetch-demo-model --dest "$PWD/.cache/models" | tail -1)"
echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# Screenshots of the browser test are kept here (ignored by git) for CI to collect.
export SLIMFORGE_TEST_ARTIFACTS="${SLIMFORGE_TEST_ARTIFACTS:-$PWD/.cache/test-artifacts}"
mkdir -p "$SLIMFORGE_TEST_ARTIFACTS"
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
