"""Stand-ins for the ``qt`` and ``ctk`` modules of Slicer's Python (PythonQt), for pytest without a Slicer app.

Only the parts that SegmentAnythingMed's Qt layer uses exist, with PythonQt's calling conventions: properties as
attributes (``button.enabled``, ``combo.currentIndex``), string signals (``widget.connect("clicked()", slot)``).
Tests drive widgets the way a user would: ``button.click()``, ``combo.currentIndex = 2``, ``timer.fire()``.
Nothing here draws or decides: every decision stays in the code under test.
"""
from __future__ import annotations

import types

from slicer_fake_qt_core import (QApplication, QCursor, QFileDialog, QIcon, QMessageBox, QObject,  # noqa: F401
                                 QPoint, QSettings, QTimer, QVector3D, Qt)


class QWidget(QObject):
    def __init__(self, *args, **kwargs):
        super().__init__()
        if args and isinstance(args[-1], QObject):  # QWidget(parent), QLabel(text, parent), ...
            self.setParent(args[-1])
        self.enabled = True
        self.visible = True
        self.toolTip = ""
        self._layout = None

    def setEnabled(self, value):
        self.enabled = bool(value)

    def isEnabled(self):
        return self.enabled

    def setVisible(self, value):
        self.visible = bool(value)

    def isVisible(self):
        return self.visible

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False

    def setToolTip(self, text):
        self.toolTip = text

    def setLayout(self, layout):
        self._layout = layout

    def layout(self):
        if self._layout is None:
            self._layout = QVBoxLayout()
        return self._layout

    def setSizePolicy(self, *args):
        pass


class QFrame(QWidget):
    pass


class QLabel(QWidget):
    def __init__(self, text="", *args):
        super().__init__()
        self.text = text
        self.wordWrap = False

    def setText(self, text):
        self.text = text

    def setWordWrap(self, value):
        self.wordWrap = bool(value)


class QPushButton(QWidget):
    def __init__(self, text="", *args):
        super().__init__()
        self.text = text
        self.checkable = False
        self.checked = False

    def setText(self, text):
        self.text = text

    def setCheckable(self, value):
        self.checkable = bool(value)

    def setChecked(self, value):
        changed = self.checked != bool(value)
        self.checked = bool(value)
        if changed:
            self.emit("toggled(bool)", self.checked)

    def click(self):
        """What a user's click does (ignored while disabled, like a real button)."""
        if not self.enabled:
            return
        if self.checkable:
            self.setChecked(not self.checked)
        self.emit("clicked()")


class QToolButton(QPushButton):
    pass


class QCheckBox(QPushButton):
    def __init__(self, text="", *args):
        super().__init__(text)
        self.checkable = True


class QComboBox(QWidget):
    def __init__(self, *args):
        super().__init__()
        self._items = []  # (text, data)
        self._index = -1
        self.editable = False

    def addItem(self, text, data=None):
        self._items.append((text, data))
        if self._index < 0:
            self._set_index(0)

    def addItems(self, texts):
        for t in texts:
            self.addItem(t)

    def clear(self):
        self._items = []
        self._set_index(-1)

    @property
    def count(self):
        return len(self._items)

    def itemText(self, i):
        return self._items[i][0] if 0 <= i < len(self._items) else ""

    def itemData(self, i):  # Qt answers an invalid index with an invalid QVariant (None in PythonQt)
        return self._items[i][1] if 0 <= i < len(self._items) else None

    def findData(self, data):
        return next((n for n, (_, d) in enumerate(self._items) if d == data), -1)

    def findText(self, text):
        return next((n for n, (t, _) in enumerate(self._items) if t == text), -1)

    def _set_index(self, index):
        index = int(index)
        if index >= len(self._items):
            index = -1
        changed = index != self._index
        self._index = index
        if changed:
            self.emit("currentIndexChanged(int)", index)

    @property
    def currentIndex(self):
        return self._index

    @currentIndex.setter
    def currentIndex(self, index):
        self._set_index(index)

    def setCurrentIndex(self, index):
        self._set_index(index)

    @property
    def currentText(self):
        return self._items[self._index][0] if self._index >= 0 else ""

    def currentData(self):
        return self._items[self._index][1] if self._index >= 0 else None


