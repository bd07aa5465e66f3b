"""samed.core.io: volumes, 2D images, labelmaps, Slicer segmentations, resampling, dataset folders."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
try:
    import samed  # noqa: F401
except ImportError:  # running from a checkout without an installed package
    sys.path.insert(0, str(ROOT / "SegmentAnythingMed"))

from samed.core import io  # noqa: E402
from samed.core.geometry import Volume, ijk_to_ras, matrix_from_lps  # noqa: E402

import slicerio
SHARED_DATA = ROOT.parent / "shared" / "data"
CT_PATH = Path(slicerio.get_testdata_file("CTChest4.nrrd"))
SEG_PATH = CT_PATH.parent / "Segmentation.seg.nrrd"
OVERLAP_PATH = CT_PATH.parent / "SegmentationOverlapping.seg.nrrd"
CT_SEGMENT_NAMES = ["ribs", "cervical vertebral column", "thoracic vertebral column", "lumbar vertebral column",
                    "right lung", "left lung", "tissue"]


def rotated_volume(shape_kji=(5, 6, 7), dtype=np.int16):
    """Non-trivial grid: rotated 30 deg about S and 10 deg about A, in LPS, anisotropic spacing."""
    a, b = np.radians(30), np.radians(10)
    rot_s = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rot_a = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    direction_lps = np.diag([-1.0, -1.0, 1.0]) @ rot_s @ rot_a
    matrix = matrix_from_lps([12.5, -40.25, 7.0], [0.7, 1.3, 2.5], direction_lps)
    rng = np.random.default_rng(0)
    return Volume(rng.integers(-1000, 1000, size=shape_kji).astype(dtype), matrix)


# ----------------------------------------------------------------------------------------------- volumes

@pytest.mark.parametrize("ext", [".nrrd", ".nii.gz", ".nii", ".mha"])
def test_volume_round_trip_keeps_voxels_and_geometry(tmp_path, ext):
    volume = rotated_volume()
    path = io.write_volume(volume, tmp_path / f"v{ext}")
    back = io.read_volume(path)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == volume.array.dtype
    tol = 1e-4 if ext.startswith(".nii") else 1e-9  # NIfTI stores the matrix in float32
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=tol)
    np.testing.assert_allclose(back.spacing_ijk, [0.7, 1.3, 2.5], atol=tol)


def test_volume_with_mirrored_axis_round_trips(tmp_path):
    volume = rotated_volume()
    volume.ijk_to_ras[:3, 0] *= -1  # left-handed grid (det < 0)
    for ext in (".nrrd", ".nii.gz"):
        back = io.read_volume(io.write_volume(volume, tmp_path / f"m{ext}"))
        np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-4)
        np.testing.assert_array_equal(back.array, volume.array)


def test_written_volumes_are_compressed(tmp_path):
    volume = Volume(np.zeros((40, 40, 40), np.int16), np.eye(4))
    assert io.write_volume(volume, tmp_path / "z.nrrd").stat().st_size < 10_000
    assert io.write_volume(volume, tmp_path / "z.nii.gz").stat().st_size < 10_000
    assert b"gzip" in (tmp_path / "z.nrrd").read_bytes()[:400]


def test_bool_volume_is_written_as_uint8(tmp_path):
    mask = rotated_volume().array > 0
    back = io.read_volume(io.write_volume(Volume(mask, np.eye(4)), tmp_path / "mask.nrrd"))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array.astype(bool), mask)


def test_volume_errors_name_the_file(tmp_path):
    missing = tmp_path / "nothing.nrrd"
    with pytest.raises(FileNotFoundError, match="nothing.nrrd"):
        io.read_volume(missing)
    odd = tmp_path / "scan.xyz"
    odd.write_text("x")
    with pytest.raises(ValueError, match=r"\.xyz.*\.nrrd.*\.nii\.gz"):
        io.read_volume(odd)
    broken = tmp_path / "broken.nrrd"
    broken.write_bytes(b"NRRD0004\ntype: float\nsizes: 10 10\n\n" + b"\x00" * 7)
    with pytest.raises(ValueError, match="broken.nrrd"):
        io.read_volume(broken)
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not nifti at all" * 10)
    with pytest.raises(ValueError, match="garbage.nii.gz"):
        io.read_volume(garbage)
    with pytest.raises(ValueError, match=r"\.png"):
        io.write_volume(rotated_volume(), tmp_path / "v.png")
    with pytest.raises(FileExistsError):
        io.write_volume(rotated_volume(), io.write_volume(rotated_volume(), tmp_path / "a.nrrd"), overwrite=False)


def test_file_extension_knows_compound_extensions():
    assert io.file_extension("a/B.Seg.NRRD") == ".seg.nrrd"
    assert io.file_extension("x.nii.gz") == ".nii.gz"
    assert io.file_extension("x.mrk.json") == ".mrk.json"
    assert io.file_extension("x.nrrd") == ".nrrd"


# ----------------------------------------------------------------------------------------------- 2D images

def test_read_image_2d_grey_rgb_and_rgba(tmp_path):
    import SimpleITK as sitk
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 255, (20, 30), dtype=np.uint8)
    rgba = rng.integers(0, 255, (20, 30, 4), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(grey), str(tmp_path / "g.png"))
    sitk.WriteImage(sitk.GetImageFromArray(rgba, isVector=True), str(tmp_path / "c.png"))
    sitk.WriteImage(sitk.GetImageFromArray(rgba[..., :3], isVector=True), str(tmp_path / "c.bmp"))
    out = io.read_image_2d(tmp_path / "g.png")
    assert out.shape == (20, 30) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, grey)
    np.testing.assert_array_equal(io.read_image_2d(tmp_path / "c.png"), rgba[..., :3])
    np.testing.assert_array_equal(io.read_image_2d(tmp_path / "c.bmp"), rgba[..., :3])
    with pytest.raises(ValueError, match=r"\.gif.*\.png"):
        (tmp_path / "x.gif").write_bytes(b"GIF89a")
        io.read_image_2d(tmp_path / "x.gif")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        io.read_image_2d(tmp_path / "bad.png")


def test_read_image_2d_shared_rgb_slice_and_mask():
    folder = SHARED_DATA / "images" / "ct-abdomen-slices"
    image = io.read_image_2d(folder / "images" / "s0114_111.png")
    mask = io.read_image_2d(folder / "masks" / "s0114_111.png")
    assert image.shape == (181, 258, 3) and image.dtype == np.uint8
    assert mask.shape == (181, 258) and mask.dtype == np.uint8 and mask.max() > 0


# ----------------------------------------------------------------------------------------------- CTChest4

def test_ctchest4_geometry_and_its_segmentation_line_up():
    ct = io.read_volume(CT_PATH)
    assert ct.shape_kji == (34, 128, 128)
    # file: LPS directions diag(-1, -1, 1) -> RAS axes point +R, +A, +S
    np.testing.assert_allclose(ct.ijk_to_ras[:3, :3], np.diag([3.04687595, 3.04687595, 10.0]), atol=1e-6)
    np.testing.assert_allclose(ct.ijk_to_ras[:3, 3], [-193.09599304, -216.39599609, -340.25], atol=1e-6)

    seg = io.read_segmentation(SEG_PATH)
    assert seg.names == CT_SEGMENT_NAMES
    assert seg.layers.shape == (1, 34, 128, 128)  # same grid as the CT: not cropped
    np.testing.assert_allclose(seg.ijk_to_ras, ct.ijk_to_ras, atol=1e-6)
    assert [s.label_value for s in seg.segments] == [1, 2, 3, 4, 5, 6, 7]
    assert seg.segments[4].id == "Segment_5"
    np.testing.assert_allclose(seg.segments[4].color, [0.0862745, 0.772549, 0.278431])

    right, left = seg.segment_mask("right lung"), seg.segment_mask("left lung")
    assert right.sum() == 34450 and left.sum() == 33700
    assert ct.array[right].mean() < -600 and ct.array[left].mean() < -600  # lungs are air
    assert ct.array[seg.segment_mask("ribs")].mean() > 100  # bone
    # the right lung lies on the patient's right: larger R coordinate than the left lung
    centroid = {name: ijk_to_ras(np.argwhere(m).mean(axis=0)[::-1], ct.ijk_to_ras)[0]
                for name, m in (("right", right), ("left", left))}
    assert centroid["right"][0] > centroid["left"][0] + 50


def test_read_label_of_seg_nrrd_gives_labelmap_and_names():
    volume, names = io.read_label(SEG_PATH)
    assert names == dict(enumerate(CT_SEGMENT_NAMES, start=1))
    assert volume.shape_kji == (34, 128, 128)
    assert np.bincount(volume.array.ravel())[5] == 34450


def test_overlapping_segments_live_on_layers():
    seg = io.read_segmentation(OVERLAP_PATH)
    assert seg.layers.shape == (2, 34, 128, 128)
    sphere = seg.find_segment("overlapping sphere")
    assert (sphere.layer, sphere.label_value) == (1, 1)
    sphere_mask = seg.segment_mask("Overlapping_Sphere")
    assert sphere_mask.sum() == 19139
    assert (sphere_mask & seg.segment_mask("tissue")).any()  # really overlapping
    with pytest.raises(io.LabelError, match="several segments"):
        seg.segment_mask(1)  # ribs (layer 0) and the sphere (layer 1) both use label 1
    volume, names = io.read_label(OVERLAP_PATH)
    assert names[8] == "overlapping sphere" and len(names) == 8
    np.testing.assert_array_equal(volume.array == 8, sphere_mask)


@pytest.mark.parametrize("label", ["right lung", "Right_Lung", "RIGHT  LUNG", "Segment_5", 5, "5"])
def test_reference_mask_finds_segment_by_name_id_or_value(label):
    mask, grid, description = io.reference_mask(SEG_PATH, label)
    assert mask.dtype == bool and mask.sum() == 34450
    assert grid.shape_kji == mask.shape and "right lung" in description
    np.testing.assert_allclose(grid.ijk_to_ras, io.read_volume(CT_PATH).ijk_to_ras, atol=1e-6)


def test_reference_mask_absent_label_lists_what_exists():
    with pytest.raises(io.LabelError) as err:
        io.reference_mask(SEG_PATH, "liver")
    assert "right lung" in str(err.value) and "Segmentation.seg.nrrd" in str(err.value)
    assert isinstance(err.value, ValueError)
    with pytest.raises(io.LabelError, match="tissue"):
        io.reference_mask(SEG_PATH, 9)


def test_reference_mask_on_labelmap_with_labels_json(tmp_path):
    array = np.zeros((5, 6, 7), np.uint8)
    array[1, 1:3, 1:4] = 1
    array[2:4, 3, 1:7] = 2
    array[0, 0, 0] = 9  # a value without a name
    io.write_volume(rotated_volume().with_array(array), tmp_path / "label.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps({"1": "right_lung", "2": "liver", "3": "spleen"}))
    volume, names = io.read_label(tmp_path / "label.nii.gz")
    assert names == {1: "right_lung", 2: "liver", 3: "spleen", 9: "label 9"}
    mask, grid, description = io.reference_mask(tmp_path / "label.nii.gz", "Right Lung")
    assert mask.sum() == 6 and "right_lung" in description
    np.testing.assert_allclose(grid.ijk_to_ras, rotated_volume().ijk_to_ras, atol=1e-4)
    assert io.reference_mask(tmp_path / "label.nii.gz", 2)[0].sum() == 12
    assert io.reference_mask(tmp_path / "label.nii.gz", "spleen")[0].sum() == 0  # named, but empty here
    with pytest.raises(io.LabelError, match=r"1 \(right_lung\).*2 \(liver\)"):
        io.reference_mask(tmp_path / "label.nii.gz", "kidney")
    with pytest.raises(io.LabelError, match="label.nii.gz"):
        io.reference_mask(tmp_path / "label.nii.gz", 7)


def test_float_labelmap_is_accepted_when_whole_numbers(tmp_path):
    array = np.zeros((3, 4, 5), np.float32)
    array[1, 2, 3] = 4.0
    io.write_volume(Volume(array), tmp_path / "f.nrrd")
    volume, names = io.read_label(tmp_path / "f.nrrd")
    assert np.issubdtype(volume.array.dtype, np.integer) and names == {4: "label 4"}
    array[0, 0, 0] = 0.5
    io.write_volume(Volume(array), tmp_path / "g.nrrd")
    with pytest.raises(ValueError, match="g.nrrd.*whole numbers"):
        io.read_label(tmp_path / "g.nrrd")


def ct_masks():
    ct = io.read_volume(CT_PATH)
    box = np.zeros(ct.shape_kji, bool)
    box[10:20, 30:60, 40:90] = True
    ball = np.zeros(ct.shape_kji, bool)
    kk, jj, ii = np.ogrid[:34, :128, :128]
    ball[(kk - 15) ** 2 * 9 + (jj - 60) ** 2 + (ii - 80) ** 2 < 20 ** 2] = True  # overlaps the box
    return ct, box, ball


# ----------------------------------------------------------------------------------------------- resampling

def crop(volume, k, j, i):
    """Sub-box of a volume with the origin moved like Slicer's cropped segmentations."""
    matrix = volume.ijk_to_ras.copy()
    matrix[:3, 3] = ijk_to_ras([[i.start, j.start, k.start]], volume.ijk_to_ras)[0]
    return Volume(volume.array[k, j, i].copy(), matrix)


