"""Pieces of the panel that are not its state: labels, the log, the paths it shows and proposes, dialogs.

They live here so that ``BrainGemma3D.py`` stays the thin Slicer face (widget, logic, self-test) the template
expects, and so that each piece can be tested outside Slicer with stand-ins for ``qt`` and ``slicer``.
"""

import pathlib
import re
import time

import qt
import slicer

from .i18n import _

#: The panel's optional identity fields (parameter node name -> the worker's field name). Typed for a volume
#: that does not come from Slicer's DICOM database; a DICOM volume's own values are used instead.
IDENTITY_FIELDS = {
    "patientName": "patient_name",
    "patientId": "patient_id",
    "birthDate": "birth_date",
    "sex": "sex",
    "studyDate": "study_date",
    "studyDescription": "study_description",
    "accession": "accession",
    "institution": "institution",
}
#: Lines the log keeps (older ones scroll away), so a long session never grows the panel without bound.
LOG_LINES = 2000
#: Characters of a sentence kept in the name of its evidence segmentation (the full text is an attribute).
EVIDENCE_NAME_CHARS = 60


def stageLabel(stage):
    """The progress bar's name for a pipeline stage (the worker's stage names, DESIGN §5, plus our own)."""
    return {
        "deps": _("Installing the Python packages"),
        "inputs": _("Writing the input volumes"),
        "start": _("Starting the worker"),
        "load": _("Loading the model"),
        "read": _("Reading the input"),
        "model": _("Loading the model"),
        "input_check": _("Checking the input scan"),
        "generate": _("Writing the draft"),
        "explain": _("Explaining the draft (3D LIME)"),
        "anatomy": _("Naming places (atlas registration)"),
        "check": _("Checking left/right and lobe consistency"),
        "pdf": _("Rendering the PDF draft"),
        "write": _("Writing the report files"),
        "upload": _("Sending the volume to the node"),
        "queued": _("Waiting for the node"),
        "download": _("Fetching the report from the node"),
        "cancelled": _("Cancelled"),
        "failed": _("Failed"),
        "done": _("Done"),
    }.get(stage, stage)


def formatEntities(entities):
    """One line for the panel: side, lobes and the four findings as the (edited) text states them."""
    words = {True: _("present"), False: _("absent"), None: _("not stated")}
    findings = entities.get("findings") or {}
    parts = [
        _("Side: {side}").format(side=entities.get("laterality") or _("none")),
        _("Lobes: {lobes}").format(lobes=", ".join(entities.get("lobes") or []) or _("none")),
        _("Edema: {value}").format(value=words[findings.get("edema")]),
        _("Necrosis: {value}").format(value=words[findings.get("necrosis")]),
        _("Enhancement: {value}").format(value=words[findings.get("enhancement")]),
        _("Mass effect: {value}").format(value=words[findings.get("mass_effect")]),
    ]
    return " · ".join(parts)


def typedIdentity(parameterNode):
    """The identity fields typed in the panel, as the worker's ``fields`` (empty ones left out)."""
    fields = {}
    for name, key in IDENTITY_FIELDS.items():
        value = str(getattr(parameterNode, name) or "").strip()
        if value:
            fields[key] = value
    return fields


def blankUnsetPaths(pathLineEdits):
    """Show an unset path as an empty field, not as "." (how parameterNodeWrapper stores an empty path)."""
    for widget in pathLineEdits:
        if widget.currentPath in (".", "./"):
            widget.currentPath = ""


def sceneFolder():
    """Where the scene is (or will be) saved: its root directory, else the user's home folder."""
    root = slicer.mrmlScene.GetRootDirectory() if slicer.mrmlScene else ""
    folder = pathlib.Path(root) if root and root != "." else pathlib.Path.home()
    return folder if folder.is_dir() else pathlib.Path.home()


