"""The Slicer panel's node mode: the node client (BrainGemma3DLib.slicer.node_client) and the panel's "Run on:
a BrainGemma3D node", against a real node on loopback (a private Redis, ``braingemma3d serve`` with HTTPS and
one worker: ``node_fixtures``).

The panel runs as in ``test_panel.py``: the module's real widget and logic code on widgets built from the real
.ui, real MRML (slicer-core), the real local worker for the local run. A local run and a node run of the same
case give the same text and the same attribution segmentation in the scene.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import slicer_standins
from helpers import SAMPLE
from node_fixtures import Node, free_port, running_redis


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """One HTTPS node (self-signed: its certificate is the CA file), one worker, the demo model."""
    folder = tmp_path_factory.mktemp("node")
    with running_redis(folder / "redis") as redis:
        node = Node(folder, redis, tls=True)
        node.tokens = {user: node.token(user) for user in ("station", "canceller", "panel")}
        node.start()
        try:
            yield node
        finally:
            node.stop()


def client_for(node, user="station", **kwargs):
    from BrainGemma3DLib.slicer.node_client import NodeClient

    return NodeClient(node.url, node.tokens[user], ca_file=node.tls[0], **kwargs)


def wait_for(run, timeout=300.0) -> list:
    """Drain a NodeRun's events as the panel's timer does, until it finishes."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen += run.events()
        if seen and seen[-1][0] == "finished":
            return seen
        time.sleep(0.05)
    raise AssertionError(f"the node run did not finish; saw {seen[-3:]}")


# --- the client -------------------------------------------------------------------------------------------


def test_the_client_refuses_what_would_leak_or_cannot_work(tmp_path):
    from BrainGemma3DLib.slicer.node_client import NodeClient, NodeError, upload_format

    def refused(url, token="t0k3n", **kwargs):
        with pytest.raises(NodeError) as caught:
            NodeClient(url, token, **kwargs)
        return str(caught.value)

    assert "unencrypted" in refused("http://10.0.0.5:8787")  # the token would cross the network readable
    assert "https://" in refused("ftp://node:21") and "https://" in refused("")
    assert "no token" in refused("https://node:8787", token=" ")
    assert "paste it again" in refused("https://node:8787", token="two words")
    assert "CA file" in refused("https://node:8787", ca_file=tmp_path / "missing.pem")
    assert "query" in refused("https://node:8787/?user=x")
    NodeClient("http://127.0.0.1:8787", "t0k3n")  # plain http to this computer is fine
    NodeClient("https://node.example:8787/braingemma3d/", "t0k3n")  # behind a proxy's path
    assert [upload_format(n) for n in ("a.NII.GZ", "b.nii", "c.nrrd", "d.mha", "e.zip")] == [
        "nii.gz",
        "nii",
        "nrrd",
        "mha",
        "zip",
    ]
    with pytest.raises(NodeError, match="NIfTI, NRRD"):
        upload_format("volume.dcm")


def test_each_failure_is_one_clear_message_and_never_a_hang(node, tmp_path):
    from BrainGemma3DLib.slicer.node_client import NodeClient, NodeError

    assert isinstance(client_for(node).jobs(), list)  # the right address, token and CA file
    cases = {
        "token": lambda: NodeClient(node.url, "not-a-token", ca_file=node.tls[0]).jobs(),
        "unverified": lambda: NodeClient(node.url, node.tokens["station"]).jobs(),  # no CA file
        "closed": lambda: NodeClient(f"https://127.0.0.1:{free_port()}", "t0k3n").jobs(),
        "job": lambda: client_for(node).state("0123456789abcdef"),
    }
    messages = {}
    for name, call in cases.items():
        with pytest.raises(NodeError) as caught:
            call()
        messages[name] = (caught.value.status, str(caught.value))
    assert messages["token"][0] == 401 and "refused the token" in messages["token"][1]
    assert messages["unverified"][0] is None and "could not be verified" in messages["unverified"][1]
    assert "Cannot reach" in messages["closed"][1] and "connection refused" in messages["closed"][1]
    assert messages["job"][0] == 404 and "does not know this job" in messages["job"][1]
    # A server that accepts the connection and never answers: a timeout, in bounded time.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        started = time.monotonic()
        with pytest.raises(NodeError, match="no answer within 1 s"):
            NodeClient(f"http://127.0.0.1:{silent.getsockname()[1]}", "t0k3n", timeout=1).jobs()
        assert time.monotonic() - started < 10
    finally:
        silent.close()


