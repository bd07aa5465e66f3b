"""Refining an existing segmentation (samed.core.refine) on synthetic volumes where the answer is known.

The fake model segments the bright pixels (grey > 100) inside the box it is given, as LiteMedSAM does on a bright
object on a dark background (it never looks outside the box), grown by one pixel: LiteMedSAM's outline lies about
1 px outside an undegraded reference (fit on the shared volumes' undegraded references, ``RefineSettings.
model_bias_px``). It takes boxes only, like LiteMedSAM (``engines.models``: prompt_kinds box).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from samed.core.prompts import BOX, Prediction
from samed.core.refine import (CORRECTED, ORIGINAL, RefineSettings, check_structure, dice, grow_mask, prompt_box,
                               refine_structure, shift_mask)
from test_key_slices import BrightInBoxBackend as KeySliceFake


class BrightInBoxBackend(KeySliceFake):
    """test_key_slices' box-only fake (bright pixels inside the box), grown by ``bias_px`` inside the box."""

    def __init__(self, threshold: int = 100, bias_px: int = 1):
        super().__init__(threshold)
        self.bias_px = bias_px
        self.calls = []  # (slice picture key, box)

    def decode(self, handle, prompt, multimask=None):
        if prompt.box_xy is None or prompt.kinds() != {BOX}:
            raise ValueError("box-only model")
        pic = self.pictures[handle.key]
        self.calls.append((handle.key, np.asarray(prompt.box_xy)))
        x0, y0, x1, y1 = np.round(prompt.box_xy).astype(int)
        inside = np.zeros(pic.shape[:2], bool)
        inside[y0:y1 + 1, x0:x1 + 1] = True
        mask = inside & (pic[..., 0] > self.threshold)
        if self.bias_px and mask.any():
            mask = ndimage.binary_dilation(mask, iterations=self.bias_px) & inside
        return Prediction(mask[None], [0.9 if mask.any() else 0.1])



def ellipse(a, b, centre=(32, 34), shape=(64, 72)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - centre[0]) / b) ** 2 + ((xx - centre[1]) / a) ** 2 <= 1.0


# the structure: 9 slices of ellipses growing then shrinking, at grey 200 on grey 10
TRUTH = [ellipse(a, b) for a, b in [(6, 4), (9, 6), (12, 8), (14, 9), (15, 10), (14, 9), (12, 8), (9, 6), (6, 4)]]


def pictures(masks, extra=None):
    pics = []
    for k, m in enumerate(masks):
        pic = np.full(m.shape + (3,), 10, np.uint8)
        pic[m] = 200
        if extra is not None and extra[k] is not None:
            pic[extra[k]] = 200
        pics.append(pic)
    return pics


def run(original, pics=None, backend=None, settings=None):
    pics = pics or pictures(TRUTH)
    backend = backend or BrightInBoxBackend()
    return refine_structure(backend, lambda i: pics[i], dict(enumerate(original)), settings)


def volume_dice(masks_by_slice, truth=TRUTH):
    return dice(np.stack([masks_by_slice[i] for i in range(len(truth))]), np.stack(truth))


def test_shift_and_grow_masks():
    m = np.zeros((6, 7), bool)
    m[2:4, 2:5] = True
    moved = shift_mask(m, 1, -2)
    assert moved[3:5, 0:3].all() and moved.sum() == m.sum()
    assert not shift_mask(m, 0, 9).any()  # moved off the slice
    assert grow_mask(m, 1).sum() == 6 + 10 and grow_mask(m, -1).sum() == 0
    assert np.array_equal(grow_mask(m, 0), m)


