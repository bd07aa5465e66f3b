"""`samed segment` never damages a file the user has, and refuses outputs and inputs it cannot use before the model
loads: --out onto an input (any spelling, a link), unwritable outputs, a reference on another patient's grid, a 4D
NIfTI. Real processes, real files copied to tmp_path."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from samed.core import io

BOX = ["--slice", "20", "--box", "55,36,106,98"]


def samed(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "samed.cli.main", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=900, env=env)


def digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def one_clear_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


@pytest.fixture()
def patient(ctchest, tmp_path):
    """A copy of CTChest4 in tmp_path/scans (the user's file) and its segmentation."""
    ct, seg = ctchest
    d = tmp_path / "scans"
    d.mkdir()
    shutil.copy(ct, d / "v.nrrd")
    shutil.copy(seg, d / "ref.seg.nrrd")
    return d / "v.nrrd", d / "ref.seg.nrrd"


# ---------------------------------------------------------------------------------------------- defect 1: --out = input
@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink", "reference"])
def test_out_onto_an_input_is_refused_and_the_input_is_intact(patient, tmp_path, spelling):
    v, ref = patient
    before = {p: digest(p) for p in (v, ref)}
    extra = []
    if spelling == "same":
        out = v
    elif spelling == "dotted":
        (tmp_path / "other").mkdir()
        out = "./../scans/v.nrrd"
        cwd = tmp_path / "other"
    elif spelling == "symlink":
        out = tmp_path / "link.nrrd"
        os.symlink(v, out)
    elif spelling == "hardlink":
        out = tmp_path / "hard.nrrd"
        os.link(v, out)
    else:  # the output would replace the reference it is compared with
        out = tmp_path / "r.seg.nrrd"
        os.symlink(ref, out)
        extra = ["--reference", ref, "--reference-label", "right lung"]
    # --model sam_vit_b without a checkpoint fails when the model loads: the output check must come first
    r = samed("segment", v, *BOX, "--out", out, "--overwrite", "--model", "sam_vit_b", *extra,
              cwd=tmp_path / "other" if spelling == "dotted" else None)
    one_clear_error(r, "input")
    assert {p: digest(p) for p in (v, ref)} == before


def test_out_onto_the_input_with_the_real_model_keeps_the_patient_image(patient, tmp_path):
    """The issue's repro: the default model runs and the label file would replace the patient image."""
    v, _ = patient
    before = digest(v)
    (tmp_path / "other").mkdir()
    r = samed("segment", v, *BOX, "--out", "./../scans/v.nrrd", "--overwrite", cwd=tmp_path / "other")
    one_clear_error(r, "input")
    assert digest(v) == before


# ---------------------------------------------------------------------------------------------- defect 7: unwritable
@pytest.mark.parametrize("where", ["sys", "parent_is_file", "folder_is_file", "readonly_fs"])
def test_unwritable_output_is_refused_before_the_model_loads(patient, tmp_path, where):
    v, _ = patient
    if where == "sys":
        out = "/sys/x.seg.nrrd"
    elif where == "parent_is_file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "x.seg.nrrd"
    elif where == "folder_is_file":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "sub" / "x.seg.nrrd"
    else:
        out = "/proc/x.seg.nrrd"  # read-only for root too (tmp_path permissions do not stop root)
    r = samed("segment", v, *BOX, "--out", out, "--model", "sam_vit_b")
    one_clear_error(r, "--out")
    assert "Errno" not in r.stderr


def test_unwritable_report_is_refused_before_the_model_loads(patient, tmp_path):
    v, ref = patient
    (tmp_path / "afile").write_text("x")
    r = samed("segment", v, *BOX, "--out", tmp_path / "o.seg.nrrd", "--reference", ref, "--reference-label",
              "right lung", "--report", tmp_path / "afile" / "r.json", "--model", "sam_vit_b")
    one_clear_error(r, "--report")


def test_report_onto_an_input_is_refused(patient, tmp_path):
    v, ref = patient
    before = digest(ref)
    r = samed("segment", v, *BOX, "--out", tmp_path / "o.seg.nrrd", "--reference", ref, "--reference-label",
              "right lung", "--report", ref, "--model", "sam_vit_b")
    one_clear_error(r, "input")
    assert digest(ref) == before


def test_overwrite_replaces_the_output_whole_and_leaves_no_temporary_file(patient, tmp_path):
    v, _ = patient
    out = tmp_path / "res" / "o.nrrd"
    out.parent.mkdir()
    out.write_text("old result")
    r = samed("segment", v, *BOX, "--out", out, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert io.read_volume(out).array.sum() > 100
    assert sorted(p.name for p in out.parent.iterdir()) == ["o.nrrd"]


# ---------------------------------------------------------------------------------------------- defect 10: other grid
def test_reference_on_another_patients_grid_says_the_grids_do_not_overlap(patient, tmp_path):
    v, _ = patient
    lab = io.read_volume(v)
    mask = np.zeros(lab.array.shape, np.uint8)
    mask[10:20, 30:60, 40:80] = 1
    far = lab.with_array(mask)
    far.ijk_to_ras = far.ijk_to_ras.copy()
    far.ijk_to_ras[:3, 3] += 5000.0  # another patient's scanner coordinates
    io.write_volume(far, tmp_path / "other.nrrd")
    r = samed("segment", v, *BOX, "--out", tmp_path / "o.nrrd", "--reference", tmp_path / "other.nrrd",
              "--model", "sam_vit_b")
    one_clear_error(r, "do not overlap")


# ---------------------------------------------------------------------------------------------- defect 12: 4D NIfTI
@pytest.fixture()
def nifti_4d(shared_data, tmp_path):
    import SimpleITK as sitk

    image = sitk.ReadImage(str(shared_data / "volumes" / "ct-abdomen" / "image.nii.gz"))
    a = sitk.GetArrayFromImage(image)
    path = tmp_path / "dyn.nii.gz"
    arr = np.stack([a, a // 2])  # [t, k, j, i]
    img = sitk.GetImageFromArray(arr, isVector=False)
    img.SetSpacing(list(image.GetSpacing()) + [1.0])
    sitk.WriteImage(img, str(path))
    return path, arr


def test_4d_nifti_says_it_is_4d_and_how_to_pick_a_volume(nifti_4d, tmp_path):
    path, _ = nifti_4d
    r = samed("segment", path, "--slice", "10", "--box", "20,20,60,60", "--out", tmp_path / "o.nrrd",
              "--model", "sam_vit_b")
    one_clear_error(r, "4D", "--volume-index")


def test_volume_index_picks_one_volume_of_a_4d_nifti(nifti_4d, tmp_path):
    path, arr = nifti_4d
    out = tmp_path / "o.nrrd"
    r = samed("segment", path, "--volume-index", "1", "--slice", "10", "--box", "20,20,60,60", "--out", out)
    assert r.returncode == 0, r.stderr
    assert io.read_volume(out).array.shape == arr.shape[1:]
    r = samed("segment", path, "--volume-index", "2", "--slice", "10", "--box", "20,20,60,60", "--out", out,
              "--overwrite", "--model", "sam_vit_b")
    one_clear_error(r, "--volume-index", "0..1")


# ---------------------------------------------------------------------------------------------- evaluate --out
@pytest.mark.parametrize("where", ["sys", "parent_is_file", "out_is_file", "dataset"])
def test_evaluate_refuses_an_output_folder_it_cannot_use_before_the_model_loads(shared_data, tmp_path, where):
    dataset = tmp_path / "set"
    shutil.copytree(shared_data / "images" / "ct-abdomen-slices", dataset)
    before = {p.name: digest(p) for p in dataset.rglob("*") if p.is_file()}
    (tmp_path / "afile").write_text("x")
    out = {"sys": "/sys/ev", "parent_is_file": tmp_path / "afile" / "ev", "out_is_file": tmp_path / "afile",
           "dataset": dataset}[where]
    r = samed("evaluate", dataset, "--out", out, "--model", "sam_vit_b")
    one_clear_error(r, "--out")
    assert "Errno" not in r.stderr
    assert {p.name: digest(p) for p in dataset.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------------------------------- defect 2: damaged input
@pytest.mark.parametrize("which", ["image", "reference"])
def test_a_truncated_nii_gz_is_refused_before_the_model_loads(shared_data, tmp_path, which):
    src = shared_data / "volumes" / "ct-abdomen"
    image, label = tmp_path / "image.nii.gz", tmp_path / "label.nii.gz"
    shutil.copy(src / "image.nii.gz", image)
    shutil.copy(src / "label.nii.gz", label)
    damaged = image if which == "image" else label
    data = damaged.read_bytes()
    damaged.write_bytes(data[:len(data) // 2])  # the repro: the first half of the file
    r = samed("segment", image, "--slice", "15", "--box", "30,30,80,80", "--out", tmp_path / "o.nrrd",
              "--reference", label, "--reference-label", "1", "--model", "sam_vit_b")
    one_clear_error(r, "truncated", damaged.name)
    assert not (tmp_path / "o.nrrd").exists()
