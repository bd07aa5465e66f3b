"""``samed refine``'s provenance: each refined segment of the written .seg.nrrd says it was refined (mode "refine",
the source segment, the changed slices, the check, the settings), read back by samed and slicerio. A real process's
run with the real model is in tests/test_refine.py (its fixture); here the CLI runs in-process on real files with
test_refine's box-only fake as the model."""
from __future__ import annotations

import numpy as np

from samed.core.refine import grow_mask
from test_refine import TRUTH, BrightInBoxBackend


def test_samed_refine_writes_a_refine_provenance_on_each_refined_segment(tmp_path, monkeypatch):
    import slicerio

    from samed.cli import main as cli_main
    from samed.cli import refine as cli_refine
    from samed.core import io
    from samed.core.geometry import Volume
    from samed.core.provenance import PROVENANCE_TAG, Provenance, read_segment_provenance

    truth = np.stack(TRUTH)
    image = np.where(truth, 200, 10).astype(np.int16)
    volume = Volume(image, np.diag([0.8, 0.9, 2.5, 1.0]))
    io.write_volume(volume, tmp_path / "image.nrrd")
    coarse = np.stack([grow_mask(m, 2) for m in TRUTH])
    seg = tmp_path / "coarse.seg.nrrd"
    io.write_segmentation(seg, {"ellipse": coarse}, volume)
    monkeypatch.setattr(cli_refine, "backend_from_args", lambda args: BrightInBoxBackend())
    out = tmp_path / "refined.seg.nrrd"
    assert cli_main.main(["refine", str(tmp_path / "image.nrrd"), "--segmentation", str(seg), "--label", "ellipse",
                          "--out", str(out), "--box-margin", "3"]) == 0
    written = io.read_segmentation(out)
    refined = written.segment_mask("ellipse") > 0
    changed = [k for k in range(len(TRUTH)) if not np.array_equal(refined[k], coarse[k])]
    assert changed  # the fake's outline is 1 px out, the original 2 px: the check corrects it
    prov = read_segment_provenance(written, "ellipse")
    walk = prov.propagation
    assert walk["mode"] == "refine" and walk["changed"] == changed, walk
    assert walk["source"]["file"] == "coarse.seg.nrrd" and walk["source"]["segment"] == "ellipse"
    assert walk["source"]["label"] == "ellipse"
    assert walk["settings"]["box_margin_px"] == 3.0 and walk["settings"]["model_bias_px"] == 1.0
    assert "outlier_px" in walk["settings"] and isinstance(walk["check"], str) and walk["check"]
    assert prov.tool == "samed refine" and prov.model == "bright-in-box" and prov.image == "image.nrrd"
    assert prov.grid["shape_kji"] == list(image.shape) and prov.prompts == []
    # slicerio reads the same tag (as Slicer does)
    tags = {s["name"]: s.get("tags", {}) for s in slicerio.read_segmentation(str(out))["segments"]}
    assert Provenance.from_tag_value(tags["ellipse"][PROVENANCE_TAG]).as_dict() == prov.as_dict()
