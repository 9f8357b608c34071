"""``braingemma3d agreement``: how radiologists changed the AI drafts, the figure a department watches.

Each signed review holds the AI draft and the final text. Both are read with the report entity reader
(side, lesion, each lobe, each finding; negation-aware) and compared: per entity, the share of drafts the
radiologist changed and how (added, removed, flipped left/right); and the word-level edit rate (word edit
distance / words of the draft). Grouped over time (ISO week of signing) and by checkpoint (its SHA-256), so
a drift after go-live or a new model's effect shows as a change of these numbers.

Input: a curated data set (``curate``'s folder: ``*_review.json`` beside each final text and AI draft), or
signing audit records (``*.audit.json``, or folders holding them).

Between readers (:func:`reader_agreement`, ``--annotations DIR``): the research annotations of several
readers (:mod:`.annotations`) on the same cases. For each pair of readers, on the cases both annotated: per
statement the share of cases where they state the same and Cohen's kappa (from the k x k table of what each
stated; undefined, ``null``, when both said the same one thing everywhere), the word edit distance between
their texts; and the cases where any readers differ on a statement, with every text and the differing
statements, for adjudication. The statements come from each record's entities (those of its report value).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from itertools import combinations
from pathlib import Path

from ..io.atomic import atomic_path, write_text_atomic
from ..io.errors import InputError
from ..reporting.entities import extract
from ..reporting.vocabulary import FINDINGS, LOBES
from .annotations import ADJUDICATION_PREFIX, ANNOTATED, SKIPPED, read_annotations, statements

ENTITIES = ("side", "lesion", *(f"lobe:{lobe}" for lobe in LOBES), *FINDINGS)


def read_reviews(sources: list[str | os.PathLike]) -> list[dict]:
    """Every review under ``sources``: ``{signed_at, checkpoint, draft, final}``."""
    reviews: list[dict] = []
    for given in sources:
        path = Path(given)
        if not path.exists():
            raise InputError("not found", path)
        files = [path] if path.is_file() else sorted(path.rglob("*.audit.json"))
        files += [] if path.is_file() else sorted(path.rglob("*_review.json"))
        for file in files:
            record, draft, final = _review_file(file)
            reviews.append(
                {
                    "source": str(file),
                    "signed_at": str(record.get("signed_at") or ""),
                    "checkpoint": str((record.get("model") or {}).get("checkpoint_sha256") or "unknown"),
                    "draft": draft,
                    "final": final,
                }
            )
    if not reviews:
        raise InputError("no signed review found (signing audit records or a curated data set)", sources[0])
    return reviews


def _review_file(file: Path) -> tuple[dict, str, str]:
    """(record, AI draft, final text) of a signing audit record or a curated ``*_review.json``."""
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
        if file.name.endswith("_review.json"):
            case = file.name[: -len("_review.json")]
            draft = (file.parent / f"{case}_ai_draft.txt").read_text(encoding="utf-8")
            return record, draft, (file.parent / f"{case}_flair_text.txt").read_text(encoding="utf-8")
    except (OSError, ValueError):
        raise InputError("unreadable review record (or its texts beside it)", file) from None
    if not isinstance(record, dict) or "final_text" not in record:
        raise InputError("not a signing audit record or a curated review", file)
    return record, str(record.get("ai_draft_text", "")), str(record["final_text"])


def changes(draft: str, final: str) -> dict[str, str]:
    """Per entity: "same", "added", "removed", "flipped" (left <-> right) or "changed"."""
    a, b = extract(draft), extract(final)
    out = {"side": _side_change(a.laterality, b.laterality), "lesion": _flag(a.lesion, b.lesion)}
    for lobe in LOBES:
        out[f"lobe:{lobe}"] = _flag(lobe in a.lobes, lobe in b.lobes)
    for finding in FINDINGS:
        out[finding] = _flag(bool(a.findings.get(finding)), bool(b.findings.get(finding)))
    return out


def _flag(before: bool, after: bool) -> str:
    return "same" if before == after else "added" if after else "removed"


def _side_change(before: str, after: str) -> str:
    if before == after:
        return "same"
    if {before, after} == {"left", "right"}:
        return "flipped"
    if before == "none":
        return "added"
    return "removed" if after == "none" else "changed"


def word_distance(first: str, second: str) -> int:
    """Word-level edit distance: the fewest insertions, deletions and substitutions of whole words (split at
    white space) that turn ``first`` into ``second``."""
    a, b = first.split(), second.split()
    previous = list(range(len(b) + 1))
    for i, word in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1]


def word_edit_rate(draft: str, final: str) -> float:
    """Word-level edit distance (insertions, deletions, substitutions) over the draft's words."""
    words = len(draft.split())
    if not words:
        return float(bool(final.split()))
    return word_distance(draft, final) / words


