"""The Slicer panel itself, driven as a radiologist drives it: Generate -> report -> edit -> evidence -> sign.

The module's real widget and logic code runs against its real .ui (widgets built from the file by
``slicer_standins``), real MRML nodes (slicer-core) and the real report worker (demo weights, CPU) started
through a ``PythonSlicer``-like launcher, as inside Slicer. Only what needs the Slicer application (Qt
widgets, the parameter node wrapper's connectors, dialogs) is stood in for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import slicer_standins
from helpers import SAMPLE

pytest.importorskip("slicer")
import slicer  # noqa: E402


@pytest.fixture
def panel(monkeypatch, tmp_path):
    """The module imported against the stand-ins, its widget set up in a fresh scene with the sample case."""
    with slicer_standins.open_panel(monkeypatch, tmp_path, SAMPLE) as opened:
        yield opened


def idle(widget) -> bool:
    return not widget.logic.busy


@pytest.mark.slow
def test_generate_edit_show_evidence_sign_and_open_from_the_panel(panel, tmp_path):
    module, widget, volume, recorder = panel
    ui, node = widget.ui, widget._parameterNode

    # Opening the panel: the first volume is selected, unset paths are blank (never "."), Generate can run.
    assert node.inputVolume is volume
    assert ui.outputPdfPathLineEdit.currentPath == "" and ui.certificatePathLineEdit.currentPath == ""
    assert ui.applyButton.enabled and not ui.signButton.enabled and not ui.explainSentenceButton.enabled
    assert ("vtkMRMLSegmentationNode", "BrainGemma3D.attribution", "1") in (
        ui.attributionSegmentationSelector.attributeFilters
    )
    # Not a DICOM volume: the identity is typed (and only what is typed goes into the report).
    assert ui.identityFieldsWidget.enabled
    assert "Not from DICOM" in ui.identitySourceLabel.text
    ui.patientNameLineEdit.set("Phantom^Demo")
    ui.patientIdLineEdit.set("BG3D-001")
    assert node.patientName == "Phantom^Demo"

    # Generate with the keyboard shortcut: progress and the worker's messages reach the bar and the log.
    [shortcut] = [s for s in recorder["shortcuts"] if s.keys == "Ctrl+Shift+G"]
    shortcut.activate()
    assert ui.applyButton.text == "Cancel" and ui.progressBar.visible
    slicer_standins.pump(lambda: idle(widget))
    assert recorder["errors"] == []
    assert "Report draft ready" in ui.statusLabel.text, ui.statusLabel.text
    assert ui.applyButton.text == "Generate report" and not ui.progressBar.visible
    log = "\n".join(ui.logTextEdit.lines)
    assert "[Writing the draft]" in log and "[Explaining the draft (3D LIME)]" in log

    # The draft: its own text node in the editor, the overlay selected, the identity in report.json.
    textNode = node.reportTextNode
    draft = textNode.GetText()
    assert draft.strip() and ui.reportTextEdit.toPlainText() == draft
    overlay = node.attributionSegmentation
    assert overlay is not None and overlay.GetAttribute("BrainGemma3D.attribution") == "1"
    report = json.loads(Path(textNode.GetAttribute("BrainGemma3D.reportJson")).read_text(encoding="utf-8"))
    assert report["input"]["identity"] == {"patient_name": "Phantom^Demo", "patient_id": "BG3D-001"}
    # A signed-PDF name is proposed beside the scene.
    assert node.outputPdfPath == tmp_path / "Phantom report signed.pdf"
    assert ui.outputPdfPathLineEdit.currentPath == str(tmp_path / "Phantom report signed.pdf")

    # Edit: the text node follows the editor; entities follow the edited text once typing pauses.
    edited = draft.rstrip() + "\nAddendum: no hemorrhage."
    ui.reportTextEdit.setPlainText(edited)
    assert textNode.GetText() == edited
    widget._reviewTimer.callback()
    assert ui.entitiesLabel.text.startswith("Side: ")

    # Evidence for one sentence: the cursor in it, one click, its own named segmentation.
    ui.reportTextEdit.cursor = 3
    assert ui.explainSentenceButton.enabled
    ui.explainSentenceButton.click()
    slicer_standins.pump(lambda: idle(widget))
    assert recorder["errors"] == []
    evidence = node.attributionSegmentation
    sentence = evidence.GetAttribute("BrainGemma3D.evidenceFor")
    assert evidence is not overlay and sentence and edited.startswith(sentence)
    assert evidence.GetName().startswith("evidence for: " + sentence[:20])
    assert evidence.GetAttribute("BrainGemma3D.attribution") == "1"  # the overlay controls act on it
    assert 0 < evidence.GetSegmentation().GetNumberOfSegments() <= node.topK

    # Sign & export: enabled once signer and certificate are there; verified; Open PDF opens it.
    from BrainGemma3DLib.reporting import signing

    key, cert = signing.make_test_certificate(tmp_path / "pki", "Dr Panel Test")
    ui.signerNameLineEdit.set("Dr Panel Test")
    ui.certificatePathLineEdit.set(str(cert))
    ui.privateKeyPathLineEdit.set(str(key))
    assert ui.signButton.enabled, ui.signButton.toolTip
    assert not ui.openPdfButton.enabled
    ui.signButton.click()
    assert recorder["errors"] == []
    signed = tmp_path / "Phantom report signed.pdf"
    assert signed.is_file() and f"Signed PDF: {signed}" in ui.signatureStatusLabel.text
    assert "#2e7d32" in ui.signatureStatusLabel.styleSheet  # verified: green
    assert signing.verify_pdf(str(signed), trust=[cert])["trusted"]
    ui.openPdfButton.click()
    assert recorder["opened"] == [f"file://{signed}"]
    # Signing again never overwrites: the panel says so and the signed file is unchanged.
    before = signed.read_bytes()
    ui.signButton.click()
    assert recorder["errors"] and signed.read_bytes() == before

    # Export DICOM after signing: the verified report, in a new study made of the typed identity (the volume
    # is not from DICOM), imported into the DICOM database.
    import pydicom

    recorder["errors"].clear()
    assert ui.exportDicomButton.enabled
    ui.exportDicomButton.click()
    assert recorder["errors"] == [] and "COMPLETE / VERIFIED" in ui.dicomStatusLabel.text
    [folder] = recorder["dicom_imported"]
    sr = pydicom.dcmread(Path(folder) / "report-sr.dcm")
    assert (sr.VerificationFlag, str(sr.PatientName), sr.PatientID) == (
        "VERIFIED",
        "Phantom^Demo",
        "BG3D-001",
    )
    assert pydicom.dcmread(Path(folder) / "report-pdf.dcm").EncapsulatedDocument.startswith(
        signed.read_bytes()
    )


@pytest.mark.slow
def test_a_dicom_volume_brings_its_identity_and_cancel_leaves_nothing(panel, tmp_path):
    module, widget, volume, recorder = panel
    ui, node = widget.ui, widget._parameterNode
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Doe^Jane")
    hierarchy.SetItemAttribute(patient, "DICOM.PatientName", "Doe^Jane")
    hierarchy.SetItemAttribute(patient, "DICOM.PatientID", "P-123")
    study = hierarchy.CreateStudyItem(patient, "MR brain")
    hierarchy.SetItemAttribute(study, "DICOM.StudyInstanceUID", "1.2.3.4")
    hierarchy.CreateItem(study, volume)  # as Slicer's DICOM loader puts a series under its study
    node.inputVolume = None
    node.inputVolume = volume
    # The DICOM identity is used as is; the typed fields are disabled, never mixed in.
    assert not ui.identityFieldsWidget.enabled
    assert "Doe^Jane (P-123)" in ui.identitySourceLabel.text

    node.explain = False
    ui.applyButton.click()
    slicer_standins.pump(lambda: idle(widget))
    report = json.loads(
        Path(node.reportTextNode.GetAttribute("BrainGemma3D.reportJson")).read_text(encoding="utf-8")
    )
    assert report["input"]["identity"]["patient_id"] == "P-123"
    assert report["input"]["identity"]["study_uid"] == "1.2.3.4"
    assert node.attributionSegmentation is None  # no explanation: no previous overlay stays selected
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node.reportTextNode)) == study

    # Export DICOM before signing: the AI draft (said so), a new series in the volume's own study, referencing
    # the files the DICOM database holds for it.
    import pydicom
    from helpers import sample_as_dicom

    series = sample_as_dicom(tmp_path / "database" / "series")
    slicer.dicomDatabase.index(series)
    volume.SetAttribute("DICOM.instanceUIDs", " ".join(sorted(slicer.dicomDatabase.files)))
    ui.exportDicomButton.click()
    assert recorder["errors"] == [] and "AI draft" in ui.dicomStatusLabel.text, recorder["errors"]
    folder = Path(recorder["dicom_imported"][-1])
    sr = pydicom.dcmread(folder / "report-sr.dcm")
    assert (sr.CompletionFlag, sr.VerificationFlag, sr.StudyInstanceUID) == (
        "PARTIAL",
        "UNVERIFIED",
        "1.2.3.4.5.6",
    )
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == "1.2.3.4.5.6.1" and len(evidence.ReferencedSOPSequence) == 156

    # Cancel: the button doubles as Cancel; nothing new is added to the scene.
    reports = slicer.mrmlScene.GetNodesByClass("vtkMRMLTextNode").GetNumberOfItems()
    ui.applyButton.click()
    assert ui.applyButton.text == "Cancel"
    ui.applyButton.click()
    slicer_standins.pump(lambda: idle(widget))
    assert "Cancelled" in ui.statusLabel.text
    assert slicer.mrmlScene.GetNodesByClass("vtkMRMLTextNode").GetNumberOfItems() == reports
