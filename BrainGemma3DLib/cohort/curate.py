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
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ..io.atomic import write_text_atomic
from ..io.errors import InputError
from ..training.data import BRATS_DIR, HEALTHY_DIR, TEXT_DIR
from .inputs import SEQUENCES

CURATION = "curation.json"


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


def curate(signed: list[str | os.PathLike], out: str | os.PathLike, *, trust: list | None = None) -> dict:
    """Add the reviews of ``signed`` to the data set ``out``; returns ``{"added", "kept", "refused"}``."""
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
        if latest and latest["signed_pdf_sha256"] == review["signed_pdf_sha256"]:
            continue  # already in the data set
        if latest and str(latest["signed_at"]) > str(review["signed_at"]):
            refused[str(path)] = f"superseded: the same study was signed later ({latest['signed_pdf']})"
            continue
        if case_id in reviews:
            earlier = reviews[case_id]["signed_pdf"]
            refused[earlier] = f"superseded: the same study was signed later ({path})"
        reviews[case_id] = review
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".curate-", dir=out) as tmp:
        for case_id, review in sorted(reviews.items()):
            _write_case(Path(tmp), out, case_id, review, _study_of(review, Path(review["signed_pdf"])))
            previous["cases"][case_id] = _record(review)
    previous["refused"] = {**previous.get("refused", {}), **refused}
    for review in reviews.values():
        previous["refused"].pop(review["signed_pdf"], None)
    write_text_atomic(out / CURATION, json.dumps(previous, indent=1) + "\n")
    return {"added": sorted(reviews), "kept": len(previous["cases"]), "refused": refused}


def _write_case(tmp: Path, out: Path, case_id: str, review: dict, study) -> None:
    """One case: its images and texts built in ``tmp``, then each folder renamed into place whole."""
    healthy = not review["final_entities"]["lesion"]
    image_dir = HEALTHY_DIR if healthy else BRATS_DIR
    text_dir = HEALTHY_DIR if healthy else TEXT_DIR
    staged = {image_dir: tmp / "images" / case_id, text_dir: tmp / "texts" / case_id}
    for folder in staged.values():
        folder.mkdir(parents=True, exist_ok=True)
    names = SEQUENCES.get(study.data.shape[0]) or [f"channel{c}" for c in range(study.data.shape[0])]
    for c, name in enumerate(names):
        study.channel(c).save(staged[image_dir] / f"{case_id}_{name}.nii.gz")
    texts = staged[text_dir]
    (texts / f"{case_id}_flair_text.txt").write_text(review["final_text"].strip() + "\n", encoding="utf-8")
    (texts / f"{case_id}_ai_draft.txt").write_text(review["ai_draft_text"].strip() + "\n", encoding="utf-8")
    record = json.dumps(_record(review), indent=1) + "\n"
    (texts / f"{case_id}_review.json").write_text(record, encoding="utf-8")
    for layout in (BRATS_DIR, TEXT_DIR, HEALTHY_DIR):  # an earlier review of the study, in either layout
        shutil.rmtree(out / layout / case_id, ignore_errors=True)
    for layout, folder in staged.items():
        (out / layout).mkdir(exist_ok=True)
        if folder.exists():
            os.replace(folder, out / layout / case_id)


def _record(review: dict) -> dict:
    """A review without its texts (they are files of their own)."""
    return {k: v for k, v in review.items() if k not in ("final_text", "ai_draft_text")}
