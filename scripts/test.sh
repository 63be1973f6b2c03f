#!/usr/bin/env bash
# Set up if needed, lint, then run the whole test suite (PostgreSQL tests included where it runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test,postgres,bench
.venv/bin/ruff check .
.venv/bin/ruff format --check src tests bench
exec .venv/bin/python -m pytest -n 2 -p no:cacheprovider "$@"
