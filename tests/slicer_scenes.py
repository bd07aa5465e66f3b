"""Test scenes for the Slicer tests: volumes with chosen geometry, segmentations, segment editor logics, a
deterministic stand-in backend, and the pytest fixtures that tie them together (imported by tests/test_slicer_*.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import slicer
import slicer.util
import vtk

import slicer_fakes
from slicer_fake_editor import SegmentEditorWidget
from samed.core.backend import Backend, EmbeddingHandle, check_image, image_key
from samed.core.prompts import Prediction

# direction matrices (columns = i, j, k axes in RAS): LPS-stored scan, a sagittal acquisition, an oblique tilt
LPS = np.diag([-1.0, -1.0, 1.0])
SAGITTAL = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
_c, _s = np.cos(np.radians(20)), np.sin(np.radians(20))
TILTED = np.array([[_c, -_s, 0.0], [_s, _c, 0.0], [0.0, 0.0, 1.0]]) @ LPS


class ThresholdBackend(Backend):
    """A model stand-in: inside the box (or around a point), the pixels brighter than mid-grey.

    ``kinds`` sets which prompt kinds it takes ({"box"} like LiteMedSAM by default). Points give three candidates
    (as SAM does for one point): the bright region, a smaller and a larger one, scores 0.9 / 0.6 / 0.3.
    """

    def __init__(self, kinds=("box",), model="litemedsam", delay=0.0):
        self.model = model
        self.kinds = frozenset(kinds)
        self.delay = delay
        self.images = {}
        self.encodes = 0

    def info(self):
        return {"service": "stub", "version": "0", "device": "cpu",
                "models": {self.model: {"prompt_kinds": sorted(self.kinds)}}}

    def prompt_kinds(self):
        return self.kinds

    def encode(self, image_rgb):
        image_rgb = check_image(image_rgb)
        key = image_key(self.model, image_rgb)
        if key not in self.images:
            self.encodes += 1
            if self.delay:
                import time

                time.sleep(self.delay)
        self.images[key] = image_rgb[..., 0]
        return EmbeddingHandle(key, self.model, tuple(image_rgb.shape[:2]))

    def decode(self, handle, prompt, multimask=None):
        grey = self.images[handle.key]
        bright = grey > 127
        h, w = grey.shape
        region = np.zeros((h, w), bool)
        if prompt.box_xy is not None:
            x0, y0, x1, y1 = np.round(prompt.box_xy).astype(int)
            region[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = True
        for x, y in prompt.include_points_xy:
            yy, xx = np.ogrid[:h, :w]
            region |= (yy - y) ** 2 + (xx - x) ** 2 <= 12 ** 2
        for x, y in prompt.exclude_points_xy:
            yy, xx = np.ogrid[:h, :w]
            region &= ~((yy - y) ** 2 + (xx - x) ** 2 <= 3 ** 2)
        mask = bright & region
        if (prompt.box_xy is None and len(prompt.include_points_xy) + len(prompt.exclude_points_xy) == 1
                and multimask is not False):
            from scipy import ndimage

            return Prediction(np.stack([mask, ndimage.binary_erosion(mask, iterations=2), region]), [0.9, 0.6, 0.3])
        return Prediction(mask[None], [0.9])


def add_volume(scene, array_kji, spacing=(1.0, 1.0, 1.0), directions=None, origin=(0.0, 0.0, 0.0), name="volume",
               labelmap=False):
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array_kji))
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    if directions is not None:
        node.SetIJKToRASDirections(np.asarray(directions, dtype=float).tolist())
    return node


def ellipsoid(shape=(20, 30, 40), centre=(10, 15, 20), radii=(6, 8, 10), inside=210, outside=10):
    kk, jj, ii = np.mgrid[:shape[0], :shape[1], :shape[2]]
    mask = sum(((g - c) / r) ** 2 for g, c, r in zip((kk, jj, ii), centre, radii)) < 1
    return np.where(mask, inside, outside).astype(np.int16), mask


def add_segmentation(scene, volume_node, names=("structure",), name="Segmentation"):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    ids = [node.GetSegmentation().AddEmptySegment("", n) for n in names]
    return node, ids


@pytest.fixture
def slicer_env():
    """A fresh real scene with the module logics, published as slicer.mrmlScene / slicer.modules / slicer.app."""
    slicer_fakes.install()
    env = slicer_fakes.SlicerTestEnvironment().publish()
    yield env
    env.close()


@pytest.fixture
def provider():
    """The shared backend provider with the stand-in backend in it (restored afterwards)."""
    from SegmentAnythingMedLib.backend_settings import BackendSettings, shared_provider

    p = shared_provider()
    p.update(BackendSettings())
    p.use(ThresholdBackend())
    yield p
    p.update(BackendSettings())
    p.close()


class EffectHarness:
    """What Slicer does for an effect: the module registers it (setPythonSource in the loader ``generation``, see
    tests/slicer_fake_editor.py), a Segment Editor widget clones it, wires the clone to its logic and editor node and
    activates it. ``editor`` is that widget, ``adaptor`` the clone, ``effect`` the clone's Python object."""

    def __init__(self, env, volume_node, segmentation_node, segment_id, generation=None):
        import SegmentAnythingMed as module

        self.env = env
        self.module = module
        self.editor_node = env.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(env.scene)
        self.logic.SetMRMLApplicationLogic(env.app_logic)
        self.logic.SetSegmentEditorNode(self.editor_node)
        self.logic.SetSegmentationNode(segmentation_node)
        self.logic.SetSourceVolumeNode(volume_node)
        self.logic.SetCurrentSegmentID(segment_id)
        generation = generation or slicer_fakes.LOADER["generation"]
        self.registered = slicer_fakes.ScriptedEffectAdaptor(None)
        self.registered.generation = generation
        assert self.registered.setPythonSource(module.EFFECT_SOURCE), "the effect did not load (see the log)"
        self.editor = SegmentEditorWidget(env, self.editor_node, self.logic, generation)
        self.adaptor = self.editor.add_effect(self.registered)
        self.editor.setActiveEffectByName("Segment Anything")
        self.effect = self.adaptor.self()

    def activate(self):
        """Wire ``self.adaptor`` directly (without the editor widget) and activate it."""
        self.adaptor.setSegmentEditorLogic(self.logic)
        self.adaptor.setParameterSetNode(self.editor_node)
        self.effect = self.adaptor.self()
        self.effect.setupOptionsFrame()
        self.effect.setMRMLDefaults()
        self.effect.updateGUIFromMRML()
        self.effect.activate()
        return self.effect


