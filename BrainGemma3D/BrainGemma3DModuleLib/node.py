"""Run on a BrainGemma3D node: the panel's "Run on" choice and the node run driven from Slicer's event loop.

``NodeRunner`` is the node's counterpart of ``worker.ReportWorker``: the library's
``BrainGemma3DLib.slicer.node_client.NodeRun`` waits on the network in a thread of its own and only queues
events; a QTimer on the main thread hands them to the same ``onProgress``/``onFinished`` callbacks a local run
uses, so progress, Cancel and the results in the scene are the same. ``NodePanel`` is a mixin of
``BrainGemma3DWidget``: the Run on widgets, the token (system keyring or Slicer's settings, see
``settings.setNodeToken``), and what a node run can and cannot do (one volume; the node's own model, so the
model section's weights and device do not apply; no "evidence for a sentence").
"""

import logging

import qt

from . import settings
from .i18n import _
from .settings import pathOrNone

POLL_INTERVAL_MS = 100
#: Seconds Cancel waits for the node to confirm before the panel stops waiting by itself.
CANCEL_GRACE_SECONDS = 15.0
#: The model section's controls that the node decides itself (its node.toml), disabled in node mode.
MODEL_WIDGETS = (
    "modelSourceComboBox",
    "checkpointFolderPathLineEdit",
    "medSigLipFolderPathLineEdit",
    "medGemmaFolderPathLineEdit",
    "deviceComboBox",
    "quantizeCheckBox",
)
NODE_WIDGETS = ("nodeUrlLineEdit", "nodeTokenLineEdit", "nodeCaFilePathLineEdit")


def isNodeMode(parameterNode):
    return bool(parameterNode) and parameterNode.runOn.value == "node"


class NodeRunner:
    """One report drafted on a node at a time; ``run`` returns at once; callbacks run on the main thread."""

    def __init__(self):
        self._run = None
        self._onProgress = self._onFinished = None
        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)

    @property
    def busy(self):
        return self._run is not None

    def run(self, target, volumeFile, folder, *, explain, fields=None, options=None, onProgress=None,
            onFinished=None):  # fmt: skip
        """Send ``volumeFile`` to the node ``target`` ({"url", "token", "caFile"}); the draft's files go into
        ``folder``. A wrong address or token is refused here (``NodeError``), before anything is sent."""
        from BrainGemma3DLib.slicer.node_client import NodeClient, NodeRun

        if self.busy:
            raise RuntimeError(_("A report is already being generated."))
        client = NodeClient(target["url"], target["token"], ca_file=target.get("caFile"))
        self._onProgress = onProgress or (lambda stage, fraction, message: None)
        self._onFinished = onFinished
        self._run = NodeRun(client, volumeFile, folder, explain=explain, fields=fields, options=options)
        self._timer.start()

    def cancel(self):
        """Tell the node to stop the job; finish as cancelled when it confirms, or after a grace period."""
        run = self._run
        if run is None:
            return
        run.cancel()
        qt.QTimer.singleShot(int(CANCEL_GRACE_SECONDS * 1000), lambda: self._giveUp(run))

    def shutdown(self):
        """Module unload, application exit, Clear cache: stop following (the node is told to cancel)."""
        run, self._run = self._run, None
        self._timer.stop()
        if run is not None:
            run.cancel()

    def _giveUp(self, run):
        if self._run is run:
            from BrainGemma3DLib.slicer.node_client import NodeError

            logging.warning(
                "BrainGemma3D: the node did not confirm the cancel within %s s", CANCEL_GRACE_SECONDS
            )
            self._finish(
                None,
                NodeError(
                    _("Cancelled here; the node did not confirm in time: it stops the job."), cancelled=True
                ),
            )

    def _poll(self):
        """Main thread, every POLL_INTERVAL_MS: the run's events to the callbacks."""
        if self._run is None:
            self._timer.stop()
            return
        for item in self._run.events():
            if item[0] == "progress":
                self._onProgress(*item[1:])
            elif item[0] == "finished":
                self._finish(item[1], item[2])
                return

    def _finish(self, result, error):
        self._run = None
        self._timer.stop()
        if self._onFinished is not None:
            self._onFinished(result, error)


class NodePanel:
    """The Run on choice, the node's address and token, and what node mode changes; mixed into the widget."""

    def _setupNodeMode(self) -> None:
        names = (*MODEL_WIDGETS, "explainSentenceButton")
        self._localToolTips = {name: getattr(self.ui, name).toolTip for name in names}
        self.ui.nodeTokenLineEdit.text = settings.nodeToken()
        self.ui.nodeTokenLineEdit.toolTip = settings.nodeTokenStorageText()
        self.ui.nodeTokenLineEdit.connect("editingFinished()", self._onNodeTokenEdited)
        self.ui.nodeTokenLineEdit.connect("textChanged(QString)", lambda text: self._checkCanApply())

    def _onNodeTokenEdited(self) -> None:
        settings.setNodeToken(self.ui.nodeTokenLineEdit.text)

    def _nodeTarget(self):
        """Where a node run goes ({"url", "token", "caFile"}), remembered for the next session; None when the
        report is drafted on this computer."""
        node = self._parameterNode
        settings.rememberNode(node)  # this computer or the node: the next session starts with the same choice
        if not isNodeMode(node):
            return None
        token = self.ui.nodeTokenLineEdit.text.strip()
        settings.setNodeToken(token)
        caFile = pathOrNone(node.nodeCaFile)
        return {"url": node.nodeUrl.strip(), "token": token, "caFile": str(caFile) if caFile else None}

    def _updateRunOn(self):
        """Enable what applies where the report is drafted; the reason Generate cannot run, or None."""
        node = self._parameterNode
        nodeMode = isNodeMode(node)
        for name in NODE_WIDGETS:
            getattr(self.ui, name).enabled = nodeMode
        modelTip = _(
            "The node drafts with its own model and device (its node.toml); this is for this computer."
        )
        for name in MODEL_WIDGETS:
            widget = getattr(self.ui, name)
            if nodeMode:
                widget.enabled, widget.toolTip = False, modelTip
            else:  # the checkpoint folders follow the weights choice (the widget's _checkCanApply)
                widget.enabled = widget.enabled if "PathLineEdit" in name else True
                widget.toolTip = self._localToolTips.get(name, widget.toolTip)
        self.ui.modelNoticeLabel.visible = self.ui.modelNoticeLabel.visible and not nodeMode
        self._showDeviceStatus()
        self.ui.explainSentenceButton.toolTip = self._localToolTips.get("explainSentenceButton", "")
        if not nodeMode:
            return None
        self.ui.explainSentenceButton.enabled = False
        self.ui.explainSentenceButton.toolTip = _(
            "A node drafts whole reports only: run on this computer to see the evidence for one sentence."
        )
        if not node.nodeUrl.strip():
            return _("Enter the node's URL (Run on).")
        if not self.ui.nodeTokenLineEdit.text.strip():
            return _("Enter your token for the node (Run on).")
        if node.t1ceVolume or node.t2Volume:
            return _("A node drafts from one volume: clear T1ce and T2, or run on this computer.")
        if node.tumourSegmentation:
            return _("A node takes no tumour segmentation: clear it, or run on this computer.")
        return None
