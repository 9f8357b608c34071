"""Reading BraTS 2020 + TextBraTS (+ healthy controls) folders, and patient-level splits.

The layout is the one real BraTS/TextBraTS downloads have and ``braingemma3d phantoms`` writes::

    ROOT/MICCAI_BraTS2020_TrainingData/<id>/<id>_{flair,t1,t1ce,t2,seg}.nii.gz   (+ truth.json for phantoms)
    ROOT/TextBraTSData/<id>/<id>_flair_text.txt
    ROOT/HealthyControls/<id>/<id>_{flair,...}.nii.gz, <id>_flair_text.txt

Folders are found by these fixed names, never by guessing from strings. A case without a report, or without
one of the requested sequences, is skipped and counted, so a user sees how much of the data set was used.
The tumour labels (``_seg``) are optional: where present, training uses them to ground the visual tokens
(see :mod:`BrainGemma3DLib.training.grounding`); healthy controls count as "no lesion anywhere".

Splits are by patient (one BraTS case is one patient; a ``patient_id`` in truth.json overrides), stratified by
healthy/pathological and hemisphere, with a fixed seed, and saved into the checkpoint; a split that would put
a patient in two parts is refused.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.errors import InputError

BRATS_DIR = "MICCAI_BraTS2020_TrainingData"
TEXT_DIR = "TextBraTSData"
HEALTHY_DIR = "HealthyControls"
SPLITS = ("train", "val", "test")


@dataclass
class CaseRecord:
    """One case on disk: images by sequence, report text, ground truth when there is one."""

    case_id: str
    healthy: bool
    images: dict[str, Path]
    report: str
    truth: dict | None = None
    patient_id: str = ""
    seg: Path | None = None  # BraTS tumour labels (any label > 0 = lesion); None for healthy controls

    def __post_init__(self) -> None:
        if not self.patient_id:
            self.patient_id = (self.truth or {}).get("patient_id") or self.case_id

    @property
    def stratum(self) -> str:
        if self.healthy:
            return "healthy"
        return f"lesion-{(self.truth or {}).get('hemisphere', 'unknown')}"


@dataclass
class Scan:
    """The cases found under a root, and what was skipped (and why)."""

    cases: list[CaseRecord]
    skipped: dict[str, str] = field(default_factory=dict)


def case_images(folder: Path, case: str, sequences: tuple[str, ...]) -> dict[str, Path] | None:
    """``<case>_<sequence>.nii.gz`` (or ``.nii``) of each sequence in ``folder``; None when one is missing."""
    images = {}
    for seq in sequences:
        path = folder / f"{case}_{seq}.nii.gz"
        if not path.is_file():
            path = folder / f"{case}_{seq}.nii"
        if not path.is_file():
            return None
        images[seq] = path
    return images


def _truth(folder: Path) -> dict | None:
    path = folder / "truth.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def scan(root: str | os.PathLike, sequences: tuple[str, ...] = ("flair",)) -> Scan:
    """All usable cases under ``root`` (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("data folder not found", root)
    cases: list[CaseRecord] = []
    skipped: dict[str, str] = {}
    brats, healthy_dir = root / BRATS_DIR, root / HEALTHY_DIR
    if not brats.is_dir() and not healthy_dir.is_dir():
        raise InputError(
            f"no {BRATS_DIR}/ or {HEALTHY_DIR}/ folder (expected the BraTS + TextBraTS layout)", root
        )
    sources = [
        (brats, False, lambda f: root / TEXT_DIR / f.name / f"{f.name}_flair_text.txt"),
        (healthy_dir, True, lambda f: f / f"{f.name}_flair_text.txt"),
    ]
    for parent, healthy, report_of in sources:
        for folder in sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []:
            cid, report = folder.name, report_of(folder)
            images = case_images(folder, cid, sequences)
            if images is None:
                skipped[cid] = f"missing sequence(s) {', '.join(sequences)}"
            elif not report.is_file():
                skipped[cid] = "no report"
            else:
                text = report.read_text(encoding="utf-8").strip()
                seg = case_images(folder, cid, ("seg",))
                cases.append(
                    CaseRecord(cid, healthy, images, text, _truth(folder), seg=seg["seg"] if seg else None)
                )
    if not cases:
        raise InputError(f"no usable case (skipped {len(skipped)})", root)
    return Scan(cases, skipped)


def make_split(
    cases: list[CaseRecord], *, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict:
    """Patient-level split, stratified by healthy/pathological and hemisphere: ``{train, val, test}`` ids."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise InputError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    patients: dict[str, list[CaseRecord]] = {}
    for case in cases:
        patients.setdefault(case.patient_id, []).append(case)
    strata: dict[str, list[str]] = {}
    for pid, recs in sorted(patients.items()):
        strata.setdefault(recs[0].stratum, []).append(pid)
    assigned: dict[str, list[str]] = {name: [] for name in SPLITS}  # patient ids per part
    for _stratum, pids in sorted(strata.items()):
        order = [pids[i] for i in rng.permutation(len(pids))]
        n_val = int(round(fractions[1] * len(order)))
        n_test = int(round(fractions[2] * len(order)))
        n_train = len(order) - n_val - n_test
        assigned["train"] += order[:n_train]
        assigned["val"] += order[n_train : n_train + n_val]
        assigned["test"] += order[n_train + n_val :]
    # Small data sets: strata too small to round to one case still leave val/test a patient each.
    for name, fraction in zip(("val", "test"), fractions[1:], strict=True):
        if fraction > 0 and not assigned[name] and len(assigned["train"]) > 1:
            assigned[name].append(assigned["train"].pop(int(rng.integers(len(assigned["train"])))))
    split = {
        name: sorted(cid for pid in pids for cid in (c.case_id for c in patients[pid]))
        for name, pids in assigned.items()
    }
    check_split(split, cases)
    return {"seed": int(seed), "fractions": list(fractions), **split}


def check_split(split: dict, cases: list[CaseRecord]) -> None:
    """Refuse a split in which one patient appears in two parts, or a case in none."""
    patient_of = {c.case_id: c.patient_id for c in cases}
    seen: dict[str, str] = {}
    for name in SPLITS:
        for cid in split.get(name, []):
            pid = patient_of.get(cid, cid)
            if pid in seen and seen[pid] != name:
                raise InputError(f"split leaks patient {pid!r} across {seen[pid]} and {name}")
            seen[pid] = name
