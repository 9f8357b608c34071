"""The lobe check's false alarms and hits at each threshold, from ``evaluate --explain`` case tables.

``evaluate --explain`` records, per lesion case, where the draft's evidence lies by the registered atlas
(``explain_evidence_lobe_fractions``), the draft's lobes and the truth's. The warning fires when one lobe the
draft does not name holds at least the threshold share of the evidence. Counted here: false alarms on drafts
naming exactly the true lobes, hits on drafts naming only wrong lobes, and hits on each draft with its lobes
replaced by the first lobe its lesion does not touch (judged against the same evidence). Tune on one seed,
report on another::

    braingemma3d phantoms --out build/lobes/tune --n 30 --healthy 0 --seed 7171 --sequences flair
    braingemma3d evaluate --model demo --data build/lobes/tune --split all --explain \\
        --out build/lobes/eval-tune
    braingemma3d evaluate --model demo --data build/heldout/own --split all --limit 40 --explain \\
        --out build/lobes/eval-heldout
    .venv/bin/python tools/lobe_check_rates.py build/lobes/eval-tune/cases.csv --sweep
    .venv/bin/python tools/lobe_check_rates.py build/lobes/eval-heldout/cases.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

LOBES = ("frontal", "parietal", "temporal", "occipital")


def fires(fractions: dict[str, float], named: set[str], threshold: float) -> bool:
    if not fractions or not named:
        return False
    dominant = max(fractions, key=lambda lobe: fractions[lobe])
    return fractions[dominant] >= threshold and dominant not in named


def rates(rows: list[dict], threshold: float) -> dict:
    correct = wrong = crafted = 0
    alarms = hits = crafted_hits = 0
    for row in rows:
        fractions = json.loads(row["explain_evidence_lobe_fractions"])
        truth = set(filter(None, row["true_lobes"].split(";")))
        drafted = set(filter(None, row["pred_lobes"].split(";")))
        if drafted == truth:
            correct += 1
            alarms += fires(fractions, drafted, threshold)
        elif drafted and not drafted & truth:
            wrong += 1
            hits += fires(fractions, drafted, threshold)
        other = next((lobe for lobe in LOBES if lobe not in truth), None)
        if other:
            crafted += 1
            crafted_hits += fires(fractions, {other}, threshold)
    share = lambda a, b: a / b if b else float("nan")  # noqa: E731
    return {
        "threshold": threshold,
        "correct_drafts": correct,
        "false_alarms": share(alarms, correct),
        "wrong_drafts": wrong,
        "hits_on_wrong_drafts": share(hits, wrong),
        "crafted": crafted,
        "hits_on_crafted": share(crafted_hits, crafted),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", type=Path, help="cases.csv of evaluate --explain")
    parser.add_argument("--threshold", type=float, default=None, help="default: the library's")
    parser.add_argument("--sweep", action="store_true", help="every threshold from 0.40 to 0.90")
    args = parser.parse_args()
    from BrainGemma3DLib.reporting.checks import LOBE_CONFLICT_SHARE

    with open(args.cases, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("explain_evidence_lobe_fractions")]
    thresholds = [round(0.40 + 0.05 * i, 2) for i in range(11)] if args.sweep else [
        args.threshold if args.threshold is not None else LOBE_CONFLICT_SHARE
    ]  # fmt: skip
    print("| threshold | false alarms (correct drafts) | hits (wrong drafts) | hits (crafted wrong) |")
    print("|---|---|---|---|")
    for threshold in thresholds:
        r = rates(rows, threshold)
        print(
            f"| {threshold:.2f} | {r['false_alarms']:.3f} ({r['correct_drafts']}) | "
            f"{r['hits_on_wrong_drafts']:.3f} ({r['wrong_drafts']}) | "
            f"{r['hits_on_crafted']:.3f} ({r['crafted']}) |"
        )


if __name__ == "__main__":
    main()
