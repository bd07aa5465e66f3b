"""The "Segment Anything" Segment Editor effect. Slicer loads it through
``SegmentEditorSegmentAnythingMedLib/SegmentEditorEffect.py`` (see that file for why it lives there).

This is the thin Qt layer: widgets, view events and a timer. Every decision lives in the bridge modules of this
package (``session``, ``gestures``, ``effect_parameters``, ...), where pytest reaches it.
"""
import logging
import os

import qt

import slicer
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from SegmentAnythingMedLib.backend_settings import shared_provider
from SegmentAnythingMedLib.effect_controls import controls
from SegmentAnythingMedLib.effect_parameters import (APPLY_CHOICES, DEFAULTS, INTENSITY_CHOICES, RANGE_CHOICES,
                                                     options_from_parameters, read_parameters)
from SegmentAnythingMedLib.gestures import BOX, SliceGestures, markups_handle_hovered, markups_slice_node
from SegmentAnythingMedLib.preview import SegmentPreview
from SegmentAnythingMedLib.refine_session import refine_selected
from SegmentAnythingMedLib.rubber_band import RubberBand
from SegmentAnythingMedLib.segment_writer import EffectEditTarget
from SegmentAnythingMedLib.session import USER_ERRORS, EditSession, describe_error
from SegmentAnythingMedLib.worker import shared_worker

