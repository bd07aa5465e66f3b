"""Slicer's C++ effect loader and Segment Editor widget, replayed in Python for pytest (the rest of the effect
machinery is in tests/slicer_fake_effects.py).

- :func:`set_python_source`: ``qSlicerSegmentEditorScriptedEffect::setPythonSource`` with
  ``qSlicerScriptedUtils::loadSourceAsModule`` in both generations Slicer has shipped:
  "5.2" (v5.2.2 .. v5.8.1: ``PyImport_AddModule(<folder>)`` then ``imp.load_source(<folder>, <file>)``) and
  "5.10" (v5.10.0 .. main, since commit bb06cef09d: the class is looked up in ``sys.modules[<folder>]``, else
  ``sys.modules[<folder>] = importlib.util.module_from_spec(<file>)`` and ``exec_module``).
  Sources: Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorScriptedEffect.cxx and
  Base/QTCore/qSlicerScriptedUtils.cxx at tags v5.2.2, v5.8.1, v5.10.0, v5.12.3 and main.
- :class:`SegmentEditorWidget`: what qMRMLSegmentEditorWidget (Modules/Loadable/Segmentations/Widgets/
  qMRMLSegmentEditorWidget.cxx, v5.10.0) does with effects: clones the registered ones, activates and deactivates
  them through the editor node's active effect name, deactivates on a segmentation switch and (SegmentEditor.py
  ``exit``) when the user leaves the module, passes interaction node changes to the active effect, observes the
  view interactors at priority 1.0 and aborts the event when the effect returns True, and on destruction calls
  ``cleanup()`` (5.10+ only, commit 64cfcfc6a2) before deleting each effect.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
import os
import sys
import types
import warnings

import slicer
import vtk

GENERATIONS = ("5.2", "5.10")


def _imp_load_source(name, pathname):
    """``imp.load_source(name, pathname)`` of Slicer 5.2-5.8's Python 3.9 (the real one where this Python still has
    ``imp``; else CPython v3.9.10 Lib/imp.py ``load_source`` line for line)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import imp  # noqa: F401 (removed in Python 3.12)
        except ImportError:
            imp = None
    if imp is not None:
        return imp.load_source(name, pathname)
    from importlib import _bootstrap

    loader = importlib.machinery.SourceFileLoader(name, pathname)
    spec = importlib.util.spec_from_file_location(name, pathname, loader=loader)
    if name in sys.modules:
        module = _bootstrap._exec(spec, sys.modules[name])
    else:
        module = _bootstrap._load(spec)
    module.__loader__ = importlib.machinery.SourceFileLoader(name, pathname)
    module.__spec__.loader = module.__loader__
    return module


def _load_source_as_module(module_name, path, generation):
    """qSlicerScriptedUtils::loadSourceAsModule: False (and the traceback logged, as PythonQt's handleError prints
    it) when the file raises."""
    try:
        if generation == "5.2":
            _imp_load_source(module_name, path)
        else:  # the string PyRun_String runs, v5.10.0
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
    except Exception:  # PythonQt::self()->handleError() prints it; the C++ returns false
        logging.error("loadSourceAsModule - Failed to load file %s as module %s!", path, module_name, exc_info=True)
        return False
    return True


def set_python_source(adaptor, path, generation):
    """qSlicerSegmentEditorScriptedEffect::setPythonSource(path): the Python effect object, or None (the C++ returns
    false) when the file is no .py, fails to load, has no class, or the class fails to instantiate."""
    if generation not in GENERATIONS:
        raise ValueError(f"loader generation {generation!r}: use one of {GENERATIONS}")
    if not (path.endswith(".py") or path.endswith(".pyc")):
        return None
    module_name = os.path.basename(os.path.dirname(path))  # QDir(path).cdUp().dirName(): the parent folder
    class_name = os.path.splitext(os.path.basename(path))[0]  # QFileInfo::baseName
    class_name = class_name.split(".")[0]
    if not class_name.endswith("Effect"):
        class_name += "Effect"
    if generation == "5.2":
        module = sys.modules.get(module_name)
        if module is None:  # PyImport_AddModule: get, or create and insert an empty module
            module = sys.modules[module_name] = types.ModuleType(module_name)
        cls = getattr(module, class_name, None)
        if cls is None:
            if not _load_source_as_module(module_name, path, generation):
                return None
            cls = getattr(module, class_name, None)  # the object PyImport_AddModule returned
    else:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is None:
            if not _load_source_as_module(module_name, path, generation):
                return None
            cls = getattr(sys.modules.get(module_name), class_name, None)  # re-fetched from sys.modules
    if cls is None:
        logging.error("qSlicerSegmentEditorScriptedEffect::setPythonSource - Failed to load segment editor scripted "
                      "effect: class %s was not found in %s", class_name, path)
        return None
    try:  # qSlicerPythonCppAPI::instantiateClass: PyObject_CallObject(class, (adaptor,))
        instance = cls(adaptor)
    except Exception:
        logging.error("instantiateClass - failed to instantiate %s from %s", class_name, path, exc_info=True)
        return None
    setattr(slicer, module_name, instance)  # qSlicerScriptedUtils::setModuleAttribute("slicer", moduleName, self)
    return instance


