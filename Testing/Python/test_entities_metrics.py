"""Negation-aware entities and the two scoring protocols, on crafted report/truth pairs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from BrainGemma3DLib.phantoms.reports import LOBES, write_healthy_report, write_report
from BrainGemma3DLib.reporting.entities import extract
from BrainGemma3DLib.training.metrics import keyword_f1, keywords, set_f1, strict_scores

LEFT_FRONTAL = {
    "healthy": False,
    "hemisphere": "left",
    "lobes": ["frontal"],
    "findings": {"edema": True, "necrosis": False, "enhancement": True, "mass_effect": False},
}
HEALTHY = {
    "healthy": True,
    "hemisphere": "none",
    "lobes": [],
    "findings": {"edema": False, "necrosis": False, "enhancement": False, "mass_effect": False},
}


@pytest.mark.parametrize(
    ("text", "laterality", "lobes", "findings"),
    [
        (
            "A mass in the left frontal lobe. Edema is present. No necrosis. Ring enhancement.",
            "left",
            ["frontal"],
            {"edema": True, "necrosis": False, "enhancement": True, "mass_effect": None},
        ),
        (
            "The lesion involves the right temporal and occipital lobes, without ventricular compression.",
            "right",
            ["temporal", "occipital"],
            {"mass_effect": False},
        ),
        (
            "Lesion crossing the midline in both frontal lobes. Necrosis is absent.",
            "bilateral",
            ["frontal"],
            {"necrosis": False},
        ),
        ("There is no necrosis but marked edema.", "none", [], {"necrosis": False, "edema": True}),
        (
            "Left parietal lesion. The temporal horn of the left lateral ventricle is compressed.",
            "left",
            ["parietal"],
            {"mass_effect": True},
        ),
        (
            "No abnormality in the frontal lobe. The ventricles are not compressed.",
            "none",
            [],
            {"mass_effect": False},
        ),
    ],
)
def test_crafted_reports(text, laterality, lobes, findings):
    e = extract(text)
    assert e.laterality == laterality
    assert e.lobes == lobes
    for name, value in findings.items():
        assert e.findings[name] == value, name


def test_generator_reports_are_read_back_exactly():
    rng = np.random.default_rng(1)
    for _ in range(500):
        truth = {
            "healthy": False,
            "hemisphere": str(rng.choice(["left", "right", "bilateral"])),
            "lobes": [str(x) for x in rng.choice(LOBES, size=int(rng.integers(1, 4)), replace=False)],
            "findings": {
                f: bool(rng.random() < 0.5) for f in ("edema", "necrosis", "enhancement", "mass_effect")
            },
            "tumour_volume_ml": float(rng.uniform(1, 60)),
            "edema_volume_ml": 20.0,
            "midline_shift_mm": float(rng.uniform(0, 8)),
        }
        e = extract(write_report(truth, rng))
        assert e.laterality == truth["hemisphere"] and set(e.lobes) == set(truth["lobes"])
        assert {f: bool(v) for f, v in e.findings.items()} == truth["findings"]
    assert not any(extract(write_healthy_report(rng)).lesion for _ in range(200))


def test_published_keyword_protocol_on_crafted_pairs():
    ref = "The lesion is in the left frontal lobe with edema."
    assert keywords(ref, "laterality") == {"left"}
    assert keyword_f1(ref, ref) == {"laterality": 1.0, "anatomy": 1.0, "pathology": 1.0}
    gen = "A mass in the right frontal lobe. No edema."  # negation is ignored by this protocol
    scores = keyword_f1(gen, ref)
    assert scores["laterality"] == 0.0
    assert scores["anatomy"] == 1.0
    assert scores["pathology"] == pytest.approx(set_f1({"mass", "edema"}, {"lesion", "edema"}))
    assert keyword_f1("Normal brain.", "No abnormality.")["laterality"] == 1.0  # both empty
    assert keywords("The ventricles are normal.", "anatomy") == set()  # whole words only


def test_strict_scores_known_answers():
    generated = [
        "A lesion in the left frontal lobe with edema and enhancement. No necrosis. No compression.",  # right
        "A lesion in the right frontal lobe with edema and enhancement. No necrosis.",  # flipped side
        "No focal lesion. The ventricles are normal.",  # healthy, correct
        "A small lesion in the left occipital lobe.",  # healthy, false alarm
    ]
    truths = [LEFT_FRONTAL, LEFT_FRONTAL, HEALTHY, HEALTHY]
    s = strict_scores(generated, truths, n_boot=200)
    assert s["hemisphere_accuracy"]["value"] == 0.5 and s["flip_rate"]["value"] == 0.5
    assert s["lobe_f1"]["value"] == 1.0
    assert s["healthy_specificity"]["value"] == 0.5 and s["lesion_sensitivity"]["value"] == 1.0
    assert s["necrosis_f1"]["value"] == 1.0  # nobody has necrosis, nobody claims it
    assert s["edema_f1"]["value"] == 1.0
    lo, hi = s["hemisphere_accuracy"]["ci_low"], s["hemisphere_accuracy"]["ci_high"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