def test_resample_to_places_cropped_mask_exactly(tmp_path):
    ct, box, ball = ct_masks()
    cropped = crop(ct.with_array(ball), slice(5, 26), slice(35, 90), slice(55, 110))
    assert cropped.array.sum() == ball.sum()
    placed = io.resample_to(cropped, ct)
    assert placed.array.dtype == bool
    np.testing.assert_array_equal(placed.array, ball)
    np.testing.assert_allclose(placed.ijk_to_ras, ct.ijk_to_ras)
    # through a cropped .seg.nrrd file, as Slicer writes them for a small segment
    path = io.write_segmentation(tmp_path / "cropped.seg.nrrd", {"ball": cropped.array}, cropped)
    mask, grid, _ = io.reference_mask(path, "ball")
    assert grid.shape_kji == (21, 55, 55)
    np.testing.assert_array_equal(io.resample_to(grid, ct).array, ball)


def test_resample_to_crops_what_falls_outside():
    ct, box, _ = ct_masks()
    small = crop(ct.with_array(box), slice(0, 15), slice(0, 45), slice(0, 60))
    back = io.resample_to(ct.with_array(box), small)  # larger -> smaller grid
    np.testing.assert_array_equal(back.array, box[:15, :45, :60])
    shifted = crop(ct.with_array(box), slice(5, 34), slice(20, 128), slice(30, 128))
    shifted.ijk_to_ras[:3, 3] -= ct.ijk_to_ras[:3, :3] @ [40, 30, 10]  # origin at CT voxel (i, j, k) = (-10, -10, -5)
    placed = io.resample_to(shifted, ct)
    expected = np.zeros_like(box)
    expected[0:24, 0:98, 0:88] = box[10:34, 30:128, 40:128]  # shifted voxel (k, j, i) = CT voxel (k-5, j-10, i-10)
    np.testing.assert_array_equal(placed.array, expected)


