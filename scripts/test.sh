#!/usr/bin/env bash
# Set up if needed, lint, then run the whole test suite (PostgreSQL tests included where it runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test,postgres,bench
.venv/bin/ruff check .
.venv/bin/ruff format --check src tests bench
if [ "$#" -gt 0 ]; then  # the tests you name, as you name them
  exec .venv/bin/python -m pytest -n 2 -p no:cacheprovider "$@"
fi
.venv/bin/python -m pytest -n 2 -p no:cacheprovider --ignore=tests/storm
# Last and alone: the storm restarts PostgreSQL, which would disturb other tests using it.
exec .venv/bin/python -m pytest -p no:cacheprovider tests/storm
