"""What the logic does with the worker's answers in the scene: report and evidence nodes, review, signing.

A mixin of ``BrainGemma3DLogic`` (``showResults``, ``showEvidence``, ``setOverlay``, ``review``,
``signAndExport``), kept here so that the module file stays thin; it needs the logic's ``cacheFolder()`` and
``_reportCache``. Library pieces are imported inside the methods: they need the Python dependencies.
"""

import pathlib

import slicer

from .i18n import _
from .panel import evidenceName, formatMeasured

#: Text node attributes that tie a report node to its files (so "Sign & export" finds its draft PDF).
DRAFT_PDF_ATTRIBUTE = "BrainGemma3D.draftPdf"
REPORT_JSON_ATTRIBUTE = "BrainGemma3D.reportJson"
SIGNED_PDF_ATTRIBUTE = "BrainGemma3D.signedPdf"
#: On a sentence's own evidence segmentation: the sentence it explains, in full.
EVIDENCE_ATTRIBUTE = "BrainGemma3D.evidenceFor"


class SceneResults:
    """Results in the scene; mixed into ``BrainGemma3DLogic``."""

    # --- Results in the scene ---------------------------------------------------------------------------
    def showResults(self, result, referenceVolume, *, opacity=0.5, topK=5):
        """Put the draft into a new text node and the attribution into a segmentation over the input."""
        from BrainGemma3DLib.reporting.report import Report
        from BrainGemma3DLib.slicer import scene

        report, files = Report.from_json(result["report"]), result["files"]
        attributes = {DRAFT_PDF_ATTRIBUTE: files["pdf"], REPORT_JSON_ATTRIBUTE: files["json"]}
        digest = report.model.get("checkpoint_sha256")
        if digest:
            attributes["BrainGemma3D.checkpointSha256"] = digest
        name = slicer.mrmlScene.GenerateUniqueName(f"{referenceVolume.GetName()} report")
        textNode = scene.report_text_node(report.text, name=name, attributes=attributes)
        scene.keep_draft_with_scene(
            textNode, files["pdf"]
        )  # signable after Clear cache or on another computer
        segmentationNode = None
        if files.get("segmentation"):
            segmentationNode = scene.load_attribution_segmentation(
                files["segmentation"], referenceVolume, opacity=opacity
            )
            scene.set_top_k(segmentationNode, topK)
        scene.place_under_study([textNode, segmentationNode], referenceVolume)  # beside the images they read
        return textNode, segmentationNode

    def showEvidence(self, result, referenceVolume, sentence, *, opacity=0.5, topK=5):
        """The answer of :meth:`explainSentence` as its own segmentation: "evidence for: <the sentence>"."""
        from BrainGemma3DLib.slicer import scene

        path, name = result["files"]["segmentation"], evidenceName(sentence)
        node = scene.load_attribution_segmentation(path, referenceVolume, opacity=opacity, name=name)
        node.SetAttribute(EVIDENCE_ATTRIBUTE, sentence)
        scene.set_top_k(node, topK)
        scene.place_under_study([node], referenceVolume)
        return node

    @staticmethod
    def setOverlay(segmentationNode, *, opacity, topK):
        from BrainGemma3DLib.slicer import scene

        scene.set_opacity(segmentationNode, opacity)
        scene.set_top_k(segmentationNode, topK)

    def review(self, textNode):
        """Entities of the (edited) text, its warnings, and how many of the model's drafts agreed with each
        statement (only while the text is the AI's own), read from the report value of the text as it
        stands: the draft's own, or its edit made once by ``Report.with_text``, so the panel shows exactly
        what the PDF and the DICOM SR of that text show. Warnings: the input check's (editing never clears
        them), then the text's side and lobe checks against the draft's image evidence and against a tumour
        segmentation's measured facts when the report had one."""
        from BrainGemma3DLib.io.errors import InputError
        from BrainGemma3DLib.reporting.report import build_report, read_report
        from BrainGemma3DLib.slicer import scene

        text = scene.read_text_node(textNode)
        path = textNode.GetAttribute(REPORT_JSON_ATTRIBUTE)
        if path and path not in self._reportCache:
            try:
                self._reportCache[path] = read_report(path)
            except InputError:
                self._reportCache[path] = None
        draft = self._reportCache.get(path)
        if draft is not None and text.strip():
            shown = draft.with_text(text)
        else:  # no draft (or an emptied text): what the text alone says, the input check's warnings kept
            checked = draft.input_check if draft is not None else None
            shown = build_report(text, model={}, input={}, timings={}, input_check=checked)
        measured = formatMeasured(shown.measured)
        agreement = "\n".join(line for line in (shown.agreement_sentence(), measured) if line)
        return shown.entities, shown.warning_texts, agreement

    # --- Sign & export ----------------------------------------------------------------------------------
    def signAndExport(self, textNode, *, signer, certificate, privateKey=None, password=None, outputPdf):
        """Sign the text node's (edited) text into ``outputPdf`` and verify it; returns (signed, verified).

        ``certificate``: a PKCS#12 file (then no ``privateKey``), or a PEM/DER certificate and ``privateKey``.
        ``password`` is used for this call only. The signed PDF and its audit record are never overwritten.
        """
        from BrainGemma3DLib.reporting import signing
        from BrainGemma3DLib.slicer import scene

        if textNode is None:
            raise ValueError(_("No report node selected."))
        # The cached draft, or (cache cleared, scene reopened elsewhere) the copy kept in the scene.
        draft = scene.draft_pdf_file(textNode, textNode.GetAttribute(DRAFT_PDF_ATTRIBUTE), self.cacheFolder())
        credentials = (
            {"p12": str(certificate)}
            if privateKey is None
            else {"key": str(privateKey), "cert": str(certificate)}
        )
        signed = signing.sign_pdf(
            draft,
            str(outputPdf),
            signer=signer.strip(),
            password=password,
            text=scene.read_text_node(textNode),
            **credentials,
        )
        verified = signing.verify_pdf(signed["signed_pdf"])
        textNode.SetAttribute(SIGNED_PDF_ATTRIBUTE, signed["signed_pdf"])
        return signed, verified

    # --- Export DICOM -----------------------------------------------------------------------------------
    def exportDicom(self, textNode, referenceVolume, database=None):
        """The report as DICOM objects (SR, SEG, Encapsulated PDF) added to Slicer's DICOM database.

        After signing (the text node knows its signed PDF): a COMPLETE, VERIFIED SR with the radiologist's
        final text and the signed PDF; before: the AI draft, PARTIAL / UNVERIFIED, said so in the objects.
        A volume from the DICOM database: a new series in its own study, referencing the files it was loaded
        from. Any other volume: a new study made of the patient's name and ID typed for the report (refused
        without them: nothing is invented). The objects are imported into ``database`` (Slicer's DICOM
        database: the DICOM browser shows them, Slicer's DICOM send sends them) when one is given.
        Returns (folder, index).
        """
        import tempfile

        from BrainGemma3DLib.dicom.export import export_report, read_report
        from BrainGemma3DLib.dicom.newstudy import new_study_series, study_fields
        from BrainGemma3DLib.dicom.source import read_series_files
        from BrainGemma3DLib.io.errors import InputError
        from BrainGemma3DLib.slicer import scene

        if textNode is None or not textNode.GetAttribute(REPORT_JSON_ATTRIBUTE):
            raise ValueError(_("No report to export: generate one first."))
        reportDir = pathlib.Path(textNode.GetAttribute(REPORT_JSON_ATTRIBUTE)).parent
        signed = textNode.GetAttribute(SIGNED_PDF_ATTRIBUTE) or None
        out = pathlib.Path(tempfile.mkdtemp(prefix="dicom-", dir=self.cacheFolder())) / "objects"
        files = scene.dicom_source_files(referenceVolume, database)
        if files:
            index = export_report(reportDir, out, signed=signed, source_frames=read_series_files(files))
            return self._importDicom(out, database), index
        report = read_report(reportDir)
        identity = report.identity
        try:
            fields = study_fields(identity)
        except InputError:
            raise ValueError(
                _(
                    "This volume is not from the DICOM database: type the patient's name and ID under "
                    "'Patient and study', generate the report again, then export (a new study is made)."
                )
            ) from None
        index = export_report(
            reportDir, out, signed=signed, new_study=lambda stage: new_study_series(report, fields, stage)
        )
        return self._importDicom(out, database), index

    @staticmethod
    def _importDicom(folder, database):
        if database is not None:
            from DICOMLib import DICOMUtils

            DICOMUtils.importDicom(str(folder), database)
        return folder
