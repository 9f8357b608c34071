"""``braingemma3d audit-reports``: a text dataset checked against its own labels.

A BraTS + TextBraTS folder pairs each case's report text with its tumour segmentation. This reads both,
measures the segmentation (volumes, side and lobes by the atlas registered to the case's FLAIR,
:mod:`..anatomy.measure`) and lists every case whose text contradicts it: side, lobes, enhancement,
oedema, necrosis, with the measured values. A quality check of the dataset before training on it, and of
any report source against its labels.

Writes ``audit.csv`` (one row per case: measured facts, what the text says, the contradictions) and
``summary.md`` (counts, and the contradicting cases first), all or nothing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path

from ..io.errors import InputError


def audit_case(case) -> dict:
    """One case's row: what its text says, what its segmentation measures, and where they disagree."""
    from ..anatomy import place_study
    from ..anatomy.measure import contradictions, measure
    from ..app.pipeline import read_segmentation
    from ..io.volume import load_study
    from ..reporting.entities import structured_entities

    study = load_study([case.images["flair"]])
    labels = read_segmentation(case.seg, study)
    placement = place_study(study.channel(0), exclude=labels > 0)
    measured = measure(labels, study.affine, placement)
    entities = structured_entities(case.report)
    found = contradictions(entities, measured)
    volumes = measured["volumes_ml"]
    return {
        "case": case.case_id,
        "text_side": entities["laterality"],
        "text_lobes": " ".join(entities["lobes"]),
        "text_findings": " ".join(f"{k}={v}" for k, v in entities["findings"].items()),
        "measured_side": measured["side"] or "",
        "measured_lobes": " ".join(measured["lobes"] or []),
        "enhancing_ml": volumes["enhancing"],
        "core_ml": volumes["core"],
        "edema_ml": volumes["edema"],
        "largest_diameter_mm": measured["largest_diameter_mm"],
        "contradictions": "; ".join(
            f"{c['what']}: text {c['text']}, measured {c['measured']}" for c in found
        ),
        "n_contradictions": len(found),
    }


def audit_reports(data: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True) -> dict:
    """Audit every lesion case of ``data`` (cases without a segmentation are skipped and counted)."""
    from tqdm import tqdm

    from ..io.atomic import replace_dir
    from .data import scan

    found = scan(data, ("flair",))
    cases = [c for c in found.cases if c.seg is not None]
    if not cases:
        raise InputError("no case with both a report text and a tumour segmentation", data)
    rows = [
        audit_case(c) for c in tqdm(cases, desc="audit", unit="case", disable=not progress, file=sys.stderr)
    ]
    bad = [r for r in rows if r["n_contradictions"]]
    kinds: dict[str, int] = {}
    for row in bad:
        for part in row["contradictions"].split("; "):
            kinds[part.split(":")[0]] = kinds.get(part.split(":")[0], 0) + 1
    summary = {
        "cases": len(rows),
        "skipped_without_segmentation": len(found.cases) - len(cases),
        "contradicting": len(bad),
        "by_kind": kinds,
    }
    lines = [
        f"# Report audit of {data}",
        "",
        f"{len(rows)} cases with a text and a segmentation; **{len(bad)} contradict their segmentation**"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(kinds.items()))})." if kinds else "."),
        f"Skipped (no segmentation: healthy or unlabelled): {summary['skipped_without_segmentation']}.",
        "",
    ]
    if bad:
        lines += ["| case | contradictions |", "|---|---|"]
        lines += [f"| {r['case']} | {r['contradictions']} |" for r in bad]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(bad + [r for r in rows if not r["n_contradictions"]])
    with replace_dir(out, ("audit.csv", "summary.md", "summary.json")) as tmp:
        (tmp / "audit.csv").write_text(buffer.getvalue(), encoding="utf-8")
        (tmp / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary | {"out": str(Path(out))}
