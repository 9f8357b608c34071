"""``braingemma3d evaluate``: generate reports for a split and score them three ways.

1. Text metrics with the scorers of the report-generation literature (R2Gen, TextBraTS), from the
   ``pycocoevalcap`` package, which ships everything it needs (no download at run time): BLEU-1..4, ROUGE-L,
   CIDEr, and METEOR (its bundled METEOR 1.5 jar runs on Java; without Java, METEOR is reported as null).
   Texts are lower-cased and split into words and punctuation, as those papers do.
2. The published keyword protocol (:func:`BrainGemma3DLib.training.metrics.keyword_f1`), for comparability.
3. Our strict, negation-aware scores against each case's ``truth.json`` with 95% bootstrap intervals.
4. With ``--explain``: the 3D LIME explanation of each pathological case's draft against its tumour labels
   (tumour + edema): how often the top supervoxel lies inside the lesion, and the share of the positive
   attribution mass that falls inside it (:func:`BrainGemma3DLib.explain.lesion_overlap`).

Writes ``metrics.json``, ``metrics.md`` and ``cases.csv`` into ``--out``, all or none.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from ..explain import explain, lesion_overlap
from ..io.atomic import staging_dir
from ..io.errors import InputError
from ..io.volume import load_study
from ..reporting.checks import consistency_warnings
from ..reporting.consensus import DecodingOptions, decode, describe
from ..reporting.entities import extract, structured_entities
from ..reporting.evidence import attribution_side
from .data import make_split, scan
from .grounding import lesion_on_grid
from .metrics import KEYWORD_SETS, keyword_f1, strict_scores

SEQUENCES_BY_CHANNELS = {1: ("flair",), 2: ("flair", "t1ce"), 3: ("flair", "t1ce", "t2")}


def _tokens(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+|[^\sa-z0-9]", text.lower()))


def text_metrics(generated: list[str], references: list[str]) -> dict[str, float | None]:
    """BLEU-1..4, ROUGE-L, CIDEr and METEOR with pycocoevalcap (see the module docstring)."""
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as exc:
        raise InputError("text metrics need pycocoevalcap: pip install 'braingemma3d[eval]'") from exc
    gts = {i: [_tokens(r)] for i, r in enumerate(references)}
    res = {i: [_tokens(g) or "."] for i, g in enumerate(generated)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out: dict[str, float | None] = {f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    out["METEOR"] = None
    if shutil.which("java"):
        from pycocoevalcap.meteor.meteor import Meteor

        out["METEOR"] = float(Meteor().compute_score(gts, res)[0])
    return out


def evaluate(
    model_ref: str,
    data: str | Path,
    split: str,
    out: str | Path,
    *,
    device: str = "auto",
    loading: dict | None = None,
    max_new_tokens: int | None = None,
    progress: bool = True,
    limit: int = 0,
    explain: bool = False,
    explain_options=None,
    decoding=None,
) -> dict:
    """Generate, score and write the three files; returns metrics.json's content.

    ``decoding``: :class:`~BrainGemma3DLib.reporting.consensus.DecodingOptions` (default: the report command's
    default, the consensus of 16 sampled drafts, so the scores are those of the drafts users get).
    """
    from tqdm import tqdm

    from ..model import load

    decoding = decoding or DecodingOptions()
    decoding.check()
    model = load(model_ref, **({"device": device} | (loading or {})))
    sequences = SEQUENCES_BY_CHANNELS[model.cfg.in_channels]
    found = scan(data, sequences)
    ckpt = Path(model.checkpoint_path or ".")
    split_file = ckpt / "split.json"
    parts = (
        json.loads(split_file.read_text(encoding="utf-8"))
        if split_file.is_file()
        else make_split(found.cases)
    )
    if split not in ("train", "val", "test", "all"):
        raise InputError(f"--split must be train, val, test or all (got {split!r})")
    by_id = {c.case_id: c for c in found.cases}
    ids = sorted(by_id) if split == "all" else [c for c in parts[split] if c in by_id]
    if limit:
        ids = ids[:limit]
    if not ids:
        raise InputError(f"no case of the {split} split is in this data folder", data)
    rows, generated, references, truths, overlaps = [], [], [], [], []
    for cid in tqdm(ids, desc="evaluate", unit="case", disable=not progress, file=sys.stderr):
        rec = by_id[cid]
        study = load_study([rec.images[s] for s in sequences])
        grid, mapping = study.to_model_grid(model.cfg.grid, method=model.cfg.preprocess)
        draft = decode(model, grid, decoding, max_new_tokens=max_new_tokens)
        generated.append(draft.text)
        references.append(rec.report)
        truths.append(rec.truth)
        kw = keyword_f1(draft.text, rec.report)
        rows.append(
            {
                "case_id": cid,
                "healthy": rec.healthy,
                **{f"kw_{k}": round(v, 4) for k, v in kw.items()},
                "generated": draft.text,
                "reference": rec.report,
            }
        )
        if explain and draft.text.strip():  # healthy cases too: the diffuse-evidence warning's false alarms
            overlaps.append(_explain_case(model, study, grid, mapping, draft.text, rec, explain_options))
            rows[-1].update({f"explain_{k}": v for k, v in overlaps[-1].items()})
    result: dict = {
        "model": model_ref,
        "checkpoint_sha256": model.checkpoint_sha256,
        "split": split,
        "cases": len(ids),
        "decoding": describe(model, decoding),
        "text": text_metrics(generated, references),
        "keyword_f1": {k: round(float(np.mean([r[f"kw_{k}"] for r in rows])), 4) for k in KEYWORD_SETS},
    }
    if overlaps:
        result["explain"] = _explain_summary(overlaps)
    if all(t is not None for t in truths):
        result["strict"] = strict_scores(generated, truths)

        for row, text in zip(rows, generated, strict=True):
            ent = extract(text)
            row.update(
                pred_laterality=ent.laterality,
                pred_lobes=";".join(ent.lobes),
                **{f"pred_{k}": v for k, v in ent.findings.items()},
            )
        for row, truth in zip(rows, truths, strict=True):
            row.update(true_hemisphere=truth["hemisphere"], true_lobes=";".join(truth["lobes"]))
    with staging_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        (tmp / "metrics.md").write_text(metrics_markdown(result), encoding="utf-8")
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for r in rows for k in r))
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        (tmp / "cases.csv").write_text(buf.getvalue(), encoding="utf-8")
    return result


def _explain_case(model, study, grid, mapping, text: str, rec, options) -> dict:
    """Explain one draft; score it against the case's tumour + edema labels on the grid (lesion cases) and
    record how compact its evidence is and whether the diffuse-evidence warning fires (every case).

    Lesion cases with a truth also get the lobe check: the atlas registered to the scan says which lobes hold
    the evidence, and the lobe warning is recorded for the draft as written and for the same draft with its
    lobes replaced by one the lesion does not touch (a crafted wrong-lobe draft, judged against the same
    evidence), so its false alarms (drafts naming the true lobes) and hits (wrong lobes) can be counted.
    """
    from ..anatomy import evidence_places, place_study
    from ..anatomy.atlas import LOBES

    found = explain(model, grid, mapping.foreground, mapping.grid_spacing, text, options=options)
    side = attribution_side(found.attribution_map(), mapping)
    entities = structured_entities(text)
    diffuse = any(w.startswith("Diffuse evidence") for w in consistency_warnings(entities, side))
    row = {"compact_fraction": side["compact_fraction"], "diffuse_warning": diffuse}
    if rec.seg is not None:
        row |= lesion_overlap(found, lesion_on_grid(rec.seg, mapping)[0] >= 0.5)
    truth_lobes = set((rec.truth or {}).get("lobes") or [])
    placement = place_study(study.channel(0)) if rec.seg is not None and truth_lobes else None
    if placement is not None:
        side |= evidence_places(mapping.to_input(found.attribution_map()).data[0], placement)

        def lobe_warning(lobes: list[str]) -> bool:
            said = entities | {"lobes": lobes}
            return any(w.startswith("Lobe conflict") for w in consistency_warnings(said, side))

        wrong = next(lobe for lobe in LOBES if lobe not in truth_lobes) if len(truth_lobes) < 4 else None
        drafted = set(entities["lobes"])
        row |= {
            "evidence_lobes": ";".join(side.get("lobes") or []),
            "evidence_lobe_fractions": json.dumps(side.get("lobe_fractions") or {}, sort_keys=True),
            "draft_lobes_correct": drafted == truth_lobes,
            "draft_lobes_wrong": bool(drafted) and not drafted & truth_lobes,
            "lobe_warning": lobe_warning(entities["lobes"]),
            "lobe_warning_crafted_wrong": lobe_warning([wrong]) if wrong else None,
        }
    return row | {"seconds": round(found.seconds, 2), "healthy": rec.seg is None}


def _explain_summary(overlaps: list[dict]) -> dict:
    """Rates with 95% bootstrap intervals (cases resampled), as the strict scores."""
    rng = np.random.default_rng(0)
    lesions = [o for o in overlaps if not o["healthy"]]

    def stat(values: np.ndarray) -> dict:
        if not len(values):
            return {"value": None, "ci_low": None, "ci_high": None}
        picks = rng.integers(0, len(values), size=(1000, len(values)))
        boots = values[picks].mean(axis=1)
        return {
            "value": round(float(values.mean()), 4),
            "ci_low": round(float(np.percentile(boots, 2.5)), 4),
            "ci_high": round(float(np.percentile(boots, 97.5)), 4),
        }

    def rate(rows: list[dict], key: str) -> dict:
        return stat(np.array([float(o[key]) for o in rows], float))

    healthy = [o for o in overlaps if o["healthy"]]
    return {
        "cases": len(lesions),
        "top_supervoxel_in_lesion": rate(lesions, "top_inside"),
        "positive_mass_in_lesion": rate(lesions, "mass_inside"),
        "median_seconds": round(float(np.median([o["seconds"] for o in overlaps])), 2),
        # How often the diffuse-evidence warning fires: on true lesions (false alarms) and on healthy brains
        # (where any lesion draft is wrong and the warning is wanted).
        "diffuse_warning_on_lesions": rate(lesions, "diffuse_warning"),
        "diffuse_warning_on_healthy": rate(healthy, "diffuse_warning"),
        "healthy_cases": len(healthy),
        "median_compact_fraction_lesions": _median(lesions, "compact_fraction"),
        "median_compact_fraction_healthy": _median(healthy, "compact_fraction"),
        # The lobe check (registered atlas): false alarms on drafts naming the true lobes, hits on drafts
        # naming only wrong ones (the model's own, and each draft with its lobes replaced by a wrong one).
        **_lobe_rates(lesions, rate),
    }


def _lobe_rates(lesions: list[dict], rate) -> dict:
    checked = [o for o in lesions if "lobe_warning" in o]
    if not checked:
        return {}
    correct = [o for o in checked if o["draft_lobes_correct"]]
    wrong = [o for o in checked if o["draft_lobes_wrong"]]
    crafted = [
        {"fired": o["lobe_warning_crafted_wrong"]}
        for o in checked
        if o["lobe_warning_crafted_wrong"] is not None
    ]
    return {
        "lobe_checked_cases": len(checked),
        "lobe_warning_on_correct_drafts": rate(correct, "lobe_warning"),
        "lobe_correct_drafts": len(correct),
        "lobe_warning_on_wrong_drafts": rate(wrong, "lobe_warning"),
        "lobe_wrong_drafts": len(wrong),
        "lobe_warning_on_crafted_wrong_drafts": rate(crafted, "fired"),
    }


def _median(rows: list[dict], key: str) -> float | None:
    return round(float(np.median([o[key] for o in rows])), 4) if rows else None


def metrics_markdown(result: dict) -> str:
    """A readable summary of metrics.json."""
    lines = [f"# Evaluation: {result['model']} on the {result['split']} split ({result['cases']} cases)", ""]
    decoding = result.get("decoding") or {"method": "greedy"}
    if decoding["method"] == "consensus":
        lines += [
            f"Decoding: consensus of the greedy draft and {decoding['samples']} drafts sampled at "
            f"temperature {decoding['temperature']:g} (seed {decoding['seed']}).",
            "",
        ]
    elif decoding["method"] == "published sampling":
        lines += [
            f"Decoding: the published sampling (temperature {decoding['temperature']:g}, top-p "
            f"{decoding['top_p']:g}, repetition penalty {decoding['repetition_penalty']:g}, "
            f"seed {decoding['seed']}).",
            "",
        ]
    else:
        lines += ["Decoding: greedy.", ""]
    lines += ["| text metric | value |", "|---|---|"]
    lines += [f"| {k} | {'n/a' if v is None else f'{v:.4f}'} |" for k, v in result["text"].items()]
    lines += ["", "| published keyword F1 | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in result["keyword_f1"].items()]
    if "strict" in result:
        lines += ["", "| strict score (vs truth.json) | value | 95% CI |", "|---|---|---|"]
        for k, v in result["strict"].items():
            lines.append(f"| {k} | {v['value']:.4f} | {v['ci_low']:.4f} – {v['ci_high']:.4f} |")
    if "explain" in result:
        ex = result["explain"]
        lines += [
            "",
            f"| 3D LIME vs tumour + edema ({ex['cases']} cases) | value | 95% CI |",
            "|---|---|---|",
        ]
        for k in ("top_supervoxel_in_lesion", "positive_mass_in_lesion"):
            v = ex[k]
            lines.append(f"| {k} | {v['value']:.4f} | {v['ci_low']:.4f} – {v['ci_high']:.4f} |")
        lines.append(f"| median seconds per explanation | {ex['median_seconds']:.2f} | |")
        for k, label in (
            ("diffuse_warning_on_lesions", "diffuse-evidence warning on true lesions"),
            (
                "diffuse_warning_on_healthy",
                f"diffuse-evidence warning on healthy brains ({ex['healthy_cases']})",
            ),
            (
                "lobe_warning_on_correct_drafts",
                f"lobe warning on drafts naming the true lobes ({ex.get('lobe_correct_drafts', 0)})",
            ),
            (
                "lobe_warning_on_wrong_drafts",
                f"lobe warning on drafts naming only wrong lobes ({ex.get('lobe_wrong_drafts', 0)})",
            ),
            ("lobe_warning_on_crafted_wrong_drafts", "lobe warning on crafted wrong-lobe drafts"),
        ):
            v = ex.get(k)
            if v and v["value"] is not None:
                lines.append(f"| {label} | {v['value']:.4f} | {v['ci_low']:.4f} – {v['ci_high']:.4f} |")
    return "\n".join(lines) + "\n"


#: Columns of the design comparison (docs/results.md): (heading, section of metrics.json, key).
COMPARISON_COLUMNS = (
    ("BLEU-4", "text", "BLEU-4"),
    ("ROUGE-L", "text", "ROUGE-L"),
    ("kw F1 laterality", "keyword_f1", "laterality"),
    ("kw F1 anatomy", "keyword_f1", "anatomy"),
    ("kw F1 pathology", "keyword_f1", "pathology"),
    ("hemisphere acc.", "strict", "hemisphere_accuracy"),
    ("L/R flips", "strict", "flip_rate"),
    ("lobe F1", "strict", "lobe_f1"),
    ("finding F1", "strict", "finding_f1"),
    ("healthy spec.", "strict", "healthy_specificity"),
)


def comparison_markdown(runs: list[tuple[str, dict]]) -> str:
    """One row per evaluated design (``metrics.json`` contents), the comparison columns of docs/results.md."""
    head = "| design | cases | " + " | ".join(c[0] for c in COMPARISON_COLUMNS) + " |"
    lines = [head, "|---" * (len(COMPARISON_COLUMNS) + 2) + "|"]
    for name, result in runs:
        cells = []
        for _, section, key in COMPARISON_COLUMNS:
            value = result.get(section, {}).get(key)
            if isinstance(value, dict):
                value = value.get("value")
            cells.append("n/a" if value is None else f"{value:.3f}")
        lines.append(f"| {name} | {result.get('cases', '?')} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
