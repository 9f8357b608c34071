"""The structured report (report.json / report.txt) and the left/right consistency check.

A generated report is a *draft*: the radiologist reads, edits and signs it.  This module turns the free text
into the versioned ``report.json`` contract (DESIGN.md §5): sections, negation-aware entities, the model and
input it came from, timings, and a notice that a radiologist must review it.

The one clinical error this product exists to prevent is a left/right flip, so the report also carries a
cross-check between what the text says and where the image evidence is: :func:`attribution_side` measures on
which side of the brain's mid-sagittal line the positive attribution mass lies, in patient (RAS) coordinates
through the grid's affine, and :func:`consistency_warnings` turns a disagreement into a plain sentence that
always says "patient's left/right" (never an image side, which depends on the display convention).
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..io.atomic import write_text_atomic
from ..io.stamps import utc_iso
from ..io.volume import GridMapping
from .entities import extract
from .vocabulary import FINDINGS, LOBES

__all__ = [
    "BILATERAL_MIN_FRACTION",
    "NOTICE",
    "SCHEMA_VERSION",
    "STRONG_LATERALISATION",
    "SUMMARY_CUES",
    "attribution_side",
    "build_report",
    "consistency_warnings",
    "report_text",
    "split_sections",
    "structured_entities",
    "write_report",
]

#: Version of the report.json layout; bump it when a key changes meaning or disappears.
SCHEMA_VERSION = "1.0"
#: Shown at the top of every report file: the text is a draft until a radiologist signs it.
NOTICE = "AI-generated draft — requires review by a radiologist"
#: Attribution is "bilateral" when each side holds at least this share of the positive mass.
BILATERAL_MIN_FRACTION = 0.35
#: |lateralisation index| from which the evidence counts as clearly one-sided for the consistency check.
#: 0.3 means a 65 % / 35 % split: with BILATERAL_MIN_FRACTION = 0.35, a side is named exactly when it
#: is strong.
STRONG_LATERALISATION = 0.3
#: "Compact" evidence: the share of the positive attribution mass within this distance of the strongest
#: region. A lesion is a compact thing; evidence spread over the brain means the model did not find one.
COMPACT_RADIUS_MM = 25.0
#: Below this compact share, a draft that reports a lesion gets the diffuse-evidence warning (measured on
#: phantoms: docs/results.md, "Diffuse evidence").
DIFFUSE_MAX_COMPACT = 0.4

# --- sections -----------------------------------------------------------------------------------------------

_FINDINGS_NAMES = ("finding", "findings")
_IMPRESSION_NAMES = (
    "impression",
    "impressions",
    "conclusion",
    "conclusions",
    "summary",
    "assessment",
    "opinion",
)
#: Headers that are neither findings nor impression: their content goes into neither section.
_OTHER_NAMES = (
    "technique",
    "history",
    "clinical history",
    "indication",
    "comparison",
    "clinical information",
)
_NAMES = "|".join(
    sorted((*_FINDINGS_NAMES, *_IMPRESSION_NAMES, *_OTHER_NAMES), key=len, reverse=True)
).replace(" ", r"\s+")
# A header starts a line or a sentence, may be decorated (markdown "#", "**") and qualified ("Overall
# impression"), and ends with ":" or a spaced dash or the end of its line; an all-capital header ("FINDINGS
# A mass ...") needs nothing after it.  "Findings are consistent with ..." is a sentence, not a header.
_HEADER = re.compile(
    r"(?:^|(?<=[.!?])[ \t]+)[ \t]*(?:#+[ \t]*)?(?:\*\*)?(?:(?:overall|final|clinical)[ \t]+)?"
    rf"(?:(?P<name>{_NAMES})(?:\*\*)?[ \t]*(?::|[-–—](?=\s)|(?=\r?\n|\Z))"
    r"|(?-i:(?P<caps>FINDINGS?|IMPRESSIONS?|CONCLUSIONS?|SUMMARY|ASSESSMENT))(?=[ \t]))(?:\*\*)?",
    re.IGNORECASE | re.MULTILINE,
)
#: Regular expressions (lower case, matched at a sentence's start) of sentences that summarise a report
#: without a header; the last such sentence is the impression.
SUMMARY_CUES: tuple[str, ...] = (
    r"overall\b",
    r"in (summary|conclusion)\b",
    r"to (summari[sz]e|conclude)\b",
    r"(summary|impression|conclusion)\b",
    r"(the |these )?(findings|features|appearances?) (are|is) (most )?(consistent|compatible|suggestive)\b",
    r"(the |these )?(findings|features|appearances?) (suggest|favou?r|represent|indicate)",
    r"(suggestive|consistent|compatible) with\b",
    r"suggestive of\b",
    r"most likely\b",
    r"normal (brain )?mri\b",
    r"no (acute )?intracranial abnormalit",
)
_SUMMARY = re.compile(r"(?:" + "|".join(SUMMARY_CUES) + r")")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


def _kind(name: str) -> str:
    name = " ".join(name.lower().split())
    if name in _FINDINGS_NAMES:
        return "findings"
    return "impression" if name in _IMPRESSION_NAMES else "other"


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each non-empty sentence, so sections keep the text's own characters."""
    spans, start = [], 0
    for m in _SENTENCE_BREAK.finditer(text):
        if text[start : m.start()].strip():
            spans.append((start, m.start()))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def sentence_at(text: str, offset: int) -> tuple[int, int] | None:
    """The (start, end) of the sentence holding character ``offset`` (a text cursor), or None between them.

    The Slicer panel asks "which regions support this statement?" for the sentence under the cursor; a
    cursor just after a sentence's full stop still means that sentence, as a reader would expect.
    """
    for start, end in _sentence_spans(text):
        if start <= offset <= end:
            return start, end
    return None


