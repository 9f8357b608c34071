"""``braingemma3d curate``: signed reports become a training set (the review loop).

A radiologist's signed report is the best label a deployed model will ever get: the final text is what the
study shows, in the department's own words. Only what can be trusted goes in: the signature must verify, the
audit record beside the PDF must describe this very file and the text it signed, and the input study must
still be the one the draft was made from (its SHA-256, as report.json recorded it). Anything else is refused
with one line and counted. The result is the BraTS + TextBraTS layout ``train`` reads; the AI draft and the
review's record stay beside each final text, so the agreement between drafts and reports can be measured on
the same data (:mod:`.agreement`)::

    OUT/MICCAI_BraTS2020_TrainingData/<id>/<id>_flair.nii.gz    (studies whose final text states a lesion)
    OUT/TextBraTSData/<id>/<id>_flair_text.txt, <id>_ai_draft.txt, <id>_review.json
    OUT/HealthyControls/<id>/<id>_flair.nii.gz, <id>_flair_text.txt, <id>_ai_draft.txt, <id>_review.json
    OUT/curation.json                                           (what was taken, what was refused and why)

Running it again on more PDFs adds to the same folder; a study signed twice keeps its latest signature.

Research annotations (:mod:`.annotations`, ``--annotations DIR``) go in beside or instead of signed PDFs,
named by their cohort case id and marked in curation.json as ``kind`` "research annotation" (a signed PDF's
case is a "signed clinical report"). For each case, an adjudicated record wins over the readers' own; readers
who disagree on a statement (side, lesion, a lobe, a finding) without an adjudication are refused
("adjudicate first"), readers who agree give the first reader's text (by name). A record is refused when an
input file it names is gone or changed since it was written (SHA-256), or when its text file no longer holds
its final text. Its images are copied as they are (a DICOM folder is written as NIfTI); the record goes
beside the text::

    OUT/TextBraTSData/<case>/<case>_flair_text.txt, <case>_annotation.json, <case>_ai_draft.txt (if any)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..io.atomic import write_text_atomic
from ..io.errors import InputError
from ..training.data import BRATS_DIR, HEALTHY_DIR, TEXT_DIR
from .annotations import (
    ADJUDICATION_PREFIX,
    ANNOTATED,
    KIND,
    RECORDS_DIR,
    Annotation,
    read_annotations,
    statements,
)
from .inputs import SEQUENCES

CURATION = "curation.json"
#: What curation.json calls a signed PDF's case (an annotation's is :data:`.annotations.KIND`).
SIGNED_KIND = "signed clinical report"


def review_of(signed: str | os.PathLike, trust: list | None = None) -> dict:
    """The verified review behind one signed PDF: final and AI texts, signer, time, model, input. Raises
    :class:`InputError` naming the file and why it cannot be used."""
    from ..reporting.pdf import load_bundle
    from ..reporting.signing import verified_audit

    path = Path(signed)
    result, audit = verified_audit(path, trust)  # raises for an unsigned, unverified or tampered PDF
    report = load_bundle(path).report
    if report.status != "signed" or report.text != audit.get("final_text"):
        raise InputError("the signed report's text is not the one its audit record holds", path)
    return {
        "signed_pdf": str(path),
        "signed_pdf_sha256": audit["signed_pdf_sha256"],
        "signer": result.get("signer") or audit.get("signer"),
        "signed_at": audit.get("signed_at"),
        "final_text": audit["final_text"],
        "final_entities": report.entities,  # what the signed report value says (never re-derived here)
        "ai_draft_text": audit.get("ai_draft_text", ""),
        "edited": bool(audit.get("edited")),
        "model": audit.get("model") or {},
        "input": audit.get("input") or {},
    }


def _study_of(review: dict, path: Path):
    """The input study, refused when it is gone or no longer the one the draft was made from."""
    from ..io.volume import load_study

    given = review["input"]
    paths, recorded = given.get("paths") or [], given.get("sha256") or []
    if not paths or not recorded:
        raise InputError("the report does not record its input files and their SHA-256", path)
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise InputError(f"the input study is not there any more ({missing[0]})", path)
    study = load_study(paths)
    if list(study.summary()["sha256"]) != list(recorded):
        raise InputError("the input study changed since the draft (SHA-256 differs)", path)
    return study


def curate(
    signed: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    trust: list | None = None,
    annotations: list[str | os.PathLike] | None = None,
) -> dict:
    """Add the reviews of ``signed`` and the research annotations under ``annotations`` (annotations folders)
    to the data set ``out``; returns ``{"added", "kept", "refused", "annotations"}`` (``added``: case ids,
    ``annotations``: those of them that are research annotations)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a folder", out)
    previous: dict = {"cases": {}, "refused": {}}
    if out.is_dir() and any(out.iterdir()):
        try:
            previous = json.loads((out / CURATION).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InputError(f"no {CURATION}: not a curated data set; choose a new folder", out) from None
    reviews: dict[str, dict] = {}  # studies are read again when written: a cohort would not fit in memory
    refused: dict[str, str] = {}
    for given in signed:
        path = Path(given)
        try:
            review = review_of(path, trust)
            _study_of(review, path)
        except InputError as exc:
            refused[str(path)] = str(exc)
            continue
        case_id = "review-" + review["input"]["sha256"][0][:12]
        latest = reviews[case_id] if case_id in reviews else previous["cases"].get(case_id)
        if latest and latest.get("signed_pdf_sha256") == review["signed_pdf_sha256"]:
            continue  # already in the data set
        if latest and str(latest.get("signed_at")) > str(review["signed_at"]):
            refused[str(path)] = f"superseded: the same study was signed later ({latest['signed_pdf']})"
            continue
        if case_id in reviews:
            earlier = reviews[case_id]["signed_pdf"]
            refused[earlier] = f"superseded: the same study was signed later ({path})"
        reviews[case_id] = review
    chosen: dict[str, tuple[Annotation, list[str]]] = {}
    for root in annotations or []:
        taken, problems = _annotations_to_take(root)
        refused.update(problems)
        for case_id, (annotation, readers) in taken.items():
            if (previous["cases"].get(case_id) or {}).get("record_sha256") == annotation.sha256:
                continue  # already in the data set
            chosen[case_id] = (annotation, readers)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".curate-", dir=out) as tmp:
        for case_id, review in sorted(reviews.items()):
            study = _study_of(review, Path(review["signed_pdf"]))
            healthy = not review["final_entities"]["lesion"]
            texts = _review_texts(case_id, review)
            _write_case(Path(tmp), out, case_id, healthy, _study_images(study), texts)
            previous["cases"][case_id] = _record(review)
        for case_id, (annotation, readers) in sorted(chosen.items()):
            healthy = not annotation.final_entities.get("lesion")
            texts = _annotation_texts(case_id, annotation)
            _write_case(Path(tmp), out, case_id, healthy, _copied_inputs(annotation.record), texts)
            previous["cases"][case_id] = _annotation_entry(annotation, readers)
    previous["refused"] = {**previous.get("refused", {}), **refused}
    for review in reviews.values():
        previous["refused"].pop(review["signed_pdf"], None)
    for refusal in list(previous["refused"]):  # an earlier refusal of a case now taken (since adjudicated)
        path = Path(refusal)
        if path.parent.name == RECORDS_DIR and path.stem in chosen and path.suffix == ".json":
            previous["refused"].pop(refusal)
    kinds = [entry.get("kind", SIGNED_KIND) for entry in previous["cases"].values()]
    previous["kinds"] = {kind: kinds.count(kind) for kind in (SIGNED_KIND, KIND)}
    write_text_atomic(out / CURATION, json.dumps(previous, indent=1) + "\n")
    return {
        "added": sorted([*reviews, *chosen]),
        "annotations": sorted(chosen),
        "kept": len(previous["cases"]),
        "refused": refused,
    }


