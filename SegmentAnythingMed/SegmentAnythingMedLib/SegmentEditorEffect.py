"""The "Segment Anything" Segment Editor effect: Slicer loads this file with
``qSlicerSegmentEditorScriptedEffect.setPythonSource`` (see SegmentAnythingMed.py).

This is the thin Qt layer: widgets, view events and a timer. Every decision lives in the bridge modules of this
package (``session``, ``gestures``, ``effect_parameters``, ...), where pytest reaches it.
"""
import logging
import os

import qt
import vtk

import slicer
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

from SegmentAnythingMedLib.backend_settings import shared_provider
from SegmentAnythingMedLib.effect_parameters import (APPLY_CHOICES, DEFAULTS, INTENSITY_CHOICES, RANGE_CHOICES,
                                                     options_from_parameters, read_parameters)
from SegmentAnythingMedLib.gestures import BOX, SliceGestures
from SegmentAnythingMedLib.preview import SegmentPreview
from SegmentAnythingMedLib.rubber_band import RubberBand
from SegmentAnythingMedLib.scene_nodes import node_choices
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

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        cloned = effects.qSlicerSegmentEditorScriptedEffect(None)
        cloned.setPythonSource(__file__.replace("\\", "/"))
        return cloned

    def icon(self):
        return qt.QIcon(ICON) if os.path.exists(ICON) else qt.QIcon()

    def helpText(self):
        return ("<html>Segment with Segment Anything (SAM / MedSAM / LiteMedSAM).<p>"
                "<b>Left-drag</b> a box around the structure (LiteMedSAM and MedSAM take boxes). "
                "<b>Left-click</b> adds an include point, <b>ctrl+left-click</b> or <b>right-click</b> an exclude "
                "point (SAM models). Or pick point lists / an ROI and press <b>Segment from markups</b>.<p>"
                "The result is a preview: cycle the candidates, <b>Propagate</b> to neighbouring slices (within the "
                "ROI or a range), correct a slice and propagate again, then <b>Apply</b> (undo works) or "
                "<b>Cancel</b>. Set the backend (in-process or a model service) in the SegmentAnythingMed module.")

    # ------------------------------------------------------------------------------------------------ widgets

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

        self.includeCombo, self.excludeCombo, self.roiCombo = qt.QComboBox(), qt.QComboBox(), qt.QComboBox()
        self.scriptedEffect.addLabeledOptionsWidget("Include points:", self.includeCombo)
        self.scriptedEffect.addLabeledOptionsWidget("Exclude points:", self.excludeCombo)
        self.scriptedEffect.addLabeledOptionsWidget("ROI:", self.roiCombo)
        self.markupsButton = qt.QPushButton("Segment from markups")
        self.markupsButton.setToolTip("Prompt the slice under the view from the chosen point lists and ROI")
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
        self.stopButton = qt.QPushButton("Stop")
        self.progressBar = qt.QProgressBar()
        self.progressBar.setVisible(False)
        propagateRow = qt.QHBoxLayout()
        propagateRow.addWidget(self.propagateButton)
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
        self.markupsButton.connect("clicked()", self.onSegmentFromMarkups)
        self.nextCandidateButton.connect("clicked()", self.onNextCandidate)
        self.propagateButton.connect("clicked()", self.onPropagate)
        self.stopButton.connect("clicked()", self.onStop)
        self.applyButton.connect("clicked()", self.onApply)
        self.cancelButton.connect("clicked()", self.onCancel)

        self.timer = qt.QTimer()
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

    def _fill(self, combo, choices):
        current = combo.itemData(combo.currentIndex) if combo.currentIndex >= 0 else ""
        combo.clear()
        for name, node_id in choices:
            combo.addItem(name, node_id)
        self._select(combo, current)

    def updateGUIFromMRML(self):
        if self.scriptedEffect.parameterSetNode() is None:
            return
        params = read_parameters(self.scriptedEffect.parameter)
        widgets = [self.intensityCombo, self.rangeCombo, self.applyModeCombo, self.windowSpin, self.levelSpin,
                   self.firstSpin, self.lastSpin, self.includeCombo, self.excludeCombo, self.roiCombo,
                   self.allSlicesCheckBox]
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
        scene = self.scriptedEffect.scene()
        self._fill(self.includeCombo, node_choices(scene, "vtkMRMLMarkupsFiducialNode"))
        self._fill(self.excludeCombo, node_choices(scene, "vtkMRMLMarkupsFiducialNode"))
        self._fill(self.roiCombo, node_choices(scene, "vtkMRMLMarkupsROINode"))
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
        busy = session is not None and session.busy
        preview = session is not None and session.has_preview
        candidates = session.candidates if session is not None else None
        self.candidateLabel.setText(candidates.describe() if candidates is not None else "")
        self.nextCandidateButton.setEnabled(candidates is not None and len(candidates.prediction.scores) > 1)
        self.propagateButton.setEnabled(candidates is not None and not busy)
        self.stopButton.setEnabled(busy)
        self.applyButton.setEnabled(preview and not busy)
        self.cancelButton.setEnabled(preview or busy)
        progress = session.progress if session is not None else None
        self.progressBar.setVisible(progress is not None)
        if progress is not None:
            self.progressBar.setRange(0, max(progress[1], 1))
            self.progressBar.setValue(progress[0])
        if message or (session is not None and session.status):
            self.statusLabel.setText(message or session.status)

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
        self.gestures.cancel()
        for viewWidget, band in self.rubberBands.items():
            self.scriptedEffect.removeActor2D(viewWidget, band.actor)
        self.rubberBands = {}
        if self.session is not None:
            self.session.cancel()
        if self.timer is not None:
            self.timer.stop()

    def sourceVolumeNodeChanged(self):
        if self.session is not None:
            self._session()  # a new source volume drops the preview made on the old one
            self._refresh(self.session)

    def cleanup(self):
        self.deactivate()
        if self.timer is not None:
            self.timer.disconnect("timeout()", self.onPoll)

    def onPoll(self):
        session = self.session
        if session is None:
            self.timer.stop()
            return
        session.poll()
        if not session.busy:
            self.timer.stop()
        self._refresh(session)

    # ---------------------------------------------------------------------------------------------- view events

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if viewWidget.className() != "qMRMLSliceWidget":
            return False
        xy = callerInteractor.GetEventPosition()
        control = bool(callerInteractor.GetControlKey())
        other = bool(callerInteractor.GetShiftKey() or callerInteractor.GetAltKey())
        if eventId == vtk.vtkCommand.LeftButtonPressEvent:
            abort, action = self.gestures.left_press(xy, self.xyToRas(xy, viewWidget), control, other)
            if abort:
                self._rubberBand(viewWidget).start(xy)
        elif eventId == vtk.vtkCommand.MouseMoveEvent:
            abort, action = self.gestures.move(xy)
            if abort and self.gestures.dragging:
                self._rubberBand(viewWidget).update(xy)
                self.scriptedEffect.scheduleRender(viewWidget)
        elif eventId == vtk.vtkCommand.LeftButtonReleaseEvent:
            abort, action = self.gestures.left_release(xy, self.xyToRas(xy, viewWidget))
            self._rubberBand(viewWidget).hide()
            self.scriptedEffect.scheduleRender(viewWidget)
        elif eventId == vtk.vtkCommand.RightButtonPressEvent:
            abort, action = self.gestures.right_press(xy, control or other)
        elif eventId == vtk.vtkCommand.RightButtonReleaseEvent:
            abort, action = self.gestures.right_release(xy, self.xyToRas(xy, viewWidget))
        else:
            return False
        if action is not None:
            sliceNode = viewWidget.sliceLogic().GetSliceNode()
            self._run(lambda: self._prompt(action, sliceNode))
        return abort

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

    def _node(self, combo):
        node_id = combo.itemData(combo.currentIndex) if combo.currentIndex >= 0 else ""
        return self.scriptedEffect.scene().GetNodeByID(node_id) if node_id else None

    def onSegmentFromMarkups(self, sliceNode=None):
        """Prompt from the chosen markups on the slice shown in ``sliceNode`` (default: the Red view)."""
        def run():
            session = self._session()
            node = sliceNode or self.scriptedEffect.scene().GetNodeByID("vtkMRMLSliceNodeRed")
            view = session.view_of(node)
            return session.prompt_from_markups(view, [self._node(self.includeCombo)],
                                               [self._node(self.excludeCombo)], [self._node(self.roiCombo)],
                                               all_slices=self.allSlicesCheckBox.checked)
        return self._run(run)

    def onNextCandidate(self):
        return self._run(lambda: self._session().next_candidate())

    def onPropagate(self):
        return self._run(lambda: self._session().propagate())

    def onStop(self):
        return self._run(lambda: self._session().cancel_running())

    def onApply(self):
        if not self.scriptedEffect.confirmCurrentSegmentVisible():
            return None
        return self._run(lambda: self._session().apply(self.target))

    def onCancel(self):
        return self._run(lambda: self._session().cancel())
