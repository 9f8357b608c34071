"""Sign & export PDF, open the signed PDF, and export the report to Slicer's DICOM database.

A mixin of ``BrainGemma3DWidget``, kept here so that the module file stays thin; the signing and the DICOM
objects are the logic's (``results.SceneResults.signAndExport`` and ``exportDicom``). The key's password is
asked when signing and never stored.
"""

import slicer

from . import panel, settings
from .i18n import _
from .settings import pathOrNone


class ExportPanel:
    """The panel's Sign & export and Export DICOM buttons; mixed into the widget."""

    # --- Sign & export ----------------------------------------------------------------------------------
    def onSignButton(self) -> None:
        """Sign the reviewed text (password asked now, never stored), export the PDF, verify and show it."""
        node = self._parameterNode
        certificate = pathOrNone(node.certificatePath)
        isP12 = certificate.suffix.lower() in (".p12", ".pfx")
        privateKey = None if isP12 else pathOrNone(node.privateKeyPath)
        if not isP12 and privateKey is None:
            slicer.util.errorDisplay(
                _("A PEM or DER certificate needs its private key: select the key file.")
            )
            return
        password = None
        if panel.needsPassword(certificate if isP12 else privateKey):
            password = panel.askPassword((certificate if isP12 else privateKey).name)
            if password is None:
                return
            password = password or None  # empty: the library tries "no password" and "empty password"
        try:
            with slicer.util.tryWithErrorDisplay(_("Signing failed."), waitCursor=True):
                signed, verified = self.logic.signAndExport(
                    node.reportTextNode,
                    signer=node.signerName,
                    certificate=certificate,
                    privateKey=privateKey,
                    password=password,
                    outputPdf=pathOrNone(node.outputPdfPath),
                )
        except Exception:
            self.ui.signatureStatusLabel.text = _("Not signed (see the error message).")
            self.ui.signatureStatusLabel.styleSheet = "color: #c62828;"
            return
        settings.rememberPaths(node)
        ok = verified["ok"]
        self._signedPdf = signed["signed_pdf"]
        self.ui.openPdfButton.enabled = True
        self.ui.signatureStatusLabel.styleSheet = "color: #2e7d32;" if ok else "color: #c62828;"
        self.ui.signatureStatusLabel.text = _(
            "Signed PDF: {pdf}\nAudit record: {audit}\nVerification: {summary}"
        ).format(pdf=signed["signed_pdf"], audit=signed["audit"], summary=verified["summary"])

    def onExportDicomButton(self) -> None:
        """SR + SEG + PDF into Slicer's DICOM database: the AI draft, or the verified report once signed."""
        node = self._parameterNode
        try:
            with slicer.util.tryWithErrorDisplay(_("DICOM export failed."), waitCursor=True):
                _folder, index = self.logic.exportDicom(
                    node.reportTextNode, node.inputVolume, slicer.dicomDatabase
                )
        except Exception:
            self.ui.dicomStatusLabel.text = _("Not exported (see the error message).")
            return
        self.ui.dicomStatusLabel.text = panel.dicomExportSummary(index)

    def onOpenPdfButton(self) -> None:
        if self._signedPdf and not panel.openFile(self._signedPdf):
            self.ui.statusLabel.text = _("No PDF viewer opened {pdf}.").format(pdf=self._signedPdf)