POLL_MS = 50
ICON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Icons",
                    "SegmentEditorEffect.png")


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Segment with Segment Anything (SAM, MedSAM, LiteMedSAM) from clicks, a box or markups; propagate; apply."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "Segment Anything"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.session = None
        self.gestures = SliceGestures()
        self.timer = None
        self.target = EffectEditTarget(scriptedEffect)
        self.rubberBands = {}  # view widget -> RubberBand drawn in it
        self.lastSliceNode = None  # the slice view the user last worked in ("Segment from markups" prompts there)
        # Slicer 5.2-5.8 delete effects without cleanup(): the preview must not outlive the effect that can apply it
        scriptedEffect.connect("destroyed()", self._dropSession)

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        cloned = effects.qSlicerSegmentEditorScriptedEffect(None)
        cloned.setPythonSource(self.scriptedEffect.pythonSource())  # SegmentEditorSegmentAnythingMedLib/...
        return cloned

    def icon(self):
        return qt.QIcon(ICON) if os.path.exists(ICON) else qt.QIcon()

    def helpText(self):
        return ("<html>Segment with Segment Anything (SAM / MedSAM / LiteMedSAM).<p>"
                "<b>Left-drag</b> a box around the structure (LiteMedSAM and MedSAM take boxes). "
                "<b>Left-click</b> adds an include point, <b>ctrl+left-click</b> or <b>right-click</b> an exclude "
                "point (SAM models). Or pick point lists / an ROI and press <b>Segment from markups</b>.<p>"
                "The result is a preview: cycle the candidates, <b>Propagate</b> to neighbouring slices (within the "
                "ROI or a range), correct a slice and propagate again; or <b>Refine selected segment</b> (e.g. "
                "another tool's); then <b>Apply</b> (undo works) or <b>Cancel</b>. Set the backend in the module.")

    # ------------------------------------------------------------------------------------------------ widgets

    def _nodeSelector(self, nodeType, toolTip):
        selector = slicer.qMRMLNodeComboBox()
        selector.nodeTypes = [nodeType]
        selector.noneEnabled = True
        selector.addEnabled = False
        selector.removeEnabled = False
        selector.setToolTip(toolTip)
        selector.setMRMLScene(slicer.mrmlScene)
        return selector

    def _combo(self, choices):
        combo = qt.QComboBox()
        for key, text in choices:
            combo.addItem(text, key)
        return combo

    def setupOptionsFrame(self):
        self.statusLabel = qt.QLabel("Drag a box around the structure.")
        self.statusLabel.setWordWrap(True)
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        self.intensityCombo = self._combo(INTENSITY_CHOICES)
        self.scriptedEffect.addLabeledOptionsWidget("Intensity:", self.intensityCombo)
        self.windowSpin, self.levelSpin = qt.QDoubleSpinBox(), qt.QDoubleSpinBox()
        for spin in (self.windowSpin, self.levelSpin):
            spin.setRange(-100000, 100000)
        windowRow = qt.QHBoxLayout()
        windowRow.addWidget(self.windowSpin)
        windowRow.addWidget(self.levelSpin)
        self.scriptedEffect.addLabeledOptionsWidget("Window / level:", windowRow)

        self.includeSelector = self._nodeSelector("vtkMRMLMarkupsFiducialNode", "Point list of include points")
        self.excludeSelector = self._nodeSelector("vtkMRMLMarkupsFiducialNode", "Point list of exclude points")
        self.roiSelector = self._nodeSelector("vtkMRMLMarkupsROINode", "ROI: its box on each slice it crosses")
        self.scriptedEffect.addLabeledOptionsWidget("Include points:", self.includeSelector)
        self.scriptedEffect.addLabeledOptionsWidget("Exclude points:", self.excludeSelector)
        self.scriptedEffect.addLabeledOptionsWidget("ROI:", self.roiSelector)
        self.markupsButton = qt.QPushButton("Segment from markups")
        self.markupsButton.setToolTip("Prompt the slice shown in the view you last worked in from the chosen point "
                                      "lists and ROI")
        self.allSlicesCheckBox = qt.QCheckBox("every slice they reach")
        self.allSlicesCheckBox.setToolTip("Segment each slice the markups reach (an ROI: every slice it crosses, "
                                          "with its box there) instead of the slice under the view only")
        markupsRow = qt.QHBoxLayout()
        markupsRow.addWidget(self.markupsButton)
        markupsRow.addWidget(self.allSlicesCheckBox)
        self.scriptedEffect.addOptionsWidget(markupsRow)

        self.candidateLabel = qt.QLabel("")
        self.nextCandidateButton = qt.QPushButton("Next candidate")
        candidateRow = qt.QHBoxLayout()
        candidateRow.addWidget(self.candidateLabel)
        candidateRow.addWidget(self.nextCandidateButton)
        self.scriptedEffect.addLabeledOptionsWidget("Result:", candidateRow)

        self.rangeCombo = self._combo(RANGE_CHOICES)
        self.scriptedEffect.addLabeledOptionsWidget("Propagate:", self.rangeCombo)
        self.firstSpin, self.lastSpin = qt.QSpinBox(), qt.QSpinBox()
        rangeRow = qt.QHBoxLayout()
        rangeRow.addWidget(self.firstSpin)
        rangeRow.addWidget(self.lastSpin)
        self.scriptedEffect.addLabeledOptionsWidget("Slice range:", rangeRow)
        self.propagateButton = qt.QPushButton("Propagate")
        self.refineButton = qt.QPushButton("Refine selected segment")
        self.stopButton = qt.QPushButton("Stop")
        self.progressBar = qt.QProgressBar()
        self.progressBar.setVisible(False)
        propagateRow = qt.QHBoxLayout()
        propagateRow.addWidget(self.propagateButton)
        propagateRow.addWidget(self.refineButton)
        propagateRow.addWidget(self.stopButton)
        propagateRow.addWidget(self.progressBar)
        self.scriptedEffect.addOptionsWidget(propagateRow)

        self.applyModeCombo = self._combo(APPLY_CHOICES)
        self.scriptedEffect.addLabeledOptionsWidget("Apply:", self.applyModeCombo)
        self.applyButton = qt.QPushButton("Apply")
        self.applyButton.objectName = self.__class__.__name__ + "Apply"
        self.cancelButton = qt.QPushButton("Cancel")
        self.cancelButton.objectName = self.__class__.__name__ + "Cancel"
        applyRow = qt.QHBoxLayout()
        applyRow.addWidget(self.cancelButton)
        applyRow.addWidget(self.applyButton)
        self.scriptedEffect.addOptionsWidget(applyRow)

        for combo in (self.intensityCombo, self.rangeCombo, self.applyModeCombo):
            combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        for spin in (self.windowSpin, self.levelSpin):
            spin.connect("valueChanged(double)", self.updateMRMLFromGUI)
        for spin in (self.firstSpin, self.lastSpin):
            spin.connect("valueChanged(int)", self.updateMRMLFromGUI)
        self.allSlicesCheckBox.connect("toggled(bool)", self.updateMRMLFromGUI)
        for button, slot in ((self.markupsButton, self.onSegmentFromMarkups), (self.propagateButton, self.onPropagate),
                             (self.nextCandidateButton, self.onNextCandidate), (self.refineButton, self.onRefine),
                             (self.stopButton, self.onStop), (self.applyButton, self.onApply),
                             (self.cancelButton, self.onCancel)):
            button.connect("clicked()", slot)

        # A child of the C++ effect: deleted with it, so that its connection to onPoll does not keep this object
        # alive where Slicer never calls cleanup() (5.2-5.8; https://github.com/Slicer/Slicer/issues/7392).
        self.timer = qt.QTimer(self.scriptedEffect)
        self.timer.setInterval(POLL_MS)
        self.timer.connect("timeout()", self.onPoll)

    def createCursor(self, widget):
        return qt.QCursor(qt.Qt.CrossCursor)

    def setMRMLDefaults(self):
        for name, value in DEFAULTS.items():
            self.scriptedEffect.setParameterDefault(name, value)

    def _select(self, combo, key):
        index = combo.findData(key)
        combo.setCurrentIndex(index if index >= 0 else 0)

    def updateGUIFromMRML(self):
        if self.scriptedEffect.parameterSetNode() is None:
            return
        params = read_parameters(self.scriptedEffect.parameter)
        widgets = [self.intensityCombo, self.rangeCombo, self.applyModeCombo, self.windowSpin, self.levelSpin,
                   self.firstSpin, self.lastSpin, self.allSlicesCheckBox]
        blocked = [w.blockSignals(True) for w in widgets]
        self._select(self.intensityCombo, params["IntensityMode"])
        self._select(self.rangeCombo, params["RangeMode"])
        self._select(self.applyModeCombo, params["ApplyMode"])
        self.windowSpin.setValue(float(params["Window"]))
        self.levelSpin.setValue(float(params["Level"]))
        self.allSlicesCheckBox.setChecked(params["MarkupsAllSlices"] == "1")
        session = self._session(create=False)
        volume = self.scriptedEffect.parameterSetNode().GetSourceVolumeNode()
        top = 0
        if volume is not None and volume.GetImageData() is not None:
            top = max(volume.GetImageData().GetDimensions()) - 1
        for spin, name in ((self.firstSpin, "RangeFirst"), (self.lastSpin, "RangeLast")):
            spin.setRange(0, top)
            spin.setValue(int(float(params[name])))
        for w, b in zip(widgets, blocked):
            w.blockSignals(b)
        self.windowSpin.setEnabled(params["IntensityMode"] == "window")
        self.levelSpin.setEnabled(params["IntensityMode"] == "window")
        self.firstSpin.setEnabled(params["RangeMode"] == "set")
        self.lastSpin.setEnabled(params["RangeMode"] == "set")
        self._refresh(session)

    def updateMRMLFromGUI(self, *args):
        if self.scriptedEffect.parameterSetNode() is None:
            return
        values = {"IntensityMode": self.intensityCombo.itemData(self.intensityCombo.currentIndex),
                  "RangeMode": self.rangeCombo.itemData(self.rangeCombo.currentIndex),
                  "ApplyMode": self.applyModeCombo.itemData(self.applyModeCombo.currentIndex),
                  "Window": self.windowSpin.value, "Level": self.levelSpin.value,
                  "RangeFirst": self.firstSpin.value, "RangeLast": self.lastSpin.value,
                  "MarkupsAllSlices": "1" if self.allSlicesCheckBox.checked else "0"}
        for name, value in values.items():
            self.scriptedEffect.setParameter(name, value)
        self.updateGUIFromMRML()

    def _refresh(self, session, message=None):
        """Buttons, candidate, progress and status from the session's state (``message`` overrides the status)."""
        c = controls(session, message)
        self.candidateLabel.setText(c.candidate_text)
        self.nextCandidateButton.setEnabled(c.next_candidate)
        self.propagateButton.setEnabled(c.propagate)
        self.refineButton.setEnabled(c.refine)
        self.stopButton.setEnabled(c.stop)
        self.applyButton.setEnabled(c.apply)
        self.cancelButton.setEnabled(c.cancel)
        self.progressBar.setVisible(c.progress is not None)
        if c.progress is not None:
            self.progressBar.setRange(0, c.progress[1])
            self.progressBar.setValue(c.progress[0])
        if c.status is not None:
            self.statusLabel.setText(c.status)

    # ------------------------------------------------------------------------------------------------ session

    def _session(self, create=True):
        if self.session is None and create:
            scene = self.scriptedEffect.scene()
            self.session = EditSession(shared_provider(), shared_worker(), SegmentPreview(scene))
        if self.session is not None:
            node = self.scriptedEffect.parameterSetNode()
            if node is not None:
                self.session.set_source(node.GetSourceVolumeNode(), node.GetSegmentationNode(),
                                        node.GetSelectedSegmentID() or "")
            params = read_parameters(self.scriptedEffect.parameter)
            self.session.options = options_from_parameters(params, self.session.options)
        return self.session

    def _run(self, action):
        """Call a session action; show what went wrong instead of raising into Slicer's event loop."""
        try:
            result = action()
        except Exception as exc:  # shown to the user; an unexpected one also goes to the log with its traceback
            if not isinstance(exc, USER_ERRORS):
                logging.error("Segment Anything: unexpected error", exc_info=True)
            self._refresh(self.session, describe_error(exc))
            return None
        if self.session is not None and self.session.busy:
            self.timer.start()
        self._refresh(self.session)
        return result

    def activate(self):
        self._session()
        self._refresh(self.session)

    def deactivate(self):
        """Slicer deactivates the effect when the user leaves the Segment Editor, places markups (the base class's
        interactionNodeModified selects no effect), switches segmentation or picks another effect. The preview and
        a running job stay (as Fill between slices and Grow from seeds keep theirs: their base class,
        AbstractScriptedSegmentEditorAutoCompleteEffect, does nothing on deactivation): Apply or Cancel decide."""
        self.gestures.cancel()
        for viewWidget, band in self.rubberBands.items():
            self.scriptedEffect.removeActor2D(viewWidget, band.actor)
        self.rubberBands = {}

    def sourceVolumeNodeChanged(self):
        if self.session is not None:
            self._session()  # a new source volume drops the preview made on the old one
            self._refresh(self.session)

    def cleanup(self):
        """Called by Slicer 5.10+ before it deletes the effect (not by 5.2-5.8): nothing can Apply the preview then."""
        self.deactivate()
        self._dropSession()
        if self.timer is not None:
            self.timer.stop()
            self.timer.disconnect("timeout()", self.onPoll)

    def _dropSession(self):
        if self.session is not None:
            self.session.cancel()

    def onPoll(self):
        session = self.session
        if session is not None:
            self._run(session.poll)  # an error while showing a result is shown, not raised into Qt's event loop
        if session is None or not session.busy:
            self.timer.stop()
        else:  # Slicer's main loop keeps the GIL while idle: give the worker thread a turn (worker.yield_gil)
            from SegmentAnythingMedLib.worker import yield_gil

            yield_gil(True)

    # ---------------------------------------------------------------------------------------------- view events

    def processViewNodeEvents(self, callerViewNode, eventId, viewWidget):
        """A view's slice node changed (qMRMLSegmentEditorWidget::setupViewObservations observes each slice node's
        ModifiedEvent): the user scrolled to, or stays on, a slice; have it encoded ahead (session.stopped_on)."""
        session = self.session
        if session is None or callerViewNode is None or not callerViewNode.IsA("vtkMRMLSliceNode"):
            return
        try:
            session.stopped_on(callerViewNode)
        except Exception:  # a hint only: never an error in the user's face for it
            logging.debug("Segment Anything: encoding ahead failed", exc_info=True)

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        sliceNode = viewWidget.sliceLogic().GetSliceNode()
        self.lastSliceNode = sliceNode
        xy = callerInteractor.GetEventPosition()
        abort, action = self.gestures.process(
            eventId, xy, lambda: self.xyToRas(xy, viewWidget), control=bool(callerInteractor.GetControlKey()),
            other_modifier=bool(callerInteractor.GetShiftKey() or callerInteractor.GetAltKey()),
            on_markups_handle=markups_handle_hovered(self.scriptedEffect.scene()))
        self._drawRubberBand(viewWidget)
        if action is not None:
            self._run(lambda: self._prompt(action, sliceNode))
        return abort

    def _drawRubberBand(self, viewWidget):
        band = self.rubberBands.get(viewWidget)
        if self.gestures.dragging:
            band = self._rubberBand(viewWidget)
            band.start(self.gestures.press_xy())
            band.update(self.gestures.current_xy)
        elif band is None or not band.actor.GetVisibility():
            return
        else:
            band.hide()
        self.scriptedEffect.scheduleRender(viewWidget)

    def _rubberBand(self, viewWidget):
        band = self.rubberBands.get(viewWidget)
        if band is None:
            band = RubberBand()
            self.scriptedEffect.addActor2D(viewWidget, band.actor)
            self.rubberBands[viewWidget] = band
        return band

    def _prompt(self, action, sliceNode):
        session = self._session()
        view = session.view_of(sliceNode)
        if action.kind == BOX:
            return session.set_box(action.ras[0], action.ras[1], view)
        return session.add_point(action.ras[0], action.include, view)

    # -------------------------------------------------------------------------------------------------- buttons

    def onSegmentFromMarkups(self, sliceNode=None):
        """Prompt from the chosen markups on the slice shown in ``sliceNode`` (default: the view last worked in)."""
        def run():
            session = self._session()
            view = session.view_of(sliceNode or markups_slice_node(self.scriptedEffect.scene(), self.lastSliceNode))
            return session.prompt_from_markups(view, [self.includeSelector.currentNode()],
                                               [self.excludeSelector.currentNode()], [self.roiSelector.currentNode()],
                                               all_slices=self.allSlicesCheckBox.checked)
        return self._run(run)

    def onNextCandidate(self):
        return self._run(lambda: self._session().next_candidate())

    def onPropagate(self):
        return self._run(lambda: self._session().propagate())

    def onRefine(self):
        return self._run(lambda: refine_selected(self._session()))

    def onStop(self):
        return self._run(lambda: self._session().cancel_running())

    def onApply(self):
        if not self.scriptedEffect.confirmCurrentSegmentVisible():
            return None
        return self._run(lambda: self._session().apply(self.target))

    def onCancel(self):
        return self._run(lambda: self._session().cancel())
