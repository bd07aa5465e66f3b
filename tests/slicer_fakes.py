"""A Slicer Python environment for pytest: the real MRML data model from ``slicer-core``, and fakes for exactly the
parts that need the Slicer application.

Real (slicer-core): the scene, every node, vtkSlicerApplicationLogic and the module logics (volumes,
segmentations, markups, tables, plots, colors, subject hierarchy), vtkSlicerSegmentEditorLogic, vtk.
``slicer.mrmlScene`` is the real scene and ``slicer.modules.<name>.logic()`` the real logics, so ``slicer.util``'s
array helpers work.

Fake:
- ``qt`` and ``ctk`` (tests/slicer_fake_qt.py, tests/slicer_fake_qt_core.py);
- ``slicer.app`` (:class:`FakeApp`: signal connections, the application logic, testing flag);
- the scripted-module base classes ``slicer.ScriptedLoadableModule.*``;
- the scripted Segment Editor effect machinery: ``SegmentEditorEffects.AbstractScriptedSegmentEditorEffect``,
  ``qSlicerSegmentationsEditorEffectsPythonQt.qSlicerSegmentEditorScriptedEffect`` (the C++ adaptor; its editing
  calls go to a real vtkSlicerSegmentEditorLogic as the C++ does), ``slicer.qSlicerSegmentEditorAbstractEffect``
  (its ModificationMode values) and ``slicer.qSlicerSegmentEditorEffectFactory`` (registration), in
  tests/slicer_fake_effects.py.
"""
from __future__ import annotations

import os
import sys
import types
import unittest

import slicer
import slicer.util
import vtk

import slicer_fake_mrml_widgets
import slicer_fake_qt
from slicer_fake_effects import (AbstractEffectEnums, AbstractScriptedSegmentEditorEffect,  # noqa: F401 (re-exported)
                                 EffectFactory, FakeSliceWidget, LOADER, ScriptedEffectAdaptor, interactor)

MODULE_LOGICS = {  # slicer.modules name -> (logic class, name the application logic knows it by)
    "volumes": ("vtkSlicerVolumesLogic", "Volumes"),
    "segmentations": ("vtkSlicerSegmentationsModuleLogic", "Segmentations"),
    "markups": ("vtkSlicerMarkupsLogic", "Markups"),
    "tables": ("vtkSlicerTablesLogic", "Tables"),
    "plots": ("vtkSlicerPlotsLogic", "Plots"),
}


class FakeModule:
    def __init__(self, name, logic, path=""):
        self.name = name
        self._logic = logic
        self.path = path

    def logic(self):
        return self._logic


class FakeCommandOptions:
    testingEnabled = True


class FakeApp(slicer_fake_qt.QObject):
    """``slicer.app``: what SegmentAnythingMed calls on it, backed by the real application logic."""

    def __init__(self, application_logic, scene):
        super().__init__()
        self._application_logic = application_logic
        self._scene = scene

    def applicationLogic(self):
        return self._application_logic

    def mrmlScene(self):
        return self._scene

    def commandOptions(self):
        return FakeCommandOptions()

    def testingEnabled(self):
        return True

    def processEvents(self):
        pass

    def layoutManager(self):
        return None

    def pauseRender(self):
        pass

    def resumeRender(self):
        pass