def split_sections(text: str) -> dict[str, str]:
    """Split a report into ``{"findings": ..., "impression": ...}``, keeping its own wording.

    Radiologists read the impression first, and the PDF and the Slicer panel show it apart, so it has to be
    found whether or not the model wrote headers.  With headers ("Findings:", "FINDINGS", "Impression -",
    "Conclusion:", any case; also inline, "... lobe. Impression: ..."), each section is the text under its
    header, headers removed; text before the first header and under unknown headers counts as findings, while
    "Technique:", "History:" and the like go into neither.  Without headers, the last sentence that starts
    like a summary (:data:`SUMMARY_CUES`: "Overall, ...", "In summary, ...", "Findings are consistent with
    ...") is the impression and everything else the findings; when no sentence does, the impression is "".
    """
    headers = list(_HEADER.finditer(text))
    if headers:
        parts: dict[str, list[str]] = {"findings": [], "impression": [], "other": []}
        preamble = text[: headers[0].start()].strip()
        if preamble:
            parts["findings"].append(preamble)
        for i, m in enumerate(headers):
            end = headers[i + 1].start() if i + 1 < len(headers) else len(text)
            body = text[m.end() : end].strip()
            if body:
                parts[_kind(m.group("name") or m.group("caps"))].append(body)
        return {"findings": "\n".join(parts["findings"]), "impression": "\n".join(parts["impression"])}

    spans = _sentence_spans(text)
    chosen = None
    for start, end in spans:
        lead = text[start:end].lstrip(" \t-*•\"'(").lower()
        if _SUMMARY.match(lead):
            chosen = (start, end)
    if chosen is None:
        return {"findings": text.strip(), "impression": ""}
    start, end = chosen
    before, after = text[:start].strip(), text[end:].strip()
    findings = f"{before} {after}" if before and after else before or after
    return {"findings": findings, "impression": text[start:end].strip()}


# --- entities -----------------------------------------------------------------------------------------------

