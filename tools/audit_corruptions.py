"""Does ``audit-reports`` find what is wrong, and only that? Clean phantom reports against deliberately
corrupted ones.

Phantom reports are written from each case's measured truth, so a clean data set must audit clean. Then each
lesion case's text is corrupted in one way, in turn: the side swapped (left <-> right), the lobes replaced
by a lobe the lesion does not touch, the enhancement denied where there is enhancement, the oedema denied
where there is oedema; every corruption must be found, as the kind it is. Reproduce::

    braingemma3d phantoms --out build/audit/clean --n 40 --healthy 0 --seed 6161 --sequences flair
    .venv/bin/python tools/audit_corruptions.py build/audit/clean --out build/audit

Prints a Markdown table (also OUT/corruptions.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

LOBES = ("frontal", "parietal", "temporal", "occipital")


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def corrupt(text: str, truth: dict, kind: str) -> str | None:
    """``text`` corrupted as ``kind`` (side, lobes, enhancement, edema), or None when it cannot be (the
    truth has nothing to contradict: a bilateral lesion has no side to swap, no enhancement to deny)."""
    if kind == "side":
        if truth["hemisphere"] not in ("left", "right") or not re.search(r"\b(left|right)\b", text):
            return None
        return re.sub(r"\b(left|right)\b", lambda m: "right" if m.group(1) == "left" else "left", text)
    if kind == "lobes":
        other = next((lobe for lobe in LOBES if lobe not in truth["lobes"]), None)
        if other is None or not re.search(r"\b(" + "|".join(truth["lobes"]) + r")\b", text):
            return None
        return re.sub(r"\b(" + "|".join(LOBES) + r")\b", other, text)
    word, denial = {
        "enhancement": (r"enhanc", "No contrast enhancement is seen."),
        "edema": (r"edema|oedema", "There is no edema."),
    }[kind]
    if not truth["findings"].get(kind):
        return None
    kept = [s for s in _sentences(text) if not re.search(word, s, re.IGNORECASE)]
    return " ".join([*kept, denial])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a phantom data set (BraTS + TextBraTS layout)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from BrainGemma3DLib.training.audit import audit_reports

    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "audit-clean", ignore_errors=True)
    clean = audit_reports(args.data, args.out / "audit-clean", progress=False)
    rows = [f"| clean (as generated) | {clean['cases']} | {clean['contradicting']} flagged | - |"]
    for kind in ("side", "lobes", "enhancement", "edema"):
        copy = args.out / f"data-{kind}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(args.data, copy)
        corrupted = set()
        for truth_path in sorted((copy / "MICCAI_BraTS2020_TrainingData").glob("*/truth.json")):
            truth = json.loads(truth_path.read_text(encoding="utf-8"))
            case = truth_path.parent.name
            text_path = copy / "TextBraTSData" / case / f"{case}_flair_text.txt"
            changed = corrupt(text_path.read_text(encoding="utf-8"), truth, kind)
            if changed is not None:
                text_path.write_text(changed, encoding="utf-8")
                corrupted.add(case)
        audit = args.out / f"audit-{kind}"
        shutil.rmtree(audit, ignore_errors=True)
        audit_reports(copy, audit, progress=False)
        flagged = {}
        with open(audit / "audit.csv", encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                if int(row["n_contradictions"]):
                    flagged[row["case"]] = row["contradictions"]
        found = {case for case in corrupted if kind in flagged.get(case, "")}
        extra = set(flagged) - corrupted
        rows.append(f"| {kind} | {len(corrupted)} corrupted | {len(found)} found as {kind} | {len(extra)} |")
    table = "\n".join(
        ["| reports | cases | audit result | flagged but not corrupted |", "|---|---|---|---|", *rows]
    )
    (args.out / "corruptions.md").write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