def test_resample_to_unaligned_grid_uses_nearest_neighbour():
    volume = rotated_volume((8, 10, 12))
    coarse = Volume(np.zeros((4, 5, 6)), volume.ijk_to_ras @ np.diag([2.0, 2.0, 2.0, 1.0]))
    np.testing.assert_array_equal(io.resample_to(volume, coarse).array, volume.array[::2, ::2, ::2])
    # the same voxels with i and k axes swapped: not aligned, nearest neighbour must reproduce a transpose
    permutation = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    swapped = Volume(np.zeros((12, 10, 8)), volume.ijk_to_ras @ permutation)
    out = io.resample_to(volume, swapped)
    np.testing.assert_array_equal(out.array, volume.array.transpose(2, 1, 0))
    mask = io.resample_to(volume.with_array(volume.array > 0), swapped)
    assert mask.array.dtype == bool
    linear = io.resample_to(Volume(volume.array.astype(np.float32), volume.ijk_to_ras), coarse,
                            interpolation="linear")
    np.testing.assert_allclose(linear.array, volume.array[::2, ::2, ::2], atol=1e-2)
    with pytest.raises(ValueError, match="interpolation"):
        io.resample_to(volume, swapped, interpolation="cubic")


# ----------------------------------------------------------------------------------------------- datasets

