"""The cohort table (``cohort.csv``, ``cohort.parquet``) and ``summary.md`` of a batch.

One row per case of the cohort, whatever happened to it (done, failed with its one line, or pending: not yet
drafted by any process), so a researcher can filter the cohort in a spreadsheet or pandas, and a summary that
puts first what a reader should look at first: failures, then drafts the input check or the consistency
checks warned about, then drafts the model itself was least sure of.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..io.atomic import atomic_path, write_text_atomic

COLUMNS = (
    "case_id",
    "status",
    "error",
    "lesion",
    "side",
    "lobes",
    "findings",
    "warnings",
    "warning_count",
    "input_check",
    "agreement_min",
    "agreement_lesion",
    "agreement_side",
    "seconds",
    "generate_s",
    "explain_s",
    "input_sha256",
    "checkpoint_sha256",
    "report",
)
#: Consensus agreement below which a draft is listed among those to look at first.
LOW_AGREEMENT = 0.75


def rows(cases, records: dict[str, dict | None]) -> list[dict]:
    """The table's rows, in the cohort's order."""
    table = []
    for case in cases:
        record = records.get(case.case_id) or {}
        status = record.get("status", "pending")
        row = {k: "" for k in COLUMNS} | {"case_id": case.case_id, "status": status}
        stamp = record.get("stamp") or {}
        row["input_sha256"] = stamp.get("input_sha256", "")
        row["checkpoint_sha256"] = stamp.get("checkpoint_sha256", "")
        if status == "failed":
            row["error"] = record.get("error", "")
        if status == "done":
            shown = dict(record.get("row") or {})
            warnings = shown.pop("warnings", [])
            row.update({k: "" if v is None else v for k, v in shown.items() if k in COLUMNS})
            row["warnings"] = " | ".join(warnings)
            row["warning_count"] = len(warnings)
            row["seconds"] = record.get("seconds", "")
            row["report"] = f"{case.case_id}/report.pdf"
        table.append(row)
    return table


def write_table(out: Path, cases, records: dict[str, dict | None]) -> dict:
    """Write cohort.csv, cohort.parquet (with pyarrow, the ``cohort`` extra) and summary.md; return counts."""
    table = rows(cases, records)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    write_text_atomic(out / "cohort.csv", text.getvalue())
    parquet = _write_parquet(out / "cohort.parquet", table)
    counts = {s: sum(r["status"] == s for r in table) for s in ("done", "failed", "pending")}
    write_text_atomic(out / "summary.md", summary(table, counts))
    return {"counts": counts, "parquet": parquet}


def _write_parquet(path: Path, table: list[dict]) -> bool:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return False  # the table is in cohort.csv; parquet needs the `cohort` extra
    numeric = {"warning_count", "agreement_min", "agreement_lesion", "agreement_side", "seconds"}
    numeric |= {"generate_s", "explain_s"}
    columns = {}
    for name in COLUMNS:
        values = [r[name] for r in table]
        if name in numeric:
            columns[name] = pa.array([None if v == "" else float(v) for v in values], pa.float64())
        else:
            columns[name] = pa.array([str(v) for v in values], pa.string())
    with atomic_path(path) as tmp:
        pq.write_table(pa.table(columns), tmp)
    return True


def summary(table: list[dict], counts: dict[str, int]) -> str:
    """summary.md: counts, what the drafts say, and the cases to look at first (worst first)."""
    done = [r for r in table if r["status"] == "done"]
    lines = [
        "# Cohort summary",
        "",
        f"{len(table)} cases: {counts['done']} drafted, {counts['failed']} failed, "
        f"{counts['pending']} pending.",
        "Drafts are unsigned AI drafts: every one needs a radiologist's review.",
        "",
    ]
    if done:
        lesion = sum(r["lesion"] == "yes" for r in done)
        stated = [r["side"] for r in done if r["lesion"] == "yes"]
        sides = {s: stated.count(s) for s in ("left", "right", "bilateral")}
        lines += [
            f"Drafts stating a lesion: {lesion} of {len(done)} "
            f"(left {sides['left']}, right {sides['right']}, both {sides['bilateral']}).",
            "",
        ]
    failed = [r for r in table if r["status"] == "failed"]
    if failed:
        lines += ["## Failed (not drafted)", "", "| case | error |", "|---|---|"]
        lines += [f"| {r['case_id']} | {_cell(r['error'])} |" for r in failed]
        lines.append("")
    warned = sorted(
        (r for r in done if r["warning_count"] or r["input_check"] == "outside"),
        key=lambda r: (r["input_check"] != "outside", -int(r["warning_count"] or 0), r["case_id"]),
    )
    if warned:
        lines += ["## Warnings to look at first", "", "| case | input check | warnings |", "|---|---|---|"]
        lines += [f"| {r['case_id']} | {r['input_check']} | {_cell(r['warnings'])} |" for r in warned]
        lines.append("")
    unsure = sorted(
        (r for r in done if r["agreement_min"] != "" and float(r["agreement_min"]) < LOW_AGREEMENT),
        key=lambda r: (float(r["agreement_min"]), r["case_id"]),
    )
    if unsure:
        lines += [
            f"## Least certain drafts (a statement under {LOW_AGREEMENT:.0%} of the model's drafts share)",
            "",
            "| case | lowest agreement | lesion | side |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['case_id']} | {float(r['agreement_min']):.2f} | {r['lesion']} | {r['side']} |"
            for r in unsure
        ]
        lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "/").replace("\n", " ")