def test_a_failed_job_and_a_cancelled_one_end_the_run_with_their_message(node, tmp_path):
    from BrainGemma3DLib.slicer.node_client import NodeError, NodeRun

    # Not a volume: the node's worker fails the job; the run ends with the node's reason.
    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(b"this is not a NIfTI file" * 100)
    run = NodeRun(client_for(node), garbage, tmp_path / "failed", explain=False)
    kind, result, error = wait_for(run, timeout=240)[-1]
    assert kind == "finished" and result is None and isinstance(error, NodeError), error
    assert "could not draft this report" in str(error) and not error.cancelled
    assert not (tmp_path / "failed").exists()

    # Cancel as soon as the node has the job: the run ends as cancelled and the node stops the job.
    run = NodeRun(client_for(node, "canceller"), SAMPLE, tmp_path / "cancelled", explain=True)
    seen, deadline = [], time.monotonic() + 120
    while run.job is None or not any(item[0] == "progress" and item[1] != "upload" for item in seen):
        assert time.monotonic() < deadline, seen
        seen += run.events()
        time.sleep(0.02)
    run.cancel()
    started = time.monotonic()
    kind, result, error = wait_for(run, timeout=60)[-1]
    assert time.monotonic() - started < 30  # the node was told; the panel does not wait for the worker
    assert (kind, result) == ("finished", None) and error.cancelled, error
    client, deadline = client_for(node, "canceller"), time.monotonic() + 180
    while client.state(run.job)["state"] not in ("cancelled", "failed", "done"):
        assert time.monotonic() < deadline, client.state(run.job)
        time.sleep(0.5)
    assert client.state(run.job)["state"] == "cancelled"
    assert not (tmp_path / "cancelled").exists()  # nothing fetched


# --- the panel ----------------------------------------------------------------------------------------------


@pytest.fixture
def panel(monkeypatch, tmp_path):
    with slicer_standins.open_panel(monkeypatch, tmp_path, SAMPLE) as opened:
        yield opened


def idle(widget) -> bool:
    return not widget.logic.busy


def run_on_node(ui, node, user="panel"):
    """What a radiologist does once: Run on a node, its URL, the token, the hospital's CA file."""
    ui.runOnComboBox.set(1)
    ui.nodeUrlLineEdit.set(node.url)
    ui.nodeTokenLineEdit.set(node.tokens[user])
    ui.nodeTokenLineEdit.emit("editingFinished()")
    ui.nodeCaFilePathLineEdit.set(str(node.tls[0]))


def top_segments(segmentation, volume, k):
    """The k best-ranked segments of an attribution overlay: their names and voxels on the input's grid."""
    from BrainGemma3DLib.slicer import scene

    ranked = scene.ranked_segment_ids(segmentation)[:k]
    names = [segmentation.GetSegmentation().GetSegment(i).GetName() for i in ranked]
    return names, [scene.segment_labelmap(segmentation, i, volume) for i in ranked]


@pytest.mark.slow
def test_a_local_run_and_a_node_run_give_the_same_text_and_segmentation(panel, node, tmp_path):
    import numpy as np

    module, widget, volume, recorder = panel
    ui, state = widget.ui, widget._parameterNode
    assert state.explain  # the explanation is on by default: both runs make the attribution overlay

    # On this computer.
    ui.applyButton.click()
    slicer_standins.pump(lambda: idle(widget))
    assert recorder["errors"] == [] and "Report draft ready" in ui.statusLabel.text, ui.statusLabel.text
    localText, localOverlay = state.reportTextNode.GetText(), state.attributionSegmentation

    # On the node: the same panel, Run on switched; the model section does not apply there.
    run_on_node(ui, node)
    assert state.runOn == module.RunOn.NODE and state.nodeUrl == node.url
    assert not ui.modelSourceComboBox.enabled and not ui.deviceComboBox.enabled
    assert "node" in ui.deviceComboBox.toolTip and ui.explainCheckBox.enabled
    assert ui.applyButton.enabled, ui.applyButton.toolTip
    ui.applyButton.click()
    assert ui.applyButton.text == "Cancel"
    slicer_standins.pump(lambda: idle(widget))
    assert recorder["errors"] == [], recorder["errors"]
    assert "Report draft ready" in ui.statusLabel.text, ui.statusLabel.text
    log = "\n".join(ui.logTextEdit.lines)
    assert "[Sending the volume to the node]" in log and "[Fetching the report from the node]" in log
    assert "[Writing the draft]" in log  # the node's own stages, named as for a local run

    # The same text, and the same regions: the panel's explanation options travel to the node, so both
    # overlays hold the same segments; the strongest the panel shows are compared voxel by voxel.
    textNode, overlay = state.reportTextNode, state.attributionSegmentation
    assert textNode.GetText() == localText and ui.reportTextEdit.toPlainText() == localText
    assert overlay is not None and overlay is not localOverlay
    assert overlay.GetAttribute("BrainGemma3D.attribution") == "1"
    count = overlay.GetSegmentation().GetNumberOfSegments()
    assert count == localOverlay.GetSegmentation().GetNumberOfSegments() > 0
    k = min(count, state.topK)
    nodeNames, nodeMasks = top_segments(overlay, volume, k)
    localNames, localMasks = top_segments(localOverlay, volume, k)
    assert nodeNames == localNames
    for name, ours, theirs in zip(nodeNames, nodeMasks, localMasks, strict=True):
        assert ours.any() and np.array_equal(ours, theirs), name

    # The node's files are in this computer's cache, placed as a local run places them; signing is local.
    cache = Path(widget.logic.cacheFolder())
    reportJson = Path(textNode.GetAttribute("BrainGemma3D.reportJson"))
    assert reportJson.is_file() and cache in reportJson.parents
    assert json.loads(reportJson.read_text(encoding="utf-8"))["text"] == localText
    from BrainGemma3DLib.reporting import signing

    key, cert = signing.make_test_certificate(tmp_path / "pki", "Dr Node Test")
    ui.signerNameLineEdit.set("Dr Node Test")
    ui.certificatePathLineEdit.set(str(cert))
    ui.privateKeyPathLineEdit.set(str(key))
    ui.signButton.click()
    assert recorder["errors"] == [] and "#2e7d32" in ui.signatureStatusLabel.styleSheet
    assert signing.verify_pdf(str(state.outputPdfPath), trust=[cert])["trusted"]