# Wording of mass effect that the extractor does not know, rewritten into its "compression" vocabulary so the
# same negation rules apply ("without mass effect" is absent, "no midline shift" too).
_MASS_EFFECT_WORDS = (
    (re.compile(r"\bmass[\s-]+effects?\b", re.IGNORECASE), "compression"),
    (re.compile(r"\beffaced\b", re.IGNORECASE), "compressed"),
    (re.compile(r"\beffacing\b", re.IGNORECASE), "compressing"),
    (re.compile(r"\bherniation\b", re.IGNORECASE), "compression"),
)
# In a sentence about the midline, a shift or displacement is mass effect ("the midline is shifted").
_MIDLINE_WORDS = re.compile(r"\b(shift|shifted|shifting|displaced|displacement|deviation|deviated)\b", re.I)
# Lesion names the extractor does not know (it knows lesion, mass, tumor), so "a glioblastoma" is a lesion.
_LESION_WORDS = re.compile(
    r"\b(lesions|masses|tumou?rs|tumour|gliomas?|glioblastomas?|astrocytomas?|metastas[ie]s|neoplasms?)\b",
    re.IGNORECASE,
)


def _mass_effect_text(text: str) -> str:
    """``text`` with mass-effect wording in the extractor's words, one sentence per line."""
    out = []
    for sentence in re.split(r"(?<=[.!?;])\s+|\n+", text):
        for pattern, word in _MASS_EFFECT_WORDS:
            sentence = pattern.sub(word, sentence)
        if re.search(r"\bmidline\b", sentence, re.IGNORECASE) and not re.search(
            r"\bcross(es|ing)? the midline\b", sentence, re.IGNORECASE
        ):
            sentence = _MIDLINE_WORDS.sub("compression", sentence)
        out.append(_LESION_WORDS.sub("lesion", sentence))
    return "\n".join(out)


def structured_entities(text: str) -> dict:
    """The report.json ``entities`` block: laterality, lobes, four findings and whether a lesion is claimed.

    ``findings`` values are True (stated present), False (stated absent, negation-aware: "no necrosis") or
    None (not mentioned), so a reader can tell "denied" from "not looked at".  ``mass_effect`` gathers the
    ways a report says the lesion pushes on its surroundings: ventricular compression, mass effect, midline
    shift, effacement, herniation; a positive statement anywhere wins over a denial elsewhere, as in
    :func:`BrainGemma3DLib.reporting.entities.extract`.  Lobes come in the fixed order of
    :data:`~BrainGemma3DLib.reporting.vocabulary.LOBES`, so two reports naming the same lobes compare equal.
    """
    plain = extract(text)
    rewritten = extract(_mass_effect_text(text))
    findings = {f: (rewritten if f == "mass_effect" else plain).findings.get(f) for f in FINDINGS}
    return {
        "laterality": plain.laterality,
        "lobes": [lobe for lobe in LOBES if lobe in plain.lobes],
        "findings": findings,
        "lesion": bool(plain.lesion or rewritten.lesion or findings["mass_effect"]),
    }


# --- where the evidence is ----------------------------------------------------------------------------------


def _x_axis(grid_affine: np.ndarray) -> int:
    """The grid axis that runs most nearly along the patient's right-left (world x) direction."""
    row = np.abs(np.asarray(grid_affine, dtype=np.float64)[0, :3])
    if not row.any():
        raise ValueError("the grid affine has no right-left component; cannot tell left from right")
    return int(np.argmax(row))


