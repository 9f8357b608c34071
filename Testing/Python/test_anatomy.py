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
    json.dumps(again.summary(), allow_nan=False)  # report.json and the worker's events are strict JSON
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
    from BrainGemma3DLib.reporting.checks import consistency_warnings

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
    spread = {"frontal": 0.45, "parietal": 0.25, "temporal": 0.3, "occipital": 0.0}
    diffuse = evidence | {"lobe_fractions": spread}
    assert consistency_warnings(draft, diffuse) == []  # no lobe holds most of it: nothing to contradict
    assert consistency_warnings(draft | {"lobes": []}, evidence) == []  # no lobe named: nothing to check


@pytest.mark.slow
def test_report_names_the_evidence_in_words(sample_report_explained):
    """``report SAMPLE --explain --drafts 0`` (conftest: made once, read by the DICOM export tests too)."""
    report = json.loads((sample_report_explained / "report.json").read_text(encoding="utf-8"))
    evidence = report["attribution"]
    assert set(evidence["lobe_fractions"]) == {"frontal", "parietal", "temporal", "occipital"}
    assert evidence["anatomy"]["method"] == "affine" and "anatomy_s" in report["timings"]
    first = report["explanation"]["segments"][0]
    assert (
        first["place"].startswith("right") and first["lobes"]
    )  # the sample's lesion: right parietal/frontal
    assert first["name"].startswith(f"#1 {first['place']} (w=")


@pytest.mark.slow
def test_a_segmentation_gives_measured_facts_and_checks_the_text(tmp_path):
    import nibabel as nib

    seg_path = SAMPLE.with_name(SAMPLE.name.replace("_flair", "_seg"))
    out = tmp_path / "report"
    result = run_cli(
        "report", str(SAMPLE), "--seg", str(seg_path), "--out", str(out), "--drafts", "0", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    measured = report["measured"]
    img = nib.load(seg_path)
    labels = np.asarray(img.dataobj)
    voxel_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000
    for name, label in (("enhancing", 4), ("core", 1), ("edema", 2)):
        assert measured["volumes_ml"][name] == pytest.approx((labels == label).sum() * voxel_ml, abs=0.01)
    truth = json.loads((SAMPLE.parent / "truth.json").read_text(encoding="utf-8"))
    assert measured["side"] == truth["hemisphere"] and set(measured["lobes"]) == set(truth["lobes"])
    assert 20 < measured["largest_diameter_mm"] < 120
    # The greedy draft of the demo weights denies the enhancement the labels hold: warned, with the volume.
    from BrainGemma3DLib.anatomy.measure import measured_warnings

    expected = measured_warnings(report["entities"], measured)
    assert [w for w in report["warnings"] if w.startswith("Segmentation conflict")] == expected
    if report["entities"]["findings"]["enhancement"] is False:
        assert any("enhancement is absent" in w and "mL enhancing" in w for w in expected)

    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image((labels > 0).astype(np.int16) * 7, img.affine), bad)
    refused = run_cli("report", str(SAMPLE), "--seg", str(bad), "--out", str(tmp_path / "x"), "--quiet")
    assert refused.returncode == 2 and "not a BraTS tumour segmentation" in refused.stderr
    assert "bad.nii.gz" in refused.stderr and not (tmp_path / "x").exists()


def test_contradictions_are_named_by_kind():
    from BrainGemma3DLib.anatomy.measure import contradictions

    measured = {"volumes_ml": {"enhancing": 12.0, "core": 0.0, "edema": 30.0, "whole": 42.0},
                "side": "left", "lobes": ["frontal"]}  # fmt: skip
    findings = {"enhancement": False, "edema": True, "necrosis": True, "mass_effect": None}
    text = {"laterality": "right", "lobes": ["temporal"], "lesion": True, "findings": findings}
    kinds = [c["what"] for c in contradictions(text, measured)]
    assert kinds == ["side", "lobes", "enhancement", "necrosis"]
    agreeing = text | {"laterality": "left", "lobes": ["frontal", "parietal"],
                       "findings": {"enhancement": True, "edema": True, "necrosis": None}}  # fmt: skip
    assert contradictions(agreeing, measured) == []


@pytest.mark.slow
def test_audit_reports_finds_every_corruption_and_nothing_else(tmp_path):
    import sys

    from helpers import REPO

    sys.path.insert(0, str(REPO / "tools"))
    import audit_corruptions

    data = tmp_path / "data"
    assert run_cli("phantoms", "--out", str(data), "--n", "4", "--healthy", "1", "--seed", "6161",
                   "--sequences", "flair", "--quiet").returncode == 0  # fmt: skip
    result = run_cli("audit-reports", str(data), "--out", str(tmp_path / "clean"), "--quiet")
    assert result.returncode == 0 and result.stdout.startswith("0 of 4 cases"), result.stdout + result.stderr
    summary = (tmp_path / "clean" / "summary.md").read_text(encoding="utf-8")
    assert "0 contradict" in summary and "Skipped" in summary
    text_path = next((data / "TextBraTSData").glob("*/*_flair_text.txt"))
    case = text_path.parent.name
    truth = json.loads(
        (data / "MICCAI_BraTS2020_TrainingData" / case / "truth.json").read_text(encoding="utf-8")
    )
    changed = audit_corruptions.corrupt(text_path.read_text(encoding="utf-8"), truth, "lobes")
    text_path.write_text(changed, encoding="utf-8")
    result = run_cli("audit-reports", str(data), "--out", str(tmp_path / "bad"), "--quiet")
    assert result.stdout.startswith("1 of 4 cases"), result.stdout + result.stderr
    rows = (tmp_path / "bad" / "audit.csv").read_text(encoding="utf-8").splitlines()
    assert rows[1].startswith(case) and "lobes: text" in rows[1]
