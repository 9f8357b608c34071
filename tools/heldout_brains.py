"""Scores of a model on our own held-out phantoms and on a held-out brain, per storage, in one table.

The held-out brain is FSL's MNI152 (``phantoms --template fsl-mni152``: another template than the one the
generator trains on, another contrast model), for testing only (``train`` refuses it). Storage: each case is
stored as the generator draws it (RAS, LPS, thick slices, oblique); a DICOM row re-stores the first cases of
each data set as DICOM series and reads them through the ``report`` path's loader. Reproduce::

    braingemma3d phantoms --out build/heldout/own --n 120 --healthy 40 --seed 4242 --sequences flair \\
        --workers 2
    braingemma3d phantoms --out build/heldout/other --n 60 --healthy 40 --seed 99 --sequences flair \\
        --template fsl-mni152 --workers 2
    .venv/bin/python tools/heldout_brains.py --model demo --data build/heldout/own build/heldout/other \\
        --out build/heldout/scores

It prints (and writes to OUT/tables.md) hemisphere accuracy, left/right flips, lobe F1 and healthy
specificity per data set and storage, with the number of cases behind each cell.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "Testing" / "Python"), str(REPO)]

STORAGES = ("ras", "lps", "clinical", "oblique")
DICOM_CASES = 12  # per data set: the first lesion and healthy cases, re-stored as DICOM series


def _rows(eval_dir: Path, data: Path) -> list[dict]:
    """cases.csv rows with each case's truth (truth.json beside its images)."""
    from BrainGemma3DLib.training.data import scan

    found = {c.case_id: c for c in scan(data, ("flair",)).cases}
    with open(eval_dir / "cases.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row["truth"] = found[row["case_id"]].truth
    return rows


def _cell(rows: list[dict]) -> dict:
    from BrainGemma3DLib.training.metrics import strict_scores

    if not rows:
        return {}
    scores = strict_scores([r["generated"] for r in rows], [r["truth"] for r in rows], n_boot=1)
    lesions = sum(not r["truth"].get("healthy") for r in rows)
    return {
        "lesions": lesions,
        "healthy": len(rows) - lesions,
        **{
            k: scores[k]["value"]
            for k in ("hemisphere_accuracy", "flip_rate", "lobe_f1", "healthy_specificity")
        },
    }


def _dicom_rows(model, data: Path, work: Path) -> list[dict]:
    """The first cases re-stored as DICOM series and drafted through the report path's loader."""
    from helpers import write_dicom_series

    from BrainGemma3DLib.io.volume import load_study, load_volume
    from BrainGemma3DLib.reporting.consensus import DecodingOptions, decode
    from BrainGemma3DLib.training.data import scan

    cases = scan(data, ("flair",)).cases
    lesions = [c for c in cases if not c.healthy][: DICOM_CASES // 2]
    healthy = [c for c in cases if c.healthy][: DICOM_CASES // 2]
    rows = []
    for i, case in enumerate(lesions + healthy):
        volume = load_volume(case.images["flair"])
        folder = work / case.case_id
        write_dicom_series(
            folder, volume.data[0], volume.affine, series_uid=f"1.2.826.0.1.3680043.10.{i + 1}"
        )
        study = load_study([str(folder)])
        grid, _mapping = study.to_model_grid(model.cfg.grid, method=model.cfg.preprocess)
        draft = decode(model, grid, DecodingOptions(), max_new_tokens=None)
        rows.append({"case_id": case.case_id, "generated": draft.text, "truth": case.truth})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="demo or a checkpoint folder")
    parser.add_argument("--data", nargs="+", type=Path, required=True, help="phantom folders to score on")
    parser.add_argument("--out", type=Path, required=True, help="folder for the evaluations and tables.md")
    parser.add_argument("--no-dicom", action="store_true", help="skip the DICOM rows")
    args = parser.parse_args(argv)

    from BrainGemma3DLib.model import load
    from BrainGemma3DLib.training.evaluate import evaluate

    lines = [
        "| model | data | storage | lesion cases | healthy cases | hemisphere accuracy | flips | lobe F1 | "
        "healthy specificity |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    results = []
    for model_ref in args.model:
        model = load(model_ref, device="cpu")
        for data in args.data:
            manifest = json.loads((data / "phantoms.json").read_text(encoding="utf-8"))
            name = "held-out brain (FSL MNI152)" if manifest.get("test_only") else "own held-out phantoms"
            eval_dir = args.out / f"{Path(model_ref).name}-{data.name}"
            if not (eval_dir / "cases.csv").is_file():
                evaluate(model_ref, data, "all", eval_dir, device="cpu", progress=True)
            rows = _rows(eval_dir, data)
            groups = [("all", rows)] + [
                (s, [r for r in rows if r["truth"]["storage"]["variant"] == s]) for s in STORAGES
            ]
            if not args.no_dicom:
                groups.append(("DICOM", _dicom_rows(model, data, args.out / "dicom" / data.name)))
            for storage, group in groups:
                cell = _cell(group)
                if not cell:
                    continue
                results.append({"model": model_ref, "data": name, "storage": storage, **cell})

                def fmt(v):
                    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

                lines.append(
                    f"| {model_ref} | {name} | {storage} | {cell['lesions']} | {cell['healthy']} | "
                    f"{fmt(cell['hemisphere_accuracy'])} | {fmt(cell['flip_rate'])} | "
                    f"{fmt(cell['lobe_f1'])} | {fmt(cell['healthy_specificity'])} |"
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tables.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (args.out / "tables.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
