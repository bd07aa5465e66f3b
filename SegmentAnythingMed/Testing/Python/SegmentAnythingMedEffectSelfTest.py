"""Self-test of the "Segment Anything" effect for Slicer's test runner (ctest: py_SegmentAnythingMedEffectSelfTest).

Runs the effect as a user would, in a real Slicer with the extension's modules on the module path: CTChest4 and its
Slicer-made segmentation (from slicerio), an ROI around the right lung on its middle slice spanning 7 slices,
Segment from markups, Propagate, Apply, then Dice against the reference on those slices must exceed 0.8. The same
scenario (SegmentAnythingMed.run_ctchest_scenario) runs in pytest with the Slicer application faked.
"""
import unittest

import slicer
from SegmentAnythingMed import SegmentAnythingMedTest


class SegmentAnythingMedEffectSelfTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def test_effect_on_ctchest(self):
        test = SegmentAnythingMedTest()
        test.setUp()
        test.test_SegmentAnythingOnCTChest()

    def test_effect_is_registered(self):
        factory = slicer.qSlicerSegmentEditorEffectFactory.instance()
        names = [effect.name for effect in factory.registeredEffects()]
        self.assertIn("Segment Anything", names)

    def test_registration_leaves_the_package_a_package_and_clones_load(self):
        """Slicer 5.10+ put sys.modules[<effect file's folder>] = <effect file>: that folder must not be our package
        (tests/test_slicer_loading.py replays both loaders; this checks the real one)."""
        import importlib
        import sys

        package = sys.modules["SegmentAnythingMedLib"]
        self.assertTrue(package.__spec__.submodule_search_locations)
        importlib.import_module("SegmentAnythingMedLib.effect_parameters")
        factory = slicer.qSlicerSegmentEditorEffectFactory.instance()
        effect = next(e for e in factory.registeredEffects() if e.name == "Segment Anything")
        clone = effect.self().clone()
        self.assertIs(type(clone.self()), type(effect.self()))
        self.assertEqual(clone.pythonSource(), effect.pythonSource())
