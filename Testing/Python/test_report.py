"""report.json / report.txt and the left/right consistency check, on crafted texts and synthetic grids whose
answers are known by construction (the side of each mass is set in world coordinates, never by array index).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import BLOB_RADIUS, BLOB_RAS, sample_head, variant_affine

from BrainGemma3DLib.io.volume import GridMapping, Volume
from BrainGemma3DLib.reporting.checks import (
    DIFFUSE_MAX_COMPACT,
    STRONG_LATERALISATION,
    consistency_warnings,
)
from BrainGemma3DLib.reporting.entities import structured_entities
from BrainGemma3DLib.reporting.evidence import BILATERAL_MIN_FRACTION, COMPACT_RADIUS_MM, attribution_side
from BrainGemma3DLib.reporting.report import (
    NOTICE,
    SCHEMA_VERSION,
    build_report,
    report_text,
    write_report,
)
from BrainGemma3DLib.reporting.sections import sentence_at, split_sections

SHAPE = (20, 40, 48)  # (D, H, W)
SPACING = 2.0


def grid_affine(w_reversed: bool = False, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Patient-aligned grid affine with the grid centre at RAS ``centre``.

    Default: the model grid's own LPS order (W runs from the patient's right to left, so RAS x falls as w
    grows).  ``w_reversed``: W runs from left to right, so array index and patient side disagree.
    """
    d, h, w = SHAPE
    sign = 1.0 if w_reversed else -1.0
    return np.array(
        [
            [0.0, 0.0, sign * SPACING, centre[0] - sign * (w - 1) / 2.0 * SPACING],
            [0.0, -SPACING, 0.0, centre[1] + (h - 1) / 2.0 * SPACING],
            [SPACING, 0.0, 0.0, centre[2] - (d - 1) / 2.0 * SPACING],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def world(affine: np.ndarray) -> np.ndarray:
    """(D, H, W, 3) RAS coordinates of every grid voxel."""
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij"), axis=-1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def ball(affine: np.ndarray, centre_ras, radii) -> np.ndarray:
    """Ellipsoid mask on the grid, placed in world (RAS) coordinates."""
    rel = (world(affine) - np.asarray(centre_ras, dtype=float)) / np.asarray(radii, dtype=float)
    return (rel**2).sum(axis=-1) <= 1.0


def mapping_for(affine: np.ndarray, brain_centre_ras=(0.0, 0.0, 0.0)) -> GridMapping:
    brain = ball(affine, brain_centre_ras, (36.0, 30.0, 16.0))
    return GridMapping(
        input_shape=SHAPE,
        input_affine=affine.copy(),
        grid_shape=SHAPE,
        grid_affine=affine,
        foreground=brain,
    )


# --- sections -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "findings", "impression"),
    [
        (
            "Findings: A mass in the left frontal lobe.\nImpression: Left frontal glioma.",
            "A mass in the left frontal lobe.",
            "Left frontal glioma.",
        ),
        (
            "FINDINGS\nThere is a Mass in the Right temporal lobe.\n\nIMPRESSION - Right temporal tumour.",
            "There is a Mass in the Right temporal lobe.",
            "Right temporal tumour.",
        ),
        ("findings: mass.\nconclusion: tumour.", "mass.", "tumour."),
        (
            "Clinical history: headache.\nFindings: Lesion with edema.\nConclusion: Glioma.",
            "Lesion with edema.",
            "Glioma.",
        ),
        (  # the phantom generator's inline closing sentence
            "A lesion is seen in the left frontal lobe. Impression: small lesion in the left frontal lobe.",
            "A lesion is seen in the left frontal lobe.",
            "small lesion in the left frontal lobe.",
        ),
        ("Impression: normal FLAIR study.", "", "normal FLAIR study."),
    ],
)
def test_sections_with_headers(text, findings, impression):
    assert split_sections(text) == {"findings": findings, "impression": impression}


@pytest.mark.parametrize(
    ("text", "findings", "impression"),
    [
        (
            "A lesion is seen in the LEFT frontal lobe. No necrosis. Overall, the findings suggest a lesion "
            "in the left frontal lobe.",
            "A lesion is seen in the LEFT frontal lobe. No necrosis.",
            "Overall, the findings suggest a lesion in the left frontal lobe.",
        ),
        (
            "In summary, a right parietal mass. Edema surrounds it.",
            "Edema surrounds it.",
            "In summary, a right parietal mass.",
        ),
        (
            "Mass in the right temporal lobe. Findings are consistent with a high-grade glioma.",
            "Mass in the right temporal lobe.",
            "Findings are consistent with a high-grade glioma.",
        ),
        (  # "consistent with" inside a sentence is a finding, not a summary
            "A lesion is seen in the left frontal lobe, consistent with a small tumor. Edema is present.",
            "A lesion is seen in the left frontal lobe, consistent with a small tumor. Edema is present.",
            "",
        ),
        ("The ventricles are normal.", "The ventricles are normal.", ""),
        ("", "", ""),
    ],
)
def test_sections_without_headers(text, findings, impression):
    assert split_sections(text) == {"findings": findings, "impression": impression}


def test_sentence_starting_with_findings_is_not_a_header():
    text = "Findings are compatible with a metastasis in the left occipital lobe."
    assert split_sections(text) == {"findings": "", "impression": text}


# --- entities -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A mass in the left frontal lobe. No necrosis is seen.", {"necrosis": False}),
        ("The lesion is seen without mass effect.", {"mass_effect": False}),
        ("Compression of the left lateral ventricle is noted.", {"mass_effect": True}),
        ("There is a midline shift of about 4 mm.", {"mass_effect": True}),
        ("There is no midline shift.", {"mass_effect": False}),
        ("Sulcal effacement is seen.", {"mass_effect": True}),
        ("No edema but marked enhancement.", {"edema": False, "enhancement": True}),
        ("A lesion in the right temporal lobe.", {"mass_effect": None, "necrosis": None}),
    ],
)
def test_entity_findings_negation(text, expected):
    findings = structured_entities(text)["findings"]
    assert set(findings) == {"edema", "necrosis", "enhancement", "mass_effect"}
    for name, value in expected.items():
        assert findings[name] is value, name