class SliceView:
    """A real Slicer slice view without Qt, built as trame-slicer 2.0.0 builds one (trame_slicer/views/slice_view.py,
    abstract_view.py): a vtkMRMLSliceLogic, slice displayable managers in a vtkMRMLDisplayableManagerGroup on an
    off-screen render window, and vtkMRMLSliceViewInteractorStyle on the interactor. Events enter through the
    interactor, as VTK's QVTKInteractorAdapter puts Qt's mouse events there (a double click arrives as
    LeftButtonDoubleClickEvent in place of the second press), and reach Slicer's own widgets: the slice
    intersection widget (zoom, pan, maximize) of the crosshair displayable manager, the markups widgets."""

    MANAGERS = ("vtkMRMLCrosshairDisplayableManager", "vtkMRMLScalarBarDisplayableManager",  # the latter: W/L drag
                "vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLMarkupsDisplayableManager")

    def __init__(self, env, name="Red", size=(400, 300)):
        self.renderer = vtk.vtkRenderer()
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.AddRenderer(self.renderer)
        self.window.SetSize(*size)
        self.interactor = vtk.vtkGenericRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(env.app_logic)
        for manager in self.MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.managers = slicer.vtkMRMLDisplayableManagerGroup()
        self.managers.SetRenderer(self.renderer)
        self.managers.Initialize(factory, self.renderer)
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(env.app_logic)
        env.app_logic.GetSliceLogics().AddItem(self.logic)
        self.logic.SetMRMLScene(env.scene)
        self.node = self.logic.AddSliceNode(name)
        self.node.SetDimensions(size[0], size[1], 1)
        self.managers.SetMRMLDisplayableNode(self.node)
        self.style = slicer.vtkMRMLSliceViewInteractorStyle()
        self.style.SetSliceLogic(self.logic)
        self.style.SetDisplayableManagers(self.managers)
        self.interactor.SetInteractorStyle(vtk.vtkInteractorStyleUser())
        self.style.SetInteractor(self.interactor)
        self.widget = slicer_fakes.FakeSliceWidget(self.node, self.logic, self.interactor)
        self.reached_slicer = []  # events not aborted before Slicer's interactor style (priority 0.0) got them
        for name in SegmentEditorWidget.EVENTS:
            self.interactor.AddObserver(getattr(vtk.vtkCommand, name), lambda c, e: self.reached_slicer.append(e), 0.5)

    def event(self, name, xy, control=False, shift=False, alt=False):
        """One interactor event (``name``: a vtkCommand event name) at display position ``xy``."""
        self.interactor.SetEventInformation(int(round(xy[0])), int(round(xy[1])), int(control), int(shift), "\0", 0)
        self.interactor.SetAltKey(int(alt))
        self.interactor.InvokeEvent(getattr(vtk.vtkCommand, name))

    def intersection_widget(self):
        return self.managers.GetDisplayableManagerByClassName(
            "vtkMRMLCrosshairDisplayableManager").GetSliceIntersectionWidget()

    def ras_to_xy(self, ras):
        xy_to_ras = np.array([[self.node.GetXYToRAS().GetElement(i, j) for j in range(4)] for i in range(4)])
        return (np.linalg.inv(xy_to_ras) @ [*ras, 1.0])[:2]
