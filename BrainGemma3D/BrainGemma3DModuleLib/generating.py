"""Generate, Cancel and "explain this sentence": the panel's side of a worker run.

A mixin of ``BrainGemma3DWidget`` (``onApplyButton``, ``onExplainSentenceButton``, the progress and finished
callbacks, the device line), kept here so that the module file stays thin. It needs the widget's ``ui``,
``logic`` and ``_parameterNode``, and its ``_checkCanApply()``; the run itself is the logic's (``generate``,
``explainSentence``), the worker process is ``worker.ReportWorker``'s.
"""

import slicer

from . import panel, settings
from .i18n import _
from .settings import pathOrNone


class GeneratePanel:
    """Starting, cancelling and showing a report (or one sentence's evidence); mixed into the widget."""

    # --- Generate / Cancel ------------------------------------------------------------------------------
    def onApplyButton(self) -> None:
        """Generate a report draft, or cancel the one being generated (the button doubles as Cancel)."""
        if self.logic.busy:
            self.logic.cancel()
            self.ui.applyButton.enabled = False
            self.ui.statusLabel.text = _("Cancelling...")
            return
        node = self._parameterNode
        model, vision, lm = "demo", None, None
        target = self._nodeTarget()  # None: on this computer; else the node's URL, token and CA file
        if node.modelSource.value == "checkpoint" and target is None:  # ModelSource.CHECKPOINT
            if not settings.confirmTerms():
                self.ui.statusLabel.text = _("HAI-DEF terms not accepted: only the demo weights can run.")
                return
            model = str(node.checkpointFolder)
            vision, lm = pathOrNone(node.medSigLipFolder), pathOrNone(node.medGemmaFolder)
            settings.rememberPaths(node)
        volumes = [node.inputVolume, node.t1ceVolume, node.t2Volume]
        self._runningVolume, self._runningSentence = node.inputVolume, None
        self._setRunning(True)
        self._onProgress("deps", 0.0, _("Checking the Python dependencies"))
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not start report generation."), waitCursor=True):
                if not self.logic.ensureDependencies(progress=self._onProgress, model=target is None):
                    self._setRunning(False)
                    self.ui.statusLabel.text = _(
                        "Restart Slicer to finish installing, then press Generate again."
                    )
                    return
                self.logic.generate(
                    volumes,
                    model=model,
                    device=node.device.value,
                    quantize="4bit" if node.quantize4bit else None,
                    explain=node.explain,
                    vision=vision,
                    lm=lm,
                    fields=panel.typedIdentity(node),
                    tumourSegmentation=node.tumourSegmentation,
                    node=target,
                    onProgress=self._onProgress,
                    onFinished=self._onFinished,
                )
        except Exception:  # shown by tryWithErrorDisplay; the panel must not stay in "running"
            self._setRunning(False)
            self.ui.statusLabel.text = _("Report generation did not start (see the error message).")

    def _setRunning(self, running) -> None:
        self.ui.applyButton.text = _("Cancel") if running else _("Generate report")
        self.ui.progressBar.visible = running
        for widget in (
            self.ui.inputsCollapsibleButton,
            self.ui.modelCollapsibleButton,
            self.ui.signButton,
            self.ui.explainSentenceButton,
        ):
            widget.enabled = not running
        if running:
            self.ui.applyButton.toolTip = _("Stop generating this report; nothing is written.")
            self.ui.applyButton.enabled = True
        else:
            self._checkCanApply()

    def _onProgress(self, stage, fraction, message) -> None:
        self.ui.progressBar.visible = True
        self.ui.progressBar.value = int(round(100 * max(0.0, min(1.0, fraction))))
        self.ui.progressBar.format = panel.stageLabel(stage) + " (%p%)"
        self.ui.statusLabel.text = message
        panel.appendLog(self.ui.logTextEdit, message, stage)
        slicer.app.processEvents()  # installing and loading run on this thread: let the bar repaint

    def _onFinished(self, result, error) -> None:
        """The worker's answer: show the draft and the overlay, or say clearly what went wrong."""
        self._setRunning(False)
        self._showDeviceStatus()
        if error is not None:
            panel.appendLog(self.ui.logTextEdit, str(error) + (f"\n{error.debug}" if error.debug else ""))
            if error.cancelled:
                self.ui.statusLabel.text = _("Cancelled: nothing was written.")
                return
            self.ui.statusLabel.text = str(error)
            kwargs = {"detailedText": error.debug} if error.debug else {}
            slicer.util.errorDisplay(_("Report generation failed.") + "\n\n" + str(error), **kwargs)
            return
        node = self._parameterNode
        if self._runningSentence is not None:  # the answer to "which regions support this sentence?"
            with slicer.util.tryWithErrorDisplay(_("Failed to show the evidence."), waitCursor=True):
                node.attributionSegmentation = self.logic.showEvidence(
                    result, self._runningVolume, self._runningSentence, opacity=node.opacity, topK=node.topK
                )
                self.ui.statusLabel.text = _("Showing: {name}").format(
                    name=node.attributionSegmentation.GetName()
                )
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to show the report."), waitCursor=True):
            textNode, segmentationNode = self.logic.showResults(
                result, self._runningVolume, opacity=node.opacity, topK=node.topK
            )
            node.reportTextNode = textNode
            # None without Explain: the previous case's overlay never stays selected.
            node.attributionSegmentation = segmentationNode
            if pathOrNone(node.outputPdfPath) is None or node.outputPdfPath.exists():
                node.outputPdfPath = panel.defaultSignedPdfPath(
                    panel.sceneFolder(), self._runningVolume.GetName()
                )
            seconds = sum((result.get("report", {}).get("timings") or {}).values())
            self.ui.statusLabel.text = _(
                "Report draft ready ({seconds:.0f} s). Review and edit it before signing."
            ).format(seconds=seconds)

    def _showDeviceStatus(self) -> None:
        info = self.logic.deviceInfo if self.logic else None
        node = self._parameterNode
        if node and node.runOn.value == "node":  # RunOn.NODE: the node's own device
            text = _("Reports are drafted on the node {url}.").format(url=node.nodeUrl.strip() or "?")
        elif not info:
            text = _("GPU: not checked yet; the worker reports what it finds on the first run.")
        elif info.get("cuda_available"):
            text = _("CUDA GPU found; the model runs on: {device}.").format(device=info.get("device"))
        else:
            text = _("No CUDA GPU found; the model runs on the CPU.")
        self.ui.deviceStatusLabel.text = text

    def _onGenerateShortcut(self) -> None:
        if self.ui.applyButton.enabled:
            self.onApplyButton()

    def onExplainSentenceButton(self) -> None:
        """Which regions support the sentence under the cursor? Its own segmentation, named after it."""
        from BrainGemma3DLib.reporting.sections import sentence_at

        node = self._parameterNode
        text = self.ui.reportTextEdit.toPlainText()
        span = sentence_at(text, self.ui.reportTextEdit.textCursor().position())
        if span is None:
            self.ui.statusLabel.text = _("Put the text cursor in the sentence to explain.")
            return
        self._runningVolume, self._runningSentence = node.inputVolume, text[span[0] : span[1]]
        self._setRunning(True)
        try:
            with slicer.util.tryWithErrorDisplay(_("Could not start the explanation."), waitCursor=True):
                self.logic.explainSentence(
                    [node.inputVolume, node.t1ceVolume, node.t2Volume],
                    text,
                    span,
                    model="demo" if node.modelSource.value == "demo" else str(node.checkpointFolder),
                    device=node.device.value,
                    onProgress=self._onProgress,
                    onFinished=self._onFinished,
                )
        except Exception:
            self._setRunning(False)
