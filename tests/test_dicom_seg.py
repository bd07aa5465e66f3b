"""DICOM SEG out (samed.core.dicom_seg): SEGs on oblique and Enhanced CT series validate with dciodvfy and read back
to the same voxels, are written whole or not at all, name their structures with SNOMED codes; a SEG output needs a
DICOM input outside the SEG's folder; and the issue's job end to end (segment --propagate -> seg.dcm). The data and
the helpers: tests/dicom_helpers.py."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dicom_helpers import ct_abdomen, dciodvfy, enhanced_ct, oblique_dirs, pydicom, samed, write_series  # noqa: F401
from samed.core import io


# ---------------------------------------------------------------------------------------------- refusals
def test_dicom_seg_output_needs_a_dicom_input(ctchest, tmp_path):
    ct, _ = ctchest
    for out in (["--out", tmp_path / "o.dcm"], ["--out", tmp_path / "o.seg", "--dicom-seg"]):
        r = samed("segment", ct, "--box", "55,36,106,98", "--slice", "20", *out)
        assert r.returncode == 2 and "is not DICOM" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())


def test_dicom_seg_is_not_written_into_the_input_series_folder(ct_abdomen, tmp_path):
    folder = write_series(tmp_path / "ct", ct_abdomen[0].array[:4, :32, :32])[0].parent
    r = samed("segment", folder, "--box", "2,2,20,20", "--slice", "1", "--out", folder / "seg.dcm")
    assert r.returncode == 2 and "inside the DICOM input folder" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------- SEG out
def test_dciodvfy_reports_errors_of_a_broken_seg(ct_abdomen, tmp_path):
    """The validator's counterpart: it does catch a SEG without a required attribute."""
    from samed.core.dicom_seg import write_dicom_seg

    volume = io.read_volume(write_series(tmp_path / "ct", ct_abdomen[0].array[:3, :20, :20])[0].parent)
    mask = np.zeros(volume.shape_kji, bool)
    mask[1, 5:10, 5:10] = True
    write_dicom_seg(tmp_path / "s.dcm", {"liver": mask}, volume)
    ds = pydicom.dcmread(tmp_path / "s.dcm")
    del ds.SegmentSequence[0].SegmentLabel
    ds.save_as(tmp_path / "broken.dcm")
    errors, _ = dciodvfy(tmp_path / "broken.dcm")
    assert any("SegmentLabel" in e for e in errors), errors


def test_seg_on_an_oblique_series_validates_and_reads_back_to_the_same_voxels(ct_abdomen, tmp_path):
    from samed.core.dicom_seg import read_dicom_seg, write_dicom_seg

    row, col = oblique_dirs()
    hu = ct_abdomen[0].array[5:15, 10:60, 20:90]
    files = write_series(tmp_path / "ct", hu, origin=(10, -20, 40), row_dir=row, col_dir=col,
                         pixel_spacing=(0.8, 1.2), step=2.0 * np.cross(row, col))
    volume = io.read_volume(files[0].parent)
    liver = np.zeros(volume.shape_kji, bool)
    liver[2:7, 10:30, 15:50] = True
    blob = np.zeros(volume.shape_kji, bool)  # overlaps the liver, on other slices too
    blob[5:9, 20:40, 40:60] = True
    out = write_dicom_seg(tmp_path / "seg.dcm",
                          {"Liver tumour": liver, "blob": blob}, volume, model="litemedsam", engine="onnx",
                          colors=[(1.0, 0.0, 0.0)])
    errors, warnings = dciodvfy(out)
    print("dciodvfy warnings:", warnings)
    assert not errors, errors
    back = read_dicom_seg(out, volume)
    assert list(back) == ["Liver tumour", "blob"]
    assert np.array_equal(back["Liver tumour"], liver) and np.array_equal(back["blob"], blob)

    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    source = pydicom.dcmread(files[0])
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID and seg.PatientID == source.PatientID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
    s1, s2 = seg.SegmentSequence
    assert s1.SegmentLabel == "Liver tumour" and s1.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert s1.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"  # morphologically abnormal
    assert s2.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Tissue"  # generic
    assert s1.SegmentAlgorithmType == "SEMIAUTOMATIC" and s1.SegmentAlgorithmName == "SegmentAnythingMed"
    algorithm = s1.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "SegmentAnythingMed" and "litemedsam" in algorithm.AlgorithmParameters
    assert "onnx" in algorithm.AlgorithmParameters
    import highdicom as hd

    red = hd.color.CIELabColor.from_dicom_value(s1.RecommendedDisplayCIELabValue).to_rgb()
    assert tuple(red) == (255, 0, 0)
    # same grid: every frame sits at its source slice's position, with the source's orientation and spacing
    positions = {str(pydicom.dcmread(f).SOPInstanceUID): [float(v) for v in pydicom.dcmread(f).ImagePositionPatient]
                 for f in files}
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert np.allclose([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient], np.r_[row, col],
                       atol=1e-5)
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.8, 1.2]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert np.allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient], positions[uid],
                           atol=1e-4)