def week_of(moment: str) -> str:
    """ISO week ("2026-W48") of an ISO 8601 time; "unknown" when there is none."""
    try:
        year, week, _day = dt.datetime.fromisoformat(moment.replace("Z", "+00:00")).isocalendar()
    except ValueError:
        return "unknown"
    return f"{year}-W{week:02d}"


def summarise(reviews: list[dict]) -> dict:
    """The agreement figures: overall, per entity, per week, per checkpoint."""
    for review in reviews:
        review["changes"] = changes(review["draft"], review["final"])
        review["edit_rate"] = word_edit_rate(review["draft"], review["final"])
        review["week"] = week_of(review["signed_at"])

    def figures(group: list[dict]) -> dict:
        n = len(group)
        return {
            "reviews": n,
            "edited": sum(r["draft"].strip() != r["final"].strip() for r in group),
            "edit_rate": round(sum(r["edit_rate"] for r in group) / n, 4),
            "entity_changed": round(sum(set(r["changes"].values()) != {"same"} for r in group) / n, 4),
        }

    per_entity = {}
    for entity in ENTITIES:
        kinds = defaultdict(int)
        for review in reviews:
            kinds[review["changes"][entity]] += 1
        changed = len(reviews) - kinds["same"]
        per_entity[entity] = {
            "share_changed": round(changed / len(reviews), 4),
            **{k: kinds[k] for k in ("added", "removed", "flipped", "changed") if kinds[k]},
        }
    by = {"week": defaultdict(list), "checkpoint": defaultdict(list)}
    for review in reviews:
        by["week"][review["week"]].append(review)
        by["checkpoint"][review["checkpoint"][:12]].append(review)
    return {
        "overall": figures(reviews),
        "entities": per_entity,
        "weeks": {w: figures(g) for w, g in sorted(by["week"].items())},
        "checkpoints": {c: figures(g) for c, g in sorted(by["checkpoint"].items())},
    }


def markdown(result: dict, plot: str | None) -> str:
    overall = result["overall"]
    lines = [
        "# Agreement between AI drafts and signed reports",
        "",
        f"{overall['reviews']} signed reviews; {overall['edited']} edited; mean word edit rate "
        f"{overall['edit_rate']:.1%}; a clinical statement changed in {overall['entity_changed']:.0%} "
        "of them.",
        "",
        "## Per statement",
        "",
        "| statement | drafts changed | added | removed | flipped |",
        "|---|---|---|---|---|",
    ]
    for entity, row in result["entities"].items():
        lines.append(
            f"| {entity} | {row['share_changed']:.0%} | {row.get('added', 0)} | {row.get('removed', 0)} | "
            f"{row.get('flipped', 0) + row.get('changed', 0)} |"
        )
    for title, key in (("Per week", "weeks"), ("Per checkpoint (SHA-256)", "checkpoints")):
        lines += ["", f"## {title}", "", "| | reviews | word edit rate | statement changed |"]
        lines.append("|---|---|---|---|")
        for name, row in result[key].items():
            rate, changed = f"{row['edit_rate']:.1%}", f"{row['entity_changed']:.0%}"
            lines.append(f"| {name} | {row['reviews']} | {rate} | {changed} |")
    if plot:
        lines += ["", f"![word edit rate per week]({plot})"]
    return "\n".join(lines) + "\n"