def defaultSignedPdfPath(folder, volumeName):
    """A new file name for the signed PDF beside the scene: "<volume> report signed.pdf", numbered if taken.

    A signed report is never overwritten, so the proposal skips names that exist (with their audit record).
    """
    stem = re.sub(r'[\\/:*?"<>|\x00-\x1f]+', "_", volumeName or "").strip(" ._") or "BrainGemma3D"
    folder = pathlib.Path(folder)
    candidate = folder / f"{stem} report signed.pdf"
    number = 2
    while candidate.exists() or candidate.with_suffix(".audit.json").exists():
        candidate = folder / f"{stem} report signed ({number}).pdf"
        number += 1
    return candidate


def evidenceName(sentence):
    """The name of a sentence's own segmentation: "evidence for: <the sentence>" (shortened if long)."""
    text = " ".join(sentence.split())
    if len(text) > EVIDENCE_NAME_CHARS:
        text = text[: EVIDENCE_NAME_CHARS - 1].rstrip() + "\u2026"
    return _("evidence for: {sentence}").format(sentence=text)


def appendLog(logTextEdit, message, stage=None):
    """Add one timestamped line to the panel's log (the worker's messages and the panel's own)."""
    prefix = time.strftime("%H:%M:%S")
    label = f" [{stageLabel(stage)}]" if stage else ""
    for line in str(message).splitlines() or [""]:
        logTextEdit.appendPlainText(f"{prefix}{label} {line}")


def needsPassword(keyFile):
    """Whether to ask for a password: always for PKCS#12 and DER keys, for PEM keys only if encrypted."""
    path = pathlib.Path(keyFile)
    if path.suffix.lower() in (".p12", ".pfx"):
        return True
    try:
        head = path.read_bytes()[:4096]
    except OSError:
        return False  # the library names the missing file
    return b"-----BEGIN" not in head or b"ENCRYPTED" in head


def askPassword(fileName):
    """Ask for the key's password; ``None`` when cancelled. Nothing keeps it after signing."""
    dialog = qt.QInputDialog(slicer.util.mainWindow())
    dialog.setWindowTitle(_("Certificate password"))
    dialog.setLabelText(_("Password for {file} (leave empty if it has none):").format(file=fileName))
    dialog.setTextEchoMode(qt.QLineEdit.Password)
    try:
        if not dialog.exec_():
            return None
        return dialog.textValue()
    finally:
        dialog.setTextValue("")
        dialog.deleteLater()


def openFile(path):
    """Open a file (the signed PDF) in the system's viewer; False when the system could not."""
    return bool(qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path))))


def dicomExportSummary(index):
    """What Export DICOM wrote, in words: which objects, which study, and whether the SR is the AI draft."""
    kinds = ", ".join(entry["modality"] for entry in index["objects"])
    if index["status"] == "verified":
        state = _("the verified report (COMPLETE / VERIFIED)")
    else:
        state = _("the AI draft (PARTIAL / UNVERIFIED): sign first to export the verified report")
    return _("DICOM database: {kinds} of {state}, study {study}.").format(
        kinds=kinds, state=state, study=index["study_instance_uid"]
    )


def clearCacheQuestion(folder):
    """The confirmation Clear cache asks: what stops, what is deleted, what stays."""
    return _(
        "Stop the report worker (frees the memory of the loaded model) and delete the module's "
        "temporary files in {folder}?\n\nReports already in the scene stay, but their unsigned draft "
        "PDFs are deleted: generate a report again before signing it."
    ).format(folder=folder)


def formatMeasured(measured):
    """One line for the panel: what the tumour segmentation measures (volumes, size, place); "" without."""
    if not measured:
        return ""
    volumes = measured.get("volumes_ml") or {}
    return _(
        "Segmentation: enhancing {enhancing:.1f} mL, core {core:.1f} mL, oedema {edema:.1f} mL; largest "
        "diameter {diameter:.0f} mm; {place}."
    ).format(
        enhancing=float(volumes.get("enhancing", 0.0)),
        core=float(volumes.get("core", 0.0)),
        edema=float(volumes.get("edema", 0.0)),
        diameter=float(measured.get("largest_diameter_mm") or 0.0),
        place=measured.get("place") or _("place not named"),
    )
