"""`samed web`'s command line and file rules, without a browser: loopback unless a token is given, volumes only
from the --data folders, the saved segmentation written whole."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT

from samed.web.files import DataFolders, write_segmentation


def samed(*args, env=None):
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = str(ROOT / "SegmentAnythingMed")
    return subprocess.run([sys.executable, "-m", "samed.cli.main", *args], capture_output=True, text=True,
                          env=full_env, cwd=str(ROOT), timeout=120)


def test_help_lists_web():
    run = samed("--help")
    assert run.returncode == 0 and "web" in run.stdout


def test_non_loopback_address_without_token_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SAMED_WEB_TOKEN", "SAMED_TOKEN")}
    run = samed("web", "--host", "0.0.0.0", "--data", str(tmp_path), env=env)
    assert run.returncode == 2
    assert "refusing to listen on 0.0.0.0 without a token" in run.stderr
    assert "Traceback" not in run.stderr


def test_missing_data_folder_is_a_clear_error(tmp_path):
    run = samed("web", "--data", str(tmp_path / "nowhere"))
    assert run.returncode == 2 and "--data" in run.stderr and "no such folder" in run.stderr


@pytest.fixture
def data_dir(tmp_path):
    root = tmp_path / "scans"
    (root / "sub").mkdir(parents=True)
    for name in ("a.nrrd", "sub/b.nii.gz", "labels.seg.nrrd", "notes.txt"):
        (root / name).write_bytes(b"x")
    (tmp_path / "secret.nrrd").write_bytes(b"x")
    return root


def test_only_volumes_of_the_data_folders_are_offered_and_opened(data_dir):
    data = DataFolders([str(data_dir)])
    assert data.volumes() == ["scans/a.nrrd", "scans/sub/b.nii.gz"]
    assert data.resolve("scans/sub/b.nii.gz") == data_dir / "sub" / "b.nii.gz"
    for name in ("scans/../secret.nrrd", str(data_dir.parent / "secret.nrrd"), "scans/labels.seg.nrrd",
                 "scans/notes.txt", "other/a.nrrd", "scans/", "scans/missing.nrrd"):
        with pytest.raises(ValueError, match="not a volume in the server's data folders"):
            data.resolve(name)


def test_references_are_the_segments_of_the_segmentation_files(ctchest):
    from samed.web.files import reference_choices

    choices = reference_choices(DataFolders([str(ctchest[0].parent)]))
    assert "data/Segmentation.seg.nrrd: right lung" in choices
    assert not [c for c in choices if "CTChest4" in c]


def test_a_link_out_of_the_data_folder_is_refused(data_dir):
    (data_dir / "link.nrrd").symlink_to(data_dir.parent / "secret.nrrd")
    data = DataFolders([str(data_dir)])
    assert "scans/link.nrrd" not in data.volumes()
    with pytest.raises(ValueError):
        data.resolve("scans/link.nrrd")


def test_saved_segmentation_replaces_the_file_whole(tmp_path, ctchest):
    pytest.importorskip("slicer")
    import slicer

    from samed.core.segmentation_file import read_segmentation

    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    node = logic.LoadSegmentationFromFile(str(ctchest[1]), False, "reference")
    assert node is not None
    out = tmp_path / "out" / "x.seg.nrrd"
    out.parent.mkdir()
    out.write_text("old")
    write_segmentation(node, out)
    assert [p.name for p in out.parent.iterdir()] == ["x.seg.nrrd"]
    assert read_segmentation(out).names == read_segmentation(ctchest[1]).names


def test_no_data_folder_is_a_clear_error():
    run = samed("web")
    assert run.returncode == 2 and "--data DIR (or --sample-data)" in run.stderr


def test_a_reference_outside_the_data_folders_is_refused(data_dir, tmp_path):
    (tmp_path / "outside.seg.nrrd").write_bytes(b"x")
    (data_dir / "inside.seg.nrrd").write_bytes(b"x")
    data = DataFolders([str(data_dir)])
    assert data.segmentations() == ["scans/inside.seg.nrrd", "scans/labels.seg.nrrd"]
    for name in ("scans/../outside.seg.nrrd", str(tmp_path / "outside.seg.nrrd"), "scans/a.nrrd"):
        with pytest.raises(ValueError, match="not a segmentation file in the server's data folders"):
            data.resolve_segmentation(name)


@pytest.fixture
def uploads():
    pytest.importorskip("trame", reason="the web extra is not installed (scripts/setup.sh --test)")
    from samed.web.uploads import Uploads

    u = Uploads(max_mb=64)
    yield u
    u.close()
    assert not u.folder.exists()


def test_upload_keeps_a_checked_volume_under_its_bare_name(uploads, ctchest):
    content = ctchest[0].read_bytes()
    assert uploads.save({"name": "../../evil.nrrd", "content": content}) == "uploads/evil.nrrd"
    assert (uploads.folder / "evil.nrrd").read_bytes() == content
    assert sorted(p.name for p in uploads.folder.iterdir()) == ["evil.nrrd"]


@pytest.mark.parametrize("name, content, message", [
    ("scan.exe", b"x", "upload a volume in one file"),
    ("labels.seg.nrrd", b"x", "upload a volume in one file"),
    ("scan.nhdr", b"x", "upload a volume in one file"),
    ("scan.nrrd", b"", "is empty"),
    ("scan.nrrd", b"NRRD0004\nnot a header\n", "scan.nrrd"),
])
def test_upload_refuses_what_the_cli_would_refuse(uploads, name, content, message):
    with pytest.raises(ValueError, match=message):
        uploads.save({"name": name, "content": content})
    assert list(uploads.folder.iterdir()) == [], "a refused upload left a file"


def test_upload_refuses_a_truncated_volume_and_a_too_large_one(uploads, ctchest):
    content = ctchest[0].read_bytes()
    with pytest.raises(ValueError, match="cut.nrrd"):
        uploads.save({"name": "cut.nrrd", "content": content[: len(content) // 2]})
    uploads.max_bytes = len(content) - 1
    with pytest.raises(ValueError, match="--max-upload-mb"):
        uploads.save({"name": "big.nrrd", "content": content})
    assert list(uploads.folder.iterdir()) == []
