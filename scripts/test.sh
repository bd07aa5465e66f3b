#!/usr/bin/env bash
# Install everything the tests need (venv, torch, the project, slicer-core, chromium) and run them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
VENV=${VENV:-.venv}
exec "$VENV/bin/python" -m pytest -q --durations=15 "$@"
