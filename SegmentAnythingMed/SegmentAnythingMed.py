"""SegmentAnythingMed: Segment Anything (SAM, MedSAM, LiteMedSAM) in 3D Slicer.

The module registers the "Segment Anything" Segment Editor effect at start-up. Its panel chooses the backend
(in-process, or a model service URL + token) and the model, installs missing Python packages after asking, and
evaluates a segment against a reference (table, per-slice plot, CSV) or measures the segments (a table, as Segment
Statistics makes; with the Evaluation section's segmentation and grid). The work is done by ``SegmentAnythingMedLib``
(the MRML bridge, no Qt) and ``samed`` (the library); this file is the thin Qt layer, the logic and the self-test.
"""
import logging
import os
import subprocess

import ctk
import qt

import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

from SegmentAnythingMedLib.backend_settings import BackendSettings, describe_plan, install_plan, model_names
from SegmentAnythingMedLib.module_logic import ModuleLogic
from SegmentAnythingMedLib.scene_nodes import label_choices, node_choices, segment_choices
from SegmentAnythingMedLib.self_test_scenario import run_ctchest_scenario
from SegmentAnythingMedLib.worker import DONE, FAILED, PROGRESS, yield_gil

# The file given to qSlicerSegmentEditorScriptedEffect.setPythonSource: in a folder of its own, because Slicer names
# the effect's Python module after that folder (see the file's docstring).
EFFECT_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "SegmentEditorSegmentAnythingMedLib",
                             "SegmentEditorEffect.py")


class SegmentAnythingMed(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SegmentAnythingMed"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["SegmentAnythingMed developers"]
        self.parent.helpText = (
            "Segment Anything (SAM, MedSAM, LiteMedSAM) for medical images. Use the <b>Segment Anything</b> effect "
            "in the Segment Editor; here choose the backend (in-process or a model service) and evaluate a segment "
            "against a reference.")
        self.parent.acknowledgementText = (
            "Uses Segment Anything (Meta AI, Apache-2.0), MedSAM and LiteMedSAM (Bo Wang lab, Apache-2.0).")
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)

    def registerEditorEffect(self):
        """Register the effect with the Segment Editor (as Slicer's ScriptedSegmentEditorEffect template does)."""
        import qSlicerSegmentationsEditorEffectsPythonQt as qSlicerSegmentationsEditorEffects

        SegmentAnythingMedLogic().restoreSettings(qt.QSettings().value, qt.QSettings().remove)
        instance = qSlicerSegmentationsEditorEffects.qSlicerSegmentEditorScriptedEffect(None)
        if not instance.setPythonSource(EFFECT_SOURCE.replace("\\", "/")):
            logging.error("SegmentAnythingMed: the Segment Anything effect could not be loaded from %s; the Python "
                          "console shows why", EFFECT_SOURCE)
            return None
        instance.self().register()
        return instance


class SegmentAnythingMedLogic(ScriptedLoadableModuleLogic, ModuleLogic):
    """See SegmentAnythingMedLib.module_logic.ModuleLogic (settings, installation, connection test, evaluation)."""

    def __init__(self, provider=None, worker=None):
        ScriptedLoadableModuleLogic.__init__(self)
        ModuleLogic.__init__(self, provider, worker)


class SegmentAnythingMedWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = SegmentAnythingMedLogic()
        self.logic.restoreSettings(qt.QSettings().value, qt.QSettings().remove)  # remove: an old plain-text token
        self.pollTimer = qt.QTimer()
        self.pollTimer.setInterval(50)  # with yield_gil in onPoll: the worker runs 20 ms of every 70
        self.pollTimer.connect("timeout()", self.onPoll)
        self.connectionJob = None
        self._setupBackend()
        self._setupEvaluation()
        self.layout.addStretch(1)
        self.updateBackendGUI()
        self.updateEvaluationGUI()

    def _setupBackend(self):
        box = ctk.ctkCollapsibleButton()
        box.text = "Backend"
        self.layout.addWidget(box)
        form = qt.QFormLayout(box)
        self.whereCombo = qt.QComboBox()
        self.whereCombo.addItem("This computer (a model process started by Slicer)", "local")
        self.whereCombo.addItem("Model service", "service")
        form.addRow("Run on:", self.whereCombo)
        self.urlEdit = qt.QLineEdit()
        self.urlEdit.setPlaceholderText("http://HOST:PORT")
        form.addRow("Service URL:", self.urlEdit)
        self.tokenEdit = qt.QLineEdit()
        self.tokenEdit.setEchoMode(qt.QLineEdit.Password)
        self.tokenEdit.setToolTip("Kept for this Slicer session only; to keep it, use a token file")
        form.addRow("Token:", self.tokenEdit)
        self.tokenFileEdit = qt.QLineEdit()
        self.tokenFileEdit.setPlaceholderText("(or a file whose first line is the token; its path is remembered)")
        form.addRow("Token file:", self.tokenFileEdit)
        self.modelCombo = qt.QComboBox()
        for name in model_names():
            self.modelCombo.addItem(name, name)
        form.addRow("Model:", self.modelCombo)
        self.checkpointEdit = qt.QLineEdit()
        self.checkpointEdit.setPlaceholderText("(shipped weights)")
        self.browseButton = qt.QPushButton("Browse...")
        row = qt.QHBoxLayout()
        row.addWidget(self.checkpointEdit)
        row.addWidget(self.browseButton)
        form.addRow("Checkpoint:", row)
        self.deviceCombo = qt.QComboBox()
        for text, key in (("automatic", ""), ("cpu", "cpu"), ("cuda", "cuda")):
            self.deviceCombo.addItem(text, key)
        form.addRow("Device:", self.deviceCombo)
        # how this computer's model process resizes pictures and cuts masks (samed serve's options; docs/evaluation.md)
        self.inputResizeCombo, self.resizeFilterCombo, self.maskThresholdCombo = (qt.QComboBox(), qt.QComboBox(),
                                                                                  qt.QComboBox())
        for combo, items in ((self.inputResizeCombo, (("model's own", ""), ("longest side, padded", "longest"),
                                                      ("squashed to a square", "square"))),
                             (self.resizeFilterCombo, (("model's own", ""), ("antialias", "antialias"),
                                                       ("bilinear", "bilinear"), ("bicubic", "bicubic"))),
                             (self.maskThresholdCombo, (("model's own (LiteMedSAM: dice; SAM, MedSAM: 0.5)", ""),
                                                        ("dice (larger masks, best 2D Dice)", "dice"),
                                                        ("probability 0.5 (logit 0)", "model")))):
            for text, key in items:
                combo.addItem(text, key)
        self.maskThresholdCombo.setToolTip("dice: a pixel joins the mask above half the Dice the model expects "
                                           "(logit > ln(predicted IoU)); larger masks, better Dice from boxes. "
                                           "Slices a propagation fills are cut at probability 0.5 either way")
        form.addRow("Input resize:", self.inputResizeCombo)
        form.addRow("Resize filter:", self.resizeFilterCombo)
        form.addRow("Mask threshold:", self.maskThresholdCombo)
        self.useButton = qt.QPushButton("Use these settings")
        self.testButton = qt.QPushButton("Test connection")
        self.installButton = qt.QPushButton("Install dependencies...")
        buttons = qt.QHBoxLayout()
        for b in (self.useButton, self.testButton, self.installButton):
            buttons.addWidget(b)
        form.addRow(buttons)
        self.backendLabel = qt.QLabel("")
        self.backendLabel.setWordWrap(True)
        form.addRow(self.backendLabel)
        self.whereCombo.connect("currentIndexChanged(int)", self.updateBackendGUI)
        self.browseButton.connect("clicked()", self.onBrowseCheckpoint)
        self.useButton.connect("clicked()", self.onUseSettings)
        self.testButton.connect("clicked()", self.onTestConnection)
        self.installButton.connect("clicked()", self.onInstall)

    def _setupEvaluation(self):
        box = ctk.ctkCollapsibleButton()
        box.text = "Evaluation"
        self.layout.addWidget(box)
        form = qt.QFormLayout(box)
        self.segmentationCombo, self.segmentCombo = qt.QComboBox(), qt.QComboBox()
        self.referenceCombo, self.referenceItemCombo = qt.QComboBox(), qt.QComboBox()
        self.gridCombo = qt.QComboBox()
        form.addRow("Segmentation:", self.segmentationCombo)
        form.addRow("Segment:", self.segmentCombo)
        form.addRow("Reference:", self.referenceCombo)
        form.addRow("Reference segment / label:", self.referenceItemCombo)
        form.addRow("On the grid of:", self.gridCombo)
        self.toleranceSpin = qt.QDoubleSpinBox()
        self.toleranceSpin.setRange(0.1, 50.0)
        self.toleranceSpin.setValue(2.0)
        self.toleranceSpin.setSuffix(" mm")
        form.addRow("NSD tolerance:", self.toleranceSpin)
        self.refreshButton = qt.QPushButton("Refresh lists")
        self.evaluateButton = qt.QPushButton("Evaluate")
        self.exportButton = qt.QPushButton("Export CSV...")
        self.measureButton = qt.QPushButton("Measure segments")
        self.measureButton.setToolTip("Volume, diameters, RECIST axes, intensity and surface of every segment of the "
                                      "segmentation, on the chosen grid, in a table (as Segment Statistics)")
        buttons = qt.QHBoxLayout()
        for b in (self.refreshButton, self.evaluateButton, self.exportButton, self.measureButton):
            buttons.addWidget(b)
        form.addRow(buttons)
        self.evaluationLabel = qt.QLabel("")
        self.evaluationLabel.setWordWrap(True)
        form.addRow(self.evaluationLabel)
        self.segmentationCombo.connect("currentIndexChanged(int)", self.onSegmentationChanged)
        self.referenceCombo.connect("currentIndexChanged(int)", self.onReferenceChanged)
        self.refreshButton.connect("clicked()", self.updateEvaluationGUI)
        self.evaluateButton.connect("clicked()", self.onEvaluate)
        self.exportButton.connect("clicked()", self.onExport)
        self.measureButton.connect("clicked()", self.onMeasure)

    # backend ---------------------------------------------------------------------------------------------------
    def _settingsFromGUI(self):
        service = self.whereCombo.itemData(self.whereCombo.currentIndex) == "service"
        return BackendSettings(where=self.urlEdit.text.strip() if service else "local",
                               model=self.modelCombo.itemData(self.modelCombo.currentIndex) or "litemedsam",
                               checkpoint=self.checkpointEdit.text.strip(),
                               device=self.deviceCombo.itemData(self.deviceCombo.currentIndex) or "",
                               token=self.tokenEdit.text, token_file=self.tokenFileEdit.text.strip(),
                               input_resize=self.inputResizeCombo.itemData(self.inputResizeCombo.currentIndex) or "",
                               resize_filter=self.resizeFilterCombo.itemData(self.resizeFilterCombo.currentIndex)
                               or "",
                               mask_threshold=self.maskThresholdCombo.itemData(self.maskThresholdCombo.currentIndex)
                               or "")

    def updateBackendGUI(self, *args):
        settings = self.logic.provider.settings
        if args == ():  # from the stored settings
            self.whereCombo.setCurrentIndex(0 if settings.is_local else 1)
            self.urlEdit.setText("" if settings.is_local else settings.where)
            self.modelCombo.setCurrentIndex(max(0, self.modelCombo.findData(settings.model)))
            self.checkpointEdit.setText(settings.checkpoint)
            self.deviceCombo.setCurrentIndex(max(0, self.deviceCombo.findData(settings.device)))
            for combo, value in ((self.inputResizeCombo, settings.input_resize),
                                 (self.resizeFilterCombo, settings.resize_filter),
                                 (self.maskThresholdCombo, settings.mask_threshold)):
                combo.setCurrentIndex(max(0, combo.findData(value)))
            self.tokenEdit.setText(settings.token)
            self.tokenFileEdit.setText(settings.token_file)
        service = self.whereCombo.itemData(self.whereCombo.currentIndex) == "service"
        self.urlEdit.setEnabled(service)
        self.tokenEdit.setEnabled(service)
        self.tokenFileEdit.setEnabled(service)
        self.checkpointEdit.setEnabled(not service)
        self.deviceCombo.setEnabled(not service)
        for combo in (self.inputResizeCombo, self.resizeFilterCombo, self.maskThresholdCombo):
            combo.setEnabled(not service)
        missing = self.logic.missingPackages()
        self.installButton.setVisible(bool(missing))
        self.backendLabel.setText(describe_plan(install_plan(missing)) if missing else settings.describe())

    def onBrowseCheckpoint(self):
        path = qt.QFileDialog.getOpenFileName(self.parent, "Model checkpoint", "", "PyTorch checkpoint (*.pth *.pt)")
        if path:
            self.checkpointEdit.setText(path)

    def onUseSettings(self):
        """Use the panel's settings; returns them, or None (and says why) when they are rejected."""
        try:
            settings = self.logic.useSettings(self._settingsFromGUI(), qt.QSettings().setValue)
        except ValueError as exc:
            self.backendLabel.setText(str(exc))
            return None
        self.backendLabel.setText(f"Using {settings.describe()}.")
        self.updateBackendGUI(True)
        return settings

    def onTestConnection(self):
        if self.onUseSettings() is None:  # rejected: the message stays, nothing else is tested
            return
        self.backendLabel.setText("Connecting (starting the model can take a while)...")
        self.connectionJob = self.logic.startConnectionTest()
        self.pollTimer.start()

    def onPoll(self):
        if self.connectionJob is None:
            self.pollTimer.stop()
            return
        yield_gil(self.logic.worker.busy())  # the worker thread needs the GIL that Slicer's main loop keeps
        for event in self.logic.worker.poll([self.connectionJob]):
            if event.kind in (DONE, FAILED):
                self.backendLabel.setText(SegmentAnythingMedLogic.connectionText(event))
                self.connectionJob = None
                self.pollTimer.stop()
            elif event.kind != PROGRESS:
                self.connectionJob = None
                self.pollTimer.stop()

    def onInstall(self):
        plan = install_plan(self.logic.missingPackages())
        answer = qt.QMessageBox.question(self.parent, "Install dependencies", describe_plan(plan) + "\n\nInstall now?",
                                         qt.QMessageBox.Yes | qt.QMessageBox.No)
        if answer != qt.QMessageBox.Yes:
            self.backendLabel.setText("Nothing installed. Set a model service URL to work without PyTorch.")
            return
        qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
        try:
            missing = self.logic.installDependencies()
            message = "Installed." if not missing else f"Still missing: {', '.join(missing)}"
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:  # the logic says what to do
            message = f"Installation failed: {exc}"
        finally:
            qt.QApplication.restoreOverrideCursor()
        self.updateBackendGUI(True)
        self.backendLabel.setText(message)  # after the update, which shows the plan again

    # evaluation ------------------------------------------------------------------------------------------------
    def _fill(self, combo, choices):
        current = combo.itemData(combo.currentIndex) if combo.currentIndex >= 0 else None
        combo.blockSignals(True)
        combo.clear()
        for text, data in choices:
            combo.addItem(text, data)
        index = combo.findData(current) if current is not None else -1
        combo.setCurrentIndex(index if index >= 0 else 0)
        combo.blockSignals(False)

    def _nodeOf(self, combo):
        node_id = combo.itemData(combo.currentIndex) if combo.currentIndex >= 0 else ""
        return slicer.mrmlScene.GetNodeByID(node_id) if node_id else None

    def updateEvaluationGUI(self, *args):
        scene = slicer.mrmlScene
        segmentations = node_choices(scene, "vtkMRMLSegmentationNode", with_none=False)
        self._fill(self.segmentationCombo, segmentations)
        self._fill(self.referenceCombo, segmentations + node_choices(scene, "vtkMRMLLabelMapVolumeNode", False))
        self._fill(self.gridCombo, node_choices(scene, "vtkMRMLScalarVolumeNode", with_none=False))
        self.onSegmentationChanged()
        self.onReferenceChanged()

    def onSegmentationChanged(self, *args):
        self._fill(self.segmentCombo, segment_choices(self._nodeOf(self.segmentationCombo)))

    def onReferenceChanged(self, *args):
        node = self._nodeOf(self.referenceCombo)
        if node is not None and node.IsA("vtkMRMLSegmentationNode"):
            self._fill(self.referenceItemCombo, segment_choices(node))
        else:
            self._fill(self.referenceItemCombo, label_choices(node))

    def onEvaluate(self):
        try:
            reference = self.referenceItemCombo.itemData(self.referenceItemCombo.currentIndex)
            evaluation = self.logic.evaluate(
                self._nodeOf(self.segmentationCombo), self.segmentCombo.itemData(self.segmentCombo.currentIndex),
                self._nodeOf(self.referenceCombo), reference, self._nodeOf(self.gridCombo), self.toleranceSpin.value)
        except ValueError as exc:  # BridgeError included: the message names what to choose
            self.evaluationLabel.setText(f"Cannot evaluate: {exc}")
            return None
        self.evaluationLabel.setText(evaluation.describe())
        return evaluation

    def onExport(self):
        path = qt.QFileDialog.getSaveFileName(self.parent, "Export evaluation", "evaluation.csv", "CSV (*.csv)")
        if not path:
            return None
        try:
            written = self.logic.exportCsv(path)
        except (ValueError, OSError) as exc:
            self.evaluationLabel.setText(f"Export failed: {exc}")
            return None
        self.evaluationLabel.setText(f"Written {written}")
        return written


    def onMeasure(self):
        segmentation, volume = self._nodeOf(self.segmentationCombo), self._nodeOf(self.gridCombo)
        try:
            table = self.logic.measure(segmentation, volume)
        except ValueError as exc:  # BridgeError included: the message names what to choose
            self.evaluationLabel.setText(f"Cannot measure: {exc}")
            return None
        self.evaluationLabel.setText(f"Measured {table.GetNumberOfRows()} segments of {segmentation.GetName()!r} on "
                                     f"{volume.GetName()!r}: table {table.GetName()!r}")
        return table


