"""Fakes of Slicer's scripted Segment Editor effect machinery for pytest (part of tests/slicer_fakes.py's environment):
``SegmentEditorEffects.AbstractScriptedSegmentEditorEffect``, the C++ adaptor
``qSlicerSegmentEditorScriptedEffect`` (it loads the effect as the C++ does in the loader generation chosen by
``LOADER["generation"]``, tests/slicer_fake_editor.py; its editing calls go to a real vtkSlicerSegmentEditorLogic, as
the C++ does), ``slicer.qSlicerSegmentEditorAbstractEffect``'s ModificationMode values, the effect factory, and the
slice view widget Slicer passes to effects (a real vtkMRMLSliceNode, or a real slice logic and interactor from
tests/slicer_scenes.py's SliceView). ``slicer_fakes.install()`` puts them in place.
"""
from __future__ import annotations

import os

import slicer
import vtk

import slicer_fake_qt
from slicer_fake_editor import set_python_source

# Slicer's current loader by default; SAMED_SLICER_LOADER=5.2 runs every effect test under 5.2-5.8's loader and
# widget (no cleanup()); tests/test_slicer_loading.py replays both generations in any case.
LOADER = {"generation": os.environ.get("SAMED_SLICER_LOADER", "5.10")}


class AbstractScriptedSegmentEditorEffect:
    """As Slicer's SegmentEditorEffects.AbstractScriptedSegmentEditorEffect (Modules/Loadable/Segmentations/
    EditorEffects/Python/SegmentEditorEffects/AbstractScriptedSegmentEditorEffect.py, v5.10.0 and main: the parts
    used). It has no interactionNodeModified: the C++ adaptor then runs the base class's (ScriptedEffectAdaptor)."""

    def __init__(self, scriptedEffect):
        self.scriptedEffect = scriptedEffect

    def register(self):
        slicer.qSlicerSegmentEditorEffectFactory.instance().registerEffect(self.scriptedEffect)

    def cleanup(self):  # 5.10+ only (commit 64cfcfc6a2)
        pass

    def xyToRas(self, xy, viewWidget):
        v = self.scriptedEffect.xyToRas(slicer_fake_qt.QPoint(xy[0], xy[1]), viewWidget)
        return [v.x(), v.y(), v.z()]


class EffectFactory:
    _instance = None

    def __init__(self):
        self.effects = []

    @classmethod
    def instance(cls):
        if cls._instance is None:
            cls._instance = EffectFactory()
        return cls._instance

    def registerEffect(self, effect):
        self.effects.append(effect)
        return True

    def registeredEffects(self):
        return list(self.effects)


class AbstractEffectEnums:
    ModificationModeSet, ModificationModeAdd, ModificationModeRemove, ModificationModeRemoveAll = 0, 1, 2, 3