def plot_weeks(result: dict, path: Path) -> Path:
    """The edit rate per week (PNG): the line a department watches after go-live."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weeks = list(result["weeks"])
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    ax.plot(weeks, [100 * result["weeks"][w]["edit_rate"] for w in weeks], marker="o", label="word edit rate")
    ax.plot(
        weeks,
        [100 * result["weeks"][w]["entity_changed"] for w in weeks],
        marker="s",
        label="drafts with a statement changed",
    )
    ax.set_ylabel("% of drafts / words")
    ax.set_ylim(bottom=0)
    ax.set_title("How radiologists changed the AI drafts, per week")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def agreement(sources: list[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Write agreement.md, agreement.json and edit_rate_per_week.png into ``out``; return the figures."""
    out = Path(out)
    result = summarise(read_reviews(sources))
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_weeks(result, out / "edit_rate_per_week.png")
    write_text_atomic(out / "agreement.json", json.dumps(result, indent=1) + "\n")
    write_text_atomic(out / "agreement.md", markdown(result, plot.name))
    return result


# --- between readers ----------------------------------------------------------------------------------------


def confusion(first: list, second: list) -> tuple[list[str], list[list[int]]]:
    """The k x k table of two readers' values on the same cases: ``table[i][j]`` counts the cases where the
    first stated category ``i`` and the second category ``j`` (categories as :func:`label` words, sorted)."""
    if len(first) != len(second):
        raise ValueError("two readers' values on the same cases: the lists must be as long")
    a, b = [label(v) for v in first], [label(v) for v in second]
    categories = sorted(set(a) | set(b))
    index = {c: i for i, c in enumerate(categories)}
    table = [[0] * len(categories) for _ in categories]
    for x, y in zip(a, b, strict=True):
        table[index[x]][index[y]] += 1
    return categories, table


def cohen_kappa(table: list[list[int]]) -> float | None:
    """Cohen's kappa of a k x k table: (p_o - p_e) / (1 - p_e), p_o the share on the diagonal, p_e the
    agreement expected by chance from the two readers' marginal shares; None when p_e is 1 (both readers gave
    one and the same category to every case: nothing to tell agreement from chance with) or the table is
    empty."""
    n = sum(map(sum, table))
    if not n:
        return None
    observed = sum(table[i][i] for i in range(len(table))) / n
    rows = [sum(row) / n for row in table]
    columns = [sum(row[j] for row in table) / n for j in range(len(table))]
    expected = sum(r * c for r, c in zip(rows, columns, strict=True))
    if expected >= 1 - 1e-12:
        return None
    return (observed - expected) / (1 - expected)


