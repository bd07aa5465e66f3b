#!/usr/bin/env bash
# The main job on sample data every machine gets with pip (slicerio's CTChest4 CT and its Slicer segmentation):
# one box around the right lung on axial slice 20, propagated through the neighbouring slices with the embedded
# LiteMedSAM model, compared with the reference segment, written as a Slicer segmentation.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
VENV=${VENV:-.venv}
DATA=$("$VENV/bin/python" -c "import os, slicerio; print(os.path.dirname(slicerio.get_testdata_file('CTChest4.nrrd')))")
mkdir -p out
"$VENV/bin/samed" segment "$DATA/CTChest4.nrrd" --slice 20 --box 55,36,106,98 --propagate --intensity minmax \
  --reference "$DATA/Segmentation.seg.nrrd" --reference-label "right lung" \
  --out out/right_lung.seg.nrrd --report out/right_lung.json --overwrite
echo "Open out/right_lung.seg.nrrd in 3D Slicer over $DATA/CTChest4.nrrd"