def test_seg_is_written_whole_or_not_at_all(ct_abdomen, tmp_path, monkeypatch):
    import highdicom as hd
    from samed.core.dicom_seg import DicomSegError, write_dicom_seg

    volume = io.read_volume(write_series(tmp_path / "ct", ct_abdomen[0].array[:3, :20, :20])[0].parent)
    out = tmp_path / "seg.dcm"
    out.write_bytes(b"the user's previous SEG")
    mask = np.zeros(volume.shape_kji, bool)
    mask[1, 2:9, 2:9] = True

    def save_half_then_fail(self, filename, *a, **k):
        Path(filename).write_bytes(b"DICM half")
        raise OSError("disk full")

    monkeypatch.setattr(hd.seg.Segmentation, "save_as", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_seg(out, {"liver": mask}, volume)
    assert out.read_bytes() == b"the user's previous SEG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "seg.dcm"]  # no part file left
    monkeypatch.undo()
    with pytest.raises(DicomSegError, match="every segment is empty"):
        write_dicom_seg(out, {"liver": np.zeros(volume.shape_kji, bool)}, volume)
    with pytest.raises(FileExistsError):
        write_dicom_seg(out, {"liver": mask}, volume, overwrite=False)
    assert out.read_bytes() == b"the user's previous SEG"


def test_seg_on_an_enhanced_ct_validates_and_reads_back_frame_by_frame(ct_abdomen, tmp_path):
    from samed.core.dicom_seg import read_dicom_seg, write_dicom_seg

    files = write_series(tmp_path / "classic", ct_abdomen[0].array[5:12, 10:50, 20:70], pixel_spacing=(0.9, 0.6))
    volume = io.read_volume(enhanced_ct(tmp_path / "enhanced", files).parent)
    mask = np.zeros(volume.shape_kji, bool)
    mask[1:5, 5:20, 10:30] = True
    mask[6, 0:3, 0:3] = True
    out = write_dicom_seg(tmp_path / "seg.dcm", {"spleen": mask}, volume, model="litemedsam", engine="torch")
    errors, warnings = dciodvfy(out)
    print("dciodvfy warnings:", warnings)
    assert not errors, errors
    assert np.array_equal(read_dicom_seg(out, volume)["spleen"], mask)
    seg, source = pydicom.dcmread(out), pydicom.dcmread(volume.metadata["dicom"]["files"][0])
    for frame in seg.PerFrameFunctionalGroupsSequence:  # each SEG frame sits where its source frame is
        reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
        n = int(reference.ReferencedFrameNumber)
        where = source.PerFrameFunctionalGroupsSequence[n - 1].PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
                           [float(v) for v in where], atol=1e-4)


@pytest.mark.parametrize("name, meaning", [("liver", "Liver"), ("Spleen", "Spleen"), ("kidney_left", "Kidney"),
                                           ("lung_upper_lobe_right", "Lung"), ("tumour", "Neoplasm"),
                                           ("Liver tumor", "Neoplasm"), ("Segment_1", "Tissue")])
