"""Stand-in for Slicer's MRML Qt widgets (qMRMLWidgets in PythonQt's ``slicer`` module) that the effect uses, on
the fake Qt of tests/slicer_fake_qt.py and a real MRML scene."""
from __future__ import annotations

from slicer_fake_qt import QWidget


class qMRMLNodeComboBox(QWidget):
    """slicer.qMRMLNodeComboBox on a real scene (Libs/MRML/Widgets/qMRMLNodeComboBox.cxx, v5.10.0): lists the scene's
    nodes of ``nodeTypes`` (hidden-from-editors ones only with ``showHidden``), "None" first with ``noneEnabled``.
    ``setCurrentNode`` of a node it does not list selects None (setCurrentNodeIDInternal); a node removed from the
    scene is no longer current."""

    def __init__(self, *args):
        super().__init__(*args)
        self.nodeTypes = []
        self.noneEnabled = False
        self.addEnabled = True
        self.removeEnabled = True
        self.renameEnabled = False
        self.showHidden = False
        self._scene = None
        self._current_id = None

    def setMRMLScene(self, scene):
        if not self.noneEnabled:  # Qt's QComboBox then picks a node as rows come and go: not modelled here
            raise NotImplementedError("fake qMRMLNodeComboBox: only noneEnabled = True is modelled")
        self._scene = scene

    def mrmlScene(self):
        return self._scene

    def nodes(self):
        if self._scene is None:
            return []
        out = []
        for n in range(self._scene.GetNumberOfNodes()):
            node = self._scene.GetNthNode(n)
            if any(node.IsA(t) for t in self.nodeTypes) and (self.showHidden or not node.GetHideFromEditors()):
                out.append(node)
        return out

    def currentNode(self):
        return next((n for n in self.nodes() if n.GetID() == self._current_id), None)

    def currentNodeID(self):
        node = self.currentNode()
        return node.GetID() if node is not None else ""

    def setCurrentNode(self, node):
        listed = node is not None and any(n is node for n in self.nodes())
        old = self.currentNode()
        self._current_id = node.GetID() if listed else None
        if self.currentNode() is not old:
            self.emit("currentNodeChanged(vtkMRMLNode*)", self.currentNode())

    def setCurrentNodeID(self, node_id):
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if self._scene is not None and node_id else None)
