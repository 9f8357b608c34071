"""What the panel remembers between sessions (folders, signer, the node to run on and its token; never a
password) and the terms dialog."""

import pathlib
import time

import qt
import slicer

from .i18n import _

#: Parameter node fields remembered across sessions (paths and signer only; never a password): the worklist's
#: cohort too, so that reopening it after closing Slicer continues where the reader stopped.
REMEMBERED_SETTINGS = {
    "checkpointFolder": "BrainGemma3D/checkpointFolder",
    "medSigLipFolder": "BrainGemma3D/medSigLipFolder",
    "medGemmaFolder": "BrainGemma3D/medGemmaFolder",
    "certificatePath": "BrainGemma3D/certificatePath",
    "privateKeyPath": "BrainGemma3D/privateKeyPath",
    "worklistSource": "BrainGemma3D/worklistSource",
}
SIGNER_SETTINGS_KEY = "BrainGemma3D/signerName"
#: Run on: where the report is drafted, and the node's address and CA file (never the token: see nodeToken).
NODE_SETTINGS = {
    "runOn": "BrainGemma3D/runOn",
    "nodeUrl": "BrainGemma3D/nodeUrl",
    "nodeCaFile": "BrainGemma3D/nodeCaFile",
}
#: The node's token in Slicer's settings, only where no system keyring can hold it.
NODE_TOKEN_SETTINGS_KEY = "BrainGemma3D/nodeToken"
#: The system keyring's entry for the token (service, user name).
NODE_TOKEN_KEYRING = ("BrainGemma3D node", "token")
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


def rememberNode(parameterNode):
    """Remember where reports are drafted, the node's URL and its CA file (Slicer's settings)."""
    settings = qt.QSettings()
    settings.setValue(NODE_SETTINGS["runOn"], parameterNode.runOn.value)
    settings.setValue(NODE_SETTINGS["nodeUrl"], parameterNode.nodeUrl.strip())
    caFile = pathOrNone(parameterNode.nodeCaFile)
    settings.setValue(NODE_SETTINGS["nodeCaFile"], str(caFile) if caFile else "")


def restoreNode(parameterNode):
    """A parameter node without a node URL (a new scene) gets the last session's Run on, URL and CA file."""
    if parameterNode.nodeUrl:
        return
    settings = qt.QSettings()
    url = str(settings.value(NODE_SETTINGS["nodeUrl"]) or "")
    if not url:
        return
    parameterNode.nodeUrl = url
    caFile = settings.value(NODE_SETTINGS["nodeCaFile"])
    if caFile and pathlib.Path(caFile).is_file():
        parameterNode.nodeCaFile = pathlib.Path(caFile)
    runOn = settings.value(NODE_SETTINGS["runOn"])
    try:
        parameterNode.runOn = type(parameterNode.runOn)(str(runOn))
    except ValueError:
        pass  # an unknown spelling: the default stays


def _keyring():
    """The ``keyring`` module when it is importable and has a working backend (not its "fail" one), else
    None. Never installed by the module: where it is missing the token goes to Slicer's settings."""
    try:
        import keyring

        backend = keyring.get_keyring()
    except Exception:  # not installed, or no backend on this system
        return None
    return keyring if getattr(backend, "priority", 1) > 0 else None


def nodeTokenStorage():
    """Where the node's token is kept: "keyring" (the system keyring) or "settings" (Slicer's settings)."""
    return "keyring" if _keyring() is not None else "settings"


def nodeTokenStorageText():
    """The token field's tooltip: what the token is and where it is kept."""
    where = (
        _("It is kept in the system keyring.")
        if nodeTokenStorage() == "keyring"
        else _(
            "It is kept in Slicer's settings file (readable by your user account); install the Python "
            "package keyring to keep it in the system keyring instead."
        )
    )
    return _("Your API token for the node (braingemma3d serve tokens create USER).") + " " + where


def nodeToken():
    """The node's token as kept (keyring first, then Slicer's settings); "" when none."""
    keyring = _keyring()
    if keyring is not None:
        try:
            token = keyring.get_password(*NODE_TOKEN_KEYRING)
        except Exception:
            token = None
        if token:
            return token
    return str(qt.QSettings().value(NODE_TOKEN_SETTINGS_KEY) or "")


def setNodeToken(token):
    """Keep the node's token: in the system keyring when there is one (and then not in Slicer's settings),
    else in Slicer's settings. Returns where it went ("keyring" or "settings")."""
    token = (token or "").strip()
    keyring = _keyring()
    if keyring is not None:
        try:
            if token:
                keyring.set_password(*NODE_TOKEN_KEYRING, token)
            else:
                try:
                    keyring.delete_password(*NODE_TOKEN_KEYRING)
                except Exception:  # nothing kept yet
                    pass
            qt.QSettings().setValue(NODE_TOKEN_SETTINGS_KEY, "")
            return "keyring"
        except Exception:  # a locked or refusing keyring: Slicer's settings instead
            pass
    qt.QSettings().setValue(NODE_TOKEN_SETTINGS_KEY, token)
    return "settings"


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