def test_structure_names_map_to_snomed_codes(name, meaning):
    from samed.core.dicom_seg import structure_codes

    assert structure_codes(name)[1].meaning == meaning


# ---------------------------------------------------------------------------------------------- the job
def test_segment_dicom_series_with_propagation_writes_a_valid_seg_with_the_same_voxels(ct_abdomen, tmp_path):
    """Issue 15's done-when: ``samed segment DICOM_DIR --box --slice K --propagate --out seg.dcm`` with the real
    LiteMedSAM (default engine): dciodvfy accepts the SEG, and it reads back to the voxels that the same command
    writes as .seg.nrrd from the NIfTI volume the series was written from (same grid, same voxels: so DICOM in reads
    what the NIfTI holds, and the SEG holds what the model made)."""
    from samed.core.dicom_seg import read_dicom_seg
    from samed.core.geometry import matrix_to_lps

    ct, (labels, names) = ct_abdomen
    origin, spacing, direction = matrix_to_lps(ct.ijk_to_ras)
    folder = tmp_path / "dicom" / "CT"
    write_series(folder, ct.array, origin=origin, row_dir=direction[:, 0], col_dir=direction[:, 1],
                 pixel_spacing=(spacing[1], spacing[0]), step=direction[:, 2] * spacing[2])
    liver_value = next(v for v, n in names.items() if n == "liver")
    liver = labels.array == liver_value
    k = 20
    rows, cols = np.nonzero(liver[k])
    box = f"{cols.min()},{rows.min()},{cols.max()},{rows.max()}"
    common = ["segment", folder, "--box", box, "--slice", k, "--propagate", "--max-slices", 5, "--name", "liver"]
    r = samed(*common, "--out", tmp_path / "liver.dcm")
    assert r.returncode == 0, r.stderr
    errors, warnings = dciodvfy(tmp_path / "liver.dcm")
    print("dciodvfy warnings:", warnings)
    assert not errors, errors
    nifti = ct.metadata["path"]
    r2 = samed(*([common[0], nifti] + common[2:]), "--out", tmp_path / "liver.seg.nrrd")
    assert r2.returncode == 0, r2.stderr

    volume = io.read_volume(folder)
    assert np.allclose(volume.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)
    from_seg = read_dicom_seg(tmp_path / "liver.dcm", volume)["liver"]
    nrrd = io.read_segmentation(tmp_path / "liver.seg.nrrd")
    assert np.allclose(nrrd.ijk_to_ras, ct.ijk_to_ras, atol=1e-4)
    assert np.array_equal(from_seg, io.resample_to(nrrd.volume.with_array(nrrd.segment_mask("liver")), volume).array)
    assert from_seg.sum() > 1000
    touched = sorted(set(np.nonzero(from_seg)[0]))
    assert touched[0] >= k - 5 and touched[-1] <= k + 5 and len(touched) >= 8
    # the SEG says how the segment was made: its provenance, read back by highdicom, names the box on slice k
    import highdicom
    from samed.core.provenance import PROVENANCE_TAG, Provenance

    seg = highdicom.seg.segread(str(tmp_path / "liver.dcm"))
    algorithm = seg.get_segment_description(1).algorithm_identification
    recorded = Provenance.from_dicom_parameter(algorithm.parameters[PROVENANCE_TAG])
    assert [(p.slice, p.kind) for p in recorded.prompts] == [(k, "box")]
    from_nrrd = Provenance.from_tag_value(next(s for s in nrrd.segments if s.name == "liver").tags[PROVENANCE_TAG])
    assert recorded.prompts == from_nrrd.prompts and recorded.model == from_nrrd.model
    # the right structure: Dice with the reference liver on the segmented slices
    on = np.zeros_like(liver)
    on[touched] = liver[touched]
    dice = 2 * (from_seg & on).sum() / (from_seg.sum() + on.sum())
    print(f"liver Dice on slices {touched[0]}..{touched[-1]}: {dice:.3f}")
    assert dice > 0.6  # a box misplaced by a flipped axis would give about 0
    seg = pydicom.dcmread(tmp_path / "liver.dcm")
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"
