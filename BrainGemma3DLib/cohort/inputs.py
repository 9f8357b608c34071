"""The cases of a cohort: a BraTS/TextBraTS folder, a folder of DICOM studies, or a CSV manifest.

Each case is an id and its input files in the model's order (FLAIR first, then T1ce and T2 for a
three-sequence model), with an optional BraTS tumour segmentation. Cases are found by fixed layouts and
DICOM tags, never by guessing from file names beyond the BraTS ``<id>_<sequence>.nii.gz`` convention; a case
that cannot be used is kept as a problem with its one-line reason, so the cohort table names every case.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..io.errors import InputError
from ..training.data import BRATS_DIR, HEALTHY_DIR, case_images

#: Sequences by the number of channels a model reads (the training convention: FLAIR first).
SEQUENCES = {1: ("flair",), 3: ("flair", "t1ce", "t2")}
#: Manifest columns: the case id, the FLAIR path, optional T1ce/T2 paths and segmentation.
MANIFEST_COLUMNS = ("case_id", "flair", "t1ce", "t2", "seg")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass
class CohortCase:
    """One study of a cohort: what ``report`` would be given for it."""

    case_id: str
    inputs: list[str]
    seg: str | None = None
    problem: str = ""  # why the case cannot be drafted (then ``inputs`` may be empty)
    meta: dict = field(default_factory=dict)


def safe_id(case_id: str) -> str:
    """A case id usable as a folder name (letters, digits, ``._-``); others are refused by the caller."""
    return case_id if _SAFE_ID.match(case_id) and case_id not in (".", "..") else ""


def find_cases(source: str | os.PathLike, channels: int = 1) -> list[CohortCase]:
    """Every case of ``source`` (a folder or a ``.csv`` manifest), in a stable order (by id)."""
    path = Path(source)
    if not path.exists():
        raise InputError("cohort input not found", path)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise InputError("a cohort is a folder (BraTS layout or DICOM studies) or a .csv manifest", path)
        cases = _from_manifest(path, channels)
    elif (path / BRATS_DIR).is_dir() or (path / HEALTHY_DIR).is_dir():
        cases = _from_brats(path, [path / BRATS_DIR, path / HEALTHY_DIR], channels)
    elif any(_brats_case_files(p, "flair") for p in path.iterdir() if p.is_dir()):
        cases = _from_brats(path, [path], channels)  # a folder of BraTS case folders
    else:
        cases = _from_dicom(path)
        if channels != 1:
            raise InputError("DICOM cohorts hold one FLAIR series per study: use a manifest for 3 sequences")
    if not cases:
        raise InputError("no case found (expected the BraTS layout, DICOM studies or a .csv manifest)", path)
    ids = [c.case_id for c in cases]
    doubled = sorted({i for i in ids if ids.count(i) > 1})
    if doubled:
        raise InputError(f"case id(s) given twice: {', '.join(doubled[:5])}", path)
    return sorted(cases, key=lambda c: c.case_id)


def _brats_case_files(folder: Path, sequence: str) -> Path | None:
    return (case_images(folder, folder.name, (sequence,)) or {}).get(sequence)


def _from_brats(root: Path, parents: list[Path], channels: int) -> list[CohortCase]:
    sequences = SEQUENCES.get(channels)
    if sequences is None:
        raise InputError(f"the model reads {channels} sequences; a cohort gives 1 (FLAIR) or 3", root)
    cases = []
    for parent in parents:
        if not parent.is_dir():
            continue
        # Not the cohort's own folders beside its cases (``_annotations``, ``_batch``) nor hidden ones.
        for folder in sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
            files = [_brats_case_files(folder, s) for s in sequences]
            seg = _brats_case_files(folder, "seg")
            case = CohortCase(folder.name, [str(f) for f in files if f], str(seg) if seg else None)
            if not all(files):
                missing = [s for s, f in zip(sequences, files, strict=True) if f is None]
                case.problem = f"missing {', '.join(missing)} ({folder.name}_{missing[0]}.nii.gz)"
            cases.append(_checked_id(case))
    return cases


def _from_manifest(path: Path, channels: int) -> list[CohortCase]:
    sequences = SEQUENCES.get(channels)
    if sequences is None:
        raise InputError(f"the model reads {channels} sequences; a manifest gives 1 (FLAIR) or 3", path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"unreadable manifest ({type(exc).__name__})", path) from None
    if not rows or not {"case_id", "flair"} <= set(rows[0]):
        raise InputError("a manifest needs the columns case_id and flair (optional: t1ce, t2, seg)", path)
    cases = []
    for n, row in enumerate(rows, 2):
        cid = (row.get("case_id") or "").strip()
        if not cid:
            raise InputError(f"line {n}: empty case_id", path)

        def resolve(value: str | None) -> str | None:
            value = (value or "").strip()
            if not value:
                return None
            given = Path(value)
            return str(given if given.is_absolute() else path.parent / given)

        files = [resolve(row.get(s)) for s in sequences]
        case = CohortCase(cid, [f for f in files if f], resolve(row.get("seg")))
        missing = [s for s, f in zip(sequences, files, strict=True) if f is None]
        if missing:
            case.problem = f"line {n}: no {', '.join(missing)} path"
        cases.append(_checked_id(case))
    return cases


def _from_dicom(root: Path) -> list[CohortCase]:
    """Studies by StudyInstanceUID; in each, the FLAIR series chosen as ``report`` chooses it
    (:func:`BrainGemma3DLib.io.dicom.choose_stack`: by its tags; the only series when there is one). A study
    where none fits or two fit equally is a case with that one line as its problem."""
    from ..io.dicom import choose_stack, find_stacks

    studies: dict[str, list] = {}
    for stack in find_stacks(root, max_files=None):
        studies.setdefault(stack.meta.get("StudyInstanceUID", ""), []).append(stack)
    studies.pop("", None)
    series = {study: {s.series_uid: s.files for s in stacks} for study, stacks in studies.items()}
    tops = {study: _tops(root, files) for study, files in series.items()}
    cases = []
    for study, stacks in studies.items():
        # One subfolder per study: the folder's name is the case id; else one derived from the study UID.
        own = tops[study]
        name = next(iter(own)) if len(own) == 1 else ""
        shared = sum(name in other for other in tops.values()) > 1
        alone_in_folder = name and not shared and (root / name).is_dir()
        cid = name if alone_in_folder else "study-" + hashlib.sha1(study.encode()).hexdigest()[:10]
        case = CohortCase(cid, [], meta={"study_uid": study})
        try:
            chosen, why = choose_stack(stacks, "flair")
        except InputError as exc:
            case.problem = f"{exc.problem} (or give the FLAIR series in a manifest)"
        else:
            files = chosen.files
            folder = files[0].parent
            alone = all(f.parent == folder for f in files) and not any(
                f.parent == folder for s in stacks if s is not chosen for f in s.files
            )
            case.inputs = [str(folder if alone else files[0])]
            case.meta["series_choice"] = why
        cases.append(_checked_id(case))
    return cases


def _tops(root: Path, series: dict[str, list[Path]]) -> set[str]:
    return {f.relative_to(root).parts[0] for files in series.values() for f in files}


def _checked_id(case: CohortCase) -> CohortCase:
    if not safe_id(case.case_id):
        bad = case.case_id
        case.case_id = "case-" + hashlib.sha1(bad.encode()).hexdigest()[:10]
        case.problem = case.problem or f"case id {bad!r} is not usable as a folder name"
    return case
