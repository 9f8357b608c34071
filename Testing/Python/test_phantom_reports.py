"""The phantom report writer keeps its vocabulary contract: what a keyword scorer extracts is the truth.

The checker below is deliberately independent of the module's exported vocabulary (it has its own copy of
the keywords and cues), so a change of the exported constants cannot silently weaken these tests.
"""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from BrainGemma3DLib.phantoms import reports
from BrainGemma3DLib.phantoms.reports import write_healthy_report, write_report
from BrainGemma3DLib.reporting import vocabulary

LOBES = ("frontal", "parietal", "temporal", "occipital")
KEYWORDS = {
    "edema": {"edema"},
    "necrosis": {"necrosis", "necrotic"},
    "enhancement": {"enhancement", "enhancing"},
    "mass_effect": {"compression", "compressed"},
}
CUES = {"no", "not", "without", "absent"}
WINDOW = 6
LESION_NOUNS = {"lesion", "mass", "tumor"}
SIZE_WORDS = {"small", "moderate", "large"}


# --- a small negation-aware keyword checker -----------------------------------------------------------------


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def mentions(text: str, keywords: set[str]) -> list[bool]:
    """A flag per keyword occurrence: True when negated (a cue at most WINDOW words before, same sentence)."""
    flags = []
    for sentence in sentences(text):
        w = words(sentence)
        for i, word in enumerate(w):
            if word in keywords:
                flags.append(any(c in CUES for c in w[max(0, i - WINDOW) : i]))
    return flags


def status(text: str, keywords: set[str]) -> str:
    """'positive', 'negated', 'absent' (not mentioned) or 'conflict' (both)."""
    flags = mentions(text, keywords)
    if not flags:
        return "absent"
    if all(flags):
        return "negated"
    return "positive" if not any(flags) else "conflict"


def test_checker_reads_negation_as_specified():
    assert status("No obvious necrosis is seen.", KEYWORDS["necrosis"]) == "negated"
    assert status("There is no evidence of significant peritumoral edema.", KEYWORDS["edema"]) == "negated"
    assert status("Necrosis is present. No necrosis.", KEYWORDS["necrosis"]) == "conflict"
    # cue after the keyword, or too far before it, or in the previous sentence: not a negation
    assert status("Necrosis is absent.", KEYWORDS["necrosis"]) == "positive"
    assert status("No a b c d e f necrosis.", KEYWORDS["necrosis"]) == "positive"
    assert status("No a b c d e necrosis.", KEYWORDS["necrosis"]) == "negated"
    assert status("No mass. Edema is seen.", KEYWORDS["edema"]) == "positive"
    # a cue spills over onto a later keyword of another finding in the same sentence
    assert status("No necrosis is seen, but edema is present.", KEYWORDS["edema"]) == "negated"
    assert status("Frontal lobe.", KEYWORDS["edema"]) == "absent"


# --- random truths ------------------------------------------------------------------------------------------


def random_truth(rng: np.random.Generator) -> dict:
    lobes = [LOBES[i] for i in rng.permutation(4)[: int(rng.integers(1, 4))]]
    shift = float(rng.choice([0.0, rng.uniform(0.0, 3.0), 2.95, 3.0, 3.5, 4.5, rng.uniform(3.0, 12.0)]))
    return {
        "healthy": False,
        "hemisphere": str(rng.choice(["left", "right", "bilateral"])),
        "lobes": lobes,
        "findings": {f: bool(rng.random() < 0.5) for f in KEYWORDS},
        "tumour_volume_ml": float(
            rng.choice(
                [rng.uniform(0.3, 10.0), rng.uniform(10.0, 40.0), 10.0, 40.0, rng.uniform(40.01, 120.0)]
            )
        ),
        "edema_volume_ml": float(rng.uniform(0.0, 120.0)),
        "midline_shift_mm": round(shift, 2),
    }


def expected_size(volume_ml: float) -> str:
    return "small" if volume_ml < 10 else "large" if volume_ml > 40 else "moderate"