class SlicerTestEnvironment:
    """One real scene with the application and module logics, published as ``slicer.mrmlScene``/``slicer.modules``."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        crosshair = slicer.vtkMRMLCrosshairNode()
        crosshair.SetCrosshairName("default")
        self.scene.AddNode(crosshair)
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.app_logic.GetColorLogic().SetMRMLScene(self.scene)
        self.app_logic.GetColorLogic().AddDefaultColorNodes()
        self.color_logic = slicer.vtkMRMLColorLogic()
        self.color_logic.SetMRMLApplicationLogic(self.app_logic)
        self.color_logic.SetMRMLScene(self.scene)
        self.app_logic.SetModuleLogic("Colors", self.color_logic)
        self.app_logic.SetSliceLogics(vtk.vtkCollection())
        self.app_logic.SetViewLogics(vtk.vtkCollection())
        self.logics = {}
        for name, (class_name, app_name) in MODULE_LOGICS.items():
            logic = getattr(slicer, class_name)()
            logic.SetMRMLScene(self.scene)
            logic.SetMRMLApplicationLogic(self.app_logic)
            self.app_logic.SetModuleLogic(app_name, logic)
            self.logics[name] = logic
        self.subject_hierarchy_logic = slicer.vtkSlicerSubjectHierarchyModuleLogic()
        self.subject_hierarchy_logic.SetMRMLScene(self.scene)
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)
        self.app = FakeApp(self.app_logic, self.scene)

    def publish(self):
        slicer.mrmlScene = self.scene
        slicer.app = self.app
        modules = types.SimpleNamespace(**{n: FakeModule(n, lg) for n, lg in self.logics.items()})
        modules.segmenteditorscriptedeffectnames = []
        slicer.modules = modules
        return self

    def close(self):
        self.scene.Clear(1)

    def slice_node(self, orientation="Axial", name="Red", dimensions=(400, 300), field_of_view=(250.0, 187.5)):
        node = self.scene.AddNewNodeByClass("vtkMRMLSliceNode", name)
        node.SetLayoutName(name)
        node.SetDimensions(dimensions[0], dimensions[1], 1)
        node.SetFieldOfView(field_of_view[0], field_of_view[1], 1.0)
        node.SetOrientation(orientation)
        return node


# ------------------------------------------------------------------------------------ scripted-module base classes


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def getDefaultModuleDocumentationLink(self, docPage=None):
        return ""


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Widget"):
            self.moduleName = self.moduleName[:-6]
        self.parent = parent if parent is not None else slicer_fake_qt.QWidget()
        self.layout = self.parent.layout()
        self.developerMode = False

    def resourcePath(self, filename):
        module = sys.modules[self.__class__.__module__]
        return os.path.join(os.path.dirname(module.__file__), "Resources", filename)

    def setup(self):
        pass

    def cleanup(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = self.__class__.__name__
        if self.moduleName.endswith("Logic"):
            self.moduleName = self.moduleName[:-5]
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node = slicer.mrmlScene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        pass

    def runTest(self):
        pass


# ------------------------------------------------------------------------------------------------------ install


def install():
    """Put the fake modules in place (idempotent). Returns the qt module."""
    qt = sys.modules.get("qt")
    if qt is None or not getattr(qt, "__doc__", "").startswith("fake"):
        qt = slicer_fake_qt.make_qt_module()
        sys.modules["qt"] = qt
        sys.modules["ctk"] = slicer_fake_qt.make_ctk_module()
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(slm, cls.__name__, cls)
    slm.__all__ = [c for c in dir(slm) if c.startswith("Scripted")]
    sys.modules["slicer.ScriptedLoadableModule"] = slm
    slicer.ScriptedLoadableModule = slm
    effects = types.ModuleType("SegmentEditorEffects")
    effects.AbstractScriptedSegmentEditorEffect = AbstractScriptedSegmentEditorEffect
    effects.__all__ = ["AbstractScriptedSegmentEditorEffect"]
    sys.modules["SegmentEditorEffects"] = effects
    adaptors = types.ModuleType("qSlicerSegmentationsEditorEffectsPythonQt")
    adaptors.qSlicerSegmentEditorScriptedEffect = ScriptedEffectAdaptor
    sys.modules["qSlicerSegmentationsEditorEffectsPythonQt"] = adaptors
    slicer.qSlicerSegmentEditorAbstractEffect = AbstractEffectEnums
    slicer.qSlicerSegmentEditorEffectFactory = EffectFactory
    slicer.qMRMLNodeComboBox = slicer_fake_mrml_widgets.qMRMLNodeComboBox
    return qt
