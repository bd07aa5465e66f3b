"""Loading the effect as Slicer does, on the real shipped files, in both loader generations (tests/slicer_fake_editor.py
replays qSlicerSegmentEditorScriptedEffect::setPythonSource + qSlicerScriptedUtils::loadSourceAsModule of
Slicer 5.2-5.8 and of 5.10+): the module's start-up registration, with and without the package's modules imported
before, clone(), and what the effect's life leaves behind (Slicer 5.2-5.8 never call cleanup())."""
import gc
import importlib
import pkgutil
import sys
import weakref

import pytest
import slicer

import slicer_fakes
from slicer_fake_editor import GENERATIONS, SegmentEditorWidget, set_python_source
from slicer_scenes import (LPS, EffectHarness, add_segmentation, add_volume, ellipsoid, provider,  # noqa: F401
                           slicer_env)

OURS = ("SegmentAnythingMed", "SegmentAnythingMedLib", "SegmentEditorSegmentAnythingMedLib")


@pytest.fixture
def fresh_slicer(slicer_env, provider, monkeypatch):
    """Slicer starting: none of our modules imported yet; sys.modules as it was afterwards (the loaders change it)."""
    saved = dict(sys.modules)
    saved_attributes = {n: getattr(slicer, n) for n in OURS if hasattr(slicer, n)}
    for name in [n for n in sys.modules if n.split(".")[0] in OURS]:
        del sys.modules[name]
    slicer.qSlicerSegmentEditorEffectFactory.instance().effects.clear()
    yield slicer_env
    slicer.qSlicerSegmentEditorEffectFactory.instance().effects.clear()
    for name in [n for n in sys.modules if n.split(".")[0] in OURS]:
        del sys.modules[name]
    sys.modules.update({n: m for n, m in saved.items() if n.split(".")[0] in OURS})
    for name in OURS:
        if name in saved_attributes:
            setattr(slicer, name, saved_attributes[name])
        elif hasattr(slicer, name):
            delattr(slicer, name)


def import_every_package_module():
    """What any script, self-test or other module may do before start-up completes."""
    import SegmentAnythingMedLib

    for info in pkgutil.iter_modules(SegmentAnythingMedLib.__path__):
        importlib.import_module(f"SegmentAnythingMedLib.{info.name}")


@pytest.mark.parametrize("prior_import", [False, True], ids=["fresh", "package-imported-first"])
@pytest.mark.parametrize("generation", GENERATIONS)
def test_startup_registers_the_effect_and_leaves_the_package_intact(fresh_slicer, generation, prior_import,
                                                                     monkeypatch):
    monkeypatch.setitem(slicer_fakes.LOADER, "generation", generation)
    import SegmentAnythingMed as module  # Slicer imports the module's file at start-up ...

    if prior_import:
        import_every_package_module()
    parent = type("ModuleParent", (), {"path": module.__file__})()
    module.SegmentAnythingMed(parent)
    package = sys.modules["SegmentAnythingMedLib"]
    fresh_slicer.app.emit("startupCompleted()")  # ... and registers the effect when start-up is complete
    factory = slicer.qSlicerSegmentEditorEffectFactory.instance()
    assert [e.name for e in factory.effects] == ["Segment Anything"], "the effect is not registered (see the log)"
    (registered,) = factory.effects
    effect = registered.self()
    assert type(effect).__module__ == "SegmentAnythingMedLib.segment_editor_effect"
    assert registered.perSegment and registered.requireSegments
    # the package is still the package: its modules import, nothing was executed into it
    assert sys.modules["SegmentAnythingMedLib"] is package and package.__spec__.submodule_search_locations
    assert package.__file__.endswith("__init__.py")
    importlib.import_module("SegmentAnythingMedLib.effect_parameters")
    # the Segment Editor widget clones it (the clone loads the same file again, finding the class already loaded)
    clone = effect.clone()
    assert type(clone.self()) is type(effect) and clone.self() is not effect
    assert clone.pythonSource() == registered.pythonSource() == module.EFFECT_SOURCE.replace("\\", "/")
    assert type(clone.self().clone().self()) is type(effect)


