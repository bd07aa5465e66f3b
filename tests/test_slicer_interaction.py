"""The effect in a real Slicer slice view: real interactor events (as VTK's QVTKInteractorAdapter turns Qt's mouse
events into them) through the Segment Editor's priority-1.0 observers (tests/slicer_fake_editor.py) and then, unless
the effect aborted them, through slicer-core's own vtkMRMLSliceViewInteractorStyle to Slicer's widgets: the slice
intersection widget (zoom, maximize), the window/level widget and the markups widgets (tests/slicer_scenes.py,
SliceView). Nothing here fakes what Slicer's widgets do with the events."""
import numpy as np
import pytest
import slicer

from slicer_scenes import (LPS, EffectHarness, SliceView, ThresholdBackend, add_segmentation, add_volume,  # noqa: F401
                           ellipsoid, provider, slicer_env)

from SegmentAnythingMedLib import volume_bridge
from SegmentAnythingMedLib.backend_settings import BackendSettings

IDLE = slicer.vtkMRMLSliceIntersectionWidget.WidgetStateIdle


@pytest.fixture
def scene(slicer_env, provider):
    """A volume shown in a real Red slice view of a four-up layout, the effect active with a SAM-like model."""
    provider.update(BackendSettings(model="sam_vit_b", checkpoint="sam_vit_b.pth"))
    provider.use(ThresholdBackend(("point", "box"), "sam_vit_b"))
    layout = slicer.vtkMRMLLayoutNode()
    slicer_env.scene.AddNode(layout)
    layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    image, truth = ellipsoid((20, 30, 40), (10, 15, 20), (6, 8, 10))
    node = add_volume(slicer_env.scene, image, (0.8, 0.9, 2.5), LPS, (10.0, 20.0, 30.0))
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetAutoWindowLevel(0)
    node.GetDisplayNode().SetWindowLevel(200, 100)
    segmentation, (sid,) = add_segmentation(slicer_env.scene, node, ("ball",))
    view = SliceView(slicer_env)
    view.logic.GetSliceCompositeNode().SetBackgroundVolumeID(node.GetID())
    view.logic.FitSliceToAll()
    volume = volume_bridge.volume_from_node(node)
    view.node.JumpSliceByCentering(*volume_bridge.slice_position_ras(volume, 0, 10))
    h = EffectHarness(slicer_env, node, segmentation, sid)
    h.editor.observe_view(view.widget)
    h.view, h.layout, h.volume, h.volume_node, h.truth = view, layout, volume, node, truth
    h.xy = lambda i, j, k=10: view.ras_to_xy((volume.ijk_to_ras @ [i, j, k, 1.0])[:3])
    yield h
    h.effect.cleanup()


def click(view, button, xy, **keys):
    view.event("MouseMoveEvent", xy, **keys)
    view.event(f"{button}ButtonPressEvent", xy, **keys)
    view.event(f"{button}ButtonReleaseEvent", xy, **keys)


def drag(view, button, a, b, **keys):
    view.event("MouseMoveEvent", a, **keys)
    view.event(f"{button}ButtonPressEvent", a, **keys)
    for t in np.linspace(0.2, 1.0, 5):
        view.event("MouseMoveEvent", np.add(a, t * np.subtract(b, a)), **keys)
    view.event(f"{button}ButtonReleaseEvent", b, **keys)


def finish(h):
    h.effect.session.wait(30)
    h.effect.timer.fire()


def test_a_right_click_is_an_exclude_point_and_leaves_the_view_idle(scene):
    h, view = scene, scene.view
    click(view, "Left", h.xy(20, 15))
    click(view, "Right", h.xy(25, 15))
    finish(h)
    prompt = h.effect.session.slice_prompt
    assert len(prompt.include_xy) == 1 and prompt.exclude_xy == [pytest.approx((25, 15), abs=0.6)]
    assert view.intersection_widget().GetWidgetState() == IDLE, "Slicer's zoom drag was left running"
    fov = view.node.GetFieldOfView()
    view.event("MouseMoveEvent", h.xy(25, 2))
    assert view.node.GetFieldOfView() == fov, "moving the mouse after a right click zooms the view"


def test_a_right_drag_does_nothing_and_alt_right_drag_is_slicers_zoom(scene):
    h, view = scene, scene.view
    fov = view.node.GetFieldOfView()
    drag(view, "Right", (200, 150), (200, 80))
    assert view.node.GetFieldOfView() == fov and h.effect.session.slice_prompt is None
    assert view.intersection_widget().GetWidgetState() == IDLE
    drag(view, "Right", (200, 150), (200, 80), alt=True)
    assert view.node.GetFieldOfView() != fov and view.intersection_widget().GetWidgetState() == IDLE


def test_a_double_click_is_a_second_click_and_does_not_maximize_the_view(scene):
    h, view = scene, scene.view
    xy = h.xy(20, 15)
    click(view, "Left", xy)  # Qt's double click: press, release, double-click (instead of a press), release
    view.event("LeftButtonDoubleClickEvent", xy)
    view.event("LeftButtonReleaseEvent", xy)
    assert h.layout.GetNumberOfMaximizedViewNodes() == 0, "Slicer maximized the view"
    finish(h)
    assert len(h.effect.session.slice_prompt.include_xy) == 2
    h.editor.module_exit()  # without the effect the same double click maximizes the view: the check can fail
    view.event("LeftButtonDoubleClickEvent", xy)
    assert h.layout.GetNumberOfMaximizedViewNodes() == 1