class _SpinBox(QWidget):
    _signal = "valueChanged(int)"
    _cast = int

    def __init__(self, *args):
        super().__init__()
        self.minimum = 0
        self.maximum = 99
        self.singleStep = 1
        self.suffix = ""
        self.decimals = 2
        self._value = 0

    def setRange(self, lo, hi):
        self.minimum, self.maximum = lo, hi
        self.setValue(self._value)

    def setMinimum(self, v):
        self.setRange(v, self.maximum)

    def setMaximum(self, v):
        self.setRange(self.minimum, v)

    def setSuffix(self, s):
        self.suffix = s

    def setSingleStep(self, s):
        self.singleStep = s

    def setDecimals(self, d):
        self.decimals = d

    @property
    def value(self):
        return self._value

    @value.setter
    def value(self, v):
        self.setValue(v)

    def setValue(self, v):
        v = self._cast(min(max(v, self.minimum), self.maximum))
        changed = v != self._value
        self._value = v
        if changed:
            self.emit(self._signal, v)


class QSpinBox(_SpinBox):
    pass


class QDoubleSpinBox(_SpinBox):
    _signal = "valueChanged(double)"
    _cast = float


class QLineEdit(QWidget):
    Normal, Password = 0, 2

    def __init__(self, text="", *args):
        super().__init__()
        self._text = text
        self.placeholderText = ""
        self.echoMode = QLineEdit.Normal

    @property
    def text(self):
        return self._text

    @text.setter
    def text(self, value):
        self.setText(value)

    def setText(self, value):
        changed = value != self._text
        self._text = value
        if changed:
            self.emit("textChanged(QString)", value)

    def setPlaceholderText(self, t):
        self.placeholderText = t

    def setEchoMode(self, mode):
        self.echoMode = mode


class QProgressBar(QWidget):
    def __init__(self, *args):
        super().__init__()
        self.minimum, self.maximum, self.value = 0, 100, 0
        self.format = "%p%"

    def setRange(self, lo, hi):
        self.minimum, self.maximum = lo, hi

    def setValue(self, v):
        self.value = v

    def setFormat(self, f):
        self.format = f


class _Layout(QObject):
    def __init__(self, *args):
        super().__init__()
        self.items = []

    def addWidget(self, widget, *args):
        self.items.append(widget)

    def widgets(self):
        """Every widget in this layout and the layouts in it (Qt reparents them to the widget the layout is set on)."""
        out = []
        for item in self.items:
            for part in (item if isinstance(item, tuple) else (item,)):
                if isinstance(part, _Layout):
                    out += part.widgets()
                elif isinstance(part, QObject):
                    out.append(part)
        return out

    def addLayout(self, layout, *args):
        self.items.append(layout)

    def addRow(self, label, widget=None):
        self.items.append((label, widget))

    def addStretch(self, *args):
        pass

    def setContentsMargins(self, *args):
        pass


class QHBoxLayout(_Layout):
    pass


class QVBoxLayout(_Layout):
    pass


class QFormLayout(_Layout):
    pass


class QGridLayout(_Layout):
    pass


class ctkCollapsibleButton(QWidget):
    def __init__(self, text="", *args):
        super().__init__()
        self.text = text
        self.collapsed = False


def make_qt_module() -> types.ModuleType:
    module = types.ModuleType("qt")
    module.__doc__ = "fake PythonQt qt module (tests/slicer_fake_qt.py)"
    for name, value in list(globals().items()):
        if name.startswith("Q") or name == "Qt":
            setattr(module, name, value)
    return module


def make_ctk_module() -> types.ModuleType:
    module = types.ModuleType("ctk")
    module.__doc__ = "fake PythonQt ctk module (tests/slicer_fake_qt.py)"
    module.ctkCollapsibleButton = ctkCollapsibleButton
    return module
