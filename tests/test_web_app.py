"""The web app's logic without a browser: a real SamWebApp (trame-slicer SlicerApp, slice view rendering with EGL)
driven through the calls the browser's events make, with the model on a real `samed serve` process
(``--backend URL``: the web server then needs no model of its own) on slicerio's CTChest4."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
pytest.importorskip("trame_slicer", reason="the web extra is not installed (scripts/setup.sh --test)")

DEMO_BOX_IJK = (55, 36, 106, 98)  # scripts/demo.sh, axial slice 20
DEMO_SLICE = 20


@pytest.fixture(scope="module")
def app(samed_service, ctchest, tmp_path_factory):
    from trame.app import get_server

    from SegmentAnythingMedLib.backend_settings import BackendProvider, BackendSettings
    from SegmentAnythingMedLib.session_types import SessionOptions
    from samed.web.app import SamWebApp
    from samed.web.files import DataFolders

    provider = BackendProvider(BackendSettings(where=samed_service.url))
    web = SamWebApp(get_server("samed-web-app-test", client_type="vue3"), data=DataFolders([ctchest[0].parent]),
                    out_dir=tmp_path_factory.mktemp("web-out"), provider=provider,
                    options=SessionOptions(intensity_mode="minmax"))
    yield web
    web.close()


def box_corners_ras(app, box=DEMO_BOX_IJK, k=DEMO_SLICE):
    ijk_to_ras = app.session.snapshot().volume.ijk_to_ras
    return [tuple((ijk_to_ras @ [i, j, k, 1.0])[:3]) for i, j in (box[:2], box[2:])]


def drag(app, box=DEMO_BOX_IJK):
    from SegmentAnythingMedLib.gestures import BOX, PromptAction

    app._on_prompt(PromptAction(BOX, tuple(box_corners_ras(app, box))), app._slice_view().get_view_node())
    app.session.wait(600)
    app._sync()


def segment_voxels(app):
    from SegmentAnythingMedLib.segment_writer import segment_mask

    return segment_mask(app.segmentation_node, app.session.segment_id, app.session.snapshot().volume)


def test_open_rejects_names_outside_the_data_folder(app):
    app.state.volume = "data/../../../etc/passwd"
    app.open_selected()
    assert "not a volume in the server's data folders" in app.state.status
    assert app.volume_node is None


def test_box_apply_undo_redo_propagate_save_on_the_model_service(app):
    from samed.core.segmentation_file import read_segmentation

    app.open_volume("data/CTChest4.nrrd")
    assert app.state.opened == "data/CTChest4.nrrd" and app.effect.is_active and app.state.tool_active
    app._go_to_slice(DEMO_SLICE)
    assert app.state.view_geometry is not None

    # a click is an include point, which LiteMedSAM does not take: its message, no job
    from SegmentAnythingMedLib.gestures import POINT, PromptAction

    app._on_prompt(PromptAction(POINT, box_corners_ras(app)[:1]), app._slice_view().get_view_node())
    assert "does not take point prompts" in app.state.status and "Drag a box" in app.state.status
    assert not app.session.busy and not app.state.has_preview

    drag(app)
    assert app.state.has_preview and app.state.box_xy == pytest.approx(DEMO_BOX_IJK)
    assert app.state.status.startswith(f"slice {DEMO_SLICE}: candidate 1 of 1")
    assert app.session.provider.get().__class__.__name__ == "HttpBackend"
    app.apply()
    on_slice = segment_voxels(app)
    assert app.state.status.startswith("applied") and not app.state.has_preview
    assert on_slice[DEMO_SLICE].sum() > 1000 and on_slice.sum() == on_slice[DEMO_SLICE].sum()
    assert app.state.can_undo and not app.state.can_redo
    app.undo()
    assert segment_voxels(app).sum() == 0 and app.state.can_redo
    app.redo()
    assert np.array_equal(segment_voxels(app), on_slice)

    drag(app)
    app.propagate()
    assert app.state.busy
    app.session.wait(900)
    app._sync()
    assert app.state.status.startswith("preview on") and not app.state.busy
    app.apply()
    voxels = segment_voxels(app)
    slices = np.flatnonzero(voxels.any(axis=(1, 2)))
    assert len(slices) > 5 and slices[0] < DEMO_SLICE < slices[-1]
    saved = app.save()
    assert saved is not None and app.state.saved == str(saved)
    written = read_segmentation(saved)
    assert written.names == ["Segment_1"] and written.segment_mask("Segment_1").sum() == voxels.sum()


def test_compare_with_the_reference_segment(app):
    """After the scenario above: the demo's comparison (scripts/demo.sh prints 3D Dice 0.86 for this job)."""
    assert app.state.reference == "data/Segmentation.seg.nrrd: right lung"
    evaluation = app.compare()
    assert evaluation is not None, app.state.status
    assert evaluation.reference_name.endswith("/right lung")
    assert 0.8 < evaluation.metrics["dice"] < 0.95
    assert app.state.evaluation.startswith(evaluation.segment_name) and "Dice 0.8" in app.state.evaluation
    app.state.reference = "elsewhere/Segmentation.seg.nrrd: right lung"  # not a listed name
    assert app.compare() is None and "not a segmentation file in the server's data folders" in app.state.status


def test_the_slice_the_user_goes_to_is_encoded_ahead_once(app, monkeypatch):
    """Issue 16, interactive latency, as in the Slicer effect: after the scenario above (model loaded, volume
    prompted), the slice the main view moves to is handed to the backend to encode ahead, once."""
    backend = app.session.provider.get()
    calls = []
    monkeypatch.setattr(backend, "stopped_on", lambda picture: calls.append(np.array(picture)))
    app._go_to_slice(DEMO_SLICE + 2)
    app._encode_ahead()
    app._encode_ahead()  # the poll loop calls it every tick: the same slice is not sent again
    session = app.session
    picture = session.sessions.peek(session.snapshot(), 0, session.intensity(), backend).picture(DEMO_SLICE + 2)
    assert len(calls) == 1 and np.array_equal(calls[0], picture)


def test_upload_opens_a_checked_volume_and_refuses_a_damaged_one(app, ctchest):
    content = ctchest[0].read_bytes()
    app.upload([{"name": "bad.nrrd", "content": content[: len(content) // 3]}])
    assert "bad.nrrd" in app.state.status and "uploads/bad.nrrd" not in app.state.volumes
    assert app.state.opened == "data/CTChest4.nrrd", "a refused upload must leave the open volume alone"
    app.upload([{"name": "C:\\\\scans\\\\mine.nrrd", "content": content}])
    assert app.state.opened == "uploads/mine.nrrd", app.state.status
    assert "uploads/mine.nrrd" in app.state.volumes
    assert app.volume_node is not None and app.session.snapshot().volume.array.shape == (34, 128, 128)