def test_list_dataset_2d_and_3d_layouts(tmp_path):
    import SimpleITK as sitk
    d2 = tmp_path / "set2d"
    (d2 / "images").mkdir(parents=True)
    (d2 / "masks").mkdir()
    for name in ("b", "a", "c"):
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4), np.uint8)), str(d2 / "images" / f"{name}.png"))
    for name in ("a", "b"):
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4), np.uint8)), str(d2 / "masks" / f"{name}.png"))
    (d2 / "labels.json").write_text('{"1": "lesion"}')
    info = io.list_dataset(d2)
    assert info.kind == "2d" and [it.name for it in info.items] == ["a", "b", "c"]
    assert info.items[0].mask == d2 / "masks" / "a.png" and info.missing_masks == ["c"]
    assert info.class_names == {1: "lesion"}

    d3 = tmp_path / "set3d"
    d3.mkdir()
    io.write_volume(rotated_volume(), d3 / "image.nii.gz")
    io.write_volume(rotated_volume(dtype=np.uint8), d3 / "label.nrrd")
    info = io.list_dataset(d3)
    assert info.kind == "3d" and info.items[0].image == d3 / "image.nii.gz" and info.items[0].mask == d3 / "label.nrrd"
    assert info.class_names == {}


def test_list_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        io.list_dataset(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=rf"{tmp_path.name}.*images/NAME.png.*image.nrrd.*notes.txt"):
        io.list_dataset(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    io.write_volume(rotated_volume(), bad / "image.nrrd")
    (bad / "labels.json").write_text("{not json")
    with pytest.raises(ValueError, match="labels.json"):
        io.list_dataset(bad)


def test_list_dataset_on_shared_data():
    us = io.list_dataset(SHARED_DATA / "images" / "us-breast-lesion")
    assert us.kind == "2d" and len(us.items) == 22 and not us.missing_masks and us.class_names == {1: "lesion"}
    ct = io.list_dataset(SHARED_DATA / "volumes" / "ct-abdomen")
    assert ct.kind == "3d" and ct.items[0].mask.name == "label.nii.gz" and ct.class_names[5] == "liver"
    brain = io.list_dataset(SHARED_DATA / "volumes" / "mr-brain-tumor")
    mask, grid, description = io.reference_mask(brain.items[0].mask, "tumor")
    assert mask.sum() == 4137 and "tumor" in description
    image = io.read_volume(brain.items[0].image)
    np.testing.assert_allclose(grid.ijk_to_ras, image.ijk_to_ras, atol=1e-6)


# ---------------------------------------------------------------------------------------------- writes are whole
@pytest.mark.parametrize("kind", ["volume", "segmentation"])
def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, kind):
    """Ctrl-C in the middle of writing (the real writer wrote part of the file): the file already there is intact."""
    import hashlib

    import SimpleITK as sitk
    import slicerio

    from samed.core.geometry import Volume

    grid = Volume(np.zeros((4, 5, 6), np.uint8), np.diag([0.5, 0.5, 2.0, 1.0]), {})
    mask = np.zeros(grid.shape_kji, bool)
    mask[1:3, 1:4, 2:5] = True
    path = tmp_path / ("old.nrrd" if kind == "volume" else "old.seg.nrrd")

    def write():
        if kind == "volume":
            io.write_volume(grid.with_array(mask.astype(np.uint8)), path)
        else:
            io.write_segmentation(path, {"a": mask}, grid, overwrite=True)
    write()
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    def cut_short(real):
        def writer(*args, **kwargs):
            real(*args, **kwargs)
            target = [a for a in args if isinstance(a, str)][-1]
            with open(target, "r+b") as f:
                f.truncate(max(1, f.seek(0, 2) // 2))
            raise KeyboardInterrupt
        return writer
    if kind == "volume":
        monkeypatch.setattr(sitk, "WriteImage", cut_short(sitk.WriteImage))
    else:
        monkeypatch.setattr(slicerio, "write_segmentation", cut_short(slicerio.write_segmentation))
    mask[:] = True
    with pytest.raises(KeyboardInterrupt):
        write()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