def test_a_left_drag_is_a_box_and_slicer_sees_none_of_it(scene):
    h, view = scene, scene.view
    before = view.node.GetSliceToRAS().GetElement(0, 3), view.node.GetFieldOfView()
    view.event("MouseMoveEvent", h.xy(5, 3))
    view.reached_slicer.clear()
    drag(view, "Left", h.xy(5, 3), h.xy(36, 28))
    assert view.reached_slicer == ["MouseMoveEvent"]  # only the hover before the press
    assert (view.node.GetSliceToRAS().GetElement(0, 3), view.node.GetFieldOfView()) == before
    finish(h)
    assert np.array_equal(h.effect.session.masks[10], h.truth[10])
    h.editor.module_exit()  # without the effect Slicer gets the same drag: the check can fail
    view.reached_slicer.clear()
    drag(view, "Left", h.xy(5, 3), h.xy(36, 28))
    assert view.reached_slicer.count("MouseMoveEvent") == 6 and "LeftButtonReleaseEvent" in view.reached_slicer


def test_roi_handles_can_be_dragged_while_the_effect_is_active(scene):
    h, view = scene, scene.view
    roi = h.env.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "ROI")
    roi.CreateDefaultDisplayNodes()
    centre = (h.volume.ijk_to_ras @ [20, 15, 10, 1.0])[:3]
    roi.SetCenter(*centre)
    roi.SetSize(20, 20, 20)
    a = view.ras_to_xy(centre)
    drag(view, "Left", a, a + (30, 0))
    moved = view.node.GetXYToRAS().MultiplyPoint([30, 0, 0, 0])[:3]  # 30 display pixels in RAS
    assert np.subtract(roi.GetCenter(), centre) == pytest.approx(moved, abs=0.3), "the ROI did not follow the drag"
    assert h.effect.session.slice_prompt is None and not h.effect.session.busy  # and no box was prompted
    drag(view, "Left", a + (60, 60), a + (90, 90))  # away from the ROI's handles a drag is the effect's box
    assert h.effect.session.busy or h.effect.session.slice_prompt is not None


def test_a_right_double_click_is_two_exclude_points_and_leaves_the_view_idle(scene):
    h, view = scene, scene.view
    click(view, "Left", h.xy(20, 15))
    xy = h.xy(25, 15)
    click(view, "Right", xy)
    view.event("RightButtonDoubleClickEvent", xy)
    view.event("RightButtonReleaseEvent", xy)
    finish(h)
    assert len(h.effect.session.slice_prompt.exclude_xy) == 2
    assert view.intersection_widget().GetWidgetState() == IDLE


def test_shift_left_drag_stays_slicers_pan_while_the_effect_is_active(scene):
    h, view = scene, scene.view
    origin = [view.node.GetXYToRAS().GetElement(r, 3) for r in range(3)]
    drag(view, "Left", (200, 150), (260, 150), shift=True)
    assert [view.node.GetXYToRAS().GetElement(r, 3) for r in range(3)] != origin, "Slicer did not pan"
    assert h.effect.session.slice_prompt is None and not h.effect.session.busy
    assert view.intersection_widget().GetWidgetState() == IDLE


class StopRecordingBackend(ThresholdBackend):
    """The stand-in model, recording the slices it is asked to encode ahead (Backend.stopped_on)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stops = []

    def stopped_on(self, image_rgb):
        self.stops.append(np.array(image_rgb))


def test_scrolling_with_the_wheel_has_the_slice_encoded_ahead_once(scene, provider):
    """Issue 16, interactive latency: the slice the user scrolls to is handed to the backend to encode ahead (the
    Segment Editor passes slice node changes to processViewNodeEvents), once per slice, only after the model is
    loaded and the volume prompted (nothing loads or scans the volume on the GUI thread)."""
    h, view = scene, scene.view
    backend = StopRecordingBackend(("point", "box"), "sam_vit_b")
    provider.use(backend)
    view.event("MouseWheelForwardEvent", h.xy(20, 15))  # no prompt yet on this volume: nothing to encode ahead
    assert backend.stops == []
    drag(view, "Left", h.xy(5, 3), h.xy(36, 28))
    finish(h)
    session = h.effect.session
    index = session.view_of(view.node).index
    for _ in range(2):  # Slicer's wheel: one slice per step, through vtkMRMLSliceIntersectionWidget
        view.event("MouseWheelForwardEvent", h.xy(20, 15))
    now = session.view_of(view.node).index
    assert now != index
    assert len(backend.stops) >= 2 and np.array_equal(backend.stops[-1], session.sessions.peek(
        session.snapshot(), 0, session.intensity(), backend).picture(now))
    count = len(backend.stops)
    view.node.Modified()  # the same slice again (a render, a pan): not sent twice
    assert len(backend.stops) == count
    h.editor.module_exit()
    view.event("MouseWheelForwardEvent", h.xy(20, 15))
    assert len(backend.stops) == count  # the effect is not active any more
