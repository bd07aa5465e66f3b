"""Fakes of Slicer's scripted Segment Editor effect machinery for pytest (part of tests/slicer_fakes.py's environment):
``SegmentEditorEffects.AbstractScriptedSegmentEditorEffect``, the C++ adaptor
``qSlicerSegmentEditorScriptedEffect`` (its editing calls go to a real vtkSlicerSegmentEditorLogic, as the C++
does), ``slicer.qSlicerSegmentEditorAbstractEffect``'s ModificationMode values, the effect factory, and a slice
view widget holding a real vtkMRMLSliceNode. ``slicer_fakes.install()`` puts them in place.
"""
from __future__ import annotations

import importlib.util

import slicer
import vtk

import slicer_fake_qt


class AbstractScriptedSegmentEditorEffect:
    """As Slicer's SegmentEditorEffects.AbstractScriptedSegmentEditorEffect (the parts used)."""

    def __init__(self, scriptedEffect):
        self.scriptedEffect = scriptedEffect

    def register(self):
        slicer.qSlicerSegmentEditorEffectFactory.instance().registerEffect(self.scriptedEffect)

    def cleanup(self):
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
        spec = importlib.util.spec_from_file_location("SegmentEditorEffect", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._python = module.SegmentEditorEffect(self)
        return True

    def self(self):
        return self._python

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

    # options frame
    def addOptionsWidget(self, widget):
        self.options.append(widget)

    def addLabeledOptionsWidget(self, label, widget):
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
        pass


class FakeSliceLogic:
    def __init__(self, slice_node):
        self._node = slice_node

    def GetSliceNode(self):
        return self._node

    def GetSliceOffset(self):
        return self._node.GetSliceOffset()


class FakeSliceView:
    def scheduleRender(self):
        pass


class FakeSliceWidget:
    """The view widget Slicer passes to processInteractionEvents: here a holder of a real vtkMRMLSliceNode."""

    def __init__(self, slice_node):
        self._logic = FakeSliceLogic(slice_node)

    def className(self):
        return "qMRMLSliceWidget"

    def sliceLogic(self):
        return self._logic

    def sliceView(self):
        return FakeSliceView()


def interactor(x, y, control=False):
    """A real vtkRenderWindowInteractor (no window) at event position ``(x, y)``."""
    it = vtk.vtkGenericRenderWindowInteractor()
    it.SetEventPosition(int(x), int(y))
    it.SetControlKey(1 if control else 0)
    return it