def test_entities_block():
    e = structured_entities("A tumour in the left temporal and frontal lobes. No ventricular compression.")
    assert e == {
        "laterality": "left",
        "lobes": ["frontal", "temporal"],  # fixed order, not order of mention
        "findings": {"edema": None, "necrosis": None, "enhancement": None, "mass_effect": False},
        "lesion": True,
    }
    healthy = structured_entities("No mass or abnormal signal is seen. There is no edema or mass effect.")
    assert healthy["laterality"] == "none" and healthy["lesion"] is False
    assert healthy["findings"]["mass_effect"] is False
    assert structured_entities("Lesion crossing the midline.")["findings"]["mass_effect"] is None


# --- attribution side ---------------------------------------------------------------------------------------


def test_mass_on_patient_left_is_left():
    affine = grid_affine()
    mapping = mapping_for(affine)
    attribution = ball(affine, (-20.0, 0.0, 0.0), (8.0, 8.0, 6.0)).astype(np.float32)
    side = attribution_side(attribution, mapping)
    assert side["side"] == "left"
    assert side["left_fraction"] == 1.0 and side["right_fraction"] == 0.0
    assert side["lateralisation"] == 1.0
    assert side["midline_ras_x"] == pytest.approx(0.0, abs=SPACING)
    assert side["peak_ras"][0] == pytest.approx(-20.0, abs=SPACING)
    # The same mass at larger w in this LPS grid: larger w is further to the patient's left.
    w = np.nonzero(attribution.any(axis=(0, 1)))[0]
    assert w.min() > SHAPE[2] / 2