def test_each_slice_is_prompted_once_with_the_original_masks_box_plus_margin():
    backend = BrightInBoxBackend()
    original = list(TRUTH) + [np.zeros_like(TRUTH[0])]  # a slice without the structure is not prompted
    pics = pictures(TRUTH) + pictures([np.zeros_like(TRUTH[0])])
    result = run(original, pics, backend)
    assert len(backend.calls) == len(TRUTH)
    box = backend.calls[4][1]  # slice 4: columns 19..49, rows 22..42; + 2 px, + 5 % of the grown box
    assert np.allclose(box, [19 - 2 - 1.75, 22 - 2 - 1.25, 49 + 2 + 1.75, 42 + 2 + 1.25])
    assert np.allclose(prompt_box(TRUTH[4], RefineSettings()), box)
    assert sorted(result.model_masks) == list(range(len(TRUTH)))
    assert result.choice[len(TRUTH)] == ORIGINAL and not result.masks[len(TRUTH)].any()


def test_an_undegraded_original_is_trusted_and_comes_back_unchanged():
    result = run(TRUTH)
    assert result.check.trusted, result.check.describe()
    assert abs(result.check.offset_px) < 0.5 and np.abs(result.check.measured_shift_yx).max() < 0.5
    assert set(result.choice.values()) == {ORIGINAL}
    assert all(np.array_equal(result.masks[i], TRUTH[i]) for i in range(len(TRUTH)))


@pytest.mark.parametrize("degrade, grow_px, shift_yx", [
    (lambda m: grow_mask(m, 2), -2, (0, 0)),
    (lambda m: grow_mask(m, -2), 2, (0, 0)),
    (lambda m: shift_mask(m, 0, 2), 0, (0, -2)),
    (lambda m: shift_mask(m, -2, 0), 0, (2, 0)),
])
def test_a_uniformly_degraded_original_is_measured_and_corrected(degrade, grow_px, shift_yx):
    original = [degrade(m) for m in TRUTH]
    result = run(original)
    assert (result.check.grow_px, result.check.shift_yx) == (grow_px, shift_yx), result.check.describe()
    before, after = volume_dice(dict(enumerate(original))), volume_dice(result.masks)
    assert after > 0.97 and after > before + 0.1, (before, after)


def test_a_model_whose_bias_differs_is_refused_by_the_images_edges():
    """The bias is what separates "the model's outline is 1 px outside, as always" from "the original is 1 px too
    small". A model whose bias is not the one assumed (model_bias_px 0 here; held out: LiteMedSAM on CTChest4's
    lungs lies ~0 px outside) reads a right original as 1 px too small; the image's edges lie on the original's
    outline and refuse the grow."""
    blind = run(TRUTH, settings=RefineSettings(model_bias_px=0.0, edge_veto=False))
    assert blind.check.grow_px == 1 and volume_dice(blind.masks) < 0.95
    result = run(TRUTH, settings=RefineSettings(model_bias_px=0.0))
    assert result.check.edge_grow_px == 0 and "grow +1 px" in result.check.vetoed, result.check.describe()
    assert result.check.trusted and all(np.array_equal(result.masks[i], TRUTH[i]) for i in range(len(TRUTH)))
    moved = {i: shift_mask(grow_mask(m, 1), 2, 0) for i, m in enumerate(TRUTH)}  # a model 2 rows off the image
    pics = pictures(TRUTH)
    from samed.core.refine import edge_strengths

    check = check_structure(dict(enumerate(TRUTH)), moved, edges=edge_strengths(dict(enumerate(pics))))
    assert check.shift_yx == (0, 0) and check.edge_shift_yx == (0, 0) and "shift" in check.vetoed


def test_a_slice_the_model_does_not_support_keeps_its_original():
    original = [grow_mask(m, 2) for m in TRUTH]
    original[4] = TRUTH[4].copy()  # this slice was right: shrinking it by 2 px would be wrong
    result = run(original)
    assert result.check.grow_px == -2
    assert result.choice[4] == ORIGINAL and np.array_equal(result.masks[4], TRUTH[4])
    assert all(result.choice[i] == CORRECTED for i in range(len(TRUTH)) if i != 4)
    assert volume_dice(result.masks) > 0.97