def check_report(truth: dict, text: str) -> None:
    lower = text.lower()
    tokens = set(words(text))
    # laterality
    side = truth["hemisphere"]
    if side == "bilateral":
        assert "bilateral" in tokens or "both hemispheres" in lower, text
        assert not tokens & {"left", "right"}, text
    else:
        other = "right" if side == "left" else "left"
        assert side in tokens and other not in tokens and "bilateral" not in tokens, text
    # lobes: exactly those of the truth, as separate adjectives
    assert tokens & set(LOBES) == set(truth["lobes"]), text
    assert not re.search(r"fronto|parieto|temporo|occipito", lower), text
    # findings: every one stated, present ones positively, absent ones negated, never both
    for finding, present in truth["findings"].items():
        assert status(text, KEYWORDS[finding]) == ("positive" if present else "negated"), (finding, text)
    # lesion noun, American spelling
    assert tokens & LESION_NOUNS, text
    assert not re.search(r"tumour|oedema|centre", lower), text
    # size words agree with the volume
    assert tokens & SIZE_WORDS <= {expected_size(truth["tumour_volume_ml"])}, text
    # midline shift: reported (rounded half up) exactly when >= 3 mm, otherwise only denied
    numbers = [int(n) for n in re.findall(r"(\d+) mm\b", text)]
    if truth["midline_shift_mm"] >= 3.0:
        assert numbers == [int(np.floor(truth["midline_shift_mm"] + 0.5))], text
        assert status(text, {"shift", "shifted"}) == "positive", text
    else:
        assert not numbers and "displaced" not in tokens, text
        assert status(text, {"shift", "shifted"}) in ("negated", "absent"), text


def test_vocabulary_contract_over_random_truths():
    rng = np.random.default_rng(2024)
    for i in range(400):
        truth = random_truth(rng)
        text = write_report(truth, np.random.default_rng(i))
        check_report(truth, text)
        assert text.endswith(".") and "  " not in text and ",," not in text and " ," not in text, text


@pytest.mark.parametrize("hemisphere", ["left", "right", "bilateral"])
@pytest.mark.parametrize("present", [True, False])
def test_extremes_keep_the_contract(hemisphere, present):
    """All findings present or all absent, three lobes, big shift: the longest negation lists and clauses."""
    truth = {
        "healthy": False,
        "hemisphere": hemisphere,
        "lobes": ["temporal", "occipital", "parietal"],
        "findings": {f: present for f in KEYWORDS},
        "tumour_volume_ml": 55.0,
        "edema_volume_ml": 80.0 if present else 0.0,
        "midline_shift_mm": 7.6,
    }
    for seed in range(150):
        check_report(truth, write_report(truth, np.random.default_rng(seed)))


def test_shift_rounding_and_threshold():
    base = {
        "healthy": False,
        "hemisphere": "left",
        "lobes": ["frontal"],
        "tumour_volume_ml": 20.0,
        "edema_volume_ml": 10.0,
        "findings": {f: True for f in KEYWORDS},
    }
    for shift, expected in [(3.0, "3 mm"), (4.5, "5 mm"), (3.49, "3 mm"), (11.2, "11 mm")]:
        for seed in range(20):
            assert expected in write_report({**base, "midline_shift_mm": shift}, np.random.default_rng(seed))
    for seed in range(40):
        text = write_report({**base, "midline_shift_mm": 2.99}, np.random.default_rng(seed))
        assert not re.search(r"\d+ mm", text) and status(text, {"shift", "shifted"}) != "positive", text


def test_size_category_thresholds():
    assert [reports.size_category(v) for v in (0.5, 9.99, 10.0, 40.0, 40.01)] == [
        "small",
        "small",
        "moderate",
        "moderate",
        "large",
    ]


# --- determinism and variety --------------------------------------------------------------------------------


FIXED = {
    "healthy": False,
    "hemisphere": "left",
    "lobes": ["frontal", "parietal"],
    "findings": {"edema": True, "necrosis": True, "enhancement": False, "mass_effect": True},
    "tumour_volume_ml": 25.0,
    "edema_volume_ml": 30.0,
    "midline_shift_mm": 4.2,
}


