"""Structured entities from a report's free text, negation-aware.

"No necrosis" must count as necrosis *absent*, not present: keyword matching without negation (the published
protocol) rewards a model for naming every finding. Rules, per sentence:
- a finding keyword is negated when, within its clause ("but", "however", ... end a negation's scope), a
  cue ("no", "not", "without", "absent", "absence", "negative", "free") stands at most
  ``NEGATION_WINDOW`` words before it, or a post-negation ("is absent", "is not seen", "not observed",
  "none") follows it within 4 words;
- laterality: "bilateral", "both hemispheres", "both sides" or "crossing the midline" → bilateral; otherwise
  the side named in the first sentence that names one (the location sentence comes first in radiology
  reports); both sides in that sentence → bilateral; sides in negated phrases do not count;
- lobes: lobe adjectives outside negated phrases; "temporal horn" etc. name a ventricle, not a lobe;
- a lesion is claimed when a lesion noun or a finding is stated positively, or a side/lobe is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .vocabulary import (
    FINDING_KEYWORDS,
    FINDING_SYNONYMS,
    FINDINGS,
    LESION_WORDS,
    LOBES,
    NEGATION_CUES,
    NEGATION_WINDOW,
    POST_NEGATIONS,
    SCOPE_BREAKERS,
)

_WORD = re.compile(r"[a-z]+")


@dataclass
class Entities:
    """What a report says: side, lobes, findings (True present, False absent, None not mentioned)."""

    laterality: str = "none"  # left / right / bilateral / none
    lobes: list[str] = field(default_factory=list)
    findings: dict[str, bool | None] = field(default_factory=dict)
    lesion: bool = False

    def to_dict(self) -> dict:
        return {
            "laterality": self.laterality,
            "lobes": list(self.lobes),
            "findings": dict(self.findings),
            "lesion": self.lesion,
        }


def sentences(text: str) -> list[list[str]]:
    """Lower-case word lists, one per sentence."""
    parts = re.split(r"(?<=[.!?;])\s+|\n+", text.lower())
    return [words for p in parts if (words := _WORD.findall(p))]


def _negated(words: list[str], i: int) -> bool:
    before = words[max(0, i - NEGATION_WINDOW) : i]
    for j in range(len(before) - 1, -1, -1):
        if before[j] in SCOPE_BREAKERS:
            break
        if before[j] in NEGATION_CUES:
            return True
    after = words[i + 1 : i + 5]
    for w in after:
        if w in SCOPE_BREAKERS:
            break
        if w in POST_NEGATIONS:
            return True
    return False


def extract(text: str) -> Entities:
    """Entities of one report (see the module docstring for the rules)."""
    result = Entities(findings={f: None for f in FINDINGS})
    sides_by_sentence: list[set[str]] = []
    bilateral = False
    lobes: list[str] = []
    lesion = False
    for words in sentences(text):
        joined = " ".join(words)
        if re.search(
            r"\b(bilateral|both (cerebral )?hemispheres|both sides|crossing the midline|crosses the "
            r"midline)\b",
            joined,
        ):
            bilateral = True
        sides: set[str] = set()
        for i, w in enumerate(words):
            if w in ("left", "right") and not _negated(words, i):
                sides.add(w)
            if w in LOBES and not _negated(words, i):
                nxt = words[i + 1] if i + 1 < len(words) else ""
                if nxt != "horn" and w not in lobes:
                    lobes.append(w)
            if w in LESION_WORDS and not _negated(words, i):
                lesion = True
            for finding, keys in FINDING_KEYWORDS.items():
                if w in keys or w in FINDING_SYNONYMS.get(finding, ()):
                    present = not _negated(words, i)
                    # A positive statement wins over a negated one elsewhere in the report.
                    result.findings[finding] = bool(result.findings[finding]) or present
        if sides:
            sides_by_sentence.append(sides)
    if bilateral:
        result.laterality = "bilateral"
    elif sides_by_sentence:
        first = sides_by_sentence[0]
        result.laterality = "bilateral" if len(first) == 2 else next(iter(first))
    result.lobes = lobes
    result.lesion = lesion or any(result.findings.values()) or result.laterality != "none" or bool(lobes)
    return result


def set_f1(predicted: set, reference: set) -> float:
    """F1 of two sets; 1.0 when both are empty (the published convention)."""
    if not predicted and not reference:
        return 1.0
    if not predicted or not reference:
        return 0.0
    tp = len(predicted & reference)
    if tp == 0:
        return 0.0
    precision, recall = tp / len(predicted), tp / len(reference)
    return 2 * precision * recall / (precision + recall)


# --- the report.json entities block -----------------------------------------------------------------------

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
