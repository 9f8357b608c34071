"""``braingemma3d dicom``: a report folder (and its signed PDF) as DICOM objects in the source study.

What goes in: report.json (text, entities, warnings, model, the source series' identity), report.pdf, the
attribution's segmentation when the report was explained, and optionally the signed PDF with its audit record.
What comes out, in a new or empty folder, all or nothing: ``report-sr.dcm`` (the SR), ``evidence-seg.dcm``
(the SEG, when there is an attribution), ``report-pdf.dcm`` (the PDF: the signed one when given, else the
draft, titled as such) and ``export.json`` (what was written: UIDs per object, for ``send`` and for people;
``notes``: what was not written and why, also printed).

A source series that lacks optional or type 2 attributes (Slice Thickness, Spacing Between Slices, Series
Number, Study ID...) is exported with what its geometry says and empty type 2 values. One whose frames cannot
carry a SEG (no Frame of Reference UID, no position, orientation or pixel spacing, or more than one stack)
still gets its SR and PDF: the report is what the department needs in the PACS, the SEG only shows where the
evidence lies, and a SEG that cannot be placed on the images would mislead; a note in export.json and on the
command line names what the source lacks.

An Enhanced MR (multi-frame) source is one instance whose frames are the report's slices (report.json lists
the frame of each slice): the SR's evidence names the instance and its Image Library those frames; the SEG is
drawn on them, placed by their functional groups, each SEG frame referencing its source frame by number.

A signed PDF is accepted only when its signature verifies (intact, valid, nothing changed after) and its audit
record names this report's draft PDF; the SR then carries the radiologist's final words, not the AI's draft.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from ..io.atomic import replace_dir
from ..io.errors import InputError
from ..io.stamps import sha256_files
from ..reporting.report import Report, read_report
from .objects import build_pdf_document, build_seg, build_sr, sample_labels, seg_obstacle
from .source import read_source_series, report_frame_numbers

SR_FILE, SEG_FILE, PDF_FILE, INDEX_FILE = "report-sr.dcm", "evidence-seg.dcm", "report-pdf.dcm", "export.json"
#: With ``--new-study`` (a non-DICOM input): the input itself as a new MR series of the new study.
SOURCE_FOLDER = "source"
OWNED = (SR_FILE, SEG_FILE, PDF_FILE, INDEX_FILE, SOURCE_FOLDER)


def signature_of(signed: str | os.PathLike, draft_pdf: Path, trust=None) -> tuple[dict, Report]:
    """The verified signature of ``signed`` (signer, organisation, time) and the signed report value it
    embeds (the final text with its entities and warnings, as the signed PDF shows them).

    Refuses a signature that does not verify, a PDF without its audit record, a signed PDF of another
    report (its audit names another draft), and one whose embedded report is not the text it signed.
    """
    from ..reporting.pdf import load_bundle
    from ..reporting.signing import verified_audit

    signed = Path(signed)
    result, audit = verified_audit(signed, trust)
    if audit.get("draft_pdf_sha256") != sha256_files([draft_pdf]):
        raise InputError("this signed PDF is not of this report (its audit names another draft)", signed)
    subject = str(result.get("certificate_subject") or "")
    found = re.search(r"Organization: (.*?)(?:, [A-Z][A-Za-z ]*: |$)", subject)
    signature = {
        "signer": result.get("signer") or audit.get("signer"),
        "organisation": found.group(1).strip() if found else "",
        "signed_at": result.get("signing_time") or audit.get("signed_at"),
    }
    final = load_bundle(signed).report
    if final.status != "signed" or final.text != audit.get("final_text"):
        raise InputError("the signed report's text is not the one its audit record holds", signed)
    return signature, final


def _segmentation(report: Report, report_dir: Path, sources: list, frame_numbers: list[int] | None):
    """The attribution's segments sampled on the source frames (``frame_numbers`` of a multi-frame source),
    or None when the report has none; each segment named as the report value names it (its explanation's
    places)."""
    path = report_dir / "attribution.seg.nrrd"
    if not path.is_file():
        return None
    import slicerio

    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:
        raise InputError(f"unreadable segmentation ({type(exc).__name__})", path) from exc
    labels = sample_labels(sources, seg["voxels"], seg["ijkToLPS"], frame_numbers)
    names = {int(s["rank"]): str(s["name"]) for s in (report.explanation or {}).get("segments") or []}
    segments = [
        s | {"name": names.get(int(s["labelValue"]), s.get("name", ""))}
        for s in seg["segments"]
        if (labels == int(s["labelValue"])).any()
    ]
    return (labels, segments) if segments else None


def export_report(
    report_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    signed: str | os.PathLike | None = None,
    source: str | os.PathLike | None = None,
    trust=None,
    overwrite: bool = False,
    new_study: Callable[[Path], list] | None = None,
    source_frames: list | None = None,
) -> dict:
    """Write the report's SR, SEG and Encapsulated PDF into ``out`` (all or nothing); returns the index.

    ``new_study`` (a report of a non-DICOM input): called with the staging folder, it writes the input as a
    new series of a new study there and returns its frames, which then stand for the source series.
    ``source_frames``: the source series' frames already read (Slicer: the files its DICOM database holds for
    the volume; :func:`.source.read_series_files`).
    """
    report_dir = Path(report_dir)
    report = read_report(report_dir)
    draft_pdf = report_dir / "report.pdf"
    if not draft_pdf.is_file():
        raise InputError("the report folder has no report.pdf", report_dir)
    sources = source_frames
    if sources is None and new_study is None:
        sources = read_source_series(report, source)
    shown, signature = report, None
    if signed is not None:
        signature, shown = signature_of(signed, draft_pdf, trust)
        pdf, title = Path(signed).read_bytes(), "BrainGemma3D radiology report (signed)"
    else:
        pdf, title = draft_pdf.read_bytes(), "BrainGemma3D report DRAFT (AI, unverified)"
    with replace_dir(out, OWNED, overwrite=overwrite) as tmp:
        if new_study is not None:
            sources = new_study(tmp / SOURCE_FOLDER)
        made = {"signature": signature, "signed": signed}
        index = _write_objects(shown, report_dir, sources, tmp, made, pdf, title)
    return index


def _write_objects(report: Report, report_dir, sources, tmp, made: dict, pdf: bytes, title: str) -> dict:
    """Build the objects of the report value (the draft, or the signed report) into the staging folder."""
    signature = made["signature"]
    frames = report_frame_numbers(report, sources)  # the report's frames of a multi-frame source
    sr = build_sr(report, sources, signature=signature, frame_numbers=frames)
    notes = []
    has_map = (report_dir / "attribution.seg.nrrd").is_file()
    obstacle = seg_obstacle(sources, frames) if has_map else None
    if obstacle is not None:  # the report still goes to the PACS; its evidence map cannot be placed
        notes.append(f"no SEG: {obstacle}, so the evidence cannot be placed on them (SR and PDF written)")
        attribution = None
    else:
        attribution = _segmentation(report, report_dir, sources, frames)
    seg = build_seg(report, sources, *attribution, frame_numbers=frames) if attribution else None
    doc = build_pdf_document(pdf, sources[0], title=title, verified=signature is not None)
    written = {SR_FILE: sr, PDF_FILE: doc} | ({SEG_FILE: seg} if seg is not None else {})
    index = {
        "format": "braingemma3d-dicom-export",
        "version": 1,
        "report": str(report_dir),
        "status": "verified" if signature else "draft",
        "signed_pdf": str(made["signed"]) if made["signed"] else None,
        "study_instance_uid": str(sources[0].StudyInstanceUID),
        "source_series_instance_uid": str(sources[0].SeriesInstanceUID),
        "objects": [
            {
                "file": name,
                "modality": str(ds.Modality),
                "sop_class_uid": str(ds.SOPClassUID),
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "series_instance_uid": str(ds.SeriesInstanceUID),
            }
            for name, ds in written.items()
        ],
        "notes": notes,
    }
    if (tmp / SOURCE_FOLDER).is_dir():
        index["new_study_source_series"] = SOURCE_FOLDER
    for name, ds in written.items():
        ds.save_as(tmp / name, enforce_file_format=True)
    (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return index