def _annotations_to_take(root: str | os.PathLike) -> tuple[dict[str, tuple[Annotation, list[str]]], dict]:
    """Per case of an annotations folder, the record to take and the readers behind it; and the refused
    records, by path, with their one line (naming the case)."""
    found, refused = read_annotations(root)
    by_case: dict[str, list[Annotation]] = {}
    for annotation in found:
        if annotation.status == ANNOTATED:
            by_case.setdefault(annotation.case_id, []).append(annotation)
    taken: dict[str, tuple[Annotation, list[str]]] = {}
    for case_id, records in sorted(by_case.items()):
        adjudications = [a for a in records if a.folder.startswith(ADJUDICATION_PREFIX)]
        readers = sorted((a for a in records if a not in adjudications), key=lambda a: a.folder)
        if adjudications:
            chosen = max(adjudications, key=lambda a: (str(a.record.get("created")), a.folder))
            behind = [chosen.reader]
        else:
            said = [statements(a.final_entities) for a in readers]
            differ = [s for s in said[0] if len({str(other[s]) for other in said}) > 1]
            if differ:
                names = ", ".join(a.reader for a in readers)
                refused[str(readers[0].path)] = (
                    f"{case_id}: readers {names} disagree ({', '.join(differ)}): adjudicate the case first"
                )
                continue
            chosen, behind = readers[0], [a.reader for a in readers]
        try:
            _check_annotation(chosen)
        except InputError as exc:
            refused[str(chosen.path)] = f"{case_id}: {exc}"
            continue
        taken[case_id] = (chosen, behind)
    return taken, refused


