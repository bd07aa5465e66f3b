"""The file Slicer loads as the "Segment Anything" effect (``qSlicerSegmentEditorScriptedEffect.setPythonSource``,
from SegmentAnythingMed.py at start-up and from ``SegmentEditorEffect.clone``). It only imports the effect class.

Why a folder of its own: setPythonSource names the Python module after this file's parent folder and looks the
class up in it (Modules/Loadable/Segmentations/EditorEffects/qSlicerSegmentEditorScriptedEffect.cxx). Slicer 5.2-5.8
run ``imp.load_source(<folder name>, <this file>)``, which executes this file inside any module of that name already
imported; Slicer 5.10 and later (commit bb06cef09d, Base/QTCore/qSlicerScriptedUtils.cxx ``loadSourceAsModule``)
put ``sys.modules[<folder name>] = module_from_spec(<this file>)`` before running it. Were this file in the
``SegmentAnythingMedLib`` package, 5.10+ would replace the package by a plain module and every later
``from SegmentAnythingMedLib.x import ...`` would fail. This folder holds no package and nothing else imports it.
"""
from SegmentAnythingMedLib.segment_editor_effect import SegmentEditorEffect  # noqa: F401 (the class Slicer looks up)