def test_leaks_into_a_neighbour_on_some_slices_do_not_move_a_right_original():
    """The model leaks into a bright neighbour inside the box on a third of the slices (as LiteMedSAM leaks from the
    liver into the stomach): points farther than the window from the other outline are left out of the fit."""
    blob = np.zeros_like(TRUTH[0])
    blob[21:24, 17:20] = True  # in slice 3..5's boxes (corner), 4+ px off the ellipse
    extra = [blob if k in (3, 4, 5) else None for k in range(len(TRUTH))]
    backend = BrightInBoxBackend()
    result = run(TRUTH, pictures(TRUTH, extra), backend)
    assert result.model_masks[4][22, 18], "the fake must leak into the blob for this test to mean anything"
    assert result.check.trusted, result.check.describe()
    assert all(np.array_equal(result.masks[i], TRUTH[i]) for i in range(len(TRUTH)))


def test_a_model_that_finds_nothing_leaves_the_original_as_it_is():
    dark = [np.full(m.shape + (3,), 10, np.uint8) for m in TRUTH]
    result = run(TRUTH, dark)
    assert result.check.trusted and all(np.array_equal(result.masks[i], TRUTH[i]) for i in range(len(TRUTH)))


def test_an_empty_original_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="empty"):
        run([np.zeros_like(m) for m in TRUTH])
    with pytest.raises(ValueError, match="min_offset_px"):
        run(TRUTH, settings=RefineSettings(min_offset_px=0))


def test_check_structure_reads_a_pure_shift_as_a_shift():
    model = {i: shift_mask(grow_mask(m, 1), 0, 3) for i, m in enumerate(TRUTH)}
    check = check_structure(dict(enumerate(TRUTH)), model)
    assert check.shift_yx == (0, 3) and check.grow_px == 0, check.describe()
    assert abs(check.measured_shift_yx[1] - 3) < 0.6


def test_a_slice_where_the_model_finds_nothing_keeps_its_original():
    original = [grow_mask(m, 2) for m in TRUTH]
    pics = pictures(TRUTH)
    pics[4] = np.full_like(pics[4], 10)  # the model finds nothing on slice 4: no support for shrinking it
    result = run(original, pics)
    assert result.check.grow_px == -2 and not result.model_masks[4].any()
    assert result.choice[4] == ORIGINAL and np.array_equal(result.masks[4], original[4])


# ---- samed refine as a user runs it: a real process, the real LiteMedSAM, real files -----------------------------
@pytest.fixture(scope="module")
def dilated_tumour(shared_data, tmp_path_factory):
    """mr-brain-tumor and its tumour reference dilated by 2 px in each slice, written as a .seg.nrrd."""
    from samed.core import io

    folder = shared_data / "volumes" / "mr-brain-tumor"
    image = folder / "image.nrrd"
    volume = io.read_volume(image)
    ref = io.resample_to(io.read_volume(folder / "label.nrrd"), volume).array == 1
    dilated = np.stack([grow_mask(m, 2) for m in ref])
    seg = tmp_path_factory.mktemp("refine") / "coarse.seg.nrrd"
    io.write_segmentation(seg, {"tumor": dilated}, volume)
    return image, seg, ref, dilated


def _samed(*args):
    from test_cli import samed

    return samed(*args)


@pytest.fixture(scope="module")
def refined_locally(dilated_tumour, tmp_path_factory):
    """``samed refine`` of the dilated tumour, in-process torch engine: (process result, output, input hashes)."""
    import hashlib

    image, seg, _, _ = dilated_tumour
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (image, seg)}
    out = tmp_path_factory.mktemp("refined") / "refined.seg.nrrd"
    r = _samed("refine", image, "--segmentation", seg, "--label", "tumor", "--out", out, "--engine", "torch",
               "--device", "cpu")
    return r, out, before


