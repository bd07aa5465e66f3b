#!/usr/bin/env bash
# GPU check (issue 16), under 8 minutes on a machine with an NVIDIA GPU:
#   1. installs what it needs (the project's venv via scripts/setup.sh, and onnxruntime-gpu for the ONNX engine on
#      CUDA; each step is skipped when already there, so a prepared machine spends no time on it);
#   2. runs the engine tests on the GPU: pytest -p pytest_device --device cuda tests/test_engine.py
#      tests/test_onnx_engine.py (tests/test_engine.py's device test compares the engines on CUDA with the CPU);
#   3. runs bench/bench_speed.py --device cuda: click-to-mask latency (goal < 50 ms) and a 100-slice propagation
#      (goal < 5 s), besides its usual table.
# Without a GPU (no nvidia-smi, no device, or torch without CUDA) it stops at once with exit status 2 and says why.
# Usage: bash bench/gpu_check.sh            (VENV=... to use another venv; GPU_CHECK_SKIP_INSTALL=1 to install nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
START=$(date +%s)
fail() { echo "gpu_check: FAILED: $*" >&2; exit 2; }
step() { echo "gpu_check: [$(( $(date +%s) - START )) s] $*"; }

# ---- 0. is there a GPU at all? (before installing anything) ---------------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 || fail "no NVIDIA driver here (nvidia-smi not found): this check needs a CUDA GPU"
nvidia-smi -L >/dev/null 2>&1 || fail "nvidia-smi finds no GPU: $(nvidia-smi -L 2>&1 | head -1)"
step "GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"

# ---- 1. install --------------------------------------------------------------------------------------------------
if [[ "${GPU_CHECK_SKIP_INSTALL:-0}" != 1 ]]; then
  if ! "$PY" -c "import samed, torch, onnxruntime, pytest" 2>/dev/null; then
    step "installing the project (scripts/setup.sh --test) ..."
    timeout 240 bash scripts/setup.sh --test >/dev/null || fail "scripts/setup.sh --test failed or took over 240 s"
  fi
  if ! "$PY" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    step "installing onnxruntime-gpu (the ONNX engine's CUDA provider) ..."
    # onnxruntime and onnxruntime-gpu install the same module: the CPU one goes first
    timeout 180 "$PY" -m pip install -q onnxruntime-gpu && "$PY" -m pip uninstall -q -y onnxruntime >/dev/null 2>&1 \
      && timeout 120 "$PY" -m pip install -q --force-reinstall --no-deps onnxruntime-gpu \
      || echo "gpu_check: could not install onnxruntime-gpu: the ONNX engine will be skipped on CUDA" >&2
  fi
fi
"$PY" - <<'EOF' || fail "torch in $VENV cannot use the GPU (see above): install a CUDA build of torch for this driver"
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA build {torch.version.cuda}) sees no CUDA device")
print(f"gpu_check: torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
EOF

# ---- 2. the engine tests on the GPU ----------------------------------------------------------------------------
step "engine tests on cuda ..."
PYTHONPATH=bench${PYTHONPATH:+:$PYTHONPATH} timeout 200 "$PY" -m pytest -q -x -p pytest_device --device cuda \
  tests/test_engine.py tests/test_onnx_engine.py || fail "engine tests on cuda failed (exit $?)"

# ---- 3. the benchmark on the GPU -------------------------------------------------------------------------------
step "bench/bench_speed.py --device cuda ..."
OUT=$(mktemp -d)
timeout 240 "$PY" bench/bench_speed.py --device cuda --walk100 --no-evaluate --json "$OUT/bench.json" \
  | tee "$OUT/bench.txt" || fail "bench/bench_speed.py --device cuda failed or took over 240 s"
"$PY" - "$OUT/bench.json" <<'EOF'
import json, sys
import numpy as np
r = json.load(open(sys.argv[1]))["ours"]
click = (np.median(r["encode_s"]) + np.median(r["decode_s"])) * 1000
decode = np.median(r["decode_s"]) * 1000
print(f"gpu_check: click-to-mask on a new slice {click:.0f} ms (encode + decode), on an encoded slice {decode:.0f} ms: "
      f"goal < 50 ms {'MET' if click < 50 else 'NOT MET'}")
w = r.get("walk100")
if w:
    print(f"gpu_check: 100-slice propagation {w['wall_s']:.2f} s ({w['slices']} of {w['of']} slices): goal < 5 s "
          f"{'MET' if w['wall_s'] < 5 else 'NOT MET'}")
else:
    print("gpu_check: 100-slice propagation: not measured")
EOF
step "done"
