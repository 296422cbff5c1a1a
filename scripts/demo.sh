#!/usr/bin/env bash
# Quick start, command 1: install, then compress SmolLM2-135M-Instruct by 20 % through the
# embedded service (API + Celery worker + SQLite) and print the result table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SLIMFORGE_HOME="${SLIMFORGE_HOME:-$PWD/.slimforge-demo}"
exec .venv/bin/slimforge demo "$@"
