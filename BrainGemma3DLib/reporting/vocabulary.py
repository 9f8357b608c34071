"""The report vocabulary: one list of lobes, findings, their keywords and the negation cues, shared by the
reader of reports (entities, consistency checks, PDF) and the writer of phantom reports (a training-data
generator that imports it from here, never the other way round).

One name for one concept: the fourth finding is ``mass_effect`` everywhere (report.json, truth.json, metrics);
"compression"/"compressed" are its keywords in text. Older truth.json files that call it ``compression`` are
read through :func:`canonical_findings`.
"""

from __future__ import annotations

#: The four lobes a report may name, in canonical order.
LOBES: tuple[str, ...] = ("frontal", "parietal", "temporal", "occipital")
#: The findings every pathological report states, positively or negated, in canonical order.
FINDINGS: tuple[str, ...] = ("edema", "necrosis", "enhancement", "mass_effect")
#: Keywords (whole words, lower case) that name each finding; the phantom reports use only these.
FINDING_KEYWORDS: dict[str, tuple[str, ...]] = {
    "edema": ("edema",),
    "necrosis": ("necrosis", "necrotic"),
    "enhancement": ("enhancement", "enhancing"),
    "mass_effect": ("compression", "compressed"),
}
#: Further words a reader of other people's reports recognises for each finding.
FINDING_SYNONYMS: dict[str, tuple[str, ...]] = {
    "edema": ("oedema", "edematous"),
    "enhancement": ("enhances",),
    "mass_effect": ("compressing", "effacement"),
}
#: Words that negate a finding keyword following them in the same clause (the phantom reports use the first
#: four; a reader must also know the others).
NEGATION_CUES: tuple[str, ...] = (
    "no",
    "not",
    "without",
    "absent",
    "absence",
    "negative",
    "free",
    "neither",
    "nor",
)
#: Words after a finding that negate it ("edema is absent", "necrosis: none").
POST_NEGATIONS: tuple[str, ...] = ("absent", "not", "none", "unremarkable")
#: A cue negates a keyword at most this many words after it (cue at i, keyword at i + 1 .. i + 6).
NEGATION_WINDOW = 6
#: Words that end a negation's scope ("no necrosis but marked edema": edema is present).
SCOPE_BREAKERS: tuple[str, ...] = ("but", "however", "although", "whereas", "while", "though", "yet")
#: Nouns naming the lesion.
LESION_WORDS: tuple[str, ...] = ("lesion", "mass", "tumor")
#: Old names of findings in data files, mapped to today's.
LEGACY_FINDING_NAMES = {"compression": "mass_effect"}


def canonical_findings(findings: dict) -> dict:
    """A findings dict with today's names (an older truth.json says ``compression`` for ``mass_effect``)."""
    return {LEGACY_FINDING_NAMES.get(k, k): v for k, v in findings.items()}
