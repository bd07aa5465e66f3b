"""Provenance on every segment samed writes (samed.core.provenance): the segment tag survives Slicer's own reader
(slicer-core's vtkMRMLSegmentationStorageNode), slicerio and samed's reader, and ``samed segment --continue SEG
IMAGE`` re-runs the recorded prompts to the same voxels (the real LiteMedSAM model, a real process)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from samed.core import io
from samed.core.provenance import (PROVENANCE_TAG, PromptRecord, Provenance, ProvenanceError, decode_tag_value,
                                   encode_tag_value, parse_tags_string, read_segment_provenance, tags_string)
from test_cli import samed
from test_io import ct_masks

NASTY = "a|b:c\\d%7C e\nf \"q\" \u00e9 %% || ::"


def _provenance(**kw) -> Provenance:
    base = dict(model="litemedsam", engine="torch (cpu)", samed_version="0.1.0", axis="axial",
                prompts=[PromptRecord(20, [55.0, 36.0, 106.0, 98.0]),
                         PromptRecord(22, None, [[70.5, 60.0]], [[1.0, 2.0]])],
                propagation={"mode": "walk", "seed": 20, "range": [17, 23],
                             "stopped": {"down": "max_slices at slice 17", "up": "area | ratio: 0.1"}},
                image=NASTY)
    base.update(kw)
    return Provenance(**base)


def test_tag_value_holds_none_of_the_characters_the_parsers_act_on():
    value = _provenance().to_tag_value()
    assert not set(value) & set("|\\\n") and value.isascii()
    assert decode_tag_value(value)["image"] == NASTY
    p = _provenance()
    assert Provenance.from_tag_value(p.to_tag_value()).as_dict() == p.as_dict()
    # Slicer's parser (split at '|', then at the first ':') gives the value back whole, beside other tags
    text = tags_string({PROVENANCE_TAG: value, "Segmentation.Status": "inprogress", "x": "1:2"})
    assert parse_tags_string(text) == {PROVENANCE_TAG: value, "Segmentation.Status": "inprogress", "x": "1:2"}
    assert encode_tag_value({"k": "%7C"}) != encode_tag_value({"k": "|"})


def test_tags_that_slicer_would_split_wrongly_are_refused():
    with pytest.raises(ValueError, match="must not hold"):
        tags_string({"k": "a|b"})
    with pytest.raises(ValueError, match="tag name"):
        tags_string({"a:b": "c"})


def test_damaged_or_missing_provenance_is_a_clear_error():
    with pytest.raises(ProvenanceError, match="not readable provenance"):
        Provenance.from_tag_value("{not json")
    with pytest.raises(ProvenanceError, match="incomplete"):
        Provenance.from_tag_value(encode_tag_value({"axis": "axial"}))
    with pytest.raises(ProvenanceError, match="newer"):
        Provenance.from_tag_value(encode_tag_value({**_provenance().as_dict(), "format": 99}))


def test_segment_tag_round_trips_through_slicer_slicerio_and_samed(tmp_path):
    ct, box, ball = ct_masks()
    prov = _provenance()
    path = io.write_segmentation(tmp_path / "p.seg.nrrd", [("tumour", box), ("oedema", ball)], ct,
                                 segment_tags={"tumour": {PROVENANCE_TAG: prov.to_tag_value(), "Note": "a:b"}})
    # samed's reader
    seg = io.read_segmentation(path)
    assert read_segment_provenance(seg).as_dict() == prov.as_dict()
    assert seg.segments[0].tags["Note"] == "a:b" and seg.segments[1].tags == {}
    # slicerio
    import slicerio

    s = slicerio.read_segmentation(str(path))
    tags = s["segments"][0]["tags"]
    assert Provenance.from_tag_value(tags[PROVENANCE_TAG]).as_dict() == prov.as_dict()
    # 3D Slicer's reader (slicer-core: ITK/teem NRRD header, SetSegmentTagsFromString)
    import slicer
    import vtk

    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node) == 1
    segment = node.GetSegmentation().GetSegment(node.GetSegmentation().GetSegmentIdBySegmentName("tumour"))
    value = vtk.reference("")
    assert segment.GetTag(PROVENANCE_TAG, value)
    assert Provenance.from_tag_value(str(value)).as_dict() == prov.as_dict()
    # ... and Slicer writes it back unchanged (its writer: GetSegmentTagsAsString)
    storage.SetFileName(str(tmp_path / "slicer.seg.nrrd"))
    assert storage.WriteData(node) == 1
    again = io.read_segmentation(tmp_path / "slicer.seg.nrrd")
    assert read_segment_provenance(again, "tumour").as_dict() == prov.as_dict()


def test_a_segmentation_without_provenance_is_refused(ctchest):
    _, seg_path = ctchest
    with pytest.raises(ProvenanceError, match="carries no SegmentAnythingMed provenance"):
        read_segment_provenance(io.read_segmentation(seg_path))


# ---------------------------------------------------------------------------------------------- the command line
@pytest.fixture(scope="module")
def first_run(ctchest, tmp_path_factory):
    """The README's box, propagated 3 slices each way, with a report (the real model in a real process)."""
    ct, _ = ctchest
    tmp = tmp_path_factory.mktemp("prov")
    out, report = tmp / "lung.seg.nrrd", tmp / "lung.json"
    r = samed("segment", ct, "--slice", "20", "--box", "55,36,106,98", "--propagate", "--max-slices", "3",
              "--intensity", "minmax", "--modality", "CT", "--name", "right lung", "--out", out, "--report", report)
    assert r.returncode == 0, r.stderr
    return ct, out, json.loads(report.read_text()), tmp