class ScriptedEffectAdaptor(slicer_fake_qt.QObject):
    """The C++ ``qSlicerSegmentEditorScriptedEffect`` as a Python object: loads the effect's source and forwards the
    effect API to a real vtkSlicerSegmentEditorLogic, as qSlicerSegmentEditorAbstractEffect does."""

    def __init__(self, parent=None):
        super().__init__()
        self.setParent(parent)
        self.generation = LOADER["generation"]
        self._source = ""
        self._options_frame = slicer_fake_qt.QFrame(self)
        self.name = ""
        self.title = ""
        self.perSegment = True
        self.requireSegments = True
        self._python = None
        self._logic = None
        self._node = None
        self.options = []
        self.render_requests = 0

    # loading
    def setPythonSource(self, path):
        instance = set_python_source(self, path, self.generation)
        if instance is None:
            return False
        self._python = instance
        self._source = path
        return True

    def pythonSource(self):
        return self._source

    def self(self):
        return self._python

    def cleanup(self):  # qSlicerSegmentEditorScriptedEffect::cleanup, 5.10+ (calls the Python method)
        if self.generation == "5.2":
            raise AttributeError("qSlicerSegmentEditorScriptedEffect has no cleanup() before Slicer 5.10")
        self._python.cleanup()

    def delete(self):
        """C++ ``delete effect``: the options frame and every child go, and the adaptor's reference to the Python
        object (qSlicerPythonCppAPI) is dropped."""
        self._python = None
        super().delete()

    def interactionNodeModified(self, interactionNode):
        """The C++ calls the Python method; if there is none, the base class: any mode but ViewTransform selects no
        effect (qSlicerSegmentEditorAbstractEffect::interactionNodeModified, v5.10.0)."""
        method = getattr(self._python, "interactionNodeModified", None)
        if method is not None:
            return method(interactionNode)
        if interactionNode is not None and \
                interactionNode.GetCurrentInteractionMode() != slicer.vtkMRMLInteractionNode.ViewTransform:
            self.selectEffect("")

    # wiring done by the Segment Editor widget in Slicer
    def setSegmentEditorLogic(self, logic):
        self._logic = logic

    def setParameterSetNode(self, node):
        self._node = node

    def parameterSetNode(self):
        return self._node

    def scene(self):
        return self._node.GetScene() if self._node is not None else None

    # parameters (attributes of the segment editor node, as the C++ stores them)
    def _key(self, name):
        return f"{self.name}.{name}"

    def parameter(self, name):
        return self._node.GetAttribute(self._key(name)) or ""

    def integerParameter(self, name):
        value = self.parameter(name)
        return int(float(value)) if value else 0

    def doubleParameter(self, name):
        value = self.parameter(name)
        return float(value) if value else 0.0

    def parameterDefined(self, name):
        return self._node.GetAttribute(self._key(name)) is not None

    def setParameter(self, name, value):
        self._node.SetAttribute(self._key(name), str(value))

    def setParameterDefault(self, name, value):
        if not self.parameterDefined(name):
            self.setParameter(name, value)

    def setCommonParameter(self, name, value):
        self._node.SetAttribute(name, str(value))

    def setCommonNodeReference(self, name, node):
        self._node.SetNodeReferenceID(name, node.GetID() if node is not None else None)

    def nodeReference(self, name):
        return self._node.GetNodeReference(self._key(name)) or self._node.GetNodeReference(name)

    def setNodeReference(self, name, node):
        self._node.SetNodeReferenceID(self._key(name), node.GetID() if node is not None else None)

    # options frame (the widgets become children of the effect's options frame, deleted with the effect)
    def optionsFrame(self):
        return self._options_frame

    def _adopt(self, widget):
        parts = widget.widgets() if hasattr(widget, "widgets") else [widget]
        for part in parts:
            part.setParent(self._options_frame)

    def addOptionsWidget(self, widget):
        self._adopt(widget)
        self.options.append(widget)

    def addLabeledOptionsWidget(self, label, widget):
        self._adopt(widget)
        self.options.append((label, widget))
        return widget

    # editing (forwarded to the real logic, as qSlicerSegmentEditorAbstractEffect does)
    def saveStateForUndo(self):
        self._logic.SaveStateForUndo()

    def defaultModifierLabelmap(self):
        self._logic.ResetModifierLabelmapToDefault()
        return self._logic.GetModifierLabelmap()

    def modifySelectedSegmentByLabelmap(self, labelmap, mode, bypassMasking=False):
        logic_class = slicer.vtkSlicerSegmentEditorLogic
        mode = {int(getattr(logic_class, n)): getattr(logic_class, n) for n in  # the C++ static_cast
                ("ModificationModeSet", "ModificationModeAdd", "ModificationModeRemove", "ModificationModeRemoveAll")}[int(mode)]
        self._logic.ModifySegmentByLabelmap(self._node.GetSegmentationNode(), self._node.GetSelectedSegmentID(),
                                            labelmap, mode, self.perSegment, bypassMasking)

    def confirmCurrentSegmentVisible(self):
        return 1

    def sourceVolumeImageData(self):
        self._logic.UpdateAlignedSourceVolume()
        return self._logic.GetAlignedSourceVolume()

    # views
    def xyToRas(self, xy, viewWidget):
        ras = [0.0, 0.0, 0.0]
        slicer.vtkSlicerSegmentEditorLogic.XyToRas([float(xy.x()), float(xy.y())], ras,
                                                  viewWidget.sliceLogic().GetSliceNode())
        return slicer_fake_qt.QVector3D(*ras)

    def cursorOff(self, viewWidget):
        pass

    def cursorOn(self, viewWidget):
        pass

    def addActor2D(self, viewWidget, actor):
        pass

    def removeActor2D(self, viewWidget, actor):
        pass

    def scheduleRender(self, viewWidget):
        self.render_requests += 1

    def selectEffect(self, name):
        self.emit("selectEffectSignal(QString)", name)  # connected to the editor widget's setActiveEffectByName


class FakeSliceLogic:
    def __init__(self, slice_node):
        self._node = slice_node

    def GetSliceNode(self):
        return self._node

    def GetSliceOffset(self):
        return self._node.GetSliceOffset()


class FakeSliceView:
    def __init__(self):
        self.render_requests = 0

    def scheduleRender(self):
        self.render_requests += 1


class FakeSliceWidget:
    """The qMRMLSliceWidget Slicer passes to processInteractionEvents: its slice logic (a holder of a real
    vtkMRMLSliceNode, or a real vtkMRMLSliceLogic) and, for a real view, its real interactor."""

    def __init__(self, slice_node, slice_logic=None, interactor=None):
        self._logic = slice_logic if slice_logic is not None else FakeSliceLogic(slice_node)
        self._interactor = interactor
        self._view = FakeSliceView()

    def className(self):
        return "qMRMLSliceWidget"

    def sliceLogic(self):
        return self._logic

    def mrmlSliceNode(self):
        return self._logic.GetSliceNode()

    def sliceView(self):
        return self._view

    def interactor(self):
        return self._interactor


def interactor(x, y, control=False):
    """A real vtkRenderWindowInteractor (no window) at event position ``(x, y)``."""
    it = vtk.vtkGenericRenderWindowInteractor()
    it.SetEventPosition(int(x), int(y))
    it.SetControlKey(1 if control else 0)
    return it
