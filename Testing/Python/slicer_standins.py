"""Stand-ins for what Slicer's application gives a scripted module: ``qt`` widgets, the .ui loader, the
parameter node wrapper and the ScriptedLoadableModule base classes; MRML itself is real (slicer-core).

The widgets are built from the module's real ``Resources/UI/BrainGemma3D.ui`` (names, classes, initial
properties), so the module's real widget code runs against the panel it will get in Slicer; a reference to a
widget the .ui lacks fails here as it would there. Signals are recorded ``connect`` calls that the test fires
as a user would (``click()``, typing into a line edit, moving the text cursor). Timers run when the test pumps
the event loop (``pump``). The parameter node wrapper binds widgets through ``SlicerParameterName`` both ways,
as Slicer's connectors do (an unset path shows as "." there, as in Slicer).
"""

from __future__ import annotations

import enum
import inspect
import pathlib
import sys
import time
import types
import typing
import xml.etree.ElementTree as ET
from collections import defaultdict
from contextlib import contextmanager

# ------------------------------------------------------------------------------------------------------
# qt
# ------------------------------------------------------------------------------------------------------
#: The change signal each bindable widget emits, and the property it changes.
VALUE_PROPERTY = {
    "QLineEdit": ("text", "textChanged(QString)"),
    "ctkPathLineEdit": ("currentPath", "currentPathChanged(QString)"),
    "qMRMLNodeComboBox": ("currentNode", "currentNodeChanged(vtkMRMLNode*)"),
    "QCheckBox": ("checked", "toggled(bool)"),
    "QComboBox": ("currentIndex", "currentIndexChanged(int)"),
    "QSpinBox": ("value", "valueChanged(int)"),
    "ctkSliderWidget": ("value", "valueChanged(double)"),
}


