"""The non-widget parts of the fake ``qt`` module (tests/slicer_fake_qt.py re-exports them): QObject (signals and
slots), the timer, points and vectors, icons and cursors, settings, message boxes, file dialogs and the
application's cursor calls."""
from __future__ import annotations

import types
from collections import defaultdict


class QObject:
    """PythonQt's view of a QObject: string signals, and the C++ object's life (parent, children, deletion).

    ``delete()`` (test helper) is what C++ ``delete`` or a parent's deletion does: children go too, and so do the
    signal connections from the object, with the Python callables they hold (PythonQt's PythonQtSignalReceiver is
    a child of the sender, PythonQt/src/PythonQtSignalReceiver.cpp). A timer without a parent lives as long as its
    Python wrapper, and its connection keeps the callable's object alive."""

    def __init__(self, *args, **kwargs):
        self._slots = defaultdict(list)
        self._blocked = False
        self._children = []
        self._parent = None
        self.deleted = False
        self.objectName = ""

    def setParent(self, parent):
        if parent is not None and not isinstance(parent, QObject):
            raise TypeError(f"setParent: {type(parent).__name__} is not a QObject")  # PythonQt's argument check
        if self._parent is not None and self in self._parent._children:
            self._parent._children.remove(self)
        self._parent = parent
        if parent is not None:
            parent._children.append(self)

    def parent(self):
        return self._parent

    def children(self):
        return list(self._children)

    def connect(self, signal, slot):
        if self.deleted:
            raise RuntimeError("Trying to call 'connect' on a destroyed QObject")  # PythonQt's message
        self._slots[signal].append(slot)
        return True

    def disconnect(self, signal, slot=None):
        if slot is None:
            self._slots.pop(signal, None)
        elif slot in self._slots.get(signal, []):
            self._slots[signal].remove(slot)

    def emit(self, signal, *args):
        if self._blocked or self.deleted:
            return
        for slot in list(self._slots.get(signal, [])):
            slot(*args)

    def blockSignals(self, block):
        old, self._blocked = self._blocked, bool(block)
        return old

    def setObjectName(self, name):
        self.objectName = name

    def deleteLater(self):
        self.delete()

    def delete(self):
        """Test helper: the C++ object is deleted (children first, as ~QObject does)."""
        if self.deleted:
            return
        self.emit("destroyed()")
        for child in list(self._children):
            child.delete()
        self._children = []
        self._slots.clear()
        self.deleted = True
        if self._parent is not None and self in self._parent._children:
            self._parent._children.remove(self)


class QTimer(QObject):
    def __init__(self, parent=None):
        super().__init__()
        self.setParent(parent)
        self.interval = 0
        self.singleShot = False
        self.active = False

    def setInterval(self, ms):
        self.interval = ms

    def setSingleShot(self, value):
        self.singleShot = bool(value)

    def start(self, ms=None):
        if ms is not None:
            self.interval = ms
        self.active = not self.deleted

    def stop(self):
        self.active = False

    def isActive(self):
        return self.active

    def delete(self):
        self.active = False  # ~QTimer stops it
        super().delete()

    def fire(self):
        """Test helper: what the event loop does when the interval has passed."""
        if not self.active:
            return False
        if self.singleShot:
            self.active = False
        self.emit("timeout()")
        return True


class QPoint:
    def __init__(self, x=0, y=0):
        self._x, self._y = x, y

    def x(self):
        return self._x

    def y(self):
        return self._y


class QVector3D:
    def __init__(self, x=0.0, y=0.0, z=0.0):
        self._v = (float(x), float(y), float(z))

    def x(self):
        return self._v[0]

    def y(self):
        return self._v[1]

    def z(self):
        return self._v[2]


class QIcon:
    def __init__(self, path=""):
        self.path = path

    def isNull(self):
        return not self.path


class QCursor:
    def __init__(self, *args):
        self.args = args


class QSettings:
    store = {}

    def value(self, key, default=None):
        return QSettings.store.get(key, default)

    def setValue(self, key, value):
        QSettings.store[key] = value

    def remove(self, key):
        QSettings.store.pop(key, None)

    def contains(self, key):
        return key in QSettings.store


class QMessageBox:
    Ok, Cancel, Yes, No = 0x400, 0x400000, 0x4000, 0x10000
    shown = []  # (kind, title, text) in order, for tests to read
    answer = Yes  # what question() answers

    @staticmethod
    def _show(kind, parent, title, text, *args):
        QMessageBox.shown.append((kind, title, text))
        return QMessageBox.answer if kind == "question" else QMessageBox.Ok

    @staticmethod
    def question(parent, title, text, *args):
        return QMessageBox._show("question", parent, title, text)

    @staticmethod
    def warning(parent, title, text, *args):
        return QMessageBox._show("warning", parent, title, text)

    @staticmethod
    def critical(parent, title, text, *args):
        return QMessageBox._show("critical", parent, title, text)

    @staticmethod
    def information(parent, title, text, *args):
        return QMessageBox._show("information", parent, title, text)


class QFileDialog:
    next_path = ""

    @staticmethod
    def getSaveFileName(*args):
        return QFileDialog.next_path

    @staticmethod
    def getOpenFileName(*args):
        return QFileDialog.next_path


class QApplication:
    override_cursors = 0

    @staticmethod
    def setOverrideCursor(cursor):
        QApplication.override_cursors += 1

    @staticmethod
    def restoreOverrideCursor():
        QApplication.override_cursors -= 1

    @staticmethod
    def processEvents():
        pass


Qt = types.SimpleNamespace(WaitCursor=3, ArrowCursor=0, CrossCursor=2, AlignLeft=1, AlignRight=2)
