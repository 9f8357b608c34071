"""What the panel remembers between sessions (folders and signer, never a password) and the terms dialog."""

import pathlib
import time

import qt
import slicer

from .i18n import _

#: Parameter node fields remembered across sessions (paths and signer only; never a password).
REMEMBERED_SETTINGS = {
    "checkpointFolder": "BrainGemma3D/checkpointFolder",
    "medSigLipFolder": "BrainGemma3D/medSigLipFolder",
    "medGemmaFolder": "BrainGemma3D/medGemmaFolder",
    "certificatePath": "BrainGemma3D/certificatePath",
    "privateKeyPath": "BrainGemma3D/privateKeyPath",
}
SIGNER_SETTINGS_KEY = "BrainGemma3D/signerName"
TERMS_SETTINGS_KEY = "BrainGemma3D/termsAccepted"
HAI_DEF_TERMS_URL = "https://developers.google.com/health-ai-developer-foundations/terms"
HAI_DEF_POLICY_URL = "https://developers.google.com/health-ai-developer-foundations/prohibited-use-policy"


def pathOrNone(path):
    """``None`` for an unset path field (parameterNodeWrapper stores an empty path as ".")."""
    return None if path is None or str(path) in ("", ".") else pathlib.Path(path)


def rememberPaths(parameterNode):
    """Remember the weight folders, certificate paths and signer name (never a password)."""
    settings = qt.QSettings()
    for field, key in REMEMBERED_SETTINGS.items():
        path = pathOrNone(getattr(parameterNode, field))
        if path is not None:
            settings.setValue(key, str(path))
    if parameterNode.signerName.strip():
        settings.setValue(SIGNER_SETTINGS_KEY, parameterNode.signerName.strip())


def restorePaths(parameterNode):
    """Fill the unset folders, certificate paths and signer from the last session (when they still exist)."""
    settings = qt.QSettings()
    for field, key in REMEMBERED_SETTINGS.items():
        remembered = settings.value(key)
        unset = pathOrNone(getattr(parameterNode, field)) is None
        if remembered and unset and pathlib.Path(remembered).exists():
            setattr(parameterNode, field, pathlib.Path(remembered))
    if not parameterNode.signerName and settings.value(SIGNER_SETTINGS_KEY):
        parameterNode.signerName = str(settings.value(SIGNER_SETTINGS_KEY))


def confirmTerms():
    """Show the HAI-DEF terms once, before real MedSigLIP/MedGemma weights run; remember acceptance."""
    settings = qt.QSettings()
    if slicer.util.toBool(settings.value(TERMS_SETTINGS_KEY, "false")):
        return True
    box = qt.QMessageBox(slicer.util.mainWindow())
    box.setIcon(qt.QMessageBox.Information)
    box.setWindowTitle(_("MedSigLIP and MedGemma terms of use"))
    box.setTextFormat(qt.Qt.RichText)
    box.setText(
        _(
            "BrainGemma3D checkpoints run on Google's MedSigLIP and MedGemma (a Gemma 3 model), which "
            "are Health AI Developer Foundations (HAI-DEF) models. Using them means accepting the "
            '<a href="{terms}">HAI-DEF Terms of Use</a> and its '
            '<a href="{policy}">Prohibited Use Policy</a>.<br><br>'
            "The terms restrict clinical use (any use in the diagnosis or treatment of patients) without "
            "the regulatory authorization it needs. Every report is an AI-generated draft that a "
            "qualified radiologist must review before it is used."
        ).format(terms=HAI_DEF_TERMS_URL, policy=HAI_DEF_POLICY_URL)
    )
    accept = box.addButton(_("I accept the terms"), qt.QMessageBox.AcceptRole)
    box.addButton(qt.QMessageBox.Cancel)
    box.exec_()
    accepted = box.clickedButton() == accept
    box.deleteLater()
    if accepted:
        settings.setValue(TERMS_SETTINGS_KEY, "true")
        settings.setValue(TERMS_SETTINGS_KEY + "On", time.strftime("%Y-%m-%d"))
    return accepted