def test_samed_refine_raises_the_dice_of_a_dilated_tumour_and_leaves_its_input_alone(dilated_tumour,
                                                                                       refined_locally):
    import hashlib

    from samed.core import io

    image, seg, ref, dilated = dilated_tumour
    r, out, before = refined_locally
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    assert "tumor" in r.stdout and "corrected: grown by -" in r.stdout
    refined = io.read_segmentation(out).segment_mask("tumor") > 0
    assert refined.shape == ref.shape
    d_before, d_after = dice(dilated, ref), dice(refined, ref)
    assert d_after > d_before + 0.03, (d_before, d_after)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (image, seg)} == before
    again = _samed("refine", image, "--segmentation", seg, "--label", "tumor", "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr, again.stderr  # no model run, nothing replaced


def test_samed_refine_with_the_real_model_records_the_refinement_in_the_segments_provenance(dilated_tumour,
                                                                                           refined_locally):
    from samed.core import io
    from samed.core.provenance import read_segment_provenance

    _, seg, _, dilated = dilated_tumour
    r, out, _ = refined_locally
    assert r.returncode == 0, r.stderr
    written = io.read_segmentation(out)
    refined = written.segment_mask("tumor") > 0
    changed = [k for k in range(refined.shape[0]) if not np.array_equal(refined[k], dilated[k])]
    prov = read_segment_provenance(written, "tumor")
    assert prov.propagation["mode"] == "refine" and prov.propagation["changed"] == changed and changed
    assert prov.propagation["source"]["file"] == seg.name and prov.propagation["source"]["segment"] == "tumor"
    assert prov.model == "litemedsam" and prov.engine.startswith("torch") and prov.image == "image.nrrd"


def test_samed_refine_through_the_model_service_gives_the_in_process_result(dilated_tumour, refined_locally,
                                                                            samed_service, tmp_path):
    from samed.core import io

    image, seg, _, _ = dilated_tumour
    out = tmp_path / "remote.seg.nrrd"
    r = _samed("refine", image, "--segmentation", seg, "--label", "tumor", "--out", out, "--backend",
               samed_service.url)
    assert r.returncode == 0, r.stderr + samed_service.log()
    local = io.read_segmentation(refined_locally[1]).segment_mask("tumor")
    assert np.array_equal(io.read_segmentation(out).segment_mask("tumor"), local)


@pytest.mark.parametrize("args, message", [
    (["--label", "liver"], "no segment"),
    (["--label", "7"], "no segment"),
    (["--out", "{seg}"], "never writes over its inputs"),
    (["--out", "{tmp}/o.nrrd"], "ending in .seg.nrrd"),
    (["--boxes", "{tmp}/boxes.csv"], "not allowed with argument --segmentation"),
    (["--box-margin", "-1"], "box margins"),
])
def test_samed_refine_bad_input_ends_with_exit_2_and_a_clear_message(args, message, dilated_tumour, tmp_path):
    image, seg, _, _ = dilated_tumour
    args = [str(a).format(seg=seg, tmp=tmp_path) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "o.seg.nrrd")]
    r = _samed("refine", image, "--segmentation", seg, *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_samed_refine_boxes_from_a_detectors_csv(dilated_tumour, tmp_path):
    from samed.core import io
    from samed.core.prompts import box_from_mask

    image, _, ref, _ = dilated_tumour
    slices = [int(k) for k in np.flatnonzero(ref.any(axis=(1, 2)))][:2]
    rows = ["slice,x0,y0,x1,y1"] + [",".join(str(int(v)) for v in [k, *box_from_mask(ref[k], 2)]) for k in slices]
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("\n".join(rows) + "\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(rows[1] + "\n" + rows[1] + "\n")
    r = _samed("refine", image, "--boxes", bad, "--out", tmp_path / "b.seg.nrrd")
    assert r.returncode == 2 and "row 2: slice" in r.stderr and "one box per slice" in r.stderr, r.stderr
    out = tmp_path / "detected.seg.nrrd"
    r = _samed("refine", image, "--boxes", boxes, "--name", "tumour", "--out", out, "--engine", "torch",
               "--device", "cpu")
    assert r.returncode == 0, r.stderr
    mask = io.read_segmentation(out).segment_mask("tumour") > 0
    assert sorted(np.flatnonzero(mask.any(axis=(1, 2)))) == slices
    assert dice(mask[slices], ref[slices]) > 0.7
    from samed.core.provenance import read_segment_provenance

    how = read_segment_provenance(io.read_segmentation(out), "tumour")  # the detector's boxes, as prompts
    assert how.prompt_source == "boxes" and how.propagation is None and how.tool == "samed refine"
    assert [p.slice for p in how.prompts] == slices and all(p.kind == "box" for p in how.prompts)


def test_a_segmentation_made_on_a_coarser_grid_is_found_and_interpolated_first():
    from samed.core.refine import coarse_grid, refine_mask, smooth_coarse

    truth = np.stack(TRUTH)
    assert coarse_grid(truth) == ((1, 0),) * 3  # a smooth structure is not taken for a coarse one
    for phase in (0, 1):
        shifted = np.roll(truth, phase, axis=0)
        coarse = shifted[::2, ::2, ::2].repeat(2, 0).repeat(2, 1).repeat(2, 2)[: truth.shape[0], : truth.shape[1],
                                                                                  : truth.shape[2]]
        coarse = np.roll(coarse, phase, axis=0)  # blocks start at slice 1: the first block is one slice long
        grid = coarse_grid(coarse)
        assert grid == ((2, phase), (2, 0), (2, 0)), grid
        smooth = smooth_coarse(coarse, grid)
        truth_p = np.roll(shifted, phase, axis=0)
        assert dice(smooth, truth_p) > dice(coarse, truth_p), (dice(coarse, truth_p), dice(smooth, truth_p))
    coarse = truth[::2, ::2, ::2].repeat(2, 0).repeat(2, 1).repeat(2, 2)[: truth.shape[0]]
    backend = BrightInBoxBackend()
    pics = pictures(TRUTH)
    refined, result = refine_mask(backend, lambda i: pics[i], coarse, 0)
    assert result.coarse_grid == ((2, 0), (2, 0), (2, 0)) and refined.shape == truth.shape
    assert dice(refined, truth) > dice(coarse, truth)
    off, result = refine_mask(backend, lambda i: pics[i], coarse, 0, RefineSettings(smooth_coarse_grid=False))
    assert result.coarse_grid == ((1, 0),) * 3


def test_samed_refine_asks_which_structures_when_the_labelmap_holds_several(shared_data, tmp_path):
    folder = shared_data / "volumes" / "ct-abdomen"
    r = _samed("refine", folder / "image.nii.gz", "--segmentation", folder / "label.nii.gz", "--out",
               tmp_path / "o.seg.nrrd")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "holds 41 structures (1 (spleen), 2 (kidney_right)" in r.stderr and "--label N|NAME" in r.stderr
    assert not (tmp_path / "o.seg.nrrd").exists()


def test_progress_is_reported_per_slice_and_cancel_stops_before_the_next_slice():
    from samed.core.refine import RefineCancelled

    seen = []
    pics = pictures(TRUTH)
    refine_structure(BrightInBoxBackend(), lambda i: pics[i], dict(enumerate(TRUTH)),
                     progress=lambda done, total: seen.append((done, total)))
    assert seen == [(n, len(TRUTH)) for n in range(1, len(TRUTH) + 1)]
    backend = BrightInBoxBackend()
    with pytest.raises(RefineCancelled, match="after 3 of 9 slices"):
        refine_structure(backend, lambda i: pics[i], dict(enumerate(TRUTH)),
                         should_cancel=lambda: len(backend.calls) >= 3)
    assert len(backend.calls) == 3