class SegmentEditorWidget:
    """qMRMLSegmentEditorWidget's effect handling (see the module docstring) on a real editor node and logic."""

    EVENTS = ("LeftButtonPressEvent", "LeftButtonReleaseEvent", "LeftButtonDoubleClickEvent", "RightButtonPressEvent",
              "RightButtonReleaseEvent", "RightButtonDoubleClickEvent", "MiddleButtonPressEvent",
              "MiddleButtonReleaseEvent", "MiddleButtonDoubleClickEvent", "MouseMoveEvent", "MouseWheelForwardEvent",
              "MouseWheelBackwardEvent", "MouseWheelLeftEvent", "MouseWheelRightEvent", "KeyPressEvent",
              "KeyReleaseEvent", "EnterEvent", "LeaveEvent")  # setupViewObservations, v5.10.0

    def __init__(self, env, editor_node, logic, generation="5.10"):
        self.env, self.editor_node, self.logic, self.generation = env, editor_node, logic, generation
        self.effects = []
        self.active = None
        self.views = []
        editor_node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *a: self.updateEffectsSectionFromMRML())
        self.interaction_node = env.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        self.interaction_node.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda *a: self.onInteractionNodeModified())

    def add_effect(self, registered):
        """The widget's own copy of a registered effect: ``clone()``, options frame, defaults."""
        effect = registered.self().clone()
        effect.generation = self.generation
        effect.setSegmentEditorLogic(self.logic)
        effect.setParameterSetNode(self.editor_node)
        effect.connect("selectEffectSignal(QString)", self.setActiveEffectByName)
        effect.self().setupOptionsFrame()
        effect.self().setMRMLDefaults()
        self.effects.append(effect)
        return effect

    def effectByName(self, name):
        return next((e for e in self.effects if name and e.name == name), None)

    def setActiveEffectByName(self, name):
        self.setActiveEffect(self.effectByName(name))

    def setActiveEffect(self, effect):
        self.editor_node.SetActiveEffectName(effect.name if effect is not None else "")

    def updateEffectsSectionFromMRML(self):
        effect = self.effectByName(self.editor_node.GetActiveEffectName() or "")
        if effect is self.active:
            return
        if self.active is not None:
            self.active.self().deactivate()
        self.active = effect
        if effect is not None:
            if self.interaction_node.GetCurrentInteractionMode() != slicer.vtkMRMLInteractionNode.ViewTransform:
                self.interaction_node.SetCurrentInteractionMode(slicer.vtkMRMLInteractionNode.ViewTransform)
            effect.self().activate()
            effect.self().updateGUIFromMRML()

    def setSegmentationNode(self, node):
        if self.logic.GetSegmentationNode() is node:
            return
        self.logic.SetSegmentationNode(node)
        self.setActiveEffect(None)  # "deactivate current effect when we switch to a different segmentation"

    def module_exit(self):
        self.setActiveEffect(None)  # Modules/Scripted/SegmentEditor/SegmentEditor.py, exit()

    def onInteractionNodeModified(self):
        if self.active is not None:
            self.active.interactionNodeModified(self.interaction_node)

    def observe_view(self, view_widget):
        """Observe a view's interactor as setupViewObservations does (priority 1.0, abort on True)."""
        interactor = view_widget.interactor()
        for name in self.EVENTS:
            tags = []

            def callback(caller, event_name, tags=tags):
                if self.active is None:
                    return
                if self.active.self().processInteractionEvents(caller, getattr(vtk.vtkCommand, event_name),
                                                               view_widget):
                    caller.GetCommand(tags[0]).SetAbortFlag(1)  # callbackCommand->SetAbortFlag(1)
            tags.append(interactor.AddObserver(getattr(vtk.vtkCommand, name), callback, 1.0))
        # "Slice node observation" (setupViewObservations, v5.2.2 and v5.10.0): the slice node's ModifiedEvent goes to
        # the active effect's processViewNodeEvents (qSlicerSegmentEditorScriptedEffect::processViewNodeEvents; a
        # Python effect without the method gets the base class's, which does nothing)
        slice_node = view_widget.sliceLogic().GetSliceNode()

        def view_node_callback(caller, event_name):
            if self.active is None:
                return
            method = getattr(self.active.self(), "processViewNodeEvents", None)
            if method is not None:
                method(caller, vtk.vtkCommand.ModifiedEvent, view_widget)
        slice_node.AddObserver(vtk.vtkCommand.ModifiedEvent, view_node_callback, 1.0)
        self.views.append(view_widget)

    def destroy(self):
        """~qMRMLSegmentEditorWidgetPrivate: 5.10+ calls cleanup() then deletes each effect; 5.2-5.8 only delete."""
        for effect in self.effects:
            if self.generation != "5.2":
                effect.cleanup()
            effect.delete()
        self.effects = []
        self.active = None
