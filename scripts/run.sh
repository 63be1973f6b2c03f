#!/usr/bin/env bash
# Set up if needed, then run the service on the embedded SQLite file (or any CLI command: demo, party add ...).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
if [ $# -eq 0 ]; then set -- serve; fi
exec .venv/bin/deconfliction "$@"