def test_reversed_w_axis_follows_world_coordinates():
    """The same array on a grid whose W runs left -> right: the answer follows RAS x, not the index."""
    lps, reversed_ = grid_affine(), grid_affine(w_reversed=True)
    attribution = ball(lps, (-20.0, 0.0, 0.0), (8.0, 8.0, 6.0)).astype(np.float32)
    assert attribution_side(attribution, mapping_for(lps))["side"] == "left"
    flipped = attribution_side(attribution, mapping_for(reversed_))
    assert flipped["side"] == "right"
    assert flipped["lateralisation"] == -1.0
    assert flipped["peak_ras"][0] == pytest.approx(20.0, abs=SPACING)
    # and a mass placed on the patient's left in that grid's world is found on the left
    left = ball(reversed_, (-20.0, 0.0, 0.0), (8.0, 8.0, 6.0)).astype(np.float32)
    assert attribution_side(left, mapping_for(reversed_))["side"] == "left"


@pytest.mark.parametrize("w_reversed", [False, True])
def test_off_centre_brain_uses_its_own_midline(w_reversed):
    """Brain centred 24 mm to the patient's right of the grid centre: a mass 10 mm to the patient's left of
    the brain's midline is still on the patient's right of the grid centre, and must be called left."""
    affine = grid_affine(w_reversed)
    mapping = mapping_for(affine, brain_centre_ras=(24.0, 0.0, 0.0))
    attribution = ball(affine, (24.0 - 12.0, 0.0, 0.0), (6.0, 6.0, 6.0)).astype(np.float32)
    side = attribution_side(attribution, mapping)
    assert side["midline_ras_x"] == pytest.approx(24.0, abs=SPACING)
    assert side["side"] == "left"


def test_midline_is_robust_to_an_asymmetric_appendage():
    """A chunk of mask hanging off one side (neck, noise) pulls the mask's centre of mass ~5.6 mm to the
    patient's right; the row-midpoint median stays on the true midline, so a mass 3 mm right of it stays
    right (a centre-of-mass midline would have called it left)."""
    affine = grid_affine()
    mapping = mapping_for(affine)
    mapping.foreground = mapping.foreground | ball(affine, (34.0, 0.0, -10.0), (16.0, 30.0, 8.0))
    x = world(affine)[..., 0]
    assert x[mapping.foreground].mean() > 5.0
    side = attribution_side(ball(affine, (3.0, 0.0, 0.0), (1.5, 6.0, 6.0)).astype(float), mapping)
    assert side["midline_ras_x"] == pytest.approx(0.0, abs=1.0)
    assert side["side"] == "right"


def test_bilateral_none_and_negative_weights():
    affine = grid_affine()
    mapping = mapping_for(affine)
    both = ball(affine, (-20.0, 0.0, 0.0), (6.0, 6.0, 6.0)) | ball(affine, (20.0, 0.0, 0.0), (6.0, 6.0, 6.0))
    side = attribution_side(both.astype(np.float32), mapping)
    assert side["side"] == "bilateral"
    assert min(side["left_fraction"], side["right_fraction"]) >= BILATERAL_MIN_FRACTION
    assert abs(side["lateralisation"]) < 0.05
    # only positive weights count: a strongly negative left side does not pull toward the left
    signed = (
        ball(affine, (20.0, 0.0, 0.0), (6.0, 6.0, 6.0)) * 1.0
        - ball(affine, (-20.0, 0.0, 0.0), (9, 9, 9)) * 5.0
    )
    assert attribution_side(signed, mapping)["side"] == "right"
    empty = attribution_side(-np.ones(SHAPE), mapping)
    assert empty["side"] == "none" and empty["peak_ras"] is None and empty["lateralisation"] == 0.0
    with pytest.raises(ValueError, match="grid shape"):
        attribution_side(np.zeros((2, 2, 2)), mapping)


@pytest.mark.parametrize("variant", ["LAS", "oblique"])
def test_side_through_the_real_model_grid(variant):
    """A head stored in another orientation, put on the model grid by Volume.to_model_grid; the map is the
    conftest blob (on the patient's left) on that grid."""
    affine, shape = variant_affine(variant, spacing=(3.0, 3.0, 3.0))
    volume = Volume(sample_head(affine, shape), affine)
    grid, mapping = volume.to_model_grid((24, 48, 48))
    idx = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in grid.shape[1:]], indexing="ij"), axis=-1)
    ras = idx @ mapping.grid_affine[:3, :3].T + mapping.grid_affine[:3, 3]
    blob = (np.linalg.norm(ras - BLOB_RAS, axis=-1) < BLOB_RADIUS).astype(np.float32)
    side = attribution_side(blob, mapping)
    assert side["side"] == "left" and side["lateralisation"] > 0.9
    assert side["midline_ras_x"] == pytest.approx(0.0, abs=6.0)