def label(value: object) -> str:
    """A statement's value as a word: "yes"/"no" for a flag, the side itself otherwise."""
    return {True: "yes", False: "no"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def compare_readers(annotations: list) -> dict:
    """The figures between readers of :func:`.annotations.read_annotations`' records (see the module
    docstring): ``readers``, ``pairs`` ("A vs B" -> figures), ``disagreements`` (per case)."""
    by_case: dict[str, dict[str, object]] = defaultdict(dict)
    adjudicated: dict[str, str] = {}
    readers: dict[str, dict[str, int]] = defaultdict(lambda: {ANNOTATED: 0, SKIPPED: 0})
    for a in sorted(annotations, key=lambda a: (a.case_id, a.folder)):
        if a.folder.startswith(ADJUDICATION_PREFIX):
            if a.status == ANNOTATED:
                adjudicated[a.case_id] = str(a.adjudicated_by)
            continue
        readers[a.folder][a.status] += 1
        if a.status == ANNOTATED:
            by_case[a.case_id][a.folder] = a
    if len(readers) < 2:
        raise InputError(f"agreement between readers needs two readers' records; found {len(readers)}")
    said = {
        case: {r: statements(a.final_entities) for r, a in found.items()} for case, found in by_case.items()
    }
    pairs = {}
    for first, second in combinations(sorted(readers), 2):
        common = sorted(c for c, found in by_case.items() if first in found and second in found)
        pair: dict = {"readers": [first, second], "cases": len(common)}
        if common:
            figures = {}
            for statement in _STATEMENTS:
                a = [said[c][first][statement] for c in common]
                b = [said[c][second][statement] for c in common]
                categories, table = confusion(a, b)
                kappa = cohen_kappa(table)
                figures[statement] = {
                    "agreement": round(sum(x == y for x, y in zip(a, b, strict=True)) / len(common), 4),
                    "kappa": None if kappa is None else round(kappa, 4),
                    "disagree": [c for c, x, y in zip(common, a, b, strict=True) if x != y],
                    "categories": categories,
                    "table": table,
                }
            distances = {
                c: word_distance(by_case[c][first].final_text, by_case[c][second].final_text) for c in common
            }
            rates = [
                d
                / max(
                    len(by_case[c][first].final_text.split()), len(by_case[c][second].final_text.split()), 1
                )
                for c, d in distances.items()
            ]
            pair["statements"] = figures
            pair["word_distance"] = {
                "mean": round(sum(distances.values()) / len(common), 4),
                "cases": distances,
            }
            pair["word_edit_rate"] = round(sum(rates) / len(rates), 4)
        pairs[f"{first} vs {second}"] = pair
    disagreements = []
    for case in sorted(by_case):
        found = by_case[case]
        if len(found) < 2:
            continue
        differ = {
            s: {r: label(said[case][r][s]) for r in sorted(found)}
            for s in _STATEMENTS
            if len({label(said[case][r][s]) for r in found}) > 1
        }
        if differ:
            disagreements.append(
                {
                    "case_id": case,
                    "texts": {r: found[r].final_text for r in sorted(found)},
                    "differences": differ,
                    "adjudicated_by": adjudicated.get(case),
                }
            )
    return {
        "kind": "readers",
        "readers": {r: dict(counts) for r, counts in sorted(readers.items())},
        "adjudicated": dict(sorted(adjudicated.items())),
        "pairs": pairs,
        "disagreements": disagreements,
    }


#: The statements, in the order of :data:`ENTITIES` (the same names).
_STATEMENTS = ENTITIES


def readers_markdown(result: dict) -> str:
    """agreement.md between readers: per pair the statements' agreement and kappa, then the cases to
    adjudicate with both texts and what differs."""
    readers = ", ".join(
        f"{r} ({c[ANNOTATED]} annotated, {c[SKIPPED]} skipped)" for r, c in result["readers"].items()
    )
    lines = [
        "# Agreement between readers",
        "",
        f"Readers: {readers}; {len(result['adjudicated'])} case(s) adjudicated. Research annotations, not "
        "clinical signatures.",
    ]
    for name, pair in result["pairs"].items():
        lines += ["", f"## {name}: {pair['cases']} case(s) annotated by both", ""]
        if not pair["cases"]:
            lines.append("No common case.")
            continue
        lines += [
            f"Word edit distance between their texts: {pair['word_distance']['mean']:g} word(s) per case on "
            f"average ({pair['word_edit_rate']:.1%} of the longer text).",
            "",
            "| statement | agreement | Cohen's kappa | cases that differ |",
            "|---|---|---|---|",
        ]
        for statement, row in pair["statements"].items():
            kappa = "n/a" if row["kappa"] is None else f"{row['kappa']:.2f}"
            lines.append(
                f"| {statement} | {row['agreement']:.0%} | {kappa} | {', '.join(row['disagree']) or '-'} |"
            )
    lines += ["", "## Cases where readers disagree (to adjudicate)", ""]
    if not result["disagreements"]:
        lines.append("None: the readers state the same on every common case.")
    for case in result["disagreements"]:
        names = list(case["texts"])
        done = f" (adjudicated by {case['adjudicated_by']})" if case["adjudicated_by"] else ""
        lines += [
            f"### {case['case_id']}{done}",
            "",
            "| statement | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(names),
        ]
        for statement, values in case["differences"].items():
            lines.append(f"| {statement} | " + " | ".join(values[r] for r in names) + " |")
        lines.append("")
        lines += [f"- **{r}**: {_one_line(text)}" for r, text in case["texts"].items()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def reader_agreement(annotations: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Write agreement.md and agreement.json between the readers of an annotations folder into ``out``."""
    found, _problems = read_annotations(annotations)
    result = compare_readers(found)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "agreement.json", json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    write_text_atomic(out / "agreement.md", readers_markdown(result))
    return result
