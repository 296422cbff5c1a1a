#!/usr/bin/env bash
# Install what slimforge needs into .venv (idempotent).
#   scripts/setup.sh          the service + the compression library (enough for the demo)
#   scripts/setup.sh --dev    also the test tools, Redis, PostgreSQL and Chromium (Debian packages)
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0; [ "${1:-}" = "--dev" ] && dev=1

# chromium: the dashboard's browser test (Playwright drives it; no browser download);
# fonts-liberation: legible text in its screenshot where apt skips chromium's recommends.
if [ "$dev" = 1 ] && { ! command -v redis-server >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v chromium >/dev/null || [ ! -d /usr/share/fonts/truetype/liberation ]; }; then
  if [ "$(id -u)" = 0 ]; then
    echo "== installing redis-server, postgresql and chromium (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server postgresql chromium fonts-liberation >/dev/null
  else
    echo "redis-server, postgresql and chromium are needed for the tests: sudo apt-get install redis-server postgresql chromium fonts-liberation" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv
fi
extras="ml"; [ "$dev" = 1 ] && extras="ml,gguf,dev"
echo "== installing slimforge[$extras] into .venv"
# torch==2.13.0 (pinned in pyproject.toml) resolves to the local CPU wheel where pip has one.
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[$extras]"
# llama.cpp's HF -> GGUF converter is not in the llama-cpp-python wheel: unpack it from the sdist
# of the installed version (the same llama.cpp commit) into .venv/share/slimforge/ (GGUF export).
if [ "$dev" = 1 ]; then
  .venv/bin/python scripts/fetch_gguf_converter.py
fi