def test_segment_records_its_provenance_and_measurements(first_run):
    ct, out, report, _ = first_run
    seg = io.read_segmentation(out)
    prov = read_segment_provenance(seg)
    assert (prov.model, prov.axis, prov.samed_version) == ("litemedsam", "axial", __import__("samed").__version__)
    assert prov.engine and prov.created
    assert [p.as_dict() for p in prov.prompts] == [{"kind": "box", "slice": 20, "box_xy": [55.0, 36.0, 106.0, 98.0]}]
    assert prov.propagation["mode"] == "walk" and prov.propagation["seed"] == 20
    assert prov.propagation["range"] == [17, 23] and set(prov.propagation["stopped"]) == {"down", "up"}
    assert prov.intensity["intensity"] == "minmax"
    prov.check_grid(*(lambda v: (v.shape_kji, v.ijk_to_ras))(io.read_volume(ct)), "the CT")
    entry = report["segments"][0]
    assert entry["provenance"] == prov.as_dict()
    mask = seg.segment_mask("right lung")
    m = entry["measurements"]
    assert m["voxel_count"] == int(mask.sum()) > 0
    vox = abs(np.linalg.det(seg.ijk_to_ras[:3, :3]))
    assert m["volume_ml"] == pytest.approx(mask.sum() * vox / 1000)
    assert 17 <= m["recist_slice"] <= 23 and m["recist_long_axis_mm"] >= m["recist_short_axis_mm"] > 0
    assert m["max_diameter_mm"] >= m["recist_long_axis_mm"]
    assert m["intensity_min"] <= m["intensity_mean"] <= m["intensity_max"] and m["surface_area_mm2"] > 0
    assert m["intensity_unit"] == "HU"  # --modality CT
    ct_voxels = io.read_volume(ct).array[mask]
    assert (m["intensity_mean"], m["intensity_min"]) == (pytest.approx(ct_voxels.mean()), ct_voxels.min())


def test_continue_re_runs_the_recorded_prompts_to_the_same_voxels(first_run):
    ct, out, _, tmp = first_run
    again = tmp / "again.seg.nrrd"
    r = samed("segment", "--continue", out, ct, "--out", again)
    assert r.returncode == 0, r.stderr
    first, second = io.read_segmentation(out), io.read_segmentation(again)
    assert second.names == ["right lung"]
    assert np.array_equal(first.segment_mask("right lung"), second.segment_mask("right lung"))
    p1, p2 = read_segment_provenance(first).as_dict(), read_segment_provenance(second).as_dict()
    p1.pop("created"), p2.pop("created")
    assert p1 == p2


