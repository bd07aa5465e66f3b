#!/usr/bin/env bash
# Install everything the tests need (venv, torch, the project, slicer-core, chromium) and run them.
# The effect's tests run twice: under Slicer 5.10+'s effect loader (the default) and under 5.2-5.8's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
VENV=${VENV:-.venv}
if [[ $# -eq 0 ]]; then
  SAMED_SLICER_LOADER=5.2 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_slicer_effect.py \
    tests/test_slicer_lifecycle.py tests/test_slicer_interaction.py tests/test_slicer_loading.py
fi
exec "$VENV/bin/python" -m pytest -q --durations=15 "$@"