class Widget:
    """A widget: properties are plain attributes; ``connect`` records slots that ``emit`` calls."""

    def __init__(self, className: str, name: str, properties: dict | None = None):
        self.className, self.objectName = className, name
        self.enabled, self.visible, self.text, self.toolTip, self.styleSheet = True, True, "", "", ""
        self.currentPath, self.currentNode, self.checked, self.value, self.currentIndex = (
            "",
            None,
            False,
            0,
            0,
        )
        self.format, self.collapsed = "", False
        self.properties = dict(properties or {})
        self.slots: dict[str, list] = defaultdict(list)
        self.children: list[Widget] = []
        self.attributeFilters: list[tuple] = []
        self._plain, self.cursor, self.lines = "", 0, []
        for key, value in self.properties.items():
            if key in ("text", "toolTip", "enabled", "collapsed", "styleSheet", "visible"):
                setattr(self, key, value)

    def connect(self, signal: str, slot) -> None:
        self.slots[signal].append(slot)

    def emit(self, signal: str, *args) -> None:
        """Call the slots; as PythonQt, a slot taking fewer arguments than the signal gets the first ones."""
        for slot in list(self.slots[signal]):
            try:
                params = inspect.signature(slot).parameters.values()
            except (TypeError, ValueError):
                slot(*args)
                continue
            if any(p.kind is p.VAR_POSITIONAL for p in params):
                slot(*args)
            else:
                slot(*args[: len([p for p in params if p.default is p.empty])])

    # what the module calls on particular widgets
    def setMRMLScene(self, scene) -> None:
        self.mrmlScene = scene

    def addAttribute(self, nodeClass, attribute, value) -> None:
        self.attributeFilters.append((nodeClass, attribute, value))

    def click(self) -> None:
        """A user's click: nothing happens on a disabled button, as in Qt."""
        if self.enabled:
            self.emit("clicked(bool)", False)

    def set(self, value) -> None:
        """A user's edit of a bindable widget (types text, picks a path or a node)."""
        prop, signal = VALUE_PROPERTY[self.className]
        setattr(self, prop, value)
        self.emit(signal, value)

    # QPlainTextEdit
    def toPlainText(self) -> str:
        return self._plain

    def setPlainText(self, text: str) -> None:
        self._plain = text
        self.cursor = min(self.cursor, len(text))
        self.emit("textChanged()")

    def appendPlainText(self, line: str) -> None:
        self.lines.append(line)

    def textCursor(self):
        return types.SimpleNamespace(position=lambda: self.cursor)

    # QTableWidget: cells hold TableItems; the current row is what the user selected
    def setRowCount(self, rows: int) -> None:
        self.rows = rows
        self.cells = {key: item for key, item in getattr(self, "cells", {}).items() if key[0] < rows}
        if getattr(self, "_currentRow", -1) >= rows:
            self._currentRow = -1

    def rowCount(self) -> int:
        return getattr(self, "rows", 0)

    def setItem(self, row: int, column: int, item) -> None:
        self.cells = getattr(self, "cells", {})
        self.cells[(row, column)] = item

    def item(self, row: int, column: int):
        return getattr(self, "cells", {}).get((row, column))

    def selectRow(self, row: int) -> None:
        """Select a row; as in Qt, a change of the current cell is signalled."""
        previous, self._currentRow = self.currentRow(), row
        if row != previous:
            self.emit("currentCellChanged(int,int,int,int)", row, 0, previous, 0)

    def currentRow(self) -> int:
        return getattr(self, "_currentRow", -1)

    def resizeColumnsToContents(self) -> None:
        pass

    def rowTexts(self, row: int) -> list[str]:
        """The texts of one table row, as the user reads them."""
        columns = sorted(c for r, c in getattr(self, "cells", {}) if r == row)
        return [self.cells[(row, c)].text() for c in columns]

    def doubleClick(self, row: int, column: int = 0) -> None:
        """A user's double-click on a table cell (it becomes the current one first)."""
        self.selectRow(row)
        self.emit("cellDoubleClicked(int,int)", row, column)

    def clickRow(self, row: int) -> None:
        """A user's click on a table row: it becomes the current (selected) one."""
        self.selectRow(row)

    # QTextBrowser
    def setHtml(self, html: str) -> None:
        self.html = html

    def toHtml(self) -> str:
        return getattr(self, "html", "")


class Timer:
    """qt.QTimer: fires when the test pumps the event loop."""

    running: list[Timer] = []
    pending: list[tuple[float, typing.Callable]] = []

    def __init__(self):
        self.callback, self.active, self.single, self.interval = None, False, False, 0

    def setInterval(self, ms):
        self.interval = ms

    def setSingleShot(self, single):
        self.single = single

    def connect(self, signal, callback):
        assert signal == "timeout()"
        self.callback = callback

    def start(self):
        self.active = True
        if self not in Timer.running:
            Timer.running.append(self)

    def stop(self):
        self.active = False

    @classmethod
    def singleShot(cls, ms, callback):
        cls.pending.append((time.monotonic() + ms / 1000.0, callback))


