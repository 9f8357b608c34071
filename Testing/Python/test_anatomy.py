"""Anatomy in words: the atlas registered onto stored phantoms names the lesion's side and lobes as the truth
does; places are named by one rule; the draft's lobes are checked against where the evidence lies."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import SAMPLE, run_cli

pytest.importorskip("nilearn")  # the template ships in its wheel (the train/test extras)


@pytest.mark.parametrize(
    ("storage", "index", "side", "lobes"),
    [("lps", 14, "left", ["frontal"]), ("oblique", 8, "right", ["temporal"])],
)
def test_the_registered_atlas_names_the_lesion_as_the_truth_does(storage, index, side, lobes):
    from BrainGemma3DLib.anatomy.places import describe
    from BrainGemma3DLib.anatomy.registration import register
    from BrainGemma3DLib.phantoms.dataset import make_case

    case = make_case("lesion", index, 5151, sequences=("flair",), storage=storage)
    assert (case.truth["hemisphere"], case.truth["lobes"]) == (side, lobes)
    assert case.truth["storage"]["variant"] == storage
    placement = register(case.images["flair"], cache=False)
    assert placement.regions.shape == case.images["flair"].shape  # on the input's own voxels
    found = describe(case.seg.data[0] > 0, placement.regions, placement.side)
    assert (found["side"], found["lobes"]) == (side, lobes)
    assert found["words"].startswith(side) and lobes[0] in found["words"]


def test_the_transform_is_cached_per_input(tmp_path, monkeypatch):
    from BrainGemma3DLib.anatomy.registration import register
    from BrainGemma3DLib.io.volume import load_volume

    monkeypatch.setenv("BRAINGEMMA3D_CACHE", str(tmp_path))
    volume = load_volume(SAMPLE)
    first = register(volume)
    again = register(volume)
    assert not first.cached and again.cached and list((tmp_path / "anatomy").glob("*.tfm"))
    assert np.array_equal(first.regions, again.regions)
    (next((tmp_path / "anatomy").glob("*.tfm"))).write_text("not a transform", encoding="utf-8")
    assert not register(volume).cached  # a damaged cache file: registered again


def test_places_are_named_by_one_rule():
    from BrainGemma3DLib.anatomy.atlas import REGION_CODE
    from BrainGemma3DLib.anatomy.places import LEFT, RIGHT, describe, side_from_share, words

    regions = np.zeros((10, 1, 1), np.uint8)
    side = np.zeros((10, 1, 1), np.uint8)
    regions[:6, 0, 0] = REGION_CODE["frontal"]
    regions[6:9, 0, 0] = REGION_CODE["insula"]
    side[:9, 0, 0] = LEFT
    mask = np.ones((10, 1, 1), bool)
    found = describe(mask, regions, side)
    assert found["side"] == "left" and found["lobes"] == ["frontal"]
    assert found["regions"] == ["frontal", "insula"] and found["words"] == "left frontal and insula"
    side[:2, 0, 0] = RIGHT  # 2 of 9 on the right: 22 % >= 15 %, both sides
    assert describe(mask, regions, side)["side"] == "bilateral"
    assert describe(np.zeros_like(mask), regions, side)["side"] == "outside the brain"
    assert side_from_share(0.9) == "left" and side_from_share(0.05) == "right"
    assert words("right", ["parietal", "frontal"]) == "right frontal and parietal"


def test_a_draft_naming_another_lobe_than_the_evidence_is_warned():
    from BrainGemma3DLib.reporting.report import consistency_warnings

    fractions = {"frontal": 0.8, "parietal": 0.1, "temporal": 0.1, "occipital": 0.0}
    evidence = {"side": "right", "lateralisation": -0.9, "right_fraction": 0.95, "left_fraction": 0.05,
                "lobe_fractions": fractions}  # fmt: skip
    draft = {"laterality": "right", "lobes": ["temporal"], "findings": {}, "lesion": True}
    [warning] = consistency_warnings(draft, evidence)
    assert (
        "Lobe conflict" in warning and "temporal lobe" in warning and "80% of the image evidence" in warning
    )
    assert "frontal lobe" in warning
    assert consistency_warnings(draft | {"lobes": ["frontal", "temporal"]}, evidence) == []
    diffuse = evidence | {
        "lobe_fractions": {"frontal": 0.5, "parietal": 0.2, "temporal": 0.3, "occipital": 0.0}
    }
    assert consistency_warnings(draft, diffuse) == []  # no lobe holds 65 %: nothing to contradict
    assert consistency_warnings(draft | {"lobes": []}, evidence) == []  # no lobe named: nothing to check


@pytest.mark.slow
def test_report_names_the_evidence_in_words(tmp_path):
    out = tmp_path / "report"
    result = run_cli("report", str(SAMPLE), "--out", str(out), "--explain", "--drafts", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    evidence = report["attribution"]
    assert set(evidence["lobe_fractions"]) == {"frontal", "parietal", "temporal", "occipital"}
    assert evidence["anatomy"]["method"] == "affine" and "anatomy_s" in report["timings"]
    first = report["explanation"]["segments"][0]
    assert (
        first["place"].startswith("right") and first["lobes"]
    )  # the sample's lesion: right parietal/frontal
    assert first["name"].startswith(f"#1 {first['place']} (w=")
