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