def pump(until: typing.Callable[[], bool], timeout: float = 600.0) -> None:
    """Run the event loop (timers) until ``until()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out waiting for the panel"
        for timer in list(Timer.running):
            if timer.active and timer.callback is not None:
                if timer.single:
                    timer.active = False
                timer.callback()
        for due in [p for p in Timer.pending if p[0] <= time.monotonic()]:
            Timer.pending.remove(due)
            due[1]()
        time.sleep(0.02)


def make_qt(recorder: dict) -> types.ModuleType:
    qt = types.ModuleType("qt")
    qt.QTimer = Timer
    qt.QIcon = lambda *args: ("icon", args)
    qt.QKeySequence = lambda text: text

    class Shortcut:
        def __init__(self, keys, parent):
            self.keys, self.parent, self.slots = keys, parent, []
            recorder["shortcuts"].append(self)

        def setContext(self, context):
            self.context = context

        def connect(self, signal, slot):
            assert signal == "activated()"
            self.slots.append(slot)

        def activate(self):
            for slot in self.slots:
                slot()

    qt.QShortcut = Shortcut

    class TableItem:
        """qt.QTableWidgetItem: a cell's text and tooltip."""

        def __init__(self, text=""):
            self._text, self._toolTip = str(text), ""

        def text(self):
            return self._text

        def setText(self, text):
            self._text = str(text)

        def toolTip(self):
            return self._toolTip

        def setToolTip(self, text):
            self._toolTip = str(text)

    qt.QTableWidgetItem = TableItem
    qt.Qt = types.SimpleNamespace(WidgetWithChildrenShortcut=2, RichText=1)
    settings: dict = {}
    qt.QSettings = lambda: types.SimpleNamespace(
        value=lambda key, default=None: settings.get(key, default),
        setValue=lambda key, value: settings.__setitem__(key, value),
    )
    qt.QUrl = types.SimpleNamespace(fromLocalFile=lambda path: f"file://{path}")
    qt.QDesktopServices = types.SimpleNamespace(openUrl=lambda url: recorder["opened"].append(url) or True)
    qt.QLineEdit = types.SimpleNamespace(Password=2)
    return qt


# ------------------------------------------------------------------------------------------------------
# The .ui loader
# ------------------------------------------------------------------------------------------------------
def _property_value(element):
    for kind in ("string", "bool", "number", "double", "set", "enum"):
        node = element.find(kind)
        if node is not None:
            text = node.text or ""
            if kind == "bool":
                return text == "true"
            if kind in ("number", "double"):
                return float(text) if kind == "double" else int(text)
            return text
    return None


def load_ui(path) -> Widget:
    """Build the widget tree of a Qt Designer file: every named widget with its properties."""
    root = ET.parse(path).getroot()

    def build(element) -> Widget:
        props = {p.get("name"): _property_value(p) for p in element.findall("property")}
        widget = Widget(element.get("class"), element.get("name"), props)
        for child in _child_widgets(element):
            widget.children.append(build(child))
        return widget

    return build(root.find("widget"))


def _child_widgets(element):
    """Widgets directly under ``element`` (through layouts and items, not through other widgets)."""
    out, stack = [], list(element)
    while stack:
        node = stack.pop(0)
        if node.tag == "widget":
            out.append(node)
        else:
            stack = list(node) + stack
    return out


def child_widget_variables(top: Widget) -> types.SimpleNamespace:
    found, stack = {}, [top]
    while stack:
        widget = stack.pop()
        found[widget.objectName] = widget
        stack += widget.children
    return types.SimpleNamespace(**found)


# ------------------------------------------------------------------------------------------------------
# parameterNodeWrapper
# ------------------------------------------------------------------------------------------------------
class WithinRange:
    def __init__(self, low, high):
        self.low, self.high = low, high


