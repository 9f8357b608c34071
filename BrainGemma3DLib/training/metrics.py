"""Clinical scores of generated reports: the published keyword protocol, and our stricter truth-based scores.

- :func:`keyword_f1` reproduces the published protocol exactly, for comparability: whole-word keyword sets
  (laterality, anatomy, pathology) from the generated and the reference text, per-case F1, 1.0 when both sets
  are empty. It ignores negation: "no necrosis" counts as naming necrosis.
- :func:`strict_scores` compares negation-aware entities (``reporting.entities``) with each case's
  ``truth.json``: hemisphere accuracy and left/right flip rate (lesion cases), lobe F1, per-finding F1,
  healthy specificity (healthy cases with no lesion claimed) and lesion sensitivity, each with a 95% bootstrap
  interval over cases.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..reporting.entities import FINDINGS, Entities, extract, set_f1
from ..reporting.vocabulary import canonical_findings

KEYWORD_SETS = {
    "laterality": ("left", "right", "bilateral"),
    "anatomy": ("frontal", "parietal", "temporal", "occipital", "cerebellum", "ventricle", "periventricular"),
    "pathology": ("edema", "necrosis", "enhancement", "compression", "tumor", "mass", "lesion"),
}


def keywords(text: str, category: str) -> set[str]:
    """Whole-word keywords of ``category`` present in ``text`` (case-insensitive)."""
    lower = text.lower()
    return {w for w in KEYWORD_SETS[category] if re.search(rf"\b{re.escape(w)}\b", lower)}


def keyword_f1(generated: str, reference: str) -> dict[str, float]:
    """Per-case keyword F1 for each category of the published protocol."""
    return {cat: set_f1(keywords(generated, cat), keywords(reference, cat)) for cat in KEYWORD_SETS}


def binary_f1(predicted: Sequence[bool], actual: Sequence[bool]) -> float:
    """F1 of the positive class; 1.0 when neither side has a positive."""
    p, a = np.asarray(predicted, bool), np.asarray(actual, bool)
    tp = int((p & a).sum())
    fp, fn = int((p & ~a).sum()), int((~p & a).sum())
    if tp + fp + fn == 0:
        return 1.0
    return 2 * tp / (2 * tp + fp + fn)


def case_scores(entities: Entities, truth: dict) -> dict:
    """Per-case ingredients of the strict scores."""
    healthy = bool(truth.get("healthy"))
    row = {"healthy": healthy, "lesion_claimed": entities.lesion}
    if not healthy:
        hemi = truth["hemisphere"]
        row["hemisphere_correct"] = entities.laterality == hemi
        row["flip"] = {entities.laterality, hemi} == {"left", "right"}
        row["lobe_f1"] = set_f1(set(entities.lobes), set(truth["lobes"]))
    for f in FINDINGS:
        row[f"pred_{f}"] = bool(entities.findings.get(f))
        row[f"true_{f}"] = bool(canonical_findings(truth["findings"])[f])
    return row


def _aggregate(rows: list[dict]) -> dict[str, float]:
    lesion = [r for r in rows if not r["healthy"]]
    healthy = [r for r in rows if r["healthy"]]
    out: dict[str, float] = {}
    if lesion:
        out["hemisphere_accuracy"] = float(np.mean([r["hemisphere_correct"] for r in lesion]))
        out["flip_rate"] = float(np.mean([r["flip"] for r in lesion]))
        out["lobe_f1"] = float(np.mean([r["lobe_f1"] for r in lesion]))
        out["lesion_sensitivity"] = float(np.mean([r["lesion_claimed"] for r in lesion]))
    if healthy:
        out["healthy_specificity"] = float(np.mean([not r["lesion_claimed"] for r in healthy]))
    per_finding = [
        binary_f1([r[f"pred_{f}"] for r in rows], [r[f"true_{f}"] for r in rows]) for f in FINDINGS
    ]
    for f, value in zip(FINDINGS, per_finding, strict=True):
        out[f"{f}_f1"] = value
    out["finding_f1"] = float(np.mean(per_finding))
    return out


def strict_scores(
    generated: Sequence[str], truths: Sequence[dict], *, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Strict scores with 95% bootstrap intervals: ``{name: {"value", "ci_low", "ci_high"}}``."""
    rows = [case_scores(extract(text), truth) for text, truth in zip(generated, truths, strict=True)]
    point = _aggregate(rows)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        picked = [rows[i] for i in rng.integers(0, len(rows), len(rows))]
        for k, v in _aggregate(picked).items():
            samples[k].append(v)
    return {
        k: {
            "value": round(v, 4),
            "ci_low": round(float(np.percentile(samples[k], 2.5)), 4) if samples[k] else None,
            "ci_high": round(float(np.percentile(samples[k], 97.5)), 4) if samples[k] else None,
        }
        for k, v in point.items()
    }