class SegmentAnythingMedTest(ScriptedLoadableModuleTest):
    """Runs the effect in Slicer on slicerio's CTChest4 and its Slicer-made segmentation: an ROI around the right
    lung on its middle slice spanning 7 slices, Segment from markups, Propagate, Apply; Dice against the reference
    on those slices must exceed 0.8."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_SegmentAnythingOnCTChest()

    def _data(self):
        try:
            import slicerio
        except ImportError:
            slicer.util.pip_install("slicerio")
            import slicerio
        ct = slicerio.get_testdata_file("CTChest4.nrrd")
        volumeNode = slicer.util.loadVolume(ct)
        referenceNode = slicer.util.loadSegmentation(os.path.join(os.path.dirname(ct), "Segmentation.seg.nrrd"))
        return volumeNode, referenceNode

    def test_SegmentAnythingOnCTChest(self):
        self.delayDisplay("Loading CTChest4 and its reference segmentation")
        volumeNode, referenceNode = self._data()
        segmentEditorWidget = slicer.qMRMLSegmentEditorWidget()
        segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        editorNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        segmentEditorWidget.setMRMLSegmentEditorNode(editorNode)
        sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        dice = run_ctchest_scenario(slicer.mrmlScene, volumeNode, referenceNode, editorNode, sliceNode,
                                    lambda: activate_effect(segmentEditorWidget, volumeNode, editorNode))
        self.delayDisplay(f"Dice on the ROI's slices: {dice:.3f}")
        self.assertGreater(dice, 0.8)
        segmentEditorWidget = None


def activate_effect(segmentEditorWidget, volumeNode, editorNode):
    """Select the nodes in a Segment Editor widget and activate the effect; returns its Python object."""
    segmentEditorWidget.setSegmentationNode(editorNode.GetSegmentationNode())
    segmentEditorWidget.setSourceVolumeNode(volumeNode)
    segmentEditorWidget.setCurrentSegmentID(editorNode.GetSelectedSegmentID())
    segmentEditorWidget.setActiveEffectByName("Segment Anything")
    return segmentEditorWidget.activeEffect().self()