def parameterNodeWrapper(cls):
    """Slicer's decorator, as far as the module uses it: typed fields with defaults, stored per parameter
    node, ModifiedEvent on change, and ``connectGui`` binding widgets by ``SlicerParameterName``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    store: dict[str, dict] = {}

    def base(hint):
        return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint

    def default(name):
        if hasattr(cls, name):
            return getattr(cls, name)
        kind = base(hints[name])
        return pathlib.Path(".") if kind is pathlib.Path else {str: "", bool: False}.get(kind)

    class Wrapper:
        def __init__(self, node):
            object.__setattr__(self, "parameterNode", node)
            object.__setattr__(self, "_values", store.setdefault(node.GetID(), {}))
            object.__setattr__(self, "_bindings", {})
            for name in hints:
                self._values.setdefault(name, default(name))

        def __getattr__(self, name):
            if name in hints:
                return self._values[name]
            raise AttributeError(name)

        def __setattr__(self, name, value):
            if name not in hints:
                raise AttributeError(f"{cls.__name__} has no parameter {name!r}")
            kind = base(hints[name])
            if kind is pathlib.Path and not isinstance(value, pathlib.Path):
                value = pathlib.Path(value or ".")
            if value == self._values[name] and type(value) is type(self._values[name]):
                return
            self._values[name] = value
            self._toGui(name)
            self.parameterNode.Modified()

        # GUI binding (both ways), as Slicer's connectors
        def connectGui(self, ui):
            tag = object()
            for widget in vars(ui).values():
                name = widget.properties.get("SlicerParameterName")
                if name:
                    self._bindings[name] = widget
                    prop, signal = VALUE_PROPERTY[widget.className]
                    widget.connect(signal, lambda value, n=name, w=widget: self._fromGui(n, w))
                    self._toGui(name)
            return tag

        def disconnectGui(self, tag):
            for widget in self._bindings.values():
                _prop, signal = VALUE_PROPERTY[widget.className]
                widget.slots[signal] = []
            self._bindings.clear()

        def _toGui(self, name):
            widget = self._bindings.get(name)
            if widget is None:
                return
            prop, _signal = VALUE_PROPERTY[widget.className]
            value = self._values[name]
            if isinstance(value, enum.Enum):
                value = list(type(value)).index(value)
            elif isinstance(value, pathlib.Path):
                value = str(value)  # Path(".") shows as ".", as in Slicer
            setattr(widget, prop, value)

        def _fromGui(self, name, widget):
            prop, _signal = VALUE_PROPERTY[widget.className]
            value = getattr(widget, prop)
            kind = base(hints[name])
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                value = list(kind)[value]
            setattr(self, name, value)

        def AddObserver(self, event, callback, priority=0.0):
            return self.parameterNode.AddObserver(event, callback, priority)

        def RemoveObserver(self, tag):
            self.parameterNode.RemoveObserver(tag)

    Wrapper.__name__ = cls.__name__
    return Wrapper


# ------------------------------------------------------------------------------------------------------
# ScriptedLoadableModule and the application
# ------------------------------------------------------------------------------------------------------
class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        self.parent = parent

    def setup(self):
        self.layout = types.SimpleNamespace(
            widgets=[], addWidget=lambda w: self.layout.widgets.append(w), addStretch=lambda *a: None
        )


class ScriptedLoadableModuleLogic:
    def getParameterNode(self):
        import slicer

        node = slicer.mrmlScene.GetSingletonNode("BrainGemma3D", "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag("BrainGemma3D")
            node.SetName("BrainGemma3D")
            slicer.mrmlScene.AddNode(node)
        return node


class ScriptedLoadableModuleTest:
    pass


class DicomDatabase:
    """Slicer's DICOM database as the module uses it: which file holds an instance; what was imported."""

    def __init__(self):
        self.files: dict[str, str] = {}

    def index(self, folder) -> None:
        import pydicom

        for path in pathlib.Path(folder).rglob("*.dcm"):
            self.files[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = str(path)

    def fileForInstance(self, uid: str) -> str:
        return self.files.get(uid, "")


@contextmanager
def installed(monkeypatch, tmp_path, python: str):
    """Put the stand-ins where the module imports them; MRML (slicer-core) and slicer.util stay real.

    ``python`` is the interpreter the worker runs with, as ``PythonSlicer`` is inside Slicer. Yields a
    recorder of what the module asked of the application (dialogs, errors, opened files, shortcuts).
    """
    import slicer
    import slicer.util

    recorder: dict[str, list] = defaultdict(list)
    monkeypatch.setitem(sys.modules, "qt", make_qt(recorder))
    monkeypatch.setitem(
        sys.modules,
        "slicer.parameterNodeWrapper",
        types.SimpleNamespace(parameterNodeWrapper=parameterNodeWrapper, WithinRange=WithinRange),
    )
    monkeypatch.setitem(
        sys.modules,
        "slicer.ScriptedLoadableModule",
        types.SimpleNamespace(
            ScriptedLoadableModule=ScriptedLoadableModule,
            ScriptedLoadableModuleWidget=ScriptedLoadableModuleWidget,
            ScriptedLoadableModuleLogic=ScriptedLoadableModuleLogic,
            ScriptedLoadableModuleTest=ScriptedLoadableModuleTest,
        ),
    )
    home = tmp_path / "Slicer"
    (home / "bin").mkdir(parents=True)
    launcher = home / "bin" / "PythonSlicer"  # a launcher that starts the real interpreter as its child
    launcher.write_text(f'#!/bin/sh\n"{python}" "$@"\nexit $?\n')
    launcher.chmod(0o755)
    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(
        slicer,
        "app",
        types.SimpleNamespace(
            slicerHome=str(home),
            temporaryPath=str(tmp_path / "temp"),
            processEvents=lambda: None,
            connect=lambda *args: recorder["app_connect"].append(args),
        ),
        raising=False,
    )
    monkeypatch.setattr(slicer, "mrmlScene", slicer.vtkMRMLScene(), raising=False)
    database = DicomDatabase()
    monkeypatch.setattr(slicer, "dicomDatabase", database, raising=False)
    dicom_utils = types.SimpleNamespace(
        importDicom=lambda folder, db=None: (
            recorder["dicom_imported"].append(str(folder)) or database.index(folder)
        )
    )
    monkeypatch.setitem(sys.modules, "DICOMLib", types.SimpleNamespace(DICOMUtils=dicom_utils))
    monkeypatch.setitem(sys.modules, "DICOMLib.DICOMUtils", dicom_utils)

    @contextmanager
    def try_with_error_display(message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as exc:
            recorder["errors"].append(f"{message} {exc}")
            raise

    for name, value in {
        "loadUI": load_ui,
        "childWidgetVariables": child_widget_variables,
        "tryWithErrorDisplay": try_with_error_display,
        "errorDisplay": lambda text, **kw: recorder["errors"].append(text),
        "confirmOkCancelDisplay": lambda text, **kw: recorder["confirm"].append(text) or True,
        "mainWindow": lambda: None,
    }.items():
        monkeypatch.setattr(slicer.util, name, value)
    Timer.running, Timer.pending = [], []
    yield recorder
    slicer.mrmlScene.Clear(1)


@contextmanager
def open_panel(monkeypatch, tmp_path, sample):
    """The module imported against the stand-ins and its widget set up in a fresh scene holding ``sample``
    (a NIfTI file) as the volume "Phantom"; yields (module, widget, volume node, recorder). Closing stops
    the worker, as closing Slicer does."""
    import importlib.util

    import numpy as np
    import slicer
    import slicer.util

    module_dir = pathlib.Path(__file__).resolve().parents[2] / "BrainGemma3D"
    with installed(monkeypatch, tmp_path, sys.executable) as recorder:
        monkeypatch.syspath_prepend(str(module_dir))
        for name in [m for m in sys.modules if m.startswith("BrainGemma3DModuleLib")]:
            monkeypatch.delitem(sys.modules, name)
        spec = importlib.util.spec_from_file_location("BrainGemma3D", module_dir / "BrainGemma3D.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, "BrainGemma3D", module)
        spec.loader.exec_module(module)

        from BrainGemma3DLib.io.volume import load_volume

        volume = load_volume(sample)
        data = np.ascontiguousarray(volume.data[0].transpose(2, 1, 0))  # Slicer arrays are [k, j, i]
        node = slicer.util.addVolumeFromArray(data, slicer.util.vtkMatrixFromArray(volume.affine), "Phantom")
        slicer.mrmlScene.SetRootDirectory(str(tmp_path))  # where the scene would be saved
        widget = module.BrainGemma3DWidget(parent=object())
        widget.parent = type("Panel", (), {"isEntered": True})()
        widget.setup()
        widget.enter()
        try:
            yield module, widget, node, recorder
        finally:
            widget.cleanup()
            for name in [m for m in sys.modules if m.startswith("BrainGemma3DModuleLib")]:
                sys.modules.pop(name, None)