def test_deterministic_and_uses_only_the_given_rng():
    random.seed(1)
    np.random.seed(1)
    a = write_report(FIXED, np.random.default_rng(7))
    random.seed(2)
    np.random.seed(2)
    b = write_report(FIXED, np.random.default_rng(7))
    assert a == b
    assert write_healthy_report(np.random.default_rng(3)) == write_healthy_report(np.random.default_rng(3))
    truth_copy = {**FIXED, "findings": dict(FIXED["findings"]), "lobes": list(FIXED["lobes"])}
    write_report(truth_copy, np.random.default_rng(0))
    assert truth_copy == FIXED  # the truth is not modified


def test_varied_reports_for_one_truth():
    texts = [write_report(FIXED, np.random.default_rng(seed)) for seed in range(50)]
    assert len(set(texts)) >= 30
    # the sentence order varies: the edema sentence is not always in the same position
    positions = set()
    for text in texts:
        ss = sentences(text)
        positions.add(next(i for i, s in enumerate(ss) if "edema" in words(s)))
    assert len(positions) >= 3
    # the location sentence is usually, not always, first
    first = sum(bool(set(words(sentences(t)[0])) & {"frontal", "parietal"}) for t in texts)
    assert 35 <= first <= 50


@pytest.mark.parametrize("present", [True, False])
def test_several_phrasings_per_finding(present):
    truth = {**FIXED, "findings": {f: present for f in KEYWORDS}, "midline_shift_mm": 0.0}
    seen: dict[str, set[str]] = {f: set() for f in KEYWORDS}
    for seed in range(200):
        for sentence in sentences(write_report(truth, np.random.default_rng(seed))):
            for finding, keys in KEYWORDS.items():
                if set(words(sentence)) & keys:
                    seen[finding].add(sentence)
    for finding, variants in seen.items():
        assert len(variants) >= 3, (finding, variants)


def test_many_structures_over_random_truths():
    rng = np.random.default_rng(5)
    skeletons = set()
    for i in range(200):
        text = write_report(random_truth(rng), np.random.default_rng(1000 + i))
        skeleton = re.sub(r"\b(left|right|bilateral|frontal|parietal|temporal|occipital|\d+)\b", "X", text)
        skeletons.add(skeleton)
    assert len(skeletons) >= 150


# --- healthy ------------------------------------------------------------------------------------------------


HEALTHY = {
    "healthy": True,
    "hemisphere": "none",
    "lobes": [],
    "findings": {f: False for f in KEYWORDS},
    "tumour_volume_ml": 0.0,
    "edema_volume_ml": 0.0,
    "midline_shift_mm": 0.0,
}


def test_healthy_reports():
    texts = set()
    for seed in range(150):
        text = write_healthy_report(np.random.default_rng(seed))
        assert write_report(HEALTHY, np.random.default_rng(seed)) == text
        tokens = set(words(text))
        assert not tokens & {"left", "right", "bilateral", *LOBES}, text
        assert "both hemispheres" not in text.lower()
        for keys in [*KEYWORDS.values(), LESION_NOUNS, {"shift"}]:
            assert status(text, keys) in ("negated", "absent"), (keys, text)
        assert not tokens & SIZE_WORDS and "mm" not in tokens, text
        texts.add(text)
    assert len(texts) >= 20


# --- exported vocabulary and input checks -------------------------------------------------------------------


def test_exported_vocabulary_matches_the_contract():
    assert {k: set(v) for k, v in reports.FINDING_KEYWORDS.items()} == KEYWORDS
    assert CUES <= set(reports.NEGATION_CUES)  # the reports negate only with cues the reader knows
    assert reports.NEGATION_CUES is vocabulary.NEGATION_CUES  # one list, shared by writer and reader
    assert reports.NEGATION_WINDOW == WINDOW
    assert set(reports.LESION_WORDS) == LESION_NOUNS


@pytest.mark.parametrize(
    "change",
    [
        {"hemisphere": "none"},
        {"hemisphere": "Left"},
        {"lobes": []},
        {"lobes": ["frontal", "insula"]},
        {"lobes": ["frontal", "frontal"]},
        {"findings": {"edema": True, "necrosis": False, "enhancement": False}},
    ],
)
def test_bad_truth_is_refused(change):
    with pytest.raises(ValueError):
        write_report({**FIXED, **change}, np.random.default_rng(0))