# --- consistency --------------------------------------------------------------------------------------------


def side_dict(left: float) -> dict:
    right = 1.0 - left
    lat = left - right
    named = (
        "bilateral" if min(left, right) >= BILATERAL_MIN_FRACTION else ("left" if left > right else "right")
    )
    return {
        "side": named,
        "left_fraction": left,
        "right_fraction": right,
        "lateralisation": lat,
        "peak_ras": [0.0, 0.0, 0.0],
        "midline_ras_x": 0.0,
    }


LEFT_TEXT = structured_entities("A mass in the left frontal lobe with edema.")
BILATERAL_TEXT = structured_entities("Lesions in both hemispheres, crossing the midline.")
HEALTHY_TEXT = structured_entities("No mass or abnormal signal is seen. The ventricles are normal.")


def test_consistent_gives_no_warning():
    assert consistency_warnings(LEFT_TEXT, side_dict(0.9)) == []
    assert consistency_warnings(BILATERAL_TEXT, side_dict(0.5)) == []
    assert consistency_warnings(HEALTHY_TEXT, side_dict(0.5)) == []


def test_flipped_side_warns_once_naming_both_sides():
    warnings = consistency_warnings(LEFT_TEXT, side_dict(0.1))
    assert len(warnings) == 1
    assert "patient's left" in warnings[0] and "patient's right" in warnings[0]
    assert "90%" in warnings[0] and "10%" in warnings[0]
    right_text = structured_entities("A lesion in the right parietal lobe.")
    assert len(consistency_warnings(right_text, side_dict(0.85))) == 1


def test_bilateral_text_with_one_sided_evidence():
    (warning,) = consistency_warnings(BILATERAL_TEXT, side_dict(0.05))
    assert "bilateral" in warning
    assert "patient's right" in warning and "patient's left" in warning


def test_healthy_text_with_lateralised_evidence():
    (warning,) = consistency_warnings(HEALTHY_TEXT, side_dict(0.1))
    assert warning.startswith("The text reports no lesion")
    assert "patient's right hemisphere" in warning and "patient's left" in warning


def test_weak_or_absent_evidence_never_warns():
    weak = 0.5 - STRONG_LATERALISATION / 2 + 0.01  # lateralisation just under the threshold, toward the right
    assert consistency_warnings(LEFT_TEXT, side_dict(weak)) == []
    assert consistency_warnings(HEALTHY_TEXT, side_dict(weak)) == []
    none = {"side": "none", "left_fraction": 0.0, "right_fraction": 0.0, "lateralisation": 0.0}
    assert consistency_warnings(LEFT_TEXT, none) == []
    assert consistency_warnings(LEFT_TEXT, None) == []


# --- report.json / report.txt -------------------------------------------------------------------------------

MODEL = {"name": "BrainGemma3D demo", "preset": "demo", "sha256": "ab" * 32}
INPUT = {"paths": ["case.nii.gz"], "sha256": ["cd" * 32], "shape": [240, 240, 155]}
TIMINGS = {"load": 0.1, "generate": 2.5}
TEXT = "A mass in the left frontal lobe with edema. No necrosis. Impression: left frontal tumor."