def test_node_mode_settings_refusals_and_cancel_in_the_panel(panel, node, monkeypatch):
    module, widget, volume, recorder = panel
    ui, state = widget.ui, widget._parameterNode
    settings = module.settings
    monkeypatch.setitem(sys.modules, "keyring", None)  # no keyring package: Slicer's settings keep the token
    assert (
        settings.nodeTokenStorage() == "settings" and "Slicer's settings" in settings.nodeTokenStorageText()
    )

    # Switching to a node: its fields open, the model's close (with the reason), evidence for a sentence too.
    assert not ui.nodeUrlLineEdit.enabled and ui.modelSourceComboBox.enabled
    modelTip = ui.modelSourceComboBox.toolTip
    ui.runOnComboBox.set(1)
    assert ui.nodeUrlLineEdit.enabled and ui.nodeTokenLineEdit.enabled and ui.nodeCaFilePathLineEdit.enabled
    assert not ui.quantizeCheckBox.enabled and not ui.checkpointFolderPathLineEdit.enabled
    assert not ui.explainSentenceButton.enabled
    assert not ui.applyButton.enabled and "URL" in ui.applyButton.toolTip
    ui.nodeUrlLineEdit.set(node.url)
    assert not ui.applyButton.enabled and "token" in ui.applyButton.toolTip
    ui.nodeTokenLineEdit.set("not-a-token")
    ui.nodeCaFilePathLineEdit.set(str(node.tls[0]))
    assert ui.applyButton.enabled and "node" in ui.applyButton.toolTip
    assert node.url in ui.deviceStatusLabel.text
    # A node drafts from one volume: a second sequence (or a tumour segmentation) is refused with the reason.
    state.t1ceVolume, state.t2Volume = volume, volume
    assert not ui.applyButton.enabled and "one volume" in ui.applyButton.toolTip
    state.t1ceVolume = state.t2Volume = None
    assert ui.applyButton.enabled

    # A wrong token: one clear message, the panel idle again, no report.
    ui.applyButton.click()
    slicer_standins.pump(lambda: idle(widget), timeout=60)
    assert len(recorder["errors"]) == 1 and "refused the token" in recorder["errors"][0]
    assert ui.applyButton.text == "Generate report" and state.reportTextNode is None
    qsettings = sys.modules["qt"].QSettings()
    assert qsettings.value("BrainGemma3D/nodeUrl") == node.url  # remembered on Generate
    assert qsettings.value("BrainGemma3D/runOn") == "node"
    assert qsettings.value("BrainGemma3D/nodeToken") == "not-a-token"  # no keyring here

    # Cancel reaches the node: the panel says so at once; nothing new in the scene; the node stops the job.
    # (Without the explanation: a draft of this volume with it may be on the node already, and the node
    # answers a repeated input with that draft at once.)
    recorder["errors"].clear()
    state.explain = False
    ui.nodeTokenLineEdit.set(node.tokens["panel"])
    ui.nodeTokenLineEdit.emit("editingFinished()")
    assert qsettings.value("BrainGemma3D/nodeToken") == node.tokens["panel"]
    texts = _count_text_nodes()
    ui.applyButton.click()
    slicer_standins.pump(
        lambda: widget.logic.nodeRunner._run and widget.logic.nodeRunner._run.job, timeout=60
    )
    job = widget.logic.nodeRunner._run.job
    ui.applyButton.click()  # Cancel
    assert ui.statusLabel.text == "Cancelling..."
    slicer_standins.pump(lambda: idle(widget), timeout=60)
    assert "Cancelled" in ui.statusLabel.text and recorder["errors"] == []
    assert _count_text_nodes() == texts
    client, deadline = client_for(node, "panel"), time.monotonic() + 180
    while client.state(job)["state"] not in ("cancelled", "failed", "done"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert client.state(job)["state"] == "cancelled"

    # Back on this computer: the model section as before, the node's fields closed.
    ui.runOnComboBox.set(0)
    assert ui.modelSourceComboBox.enabled and ui.modelSourceComboBox.toolTip == modelTip
    assert not ui.nodeUrlLineEdit.enabled and ui.applyButton.enabled


def _count_text_nodes() -> int:
    import slicer

    return slicer.mrmlScene.GetNodesByClass("vtkMRMLTextNode").GetNumberOfItems()


def test_the_token_goes_to_the_system_keyring_where_there_is_one(panel, monkeypatch):
    """With the keyring package (and a working backend) the token is kept there, never in Slicer's settings;
    a new session finds it; the panel's tooltip says where it is."""
    module, widget, _volume, _recorder = panel
    settings = module.settings
    kept = {}
    keyring = types.ModuleType("keyring")
    keyring.get_keyring = lambda: types.SimpleNamespace(priority=5)
    keyring.get_password = lambda service, user: kept.get((service, user))
    keyring.set_password = lambda service, user, value: kept.__setitem__((service, user), value)
    keyring.delete_password = lambda service, user: kept.pop((service, user))
    monkeypatch.setitem(sys.modules, "keyring", keyring)
    qsettings = sys.modules["qt"].QSettings()
    qsettings.setValue("BrainGemma3D/nodeToken", "old-token-in-settings")

    assert settings.setNodeToken("s3cret") == "keyring"
    assert kept == {("BrainGemma3D node", "token"): "s3cret"}
    assert qsettings.value("BrainGemma3D/nodeToken") == ""  # not left in the settings file
    assert settings.nodeToken() == "s3cret" and "system keyring" in settings.nodeTokenStorageText()
    widget._setupNodeMode()  # a new session's panel
    assert widget.ui.nodeTokenLineEdit.text == "s3cret"
    assert "system keyring" in widget.ui.nodeTokenLineEdit.toolTip
    # A keyring without a usable backend (keyring's "fail" backend has priority 0): Slicer's settings.
    keyring.get_keyring = lambda: types.SimpleNamespace(priority=0)
    assert (
        settings.setNodeToken("other") == "settings" and qsettings.value("BrainGemma3D/nodeToken") == "other"
    )


def test_the_run_on_choice_url_and_ca_file_come_back_in_a_new_scene(panel, tmp_path):
    module, widget, _volume, _recorder = panel
    ca = tmp_path / "hospital-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    qsettings = sys.modules["qt"].QSettings()
    for key, value in {
        "runOn": "node",
        "nodeUrl": "https://bg3d.example:8787",
        "nodeCaFile": str(ca),
    }.items():
        qsettings.setValue(f"BrainGemma3D/{key}", value)
    state = widget._parameterNode
    state.nodeUrl = ""  # a new scene's parameter node
    module.settings.restoreNode(state)
    assert (state.runOn, state.nodeUrl, state.nodeCaFile) == (
        module.RunOn.NODE,
        "https://bg3d.example:8787",
        ca,
    )
    assert widget.ui.nodeUrlLineEdit.text == "https://bg3d.example:8787"


def test_a_cancel_the_node_never_confirms_still_ends_the_run(monkeypatch, tmp_path):
    """The node stops answering after taking the job: Cancel still ends the run, saying the node was not
    told."""
    from BrainGemma3DLib.slicer import node_client

    class Hung(node_client.NodeClient):
        def report(self, path, folder, *, on_job=None, stop=lambda: False, **kwargs):
            on_job("0123456789abcdef")
            while not stop():
                time.sleep(0.05)
            threading.Event().wait(5)  # the stream is stuck
            raise node_client.NodeError("Cancelled.", cancelled=True)

        def cancel(self, job):
            threading.Event().wait(2)
            raise node_client.NodeError("Cannot reach the BrainGemma3D node: no answer within 2 s.")

    run = node_client.NodeRun(Hung("http://127.0.0.1:9", "t0k3n"), SAMPLE, tmp_path / "out", explain=False)
    deadline = time.monotonic() + 10
    while run.job is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    run.cancel()
    kind, result, error = wait_for(run, timeout=10)[-1]
    assert kind == "finished" and result is None and error.cancelled
    assert "could not be told" in str(error) and "no answer" in str(error)
