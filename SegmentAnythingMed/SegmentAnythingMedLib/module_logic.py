"""The module's logic without Qt: backend settings (stored through a get/set pair such as QSettings'), installing
what the in-process backend lacks (after the panel asked), the connection test in the worker thread, evaluation into
table / plot nodes and CSV, segment measurements into a table (shown as Segment Statistics shows its own), and
driving the effect from a script (the self-test).

``SegmentAnythingMed.SegmentAnythingMedLogic`` is this class on Slicer's ScriptedLoadableModuleLogic base.
"""
import logging
import subprocess

import slicer

from .backend_settings import (LEGACY_TOKEN_KEY, SETTINGS_KEYS, SETTINGS_PREFIX, BackendSettings, describe_info,
                               install_plan, missing_packages, shared_provider)
from .worker import DONE, shared_worker

# evaluation_bridge (and through samed.core.metrics, scipy: ~250 ms) is imported when an evaluation needs it, not at
# every Slicer start


class ModuleLogic:
    """Backend settings, dependency installation, connection test and evaluation; no widgets."""

    def __init__(self, provider=None, worker=None):
        self.provider = provider or shared_provider()
        self.worker = worker or shared_worker()
        self.summaryTableNode = None
        self.sliceTableNode = None
        self.chartNode = None
        self.seriesNode = None
        self.measurementsTableNode = None

    # settings --------------------------------------------------------------------------------------------------
    def restoreSettings(self, get, remove=None):
        """Settings from a store (``qt.QSettings().value``); invalid stored values fall back to the defaults.
        ``remove`` (``qt.QSettings().remove``) deletes the plain-text token that earlier versions stored."""
        if remove is not None and get(SETTINGS_PREFIX + LEGACY_TOKEN_KEY, ""):
            remove(SETTINGS_PREFIX + LEGACY_TOKEN_KEY)
            logging.warning("SegmentAnythingMed: the service token is no longer kept in Slicer's settings (it was "
                            "stored as plain text): type it again, or choose a token file")
        values = {k: get(SETTINGS_PREFIX + k, "") for k in SETTINGS_KEYS}
        try:
            settings = BackendSettings.from_dict(values).validate()
        except ValueError as exc:
            logging.warning(f"SegmentAnythingMed: stored backend settings ignored ({exc})")
            settings = BackendSettings()
        self.provider.update(settings)
        return settings

    def useSettings(self, settings, set_=None):
        """Validate and use ``settings`` (ValueError says what is wrong); store them with ``set_(key, value)``
        (never the token itself: see backend_settings). Returns at once, also while a model loads."""
        settings = settings.validate()
        self.provider.update(settings)
        if set_ is not None:
            for key, value in settings.to_dict().items():
                set_(SETTINGS_PREFIX + key, value)
        return settings

    def missingPackages(self):
        return missing_packages(self.provider.settings)

    def installDependencies(self):
        """Install what "this computer" lacks: torch with PyTorchUtils, the rest with pip (ask first).
        Failures raise RuntimeError with what to do: slicer.util.pip_install and PyTorchUtils' installTorch raise
        subprocess.CalledProcessError when pip fails (Slicer Base/Python/slicer/util.py, logProcessOutput)."""
        plan = install_plan(self.missingPackages())
        if plan["torch"]:
            try:
                import PyTorchUtils
            except ImportError as exc:
                raise RuntimeError("the PyTorch extension is not installed: install 'PyTorch' from the Extensions "
                                   "Manager, restart Slicer, then try again (or use a model service)") from exc
            try:
                installed = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(f"installing PyTorch through the PyTorch extension failed (pip exit code "
                                   f"{exc.returncode}): see the Python console for pip's output (network, proxy, "
                                   f"disk space?), then try again, or use a model service") from None
            if installed is None:
                raise RuntimeError("PyTorch was not installed")
        if plan["pip"]:
            requirements = " ".join(plan["pip"])
            try:
                slicer.util.pip_install(requirements)
            except subprocess.CalledProcessError as exc:
                raise RuntimeError(f"pip install {requirements} failed (exit code {exc.returncode}): see the Python "
                                   f"console for pip's output (network, proxy, disk space?), then try again, or use "
                                   f"a model service") from None
        return self.missingPackages()

    def startConnectionTest(self):
        """Load / reach the backend in the worker thread; the result comes as the job's event."""
        provider = self.provider
        return self.worker.submit(lambda ctx: provider.get().info(), label="test connection")

    @staticmethod
    def connectionText(event):
        if event.kind == DONE:
            return describe_info(event.value)
        return f"Connection failed: {event.error}"

    # evaluation ------------------------------------------------------------------------------------------------
    def _ensureOutputNodes(self, scene):
        def node(current, cls, name):
            if current is not None and current.GetScene() is scene:
                return current
            return scene.AddNewNodeByClass(cls, name)

        self.summaryTableNode = node(self.summaryTableNode, "vtkMRMLTableNode", "SegmentAnythingMed evaluation")
        self.sliceTableNode = node(self.sliceTableNode, "vtkMRMLTableNode", "SegmentAnythingMed Dice per slice")

    def evaluate(self, segmentationNode, segmentId, referenceNode, reference, volumeNode, toleranceMm=2.0,
                 npAxis=None):
        """Metrics of a segment against a reference on ``volumeNode``'s grid, written to table and chart nodes."""
        if segmentationNode is None:
            raise ValueError("choose the segmentation that holds the segment to evaluate")
        if volumeNode is None:
            raise ValueError("choose the volume whose grid the comparison uses (the source volume)")
        if reference is None or reference == "":
            raise ValueError("choose the reference segment or label")
        from . import evaluation_bridge
        from .volume_bridge import volume_from_node

        scene = segmentationNode.GetScene()
        volume = volume_from_node(volumeNode, copy=False)
        evaluation = evaluation_bridge.evaluate_segment(segmentationNode, segmentId, referenceNode, reference,
                                                        volume, npAxis, toleranceMm)
        self._ensureOutputNodes(scene)
        evaluation_bridge.append_summary(self.summaryTableNode, evaluation)
        evaluation_bridge.write_per_slice(self.sliceTableNode, evaluation)
        self.chartNode, self.seriesNode = evaluation_bridge.per_slice_chart(
            scene, self.sliceTableNode, evaluation, self.chartNode, self.seriesNode)
        return evaluation

    def exportCsv(self, path):
        if self.summaryTableNode is None:
            raise ValueError("evaluate a segment first: there is no table to export")
        from . import evaluation_bridge

        return evaluation_bridge.export_csv(self.summaryTableNode, path)

    # measurements ----------------------------------------------------------------------------------------------
    def measure(self, segmentationNode, volumeNode, show=True):
        """Every segment of ``segmentationNode`` measured over ``volumeNode`` (its grid and intensities) into the
        segmentation's measurements table (made once, refreshed after), shown as Segment Statistics shows its table.
        ValueError (BridgeError) says what to choose."""
        from .measurements_table import show_table, update_measurements_table

        if volumeNode is None:
            raise ValueError("choose the volume to measure on (its grid and intensities: the source volume)")
        scene = segmentationNode.GetScene() if segmentationNode is not None else None
        self.measurementsTableNode = update_measurements_table(scene, segmentationNode, volumeNode)
        if show:
            show_table(self.measurementsTableNode)
        return self.measurementsTableNode

    # the effect, driven from a script (the self-test) ----------------------------------------------------------
    @staticmethod
    def segmentWithEffect(effect, sliceNode, roiNode, propagate=True, timeout=600.0):
        """Run the effect as a user would: ROI chosen, Segment from markups, Propagate, Apply. Returns status."""
        effect.roiSelector.setCurrentNode(roiNode)
        effect.onSegmentFromMarkups(sliceNode)
        session = effect.session
        session.wait(timeout)
        if propagate:
            effect.onPropagate()
            session.wait(timeout)
        effect.onPoll()
        if not session.has_preview:
            raise RuntimeError(f"the effect produced no preview: {session.status}")
        effect.onApply()
        return session.status
