"""TextBraTS-style FLAIR radiology reports for phantom cases, written from their ground truth.

The reports are training targets for the report-generating model and are scored by keyword extraction, so
every statement is derived from the truth dict and follows a fixed vocabulary, while the wording, the
sentence order and the optional sentences vary so that the model learns the findings, not one template.

Vocabulary contract (what an evaluator may rely on; the words come from
:mod:`BrainGemma3DLib.reporting.vocabulary`, which the report reader uses too):

- Laterality: a left case never contains the word "right" and vice versa; a bilateral case always says
  "bilateral" or "both hemispheres" (sometimes also "crossing the midline") and never "left"/"right".
  Healthy reports contain none of left/right/bilateral.  The midline shift is never given a direction, so
  the opposite side is never named.
- Lobes: each lobe of the truth is named by its adjective as a separate word ("left frontal and parietal
  lobes", never "frontoparietal"); no other lobe adjective appears (a ventricular horn is named only
  after the main lobe, e.g. "temporal horn").
- Findings: all four findings are always stated.  A present finding appears with one of its keywords and no
  negation cue before it; an absent finding appears only negated: a cue from ``NEGATION_CUES`` in the
  same sentence, before the keyword and at most ``NEGATION_WINDOW`` words before it.  A report never
  holds both a positive and a negated mention of the same finding.
- The lesion is called "lesion", "mass" or "tumor" (American spelling, as TextBraTS).
- Size words ("small", "moderate", "large") appear only as given by :func:`size_category`; a midline shift
  is reported (rounded to whole mm, "about 4 mm") exactly when it is at least
  :data:`MIN_REPORTED_SHIFT_MM`, and only ever denied otherwise.

Only the caller's ``numpy.random.Generator`` is used, so a case's text is reproducible from its seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..reporting.vocabulary import (
    FINDING_KEYWORDS,
    FINDINGS,
    LESION_WORDS,
    LOBES,
    NEGATION_CUES,
    NEGATION_WINDOW,
    canonical_findings,
)

__all__ = [
    "FINDINGS",
    "FINDING_KEYWORDS",
    "LESION_WORDS",
    "LOBES",
    "MIN_REPORTED_SHIFT_MM",
    "NEGATION_CUES",
    "NEGATION_WINDOW",
    "SIZE_THRESHOLDS_ML",
    "size_category",
    "write_healthy_report",
    "write_report",
]

#: Tumour-core volume limits (ml) between "small", "moderate" and "large".
SIZE_THRESHOLDS_ML = (10.0, 40.0)
#: A midline shift is reported from this size (mm) on; below it the report never claims one.
MIN_REPORTED_SHIFT_MM = 3.0

_HORN = {
    "frontal": "frontal horn",
    "parietal": "body",
    "temporal": "temporal horn",
    "occipital": "occipital horn",
}


def size_category(volume_ml: float) -> str:
    """Qualitative size of a tumour core: "small" (< 10 ml), "moderate" (10-40 ml) or "large" (> 40 ml)."""
    small, large = SIZE_THRESHOLDS_ML
    if volume_ml < small:
        return "small"
    return "large" if volume_ml > large else "moderate"


def _reported_shift(shift_mm: float) -> int | None:
    """The shift in whole mm (half rounds up) when it is large enough to report, else None."""
    if not shift_mm >= MIN_REPORTED_SHIFT_MM:  # also catches NaN
        return None
    return int(math.floor(shift_mm + 0.5))


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _chance(rng: np.random.Generator, p: float) -> bool:
    return bool(rng.random() < p)


def _cap(text: str) -> str:
    """Upper-case the first letter only (str.capitalize would lower-case "FLAIR")."""
    return text[:1].upper() + text[1:]


def _join(items: Sequence[str], conj: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {conj} {items[-1]}"


@dataclass(frozen=True)
class _Case:
    """The parts of the truth a report speaks of, validated once."""

    side: str | None  # "left" / "right"; None for bilateral
    lobes: tuple[str, ...]  # main lobe first
    findings: dict[str, bool]
    size: str
    edema_ml: float
    shift: int | None  # reported midline shift in mm

    @property
    def main(self) -> str:
        return self.lobes[0]

    @property
    def bilateral(self) -> bool:
        return self.side is None


def _parse(truth: dict) -> _Case:
    """Check the truth so a wrong dict fails loudly instead of producing a report that lies."""
    hemisphere = truth.get("hemisphere")
    if hemisphere not in ("left", "right", "bilateral"):
        raise ValueError(f"hemisphere must be 'left', 'right' or 'bilateral', got {hemisphere!r}")
    lobes = tuple(str(lobe) for lobe in truth.get("lobes") or ())
    if not lobes or any(lobe not in LOBES for lobe in lobes) or len(set(lobes)) != len(lobes):
        raise ValueError(f"lobes must be 1-4 distinct names from {LOBES}, got {truth.get('lobes')!r}")
    raw = canonical_findings(truth.get("findings") or {})
    missing = [f for f in FINDINGS if f not in raw]
    if missing:
        raise ValueError(f"findings lacks {missing}")
    return _Case(
        side=None if hemisphere == "bilateral" else hemisphere,
        lobes=lobes,
        findings={f: bool(raw[f]) for f in FINDINGS},
        size=size_category(float(truth.get("tumour_volume_ml", 0.0))),
        edema_ml=float(truth.get("edema_volume_ml", 0.0)),
        shift=_reported_shift(float(truth.get("midline_shift_mm", 0.0))),
    )


# --- noun phrases -------------------------------------------------------------------------------------------


def _lobe_phrase(lobes: Sequence[str], plural: bool = False) -> str:
    """'frontal lobe', 'frontal and parietal lobes' (always plural when both sides are meant)."""
    return f"{_join(lobes)} {'lobes' if plural or len(lobes) > 1 else 'lobe'}"


def _place(c: _Case, rng: np.random.Generator) -> str:
    """Where the whole lesion is: every lobe of the truth, with its side."""
    others = c.lobes[1:]
    if c.bilateral:
        extend = f", extending into the {_lobe_phrase(others, True)}" if others else ""
        place = _pick(
            rng,
            (
                f"the bilateral {_lobe_phrase(c.lobes, True)}",
                f"the {_lobe_phrase(c.lobes, True)} of both hemispheres",
                f"both hemispheres, involving the {_lobe_phrase(c.lobes, True)}",
                f"the bilateral {c.main} lobes{extend}",
            ),
        )
        return place + (", crossing the midline" if _chance(rng, 0.5) else "")
    s = c.side
    extend = f", extending into the {_lobe_phrase(others)}" if others else ""
    regions = "regions" if len(c.lobes) > 1 else "region"
    return _pick(
        rng,
        (
            f"the {s} {_lobe_phrase(c.lobes)}",
            f"the {s} {_lobe_phrase(c.lobes)}",  # the TextBraTS form, twice as likely
            f"the {_lobe_phrase(c.lobes)} of the {s} hemisphere",
            f"the {s} {c.main} lobe{extend}",
            f"the {s} cerebral hemisphere, involving the {_lobe_phrase(c.lobes)}",
            f"the {s} {_join(c.lobes)} {regions}",
        ),
    )


def _short_place(c: _Case, rng: np.random.Generator) -> str:
    """A place without trailing clauses, for the closing sentence."""
    if c.bilateral:
        return _pick(rng, (f"the bilateral {_lobe_phrase(c.lobes, True)}", "both hemispheres"))
    return f"the {c.side} {_lobe_phrase(c.lobes)}"


def _main_place(c: _Case, rng: np.random.Generator) -> str:
    """Where the edema mainly is: the main lobe."""
    if c.bilateral:
        return _pick(rng, (f"the bilateral {c.main} lobes", f"the {c.main} lobes of both hemispheres"))
    return _pick(rng, (f"the {c.side} {c.main} lobe", f"the {c.main} lobe of the {c.side} hemisphere"))


def _ventricle(c: _Case, rng: np.random.Generator) -> tuple[str, str]:
    """The compressed ventricle and its verb ("is"/"are")."""
    if c.bilateral:
        return _pick(rng, ("both lateral ventricles", "the bilateral lateral ventricles")), "are"
    if _chance(rng, 0.3):
        return f"the {_HORN[c.main]} of the {c.side} lateral ventricle", "is"
    return f"the {c.side} lateral ventricle", "is"


def _noun(rng: np.random.Generator) -> str:
    return _pick(rng, ("lesion", "lesion", "mass", "tumor"))


def _signal(c: _Case, rng: np.random.Generator) -> str:
    """FLAIR appearance of the lesion: low signal only where there is necrosis."""
    if c.findings["necrosis"]:
        options = (
            "mixed high and low signal intensity",
            "mixed signals of high and low intensity",
            "heterogeneous high and low signal",
            "mixed signal intensity",
        )
    else:
        options = (
            "high signal intensity",
            "predominantly high signal",
            "abnormally high signal on FLAIR",
            "hyperintense signal",
        )
    return _pick(rng, options)


def _size_adjective(c: _Case) -> str:
    return {"small": "small", "moderate": "moderate-sized", "large": "large"}[c.size]


# --- sentences ----------------------------------------------------------------------------------------------


def _location_sentence(c: _Case, rng: np.random.Generator, with_size: bool) -> str:
    place, sig, noun = _place(c, rng), _signal(c, rng), _noun(rng)
    size = f"{_size_adjective(c)} " if with_size else ""
    comma = "," if "," in place else ""  # "in the left frontal lobe, extending into ..., with ..."
    if not with_size and _chance(rng, 0.4):
        return f"The lesion area is in {place}{comma} with {sig}."
    options = [
        f"A {size}{noun} is seen in {place}, with {sig}.",
        f"There is a {size}{noun} in {place}{comma} showing {sig}.",
        f"An area of {sig} is observed in {place}, consistent with a {size}{noun}.",
        f"A {size}{noun} with {sig} is located in {place}.",
    ]
    if not with_size:
        options.append(f"The {noun} is located in {place}, with {sig}.")
    return _pick(rng, options)


def _size_sentence(c: _Case, rng: np.random.Generator) -> str:
    noun = _noun(rng)
    options = {
        "small": ("small", "relatively small", "small in size"),
        "moderate": ("of moderate size", "moderate in size"),
        "large": ("large", "relatively large", "large in size"),
    }[c.size]
    return f"The {noun} is {_pick(rng, options)}."


def _edema_extent(c: _Case, rng: np.random.Generator) -> str:
    if c.edema_ml < 10.0:
        return _pick(rng, ("mild ", ""))
    if c.edema_ml > 60.0:
        return _pick(rng, ("extensive ", "marked "))
    return ""


def _positive(finding: str, c: _Case, rng: np.random.Generator) -> str:
    """A sentence stating a present finding, keyword not preceded by any negation cue."""
    noun = _noun(rng)
    if finding == "edema":
        where, ext = _main_place(c, rng), _edema_extent(c, rng)
        return _pick(
            rng,
            (
                f"Edema is mainly located in {where}, showing high signal on FLAIR.",
                f"Edema is mainly distributed in {where}, with high signal on FLAIR.",
                _cap(f"{ext}peritumoral edema is seen around the {noun}, with high signal on FLAIR."),
                f"The {noun} is surrounded by {ext}edema, which appears hyperintense on FLAIR.",
                f"There is {ext}surrounding edema, mainly in {where}.",
                f"High FLAIR signal around the {noun} indicates {ext}perilesional edema.",
            ),
        )
    if finding == "necrosis":
        return _pick(
            rng,
            (
                f"Necrosis is present within the {noun}, with low signal.",
                f"Necrosis may be present within the {noun}, with low signal.",
                f"A necrotic core with low signal intensity is seen in the center of the {noun}.",
                f"Areas of necrosis are noted within the {noun}, showing low signal.",
                f"The central part of the {noun} shows low signal, consistent with necrosis.",
                "There is internal necrosis, appearing as an area of low signal.",
            ),
        )
    if finding == "enhancement":
        pattern = "ring-like" if c.findings["necrosis"] else "heterogeneous"
        return _pick(
            rng,
            (
                f"Enhancement is observed at the margin of the {noun}.",
                f"The {noun} shows {pattern} enhancement after contrast.",
                f"An enhancing component is seen within the {noun}.",
                f"There is contrast enhancement of the solid part of the {noun}.",
                "Enhancing tumor tissue is present.",
            ),
        )
    vent, verb = _ventricle(c, rng)
    return _pick(
        rng,
        (
            f"Ventricular compression is observed, with {vent} compressed.",
            f"{_cap(vent)} {verb} compressed.",
            f"Compression of {vent} is noted.",
            f"There is ventricular compression, mainly affecting {vent}.",
            f"The lesion exerts mass effect with compression of {vent}.",
            f"Mass effect is seen, with {vent} compressed.",
        ),
    )


def _negative(finding: str, rng: np.random.Generator) -> str:
    """A sentence denying an absent finding, the cue at most a few words before the keyword."""
    noun = _noun(rng)
    options = {
        "edema": (
            f"No obvious edema is seen around the {noun}.",
            "There is no significant peritumoral edema.",
            "No surrounding edema is identified.",
            f"The {noun} shows no perilesional edema.",
            f"No edema is observed around the {noun}.",
        ),
        "necrosis": (
            "No obvious necrosis is seen.",
            f"There is no evidence of necrosis within the {noun}.",
            "No necrotic area is identified.",
            f"The {noun} shows no signs of necrosis.",
            "No necrotic component is observed.",
        ),
        "enhancement": (
            "No obvious enhancement is seen.",
            "There is no significant contrast enhancement.",
            "No enhancing component is identified.",
            f"The {noun} shows no contrast enhancement.",
            "No abnormal enhancement is evident.",
        ),
        "mass_effect": (
            "No ventricular compression is observed.",
            "The ventricular system is not compressed.",
            "There is no compression of the ventricles.",
            "No significant compression of the lateral ventricles is seen.",
            "The lateral ventricles are not compressed.",
        ),
    }[finding]
    return _pick(rng, options)


_NEG_NAMES = {
    "edema": ("edema", "peritumoral edema", "surrounding edema"),
    "necrosis": ("necrosis",),
    "enhancement": ("enhancement", "contrast enhancement"),
    "mass_effect": ("ventricular compression",),
}


def _negated_list(findings: Sequence[str], rng: np.random.Generator, lead: int) -> str:
    """'edema, necrosis or ventricular compression' to follow a cue; ``lead`` words sit between the two.

    Falls back to the shortest names when a longer one would push a keyword out of the negation window.
    """
    names = [_pick(rng, _NEG_NAMES[f]) for f in findings]
    if lead + sum(len(n.split()) for n in names) + (len(names) > 1) > NEGATION_WINDOW:
        names = [_NEG_NAMES[f][0] for f in findings]
    return _join(names, "or")


def _combined_negative(findings: Sequence[str], rng: np.random.Generator) -> str:
    """One sentence denying two or three absent findings."""
    template, lead = [
        ("No {} is seen.", 0),
        ("There is no {}.", 0),
        ("No obvious {} is identified.", 1),
        ("No significant {} is observed.", 1),
        ("The " + _noun(rng) + " shows no {}.", 0),
    ][int(rng.integers(5))]
    return template.format(_negated_list(findings, rng, lead))


def _negative_clause(findings: Sequence[str], rng: np.random.Generator) -> str:
    """', without edema or necrosis' to end a sentence whose own keywords all come before it."""
    template = _pick(rng, (", without {}", ", with no {}", ", but no {} is seen"))
    return template.format(_negated_list(findings, rng, 0))


def _necrosis_enhancement_sentence(c: _Case, rng: np.random.Generator) -> str:
    noun = _noun(rng)
    return _pick(
        rng,
        (
            f"The {noun} shows a necrotic center with ring-like enhancement.",
            f"Necrosis is seen within the {noun}, surrounded by an enhancing rim.",
            f"The {noun} contains necrotic areas of low signal and enhancing solid parts.",
        ),
    )


def _shift_sentence(mm: int, rng: np.random.Generator) -> str:
    return _pick(
        rng,
        (
            f"There is a midline shift of about {mm} mm.",
            f"The midline structures are displaced, with a midline shift of approximately {mm} mm.",
            f"Mass effect causes a midline shift of about {mm} mm.",
            f"A midline shift of roughly {mm} mm is present.",
            f"The midline is shifted by about {mm} mm.",
        ),
    )


def _no_shift_sentence(rng: np.random.Generator) -> str:
    return _pick(
        rng,
        (
            "No significant midline shift is seen.",
            "There is no midline shift.",
            "The midline structures are centered.",
            "The midline structures remain in place.",
        ),
    )


def _closing_sentence(c: _Case, rng: np.random.Generator) -> str:
    """An impression-like summary: place and, sometimes, the present findings (never the absent ones)."""
    words = {
        "edema": ("surrounding edema", "peritumoral edema"),
        "necrosis": ("central necrosis", "a necrotic core"),
        "enhancement": ("enhancement", "an enhancing component"),
        "mass_effect": ("ventricular compression",),
    }
    present = [_pick(rng, words[f]) for f in FINDINGS if c.findings[f]]
    features = f", with {_join(present)}" if present and _chance(rng, 0.6) else ""
    size = f"{_size_adjective(c)} " if _chance(rng, 0.4) else ""
    place, noun = _short_place(c, rng), _noun(rng)
    return _pick(
        rng,
        (
            f"Overall, the findings suggest a {size}space-occupying lesion in {place}{features}.",
            f"In summary, there is a {size}{noun} in {place}{features}.",
            f"Impression: {size}{noun} in {place}{features}.",
        ),
    )


# --- reports ------------------------------------------------------------------------------------------------


def write_report(truth: dict, rng: np.random.Generator) -> str:
    """The TextBraTS-style FLAIR report of a phantom case, every statement taken from ``truth``.

    A healthy truth (``truth["healthy"]``) gives :func:`write_healthy_report`.  All four findings are
    stated, absent ones negated (see the module docstring for the vocabulary contract); the location comes
    first in nine reports out of ten, the other statements in canonical or random order.  Raises
    ``ValueError`` for a truth whose hemisphere, lobes or findings cannot be reported faithfully.
    """
    if truth.get("healthy"):
        return write_healthy_report(rng)
    c = _parse(truth)
    present = [f for f in FINDINGS if c.findings[f]]
    absent = [f for f in FINDINGS if not c.findings[f]]

    size_in_location = _chance(rng, 0.3)
    location = _location_sentence(c, rng, size_in_location)
    if absent and _chance(rng, 0.2):  # "..., without edema or necrosis."
        k = min(len(absent), int(rng.integers(1, 3)))
        chosen = [absent[i] for i in sorted(rng.permutation(len(absent))[:k])]
        location = location[:-1] + _negative_clause(chosen, rng) + "."
        absent = [f for f in absent if f not in chosen]

    # (sentence, may a negative clause be appended to it)
    body: list[tuple[str, bool]] = []
    shift_told = False
    todo = list(present)
    if "necrosis" in todo and "enhancement" in todo and _chance(rng, 0.3):
        body.append((_necrosis_enhancement_sentence(c, rng), True))
        todo = [f for f in todo if f not in ("necrosis", "enhancement")]
    for finding in todo:
        sentence = _positive(finding, c, rng)
        if finding == "mass_effect" and c.shift is not None and _chance(rng, 0.5):
            body.append((sentence[:-1] + f", and there is a midline shift of about {c.shift} mm.", False))
            shift_told = True
        else:
            body.append((sentence, True))

    if len(absent) >= 2 and _chance(rng, 0.4):
        chosen = absent[:3]
        body.append((_combined_negative(chosen, rng), False))
        absent = absent[3:]
    attachable = [i for i, (_, ok) in enumerate(body) if ok]
    if absent and attachable and _chance(rng, 0.25):
        i = attachable[int(rng.integers(len(attachable)))]
        body[i] = (body[i][0][:-1] + _negative_clause(absent[:1], rng) + ".", False)
        absent = absent[1:]
    body.extend((_negative(f, rng), False) for f in absent)

    if c.shift is not None and not shift_told:
        body.append((_shift_sentence(c.shift, rng), False))
    elif c.shift is None and _chance(rng, 0.3):
        body.append((_no_shift_sentence(rng), False))
    if not size_in_location and _chance(rng, 0.25):
        body.append((_size_sentence(c, rng), False))

    sentences = [s for s, _ in body]
    if not _chance(rng, 0.3):  # otherwise keep the canonical TextBraTS order
        sentences = [sentences[i] for i in rng.permutation(len(sentences))]
    position = 1 if sentences and _chance(rng, 0.1) else 0
    sentences.insert(position, location)
    if _chance(rng, 0.35):
        sentences.append(_closing_sentence(c, rng))
    return " ".join(sentences)


def write_healthy_report(rng: np.random.Generator) -> str:
    """The FLAIR report of a healthy control: no lesion, no side, no lobe, findings only ever denied."""
    parenchyma = _pick(
        rng,
        (
            "No mass or abnormal signal intensity is seen in the brain parenchyma.",
            "No focal lesion or abnormal signal is identified on FLAIR.",
            "The brain parenchyma shows normal signal intensity, with no focal lesion.",
            "No abnormal signal area is seen in the brain.",
        ),
    )
    ventricles = _pick(
        rng,
        (
            "The ventricles are normal in size and shape, and the midline structures are centered.",
            "The ventricular system is normal in size and shape.",
            "The lateral ventricles are symmetric and of normal size.",
            "The ventricles and sulci are normal, and the midline structures are centered.",
        ),
    )
    optional = [
        _pick(
            rng,
            (
                "The gray and white matter show normal signal, with a clear boundary between them.",
                "Gray-white matter differentiation is preserved.",
                "The cortex and white matter have normal signal on FLAIR.",
            ),
        ),
        _pick(
            rng,
            (
                "No edema, necrosis or abnormal enhancement is seen.",
                "There is no edema or mass effect.",
                "No ventricular compression or midline shift is seen.",
                "There is no midline shift.",
            ),
        ),
        _pick(
            rng,
            (
                "The sulci and gyri are normal.",
                "The cerebral sulci, fissures and cisterns are normal.",
                "The cerebral hemispheres are symmetric.",
            ),
        ),
    ]
    body = [ventricles] + [s for s in optional if _chance(rng, 0.5)]
    body = [body[i] for i in rng.permutation(len(body))]
    sentences = [parenchyma, *body] if _chance(rng, 0.85) else [*body, parenchyma]
    if _chance(rng, 0.4):
        sentences.append(
            _pick(
                rng,
                (
                    "No intracranial abnormality is seen on this FLAIR study.",
                    "Normal brain MRI appearance.",
                    "Impression: no abnormality of the brain is detected.",
                ),
            )
        )
    return " ".join(sentences)