def _midline_x(brain: np.ndarray, mapping: GridMapping) -> float:
    """World x (mm) of the brain's mid-sagittal line: weighted median of the mask's row midpoints.

    Why this estimate: the outline of the brain (or head) is mirror-symmetric about the mid-sagittal plane,
    so the midpoint of each right-left row of the mask lies on it, whatever the brain's position on the grid.
    A lesion, necrosis or mass effect changes the inside of the filled mask, not its outline.  The median
    ignores rows spoilt by a field of view that cuts the head, by the neck or by noise, where the mask's
    centre of mass along x would be pulled toward the larger side; weighting by row length lets the wide
    central rows outvote the short, unreliable ones at the vertex and skull base.  One x for the whole
    brain: a head tilted by a few degrees moves the true plane by a few mm away from the centre, which only
    matters for evidence near the midline, and that is counted as bilateral anyway.
    """
    k = _x_axis(mapping.grid_affine)
    rows = np.moveaxis(brain, k, -1)  # (P, Q, N): each [p, q] is one row along the right-left axis
    n = rows.shape[-1]
    has = rows.any(axis=-1)
    first = rows.argmax(axis=-1)
    last = n - 1 - rows[..., ::-1].argmax(axis=-1)
    p, q = np.nonzero(has)
    others = [axis for axis in range(3) if axis != k]
    index = np.zeros((p.size, 3), dtype=np.float64)
    index[:, others[0]], index[:, others[1]] = p, q
    ends = []
    for along in (first[p, q], last[p, q]):
        index[:, k] = along
        ends.append(mapping.grid_to_world(index)[:, 0])
    mid = (ends[0] + ends[1]) / 2.0
    weight = (last[p, q] - first[p, q] + 1).astype(np.float64)
    order = np.argsort(mid)
    cumulative = np.cumsum(weight[order])
    return float(mid[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def _peak_ras(positive: np.ndarray, mapping: GridMapping) -> list[float]:
    """RAS centre of the strongest region: LIME maps are constant per supervoxel, so the single arg-max
    voxel would be an arbitrary corner of the top supervoxel; its connected plateau's centroid is not."""
    top = positive >= positive.max() * (1.0 - 1e-6)
    labels, _ = ndimage.label(top)
    label = labels.flat[int(np.argmax(positive))]
    centre = np.argwhere(labels == label).mean(axis=0)
    return [round(float(v), 2) for v in mapping.grid_to_world(centre)]


def attribution_side(attribution: np.ndarray, mapping: GridMapping, brain: np.ndarray | None = None) -> dict:
    """On which side of the patient's brain the positive attribution mass lies.

    ``attribution`` is a float map on the model grid ``(D, H, W)`` (e.g. ``Explanation.attribution_map()``);
    only its positive part inside ``brain`` (default: ``mapping.foreground``; the whole grid if that is
    empty) counts, since positive weights are the voxels that made the model *more* likely to write its text.
    Each voxel's side comes from its world (RAS) x coordinate through ``mapping.grid_affine`` compared with
    the mid-sagittal line's x (see :func:`_midline_x`), never from its array index, so the answer is right
    for any grid direction and any brain position.  RAS x grows toward the patient's *right*.

    Returns ``{"side": "left"|"right"|"bilateral"|"none", "left_fraction", "right_fraction",
    "lateralisation" ((L-R)/(L+R), +1 all left, -1 all right), "peak_ras" ([x, y, z] mm of the strongest
    region, None without positive mass), "midline_ras_x", "compact_fraction" (share of the positive mass
    within :data:`COMPACT_RADIUS_MM` of the strongest region)}``; "bilateral" when each side holds at least
    :data:`BILATERAL_MIN_FRACTION` of the mass.
    """
    att = np.asarray(attribution, dtype=np.float64)
    shape = tuple(int(s) for s in mapping.grid_shape)
    if att.shape != shape:
        raise ValueError(f"attribution shape {att.shape} is not the grid shape {shape}")
    mask = np.asarray(mapping.foreground if brain is None else brain, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"brain mask shape {mask.shape} is not the grid shape {shape}")
    if not mask.any():
        mask = np.ones(shape, dtype=bool)
    midline = _midline_x(mask, mapping)
    positive = np.where(mask & np.isfinite(att) & (att > 0), att, 0.0)
    total = float(positive.sum())
    if not total > 0:
        return {
            "side": "none",
            "left_fraction": 0.0,
            "right_fraction": 0.0,
            "lateralisation": 0.0,
            "peak_ras": None,
            "midline_ras_x": round(midline, 2),
            "compact_fraction": 0.0,
        }
    world = mapping.world_coordinates()
    x = world[..., 0]
    peak = _peak_ras(positive, mapping)
    near = np.linalg.norm(world - np.asarray(peak), axis=-1) <= COMPACT_RADIUS_MM
    left = float(positive[x < midline].sum())  # RAS: smaller x = patient's left
    right = float(positive[x > midline].sum())
    on_line = total - left - right  # voxels exactly on the midline count half to each side
    left, right = left + on_line / 2.0, right + on_line / 2.0
    left_fraction, right_fraction = left / total, right / total
    if min(left_fraction, right_fraction) >= BILATERAL_MIN_FRACTION:
        side = "bilateral"
    else:
        side = "left" if left_fraction > right_fraction else "right"
    return {
        "side": side,
        "left_fraction": round(left_fraction, 4),
        "right_fraction": round(right_fraction, 4),
        "lateralisation": round((left - right) / total, 4),
        "peak_ras": peak,
        "midline_ras_x": round(midline, 2),
        "compact_fraction": round(float(positive[near].sum()) / total, 4),
    }


# --- consistency --------------------------------------------------------------------------------------------


def _percent(fraction: float) -> str:
    return f"{round(100.0 * float(fraction))}%"


def text_warnings(entities: dict, report: dict) -> list[str]:
    """Every warning that depends on the text: against the image evidence (side, lobes, diffuse) and against
    a tumour segmentation's measured facts (:func:`BrainGemma3DLib.anatomy.measure.measured_warnings`).
    Recomputed whenever the text changes (an edit, the Slicer panel), so a fix clears its warning."""
    from ..anatomy.measure import measured_warnings

    return consistency_warnings(entities, report.get("attribution")) + measured_warnings(
        entities, report.get("measured")
    )


def consistency_warnings(entities: dict, side: dict | None) -> list[str]:
    """Plain sentences for a radiologist when the text's side and the image evidence's side disagree.

    Warned: the text says left (right) and the evidence is clearly on the patient's right (left); the text
    says bilateral and the evidence is clearly one-sided; the text reports no lesion and the evidence is
    clearly one-sided.  "Clearly" is a named side with ``|lateralisation| >= STRONG_LATERALISATION``; weak,
    bilateral or absent evidence never warns, because LIME maps are noisy and a warning that cries wolf gets
    ignored.  A lesion whose side the text does not state is not checked (nothing to contradict).
    Every sentence names the patient's left *and* right, so it cannot be misread against the display.

    Also warned: the text reports a lesion but its positive evidence is diffuse (less than
    :data:`DIFFUSE_MAX_COMPACT` of it within :data:`COMPACT_RADIUS_MM` of the strongest region): no compact
    region of the image supports the lesion the text describes.
    """
    return _side_warnings(entities, side) + _lobe_warnings(entities, side) + _diffuse_warnings(entities, side)


#: The lobe check warns when at least this share of the positive evidence (among lobe voxels, by the
#: registered atlas) lies in one lobe the text does not name: most of it. Tuned on phantoms of seed 7171 (no
#: false alarm from 0.40 to 0.90; hits fall as it rises; below one half the warning could no longer say
#: "most"), reported on the held-out seed: docs/results.md, "Anatomy: registered atlas".
LOBE_CONFLICT_SHARE = 0.5


def _lobe_warnings(entities: dict, side: dict | None) -> list[str]:
    if not side or not side.get("lobe_fractions") or not entities.get("lobes"):
        return []
    fractions = side["lobe_fractions"]
    dominant = max(fractions, key=lambda name: fractions[name])
    if fractions[dominant] < LOBE_CONFLICT_SHARE or dominant in entities["lobes"]:
        return []
    lobes = list(entities["lobes"])
    named = " and ".join(lobes) + (" lobes" if len(lobes) > 1 else " lobe")
    share = _percent(fractions[dominant])
    named_share = _percent(sum(fractions.get(lobe, 0.0) for lobe in lobes))
    return [
        f"Lobe conflict: the text places the lesion in the {named}, but {share} of the image evidence lies "
        f"in the {dominant} lobe ({named_share} in the {named}, by the atlas registered to this scan). "
        "Check the lobe against the images before signing."
    ]


def _diffuse_warnings(entities: dict, side: dict | None) -> list[str]:
    if not side or "compact_fraction" not in side or not entities.get("lesion", False):
        return []
    compact = float(side["compact_fraction"])
    if side.get("side") == "none" or compact >= DIFFUSE_MAX_COMPACT:
        return []
    return [
        "Diffuse evidence: the text reports a lesion, but no compact region of the image supports it (only "
        f"{_percent(compact)} of the positive evidence lies within {COMPACT_RADIUS_MM:.0f} mm of the "
        "strongest region). The lesion may not be there: check the images before signing."
    ]


def _side_warnings(entities: dict, side: dict | None) -> list[str]:
    if not side or side.get("side") not in ("left", "right"):
        return []
    if abs(float(side.get("lateralisation", 0.0))) < STRONG_LATERALISATION:
        return []
    evidence = side["side"]
    other = "right" if evidence == "left" else "left"
    share = _percent(side.get(f"{evidence}_fraction", 0.0))
    other_share = _percent(side.get(f"{other}_fraction", 0.0))
    where = (
        f"the image evidence (positive attribution) concentrates in the patient's {evidence} hemisphere "
        f"({share}; patient's {other}: {other_share})"
    )
    laterality = entities.get("laterality", "none")
    if laterality in ("left", "right") and laterality != evidence:
        return [
            f"Left/right conflict: the text places the lesion in the patient's {laterality} hemisphere, but "
            f"{where}. Check the side against the images before signing."
        ]
    if laterality == "bilateral":
        return [
            "The text describes bilateral involvement (both the patient's left and right hemispheres), but "
            f"{where}. Review whether the lesion really involves both sides."
        ]
    if laterality == "none" and not entities.get("lesion", False):
        return [
            f"The text reports no lesion, but {where}. Review the patient's {evidence} hemisphere before "
            "signing."
        ]
    return []


# --- report.json / report.txt -------------------------------------------------------------------------------


def build_report(
    text: str,
    *,
    model: dict,
    input: dict,
    timings: dict,
    attribution_side: dict | None = None,
    warnings: list[str] | None = None,
    created: str | None = None,
    decoding: dict | None = None,
    explanation: dict | None = None,
    input_check: dict | None = None,
    measured: dict | None = None,
) -> dict:
    """The report.json dict (DESIGN.md §5) of a generated draft: the one place it is assembled.

    ``decoding`` (how the draft was chosen), ``explanation`` (the LIME summary and the segments written) and
    ``input_check`` (:func:`BrainGemma3DLib.model.input_check.check_input`: is the scan something the model
    knows) and ``measured`` (facts of a tumour segmentation, :func:`BrainGemma3DLib.anatomy.measure.measure`)
    are included when given.  ``status`` is "draft": only signing makes it final.  ``warnings`` holds
    the input check's warnings (first: they qualify the whole draft), the left/right consistency check
    (computed here from the text and ``attribution_side``) and the caller's own warnings, without repeats.
    ``created`` defaults to now, ISO 8601 UTC to the second ("2026-11-23T08:00:00Z").  The given dicts are
    copied, so later changes by the caller do not alter it.
    """
    if not isinstance(text, str):
        raise TypeError(f"report text must be a string, got {type(text).__name__}")
    entities = structured_entities(text)
    side = copy.deepcopy(attribution_side) if attribution_side else None
    all_warnings: list[str] = []
    checked = (input_check or {}).get("warnings") or []
    evidence = {"attribution": side, "measured": measured}
    for warning in [*checked, *text_warnings(entities, evidence), *(warnings or [])]:
        if warning not in all_warnings:
            all_warnings.append(str(warning))
    report = {
        "schema_version": SCHEMA_VERSION,
        "status": "draft",
        "notice": NOTICE,
        "created": created or utc_iso(),
        "text": text,
        "sections": split_sections(text),
        "entities": entities,
        "attribution": side,
        "warnings": all_warnings,
        "model": copy.deepcopy(dict(model)),
        "input": copy.deepcopy(dict(input)),
        "timings": copy.deepcopy(dict(timings)),
    }
    if decoding is not None:
        report["decoding"] = copy.deepcopy(dict(decoding))
    if explanation is not None:
        report["explanation"] = copy.deepcopy(dict(explanation))
    if input_check is not None:
        report["input_check"] = copy.deepcopy(dict(input_check))
    if measured is not None:
        report["measured"] = copy.deepcopy(dict(measured))
    return report


def agreement_sentence(report: dict) -> str:
    """How many of the model's drafts state what this one states (consensus decoding), weakest first, so
    the reader checks those first; empty for a greedy draft or once the radiologist has edited the text
    (the shares describe the AI's wording, not theirs)."""
    decoding = report.get("decoding") or {}
    agreement = decoding.get("agreement")
    if not agreement or report.get("edited"):
        return ""
    names = {"laterality": "side", "lesion": "lesion", "lobes": "lobes", "mass_effect": "mass effect"}
    ranked = sorted(agreement.items(), key=lambda kv: (kv[1], kv[0]))
    parts = ", ".join(f"{names.get(k, k)} {round(100 * v)}\u00a0%" for k, v in ranked)
    return f"Model agreement (share of its {decoding.get('drafts', '?')} drafts stating the same): {parts}."


def report_text(report: dict) -> str:
    """The report.txt content: the notice, the sections under headers, the warnings, where it came from."""
    sections = report.get("sections") or split_sections(report.get("text", ""))
    lines = [report.get("notice", NOTICE), ""]
    findings, impression = sections.get("findings", ""), sections.get("impression", "")
    if findings or not impression:
        lines += ["FINDINGS:", findings or "(no text)", ""]
    if impression:
        lines += ["IMPRESSION:", impression, ""]
    warnings = report.get("warnings") or []
    if warnings:
        lines += ["WARNINGS:", *(f"- {w}" for w in warnings), ""]
    elif report.get("attribution"):
        lines += ["Left/right check: the text agrees with the image evidence (no conflict found).", ""]
    agreement = agreement_sentence(report)
    if agreement:
        lines += [agreement, ""]
    model = report.get("model") or {}
    origin = str(model.get("name") or "")
    if model.get("preset") and model.get("preset") != model.get("name"):
        origin = f"{origin} (preset {model['preset']})".strip()
    footer = f"Status: {report.get('status', 'draft')}; created {report.get('created', '')}"
    lines.append(footer + (f"; model: {origin}" if origin else ""))
    return "\n".join(lines) + "\n"


def json_default(value):
    """numpy scalars/arrays and paths in caller-given dicts become plain JSON."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_report(report: dict, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``folder/report.json`` and ``folder/report.txt`` atomically; return their paths.

    Both texts are built before either file is written, so a report that cannot be serialised leaves
    nothing behind; each file appears complete or not at all (no half-written report for a reader).
    """
    folder = Path(folder)
    as_json = json.dumps(report, indent=2, ensure_ascii=False, default=json_default) + "\n"
    as_text = report_text(report)
    json_path = write_text_atomic(folder / "report.json", as_json)
    txt_path = write_text_atomic(folder / "report.txt", as_text)
    return json_path, txt_path
