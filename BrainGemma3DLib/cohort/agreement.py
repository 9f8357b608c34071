"""``braingemma3d agreement``: how radiologists changed the AI drafts, the figure a department watches.

Each signed review holds the AI draft and the final text. Both are read with the report entity reader
(side, lesion, each lobe, each finding; negation-aware) and compared: per entity, the share of drafts the
radiologist changed and how (added, removed, flipped left/right); and the word-level edit rate (word edit
distance / words of the draft). Grouped over time (ISO week of signing) and by checkpoint (its SHA-256), so
a drift after go-live or a new model's effect shows as a change of these numbers.

Input: a curated data set (``curate``'s folder: ``*_review.json`` beside each final text and AI draft), or
signing audit records (``*.audit.json``, or folders holding them).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from pathlib import Path

from ..io.atomic import atomic_path, write_text_atomic
from ..io.errors import InputError
from ..reporting.entities import extract
from ..reporting.vocabulary import FINDINGS, LOBES

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


def word_edit_rate(draft: str, final: str) -> float:
    """Word-level edit distance (insertions, deletions, substitutions) over the draft's words."""
    a, b = draft.split(), final.split()
    if not a:
        return float(bool(b))
    previous = list(range(len(b) + 1))
    for i, word in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1] / len(a)


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
