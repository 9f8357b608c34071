"""The report text box and its review: entities, warnings and agreement under the editable draft.

A mixin of ``BrainGemma3DWidget``, kept here so that the module file stays thin. The text box is a view of
the report's text node (edits go into the node, edits elsewhere show up here); the review is recomputed by
the logic's ``review`` once typing pauses (the widget's ``_reviewTimer``). Needs ``VTKObservationMixin``.
"""

import vtk

from . import panel
from .i18n import _


class ReviewPanel:
    """The editable report text and what the panel reads from it; mixed into the widget."""

    # --- Report text, entities, warnings ----------------------------------------------------------------
    def _observeTextNode(self, textNode) -> None:
        """Keep the text box showing ``textNode``; edits in the Text module show up here too."""
        if textNode is self._observedTextNode:
            return
        if self._observedTextNode is not None:
            self.removeObserver(
                self._observedTextNode, vtk.vtkCommand.ModifiedEvent, self._onTextNodeModified
            )
        self._observedTextNode = textNode
        if textNode is not None:
            self.addObserver(textNode, vtk.vtkCommand.ModifiedEvent, self._onTextNodeModified)
        self.ui.reportTextEdit.enabled = textNode is not None
        self._onTextNodeModified()

    def _onTextNodeModified(self, caller=None, event=None) -> None:
        node = self._observedTextNode
        text = (node.GetText() or "") if node is not None else ""
        if self.ui.reportTextEdit.toPlainText() != text:  # equal while the user types: keep the cursor
            self._updatingEditor = True
            try:
                self.ui.reportTextEdit.setPlainText(text)
            finally:
                self._updatingEditor = False
        self._reviewTimer.start()

    def onReportTextEdited(self) -> None:
        """The text box is a view of the text node: every edit goes into the node (saved with the scene)."""
        node = self._observedTextNode
        if self._updatingEditor or node is None:
            return
        text = self.ui.reportTextEdit.toPlainText()
        if text != (node.GetText() or ""):
            node.SetText(text, vtk.VTK_ENCODING_UTF_8)
        self._reviewTimer.start()

    def _updateReview(self) -> None:
        node = self._observedTextNode
        self.ui.entitiesLabel.text = ""
        self.ui.warningsLabel.text = ""
        self.ui.warningsLabel.visible = False
        if node is None or not (node.GetText() or "").strip():
            return
        try:
            entities, warnings, agreement = self.logic.review(node)
        except ImportError:
            self.ui.entitiesLabel.text = _("Entities are shown once the Python dependencies are installed.")
            return
        self.ui.entitiesLabel.text = panel.formatEntities(entities) + (f"\n{agreement}" if agreement else "")
        if warnings:
            self.ui.warningsLabel.text = "\n".join("\u26a0 " + warning for warning in warnings)
            self.ui.warningsLabel.visible = True