def test_continue_refuses_a_seg_without_provenance_another_grid_and_extra_prompts(first_run, ctchest):
    ct, out, _, tmp = first_run
    _, slicer_seg = ctchest
    r = samed("segment", "--continue", slicer_seg, ct, "--out", tmp / "x.seg.nrrd")
    assert r.returncode == 2 and "carries no SegmentAnythingMed provenance" in r.stderr, r.stderr
    vol = io.read_volume(ct)
    cropped = tmp / "cropped.nrrd"
    io.write_volume(io.Volume(vol.array[:, :, 1:], vol.ijk_to_ras), cropped)
    r = samed("segment", "--continue", out, cropped, "--out", tmp / "x.seg.nrrd")
    assert r.returncode == 2 and "give the image the segment was made on" in r.stderr, r.stderr
    shifted = tmp / "shifted.nrrd"
    m = vol.ijk_to_ras.copy()
    m[:3, 3] += [0, 0, 5.0]
    io.write_volume(io.Volume(vol.array, m), shifted)
    r = samed("segment", "--continue", out, shifted, "--out", tmp / "x.seg.nrrd")
    assert r.returncode == 2 and "5 mm away" in r.stderr, r.stderr
    r = samed("segment", "--continue", out, ct, "--box", "1,1,9,9", "--slice", "3", "--out", tmp / "x.seg.nrrd")
    assert r.returncode == 2 and "give no --box" in r.stderr, r.stderr
    assert not (tmp / "x.seg.nrrd").exists()


def test_continue_gives_markup_prompts_back_as_they_were_on_their_slices(tmp_path, ctchest):
    """Prompts that came from markups (points on two slices, an ROI's range) cannot be spelled as --box/--point:
    --continue hands them to the run as recorded (no model needed to check the mapping)."""
    import argparse

    from samed.cli.segment_provenance import continue_from

    ct_path, _ = ctchest
    ct, box, _ = ct_masks()
    prov = _provenance(prompt_source="markups", roi_range=[18, 23], axis="coronal",
                       grid={"shape_kji": list(ct.shape_kji), "ijk_to_ras": ct.ijk_to_ras.tolist()},
                       intensity={"intensity": "window", "window": 1500.0, "level": -600.0, "modality": None},
                       propagation={"mode": "walk", "seed": 20, "settings": {"max_slices": 4, "box_margin_px": 3.0,
                                                                             "min_score": 0.3, "evil": "x"}})
    seg = io.write_segmentation(tmp_path / "m.seg.nrrd", {"nodule": box}, ct,
                                segment_tags={"nodule": {PROVENANCE_TAG: prov.to_tag_value()}})
    args = argparse.Namespace(continue_from=str(seg), image=str(ct_path), box=[], point=[], exclude_point=[],
                              markups=[], slice=[], name=None, axis="axial", model="x", propagate=False,
                              max_slices=None, min_score=0.5, box_margin=2.0, intensity="auto", window=None, level=None,
                              modality=None)
    continue_from(args, io.read_volume(ct_path))
    assert (args.axis, args.model, args.name, args.propagate, args.max_slices, args.min_score) == (
        "coronal", "litemedsam", "nodule", True, 4, 0.3)
    assert args.box_margin == 3.0  # PropagationSettings' box_margin_px (a record made in Slicer) is --box-margin
    assert not hasattr(args, "evil") and (args.intensity, args.window, args.level) == ("window", 1500.0, -600.0)
    sp = args.continue_prompts
    assert sp.indices() == [20, 22] and sp.roi_range == (18, 23)
    np.testing.assert_array_equal(sp.prompts[20].box_xy, [55, 36, 106, 98])
    np.testing.assert_array_equal(sp.prompts[22].include_points_xy, [[70.5, 60.0]])
    np.testing.assert_array_equal(sp.prompts[22].exclude_points_xy, [[1.0, 2.0]])


def test_continue_re_runs_key_slices(ctchest, tmp_path):
    """Two key slices (boxes on slices 18 and 22, the slices between filled): --continue gives the same voxels."""
    ct, _ = ctchest
    out, again = tmp_path / "keys.seg.nrrd", tmp_path / "keys2.seg.nrrd"
    r = samed("segment", ct, "--slice", "18", "--box", "55,36,106,98", "--slice", "22", "--box", "55,36,106,98",
              "--intensity", "minmax", "--propagate", "--max-slices", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    prov = read_segment_provenance(io.read_segmentation(out))
    assert [p.slice for p in prov.prompts] == [18, 22] and prov.propagation["mode"] == "key slices"
    assert prov.propagation["range"] == [17, 23]  # filled between, one slice walked beyond each end
    assert sorted(prov.propagation["stopped"]) == ["down", "up"], prov.propagation  # and why each end stopped
    r = samed("segment", "--continue", out, ct, "--out", again)
    assert r.returncode == 0, r.stderr
    assert np.array_equal(io.read_segmentation(out).segment_mask("Segment_1"),
                          io.read_segmentation(again).segment_mask("Segment_1"))
