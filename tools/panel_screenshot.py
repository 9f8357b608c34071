"""Render the panel screenshots (Screenshots/1.png, 3.png) from the real .ui, filled by the real widget code.

3D Slicer cannot run on the build machine, so the picture is made in two steps, both from real code and data:

1. The module's widget and logic run exactly as in the panel test (``Testing/Python/test_panel.py``): the
   sample case in an MRML scene (slicer-core), Generate with the demo weights on the CPU through the real
   worker, then "Show evidence" for the first sentence. The stand-in widgets then hold what the real widget
   code put in them (texts, states, progress, paths).
2. Qt (PySide6, offscreen) loads the module's real ``Resources/UI/BrainGemma3D.ui``, with plain Qt widgets in
   place of Slicer's CTK/MRML ones, and each widget gets the state from step 1. Beside it, the slice view:
   the input volume's voxel slice through the strongest region, the shown segments of the overlay node
   (their labelmaps and colours read back from the MRML segmentation) blended on it, radiological
   convention (patient's right on the left).

With ``--worklist`` (Screenshots/3.png) step 1 is the Worklist section instead: five phantoms drafted by
``batch`` (consensus drafts, so the model agreement is recorded; explanations), opened "least certain first";
a reader "ben" annotates the most certain case, then "ann" saves two cases (editing one) and skips one, and
the next case is open with its batch draft, overlay, measured facts and warnings.

Run (PySide6 is only needed here, not by the module or the tests)::

    .venv/bin/pip install PySide6-Essentials
    QT_QPA_PLATFORM=offscreen .venv/bin/python tools/panel_screenshot.py Screenshots/1.png
    QT_QPA_PLATFORM=offscreen .venv/bin/python tools/panel_screenshot.py --worklist Screenshots/3.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "Testing" / "Python"), str(REPO), str(REPO / "tools")]
#: Sections drawn collapsed: as the .ui opens them (1.png), or all but the worklist's flow (3.png).
COLLAPSED = {"worklistCollapsibleButton", "modelCollapsibleButton", "identityCollapsibleButton",
             "logCollapsibleButton"}  # fmt: skip
WORKLIST_COLLAPSED = {"modelCollapsibleButton", "identityCollapsibleButton", "logCollapsibleButton",
                      "attributionCollapsibleButton", "signCollapsibleButton"}  # fmt: skip


def run_panel(workdir: Path) -> dict:
    """Step 1: the real widget code, Generate then evidence for the first sentence; returns its state."""
    import pytest
    import slicer_standins
    from helpers import SAMPLE

    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        slicer_standins.open_panel(monkeypatch, workdir, SAMPLE) as (_module, widget, volume, recorder),
    ):
        ui, node = widget.ui, widget._parameterNode
        ui.patientNameLineEdit.set("Phantom^Demo")
        ui.patientIdLineEdit.set("BG3D-001")
        ui.signerNameLineEdit.set("Dr. First Last")
        ui.applyButton.click()
        slicer_standins.pump(lambda: not widget.logic.busy)
        widget._reviewTimer.callback()
        ui.reportTextEdit.cursor = 3
        ui.explainSentenceButton.click()
        slicer_standins.pump(lambda: not widget.logic.busy)
        widget._reviewTimer.callback()
        assert not recorder["errors"], recorder["errors"]
        state = {name: _widget_state(w) for name, w in vars(ui).items()}
        state["_slice"], state["_k"] = _slice_view(volume, node.attributionSegmentation)
        state["_nodes"] = {
            "inputVolumeSelector": volume.GetName(),
            "reportTextNodeSelector": node.reportTextNode.GetName(),
            "attributionSegmentationSelector": node.attributionSegmentation.GetName(),
        }
    return state


def run_worklist(workdir: Path) -> dict:
    """Step 1 for 3.png: the Worklist section over a five-phantom batch output, two readers at work."""
    import pytest
    import slicer_standins
    import worklist_timing
    from helpers import SAMPLE

    batch = worklist_timing.make_batch(workdir / "cohort", 5, 3, drafts=None)
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        slicer_standins.open_panel(monkeypatch, workdir / "panel", SAMPLE) as (
            _module,
            widget,
            _volume,
            recorder,
        ),
    ):
        worklist = sys.modules["BrainGemma3DModuleLib.worklist"]
        readers = ["ben", "ann"]
        monkeypatch.setattr(worklist, "askReader", lambda suggested="": readers.pop(0))
        monkeypatch.setattr(worklist, "askSkipReason", lambda case: "motion artefacts")
        ui, node = widget.ui, widget._parameterNode
        ui.leastCertainFirstCheckBox.set(True)
        ui.worklistFolderPathLineEdit.set(str(batch))
        ui.openWorklistButton.click()  # ben
        ui.worklistTableWidget.doubleClick(ui.worklistTableWidget.rowCount() - 1)
        ui.saveAndNextButton.click()
        ui.worklistReaderButton.click()  # ann
        ui.saveAndNextButton.click()
        ui.reportTextEdit.setPlainText(node.reportTextNode.GetText().rstrip() + " Reviewed against T1ce.")
        ui.saveAndNextButton.click()
        ui.skipCaseButton.click()
        widget._reviewTimer.callback()
        assert not recorder["errors"], recorder["errors"]
        state = {name: _widget_state(w) for name, w in vars(ui).items()}
        table = ui.worklistTableWidget
        state["_table"] = [table.rowTexts(row) for row in range(table.rowCount())]
        state["_row"] = table.currentRow()
        state["_slice"], state["_k"] = _slice_view(node.inputVolume, node.attributionSegmentation)
        state["_nodes"] = {
            "inputVolumeSelector": node.inputVolume.GetName(),
            "tumourSegmentationSelector": node.tumourSegmentation.GetName(),
            "reportTextNodeSelector": node.reportTextNode.GetName(),
            "attributionSegmentationSelector": node.attributionSegmentation.GetName(),
        }
    return state


def _widget_state(widget) -> dict:
    keys = ("text", "enabled", "visible", "toolTip", "styleSheet", "currentPath", "checked", "value")
    state = {k: getattr(widget, k) for k in keys}
    state |= {"plain": widget.toPlainText(), "format": widget.format, "index": widget.currentIndex}
    state["log"] = list(widget.lines)
    return state


def _slice_view(volume_node, segmentation_node) -> tuple[np.ndarray, int]:
    """RGB slice through the strongest shown region: the input in grey, the shown segments in colour."""
    import slicer.util

    from BrainGemma3DLib.slicer import scene

    image = slicer.util.arrayFromVolume(volume_node).astype(np.float32)  # [k, j, i]
    lo, hi = np.percentile(image[image > 0], [1, 99.5])
    grey = np.clip((image - lo) / (hi - lo), 0, 1)
    segmentation = segmentation_node.GetSegmentation()
    ids = [i for i in scene.ranked_segment_ids(segmentation_node) if _shown(segmentation_node, i)]
    masks = [
        # the library's labelmaps are [i, j, k]; Slicer's arrays [k, j, i]
        (
            scene.segment_labelmap(segmentation_node, i, volume_node).transpose(2, 1, 0),
            segmentation.GetSegment(i),
        )
        for i in ids
    ]
    k = int(np.argmax(masks[0][0].sum(axis=(1, 2)))) if masks else image.shape[0] // 2
    rgb = np.repeat(grey[k][..., None], 3, axis=2)
    for mask, segment in reversed(masks):  # the strongest drawn last, on top
        colour = np.array(segment.GetColor())
        where = mask[k] > 0
        rgb[where] = 0.45 * rgb[where] + 0.55 * colour
    # Radiological convention: patient's right (+i here) on the screen's left, anterior (+j) up.
    return (rgb[::-1, ::-1] * 255).astype(np.uint8), k


def _shown(segmentation_node, segment_id) -> bool:
    display = segmentation_node.GetDisplayNode()
    return display is None or display.GetSegmentVisibility(segment_id)


def render(
    state: dict, out: Path, collapsed=frozenset(COLLAPSED), width: int = 460, palette: bool = False
) -> None:
    """Step 2: the real .ui in Qt, each widget set from the state, beside the slice view; one PNG (with
    ``palette``: 256 colours, which keeps a large picture small)."""
    from PySide6 import QtCore, QtGui, QtWidgets
    from PySide6.QtUiTools import QUiLoader

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    app.setStyle("Fusion")

    class qMRMLWidget(QtWidgets.QWidget):  # noqa: N801  (the .ui's class names)
        pass

    class ctkCollapsibleButton(QtWidgets.QGroupBox):  # noqa: N801
        def _get_text(self):
            return self.property("rawText") or ""

        def _set_text(self, text):  # a group box title keeps "&&" for "&", as ctkCollapsibleButton
            self.setProperty("rawText", text)
            self.setTitle(("\u25b8 " if self.property("isCollapsed") else "\u25be ") + text)

        text = QtCore.Property(str, _get_text, _set_text)

    class qMRMLNodeComboBox(QtWidgets.QComboBox):  # noqa: N801
        pass

    class ctkPathLineEdit(QtWidgets.QLineEdit):  # noqa: N801
        pass

    class ctkSliderWidget(QtWidgets.QSlider):  # noqa: N801
        def __init__(self, parent=None):
            super().__init__(QtCore.Qt.Horizontal, parent)
            self.setRange(0, 100)  # the panel's opacity, 0..1, in hundredths

    loader = QUiLoader()
    for cls in (qMRMLWidget, ctkCollapsibleButton, qMRMLNodeComboBox, ctkPathLineEdit, ctkSliderWidget):
        loader.registerCustomWidget(cls)
    ui_file = QtCore.QFile(str(REPO / "Resources" / "UI" / "BrainGemma3D.ui"))
    ui_file.open(QtCore.QFile.ReadOnly)
    panel = loader.load(ui_file)
    ui_file.close()
    for widget in panel.findChildren(QtWidgets.QWidget):
        name = widget.objectName()
        if name not in state:
            continue
        s = state[name]
        widget.setEnabled(bool(s["enabled"]))
        if isinstance(widget, ctkCollapsibleButton):
            widget.setProperty("isCollapsed", name in collapsed)
            widget.text = widget.text  # the arrow follows the state
            if name in collapsed:
                widget.setFlat(True)
                for child in widget.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
                    child.hide()
                widget.setFixedHeight(28)
        elif isinstance(widget, QtWidgets.QTableWidget):
            rows = state.get("_table", [])
            widget.setRowCount(len(rows))
            for row, texts in enumerate(rows):
                for column, text in enumerate(texts):
                    widget.setItem(row, column, QtWidgets.QTableWidgetItem(text))
            widget.resizeColumnsToContents()
            if state.get("_row", -1) >= 0:
                widget.selectRow(state["_row"])
            rowHeight = widget.verticalHeader().defaultSectionSize()
            widget.setFixedHeight(widget.horizontalHeader().sizeHint().height() + 2 * widget.frameWidth()
                                  + rowHeight * max(len(rows), 3))  # fmt: skip
        elif isinstance(widget, QtWidgets.QPlainTextEdit):
            widget.setPlainText(s["plain"] or "\n".join(s["log"]))
        elif isinstance(widget, qMRMLNodeComboBox):
            widget.addItem(state["_nodes"].get(name, "None"))
        elif isinstance(widget, ctkPathLineEdit):
            widget.setText(s["currentPath"])
        elif isinstance(widget, QtWidgets.QLineEdit):
            widget.setText(s["text"])
        elif isinstance(widget, QtWidgets.QProgressBar):
            widget.setVisible(bool(s["visible"]))
        elif isinstance(widget, QtWidgets.QLabel):
            if s["text"]:
                widget.setText(s["text"])
            widget.setVisible(bool(s["visible"]))
            if s["styleSheet"]:
                widget.setStyleSheet(s["styleSheet"])
        elif isinstance(widget, QtWidgets.QPushButton):
            if s["text"]:
                widget.setText(s["text"])
        elif isinstance(widget, ctkSliderWidget):
            widget.setRange(0, 100)  # the .ui's 0..1 range, in hundredths
            widget.setValue(round(100 * float(s["value"])))
        elif isinstance(widget, QtWidgets.QSpinBox):
            widget.setValue(int(s["value"]))
        elif isinstance(widget, QtWidgets.QCheckBox):
            widget.setChecked(bool(s["checked"]))
    panel.resize(width, 10)
    panel.adjustSize()
    panel.resize(width, panel.sizeHint().height())
    panel_image = panel.grab().toImage()

    rgb = np.ascontiguousarray(state["_slice"])
    height, width, _ = rgb.shape
    slice_image = QtGui.QImage(rgb.data, width, height, 3 * width, QtGui.QImage.Format_RGB888).copy()
    view_h = panel_image.height()
    view_w = max(420, int(view_h * 0.85))
    canvas = QtGui.QImage(view_w + panel_image.width(), view_h, QtGui.QImage.Format_RGB888)
    canvas.fill(QtGui.QColor("#000000"))
    painter = QtGui.QPainter(canvas)
    painter.fillRect(0, 0, view_w, 26, QtGui.QColor("#c0504d"))  # Slicer's red slice view bar
    painter.setPen(QtGui.QColor("#ffffff"))
    overlay = state["_nodes"]["attributionSegmentationSelector"]
    painter.drawText(8, 18, f"Input volume, voxel slice k = {state['_k']}  |  {overlay}")
    scaled = slice_image.scaled(
        view_w, view_h - 26, QtCore.Qt.KeepAspectRatio, QtCore.Qt.SmoothTransformation
    )
    x0, y0 = (view_w - scaled.width()) // 2, 26 + (view_h - 26 - scaled.height()) // 2
    painter.drawImage(x0, y0, scaled)
    painter.setPen(QtGui.QColor("#ffd54f"))
    painter.drawText(x0 + 8, y0 + scaled.height() // 2, "R")
    painter.drawText(x0 + scaled.width() - 16, y0 + scaled.height() // 2, "L")
    painter.drawImage(view_w, 0, panel_image)
    painter.end()
    out.parent.mkdir(parents=True, exist_ok=True)
    if palette:  # median-cut palette (Pillow): smooth greys stay smooth, unlike Qt's fixed palette
        from PIL import Image

        pixels = np.frombuffer(canvas.constBits(), np.uint8).reshape(canvas.height(), canvas.bytesPerLine())
        rgb = pixels[:, : 3 * canvas.width()].reshape(canvas.height(), canvas.width(), 3)
        Image.fromarray(rgb).quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
        return
    if not canvas.save(str(out)):
        raise SystemExit(f"{out}: could not write the PNG")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write, e.g. Screenshots/1.png")
    parser.add_argument("--worklist", action="store_true", help="the Worklist section (Screenshots/3.png)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bg3d-shot-") as folder:
        if args.worklist:
            render(run_worklist(Path(folder)), args.out, frozenset(WORKLIST_COLLAPSED), 560, palette=True)
        else:
            render(run_panel(Path(folder)), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