def test_build_report_contract():
    value = build_report(
        TEXT, model=MODEL, input=INPUT, timings=TIMINGS, created="2026-11-23T08:00:00Z", warnings=["x"]
    )
    report = value.to_json()
    assert set(report) == {
        "schema_version",
        "text",
        "sections",
        "entities",
        "status",
        "model",
        "input",
        "timings",
        "created",
        "attribution",
        "warnings",
        "warning_kinds",
        "notice",
    }
    assert report["schema_version"] == SCHEMA_VERSION == "1.1"
    assert report["warning_kinds"] == ["other"]
    assert report["status"] == "draft" and report["notice"] == NOTICE
    assert report["created"] == "2026-11-23T08:00:00Z"
    assert report["sections"]["impression"] == "left frontal tumor."
    assert report["entities"]["laterality"] == "left"
    assert report["entities"]["findings"]["necrosis"] is False
    assert report["attribution"] is None and report["warnings"] == ["x"]
    assert report["model"] == MODEL and value.model is not MODEL
    json.dumps(report)
    now = build_report("", model={}, input={}, timings={}).created
    assert len(now) == 20 and now.endswith("Z") and now[10] == "T"


def test_build_report_runs_the_consistency_check():
    report = build_report(
        TEXT, model=MODEL, input=INPUT, timings=TIMINGS, attribution_side=side_dict(0.1), warnings=["other"]
    )
    assert report.attribution["side"] == "right"
    assert len(report.warnings) == 2 and report.warning_texts[1] == "other"
    assert "patient's left" in report.warning_texts[0]
    assert [w.kind for w in report.warnings] == ["side", "other"]


def test_write_report_files(tmp_path):
    report = build_report(
        TEXT, model=MODEL, input=INPUT, timings={"generate": np.float64(1.5)}, attribution_side=side_dict(0.1)
    )
    out = tmp_path / "case"
    json_path, txt_path = write_report(report, out)
    assert json_path == out / "report.json" and txt_path == out / "report.txt"
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.txt"]
    loaded = json.loads(json_path.read_text(encoding="utf-8"))
    assert loaded["timings"]["generate"] == 1.5 and loaded["status"] == "draft"
    text = txt_path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == NOTICE
    assert "FINDINGS:" in text and "IMPRESSION:" in text and "WARNINGS:" in text
    assert "patient's right" in text
    assert report_text(report) == text
    # a second write replaces both, still without temporary files
    write_report(build_report("Normal brain MRI.", model={}, input={}, timings={}), out)
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.txt"]
    assert "WARNINGS" not in txt_path.read_text(encoding="utf-8")


def test_sentence_at_finds_the_statement_under_the_cursor():
    text = "Findings: A mass in the right frontal lobe. No edema.\nImpression: right frontal mass."
    first = sentence_at(text, 20)
    assert text[first[0] : first[1]] == "Findings: A mass in the right frontal lobe."
    assert sentence_at(text, first[1]) == first  # just after the full stop: still that sentence
    second = sentence_at(text, text.index("edema"))
    assert text[second[0] : second[1]] == "No edema."
    last = sentence_at(text, len(text))
    assert text[last[0] : last[1]] == "Impression: right frontal mass."
    assert sentence_at("   ", 1) is None


def test_diffuse_evidence_for_a_reported_lesion_is_warned_and_compact_evidence_is_not():
    affine = grid_affine()
    mapping = mapping_for(affine)
    lesion_text = structured_entities("A mass in the right frontal lobe with surrounding edema.")
    healthy_text = structured_entities("No focal lesion. Normal study.")
    # Compact: one ball of evidence on the right.
    compact = attribution_side(ball(affine, (-20.0, 0.0, 0.0), (8.0, 8.0, 8.0)).astype(float), mapping)
    assert compact["compact_fraction"] > 0.95
    assert not any("Diffuse" in w for w in consistency_warnings(lesion_text, compact))
    # Diffuse: weak evidence everywhere in the brain, the strongest a small spot; little of it near the peak.
    spread = mapping.foreground.astype(float) * 0.5
    spread[ball(affine, (24.0, 10.0, 0.0), (2.0, 2.0, 2.0))] = 1.0
    diffuse = attribution_side(spread, mapping)
    assert diffuse["compact_fraction"] < DIFFUSE_MAX_COMPACT
    [warning] = [w for w in consistency_warnings(lesion_text, diffuse) if w.startswith("Diffuse evidence")]
    assert f"within {COMPACT_RADIUS_MM:.0f} mm" in warning
    # A text without a lesion has nothing for the evidence to support: no diffuse warning.
    assert not any("Diffuse" in w for w in consistency_warnings(healthy_text, diffuse))