@pytest.mark.parametrize("generation", GENERATIONS)
def test_a_file_that_fails_to_load_is_not_registered_and_says_why(fresh_slicer, generation, tmp_path, caplog):
    """The replayed loader rejects what Slicer rejects (no .py, no class of the file's name, an import error)."""
    adaptor = slicer_fakes.ScriptedEffectAdaptor(None)
    assert set_python_source(adaptor, str(tmp_path / "Effect.txt"), generation) is None
    broken = tmp_path / "SomeLib" / "SegmentEditorEffect.py"
    broken.parent.mkdir()
    broken.write_text("from SomeLib.missing import thing\n")
    assert set_python_source(adaptor, str(broken), generation) is None
    assert "SomeLib.missing" in caplog.text
    nameless = tmp_path / "OtherLib" / "SegmentEditorEffect.py"
    nameless.parent.mkdir()
    nameless.write_text("class SomethingElse:\n    pass\n")
    assert set_python_source(adaptor, str(nameless), generation) is None
    assert "class SegmentEditorEffect was not found" in caplog.text


def cube_harness(env, generation):
    image, _ = ellipsoid((12, 30, 40), (6, 15, 20), (4, 8, 10))
    node = add_volume(env.scene, image, (1.0, 1.0, 2.0), LPS)
    segmentation, (sid,) = add_segmentation(env.scene, node, ("ball",))
    return EffectHarness(env, node, segmentation, sid, generation)


def start_a_job(effect):
    from SegmentAnythingMedLib import volume_bridge

    env_slice = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode", "Job view")
    env_slice.SetLayoutName("Job")
    env_slice.SetOrientation("Axial")
    session = effect._session()
    volume = session.snapshot().volume
    env_slice.JumpSliceByCentering(*volume_bridge.slice_position_ras(volume, 0, 6))
    view = session.view_of(env_slice)
    a, b = [tuple((volume.ijk_to_ras @ p)[:3]) for p in ([5, 3, 6, 1.0], [35, 27, 6, 1.0])]
    effect._run(lambda: session.set_box(a, b, view))
    assert effect.timer.isActive()
    return session


@pytest.mark.parametrize("generation", GENERATIONS)
def test_a_deleted_effect_is_freed_and_its_timer_gone_without_cleanup(slicer_env, provider, generation):
    """Slicer 5.2-5.8 delete the Segment Editor widget's effects without calling cleanup(): the effect's timer (and
    its connection to onPoll) must go with the C++ effect, or every widget ever made keeps an effect alive."""
    h = cube_harness(slicer_env, generation)
    session = start_a_job(h.effect)
    timer, ref = h.effect.timer, weakref.ref(h.effect)
    other = SegmentEditorWidget(slicer_env, h.editor_node, h.logic, generation)
    other.add_effect(h.registered)  # a later clone: Slicer's slicer.<module folder> attribute points to it now
    h.editor.destroy()
    del h.effect, h.adaptor
    gc.collect()
    assert not timer.isActive(), "the timer of a deleted effect still fires"
    assert ref() is None, f"the deleted effect is kept alive by {[type(r).__name__ for r in gc.get_referrers(ref())]}"
    session.wait(30)
    other.destroy()


def test_the_fakes_reject_what_slicer_rejects(slicer_env):
    """qMRMLNodeComboBox selects None for a node it does not list (setCurrentNodeIDInternal); a QTimer's parent must
    be a QObject (PythonQt's argument check); a deleted QObject's connections are gone with it."""
    import qt

    combo = slicer.qMRMLNodeComboBox()
    combo.nodeTypes = ["vtkMRMLMarkupsROINode"]
    combo.noneEnabled = True
    combo.setMRMLScene(slicer_env.scene)
    roi = slicer_env.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    points = slicer_env.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    combo.setCurrentNode(roi)
    assert combo.currentNode() is roi
    combo.setCurrentNode(points)
    assert combo.currentNode() is None
    combo.setCurrentNode(roi)
    slicer_env.scene.RemoveNode(roi)
    assert combo.currentNode() is None
    with pytest.raises(TypeError):
        qt.QTimer("not a QObject")
    owner = qt.QObject()
    timer = qt.QTimer(owner)
    calls = []
    timer.connect("timeout()", lambda: calls.append(1))
    timer.start()
    owner.delete()
    assert not timer.fire() and not calls and timer.deleted
