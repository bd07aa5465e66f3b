#!/usr/bin/env bash
# Set up a virtual environment with everything samed needs: scripts/setup.sh [--test]
# VENV (default .venv in the project) is created if missing. torch is pinned to the CPU/CUDA build that this
# site's pip serves from local disk; elsewhere pip downloads it (choose your own torch build if you like).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null || \
  "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
if [[ "${1:-}" == "--test" ]]; then
  "$VENV/bin/python" -m pip install -q -e ".[all,test,web]" playwright
  # headless Chromium renders the evaluation report in a test; Playwright drives it against `samed web`, whose
  # views render with EGL (Mesa) without X; dicom3tools' dciodvfy validates the DICOM SEG files samed writes;
  # nginx is the consistent-hash proxy of tests/test_scale_nginx.py
  if { ! command -v chromium >/dev/null 2>&1 || ! ldconfig -p | grep -q libEGL_mesa || \
       ! command -v dciodvfy >/dev/null 2>&1 || ! { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null 2>&1; } \
     && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libegl1 libegl-mesa0 \
      dicom3tools nginx >/dev/null) || \
      echo "setup: could not install chromium/dicom3tools/nginx; the browser, DICOM SEG validation and proxy tests" \
        "will fail" >&2
  fi
else
  "$VENV/bin/python" -m pip install -q -e ".[all]"
fi
echo "setup: $VENV ready ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))"
