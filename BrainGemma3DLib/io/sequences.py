"""Which MR sequence a series is, from its DICOM tags (or a dcm2niix sidecar's fields).

Used twice: the series chooser picks the FLAIR (T1ce, T2) of a study by it, and the input check warns when
the volume given is not the sequence the model reads. Both read the same rule, so the series a study's
chooser takes is never the one the input check then calls a T1.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["SEQUENCE_TAGS", "sequence_from_tags"]

#: The fields the rule reads (DICOM keywords; a dcm2niix sidecar has the same names).
SEQUENCE_TAGS = (
    "SeriesDescription", "ProtocolName", "SequenceName", "ScanningSequence", "SequenceVariant",
    "RepetitionTime", "EchoTime", "InversionTime", "ContrastBolusAgent",
)  # fmt: skip

#: Words that name a sequence in DICOM descriptions, tested in this order ("T2 FLAIR" is FLAIR, "T1 FLAIR" is
#: a T1, a post-contrast T1 is T1ce).
_SEQUENCE_WORDS = (
    ("t1", r"t1\W{0,3}(w\W?)?flair"),
    ("flair", r"flair|dark\W?fluid|\btirm|\bfl\W?tir|\bir\W?fse|\bspir\W?flair"),
    ("dwi", r"\bdwi|diffusion|\bdti\b|\badc\b|\btrace\w*|ep2d\W?diff|\bb\d{3,4}\b"),
    ("swi", r"\bswi|\bswan|t2\*|\bhemo|susceptib"),
    ("angio", r"\btof\b|angio|\bmra\b"),
    (
        "t1ce",
        r"(t1|mprage|mp\W?rage|spgr|bravo|tfl|vibe|tfe)\w*\W.*(\+\W?c\b|\bpost\b|\bgd\b|gado|contrast|\bce\b)"
        r"|(\+\W?c\b|\bpost\b|\bgd\b|gado|contrast|\bce\b).*(t1|mprage|mp\W?rage|spgr|bravo|tfl|vibe|tfe)",
    ),
    ("t1", r"t1|mprage|mp\W?rage|spgr|bravo|tfl3d|\bvibe\b|\btfe\b"),
    ("pd", r"\bpd\b|proton\W?density"),
    ("t2", r"t2|\btse\b|\bfse\b|\bspace\b|\bcube\b|haste"),
)
_DESCRIPTION_TAGS = ("SeriesDescription", "ProtocolName", "SequenceName")


def _number(meta: Mapping[str, str], key: str) -> float | None:
    try:
        return float(str(meta.get(key, "")).split("\\")[0])
    except ValueError:
        return None


def sequence_from_tags(meta: Mapping[str, str]) -> tuple[str | None, str]:
    """``(sequence, evidence)`` from DICOM tags (``Volume.meta``), or ``(None, "")`` when they do not say.

    Words in the series description, protocol or sequence name decide first; then timing: an inversion time
    of 1500 ms or more nulls fluid (FLAIR); short TR and TE make a T1 (with a contrast agent recorded, T1ce);
    long TR and TE without inversion make a T2. Fields read from a NIfTI's JSON sidecar (``meta["Sidecar"]``,
    :mod:`.sidecar`) are named so in the evidence: "sidecar SeriesDescription 'AX FLAIR'".
    """
    where = "sidecar " if meta.get("Sidecar") else ""
    for tag in _DESCRIPTION_TAGS:
        text = str(meta.get(tag, "")).strip()
        if not text:
            continue
        words = re.sub(r"[_\-]+", " ", text.lower())  # "t1_mprage_post_gd": underscores separate words
        for sequence, pattern in _SEQUENCE_WORDS:
            if re.search(pattern, words):
                return sequence, f"{where}{tag} '{text}'"
    ti, tr, te = (_number(meta, k) for k in ("InversionTime", "RepetitionTime", "EchoTime"))
    times = where + ", ".join(
        f"{k} {v:g} ms" for k, v in (("TI", ti), ("TR", tr), ("TE", te)) if v is not None
    )
    if ti is not None and ti >= 1500:
        return "flair", times
    if tr is not None and te is not None and not ti:
        if tr <= 1000 and te <= 30:
            agent = str(meta.get("ContrastBolusAgent", "")).strip()
            return ("t1ce", f"{times}, contrast agent '{agent}'") if agent else ("t1", times)
        if tr >= 2000 and te >= 70:
            return "t2", times
    return None, ""