def _check_annotation(annotation: Annotation) -> None:
    """The input files are the ones the record names (same SHA-256) and its text file holds its text."""
    from .batch import input_digest

    entries = annotation.record.get("inputs") or []
    if not any(e.get("sequence") == "flair" for e in entries):
        raise InputError("the record names no FLAIR input file")
    for entry in entries:
        path = Path(str(entry.get("path") or ""))
        if not path.exists():
            raise InputError(f"the {entry.get('sequence')} input is not there any more ({path})")
        if input_digest([str(path)]) != entry.get("sha256"):
            raise InputError(f"the {entry.get('sequence')} input changed since the annotation ({path})")
    try:
        text = annotation.text_path.read_text(encoding="utf-8")
    except OSError:
        raise InputError(f"its final text file is missing ({annotation.text_path})") from None
    if text.strip() != annotation.final_text.strip():
        raise InputError(f"its final text file differs from the record ({annotation.text_path})")


def _write_case(
    tmp: Path, out: Path, case_id: str, healthy: bool, images: Callable[[Path], None], texts: dict[str, str]
) -> None:
    """One case: its images (``images(folder)`` writes them) and texts (file name -> text) built in ``tmp``,
    then each folder renamed into place whole."""
    image_dir = HEALTHY_DIR if healthy else BRATS_DIR
    text_dir = HEALTHY_DIR if healthy else TEXT_DIR
    staged = {image_dir: tmp / "images" / case_id, text_dir: tmp / "texts" / case_id}
    for folder in staged.values():
        folder.mkdir(parents=True, exist_ok=True)
    images(staged[image_dir])
    for name, text in texts.items():
        (staged[text_dir] / name).write_text(text, encoding="utf-8")
    for layout in (BRATS_DIR, TEXT_DIR, HEALTHY_DIR):  # an earlier review of the study, in either layout
        shutil.rmtree(out / layout / case_id, ignore_errors=True)
    for layout, folder in staged.items():
        (out / layout).mkdir(exist_ok=True)
        if folder.exists():
            os.replace(folder, out / layout / case_id)


def _study_images(study) -> Callable[[Path], None]:
    """A signed review's study, channel by channel, as NIfTI."""

    def write(folder: Path) -> None:
        names = SEQUENCES.get(study.data.shape[0]) or [f"channel{c}" for c in range(study.data.shape[0])]
        for c, name in enumerate(names):
            study.channel(c).save(folder / f"{folder.name}_{name}.nii.gz")

    return write


def _review_texts(case_id: str, review: dict) -> dict[str, str]:
    return {
        f"{case_id}_flair_text.txt": review["final_text"].strip() + "\n",
        f"{case_id}_ai_draft.txt": review["ai_draft_text"].strip() + "\n",
        f"{case_id}_review.json": json.dumps(_record(review), indent=1) + "\n",
    }


def _copied_inputs(record: dict) -> Callable[[Path], None]:
    """An annotation's input files as they are (NIfTI), or written as NIfTI (a DICOM folder, NRRD...)."""
    from ..io.atomic import full_suffix
    from ..io.volume import load_volume

    def write(folder: Path) -> None:
        for entry in record["inputs"]:
            source, name = Path(entry["path"]), f"{folder.name}_{entry['sequence']}"
            suffix = full_suffix(source) if source.is_file() else ""
            if suffix in (".nii.gz", ".nii"):
                shutil.copyfile(source, folder / f"{name}{suffix}")
            else:
                load_volume(source, sequence=entry["sequence"]).save(folder / f"{name}.nii.gz")

    return write


def _annotation_texts(case_id: str, annotation: Annotation) -> dict[str, str]:
    texts = {f"{case_id}_flair_text.txt": annotation.final_text.strip() + "\n"}
    draft = annotation.record.get("draft") or {}
    if draft.get("text"):
        texts[f"{case_id}_ai_draft.txt"] = str(draft["text"]).strip() + "\n"
    texts[f"{case_id}_annotation.json"] = json.dumps(annotation.record, indent=1, ensure_ascii=False) + "\n"
    return texts


def _annotation_entry(annotation: Annotation, readers: list[str]) -> dict:
    """curation.json's entry for a research annotation (its texts are files of their own)."""
    record = annotation.record
    return {
        "kind": KIND,
        "reader": annotation.reader,
        "adjudicated_by": annotation.adjudicated_by,
        "readers": readers,
        "record": str(annotation.path),
        "record_sha256": annotation.sha256,
        "created": record.get("created"),
        "edited": bool(record.get("edited")),
        "final_entities": annotation.final_entities,
        "model": (record.get("draft") or {}).get("model") or {},
        "inputs": record.get("inputs") or [],
    }


def _record(review: dict) -> dict:
    """A review without its texts (they are files of their own)."""
    return {"kind": SIGNED_KIND} | {
        k: v for k, v in review.items() if k not in ("final_text", "ai_draft_text")
    }
