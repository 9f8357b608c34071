"""Studies as the PACS and today's scanners deliver them: a whole study in one folder (the FLAIR chosen by its
tags and the choice said), and a FLAIR stored as one Enhanced MR multi-frame object read as the same volume
and reported with the same side as the classic series.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import DICOM_IDENTITY, SAMPLE, run_cli, sample_as_dicom, write_dicom_series

from BrainGemma3DLib.io.dicom import choose_stack, find_stacks
from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.io.volume import load_volume

STUDY_UID = "1.2.3.4.5.6"


def _sagittal_t1(folder: Path, series_uid: str = "1.2.3.4.5.6.2", description: str = "SAG T1 MPRAGE") -> Path:
    """The sample head resampled onto a sagittal grid of 176 slices (more files than the 156-slice FLAIR)."""
    sample = load_volume(SAMPLE)
    affine = np.zeros((4, 4))
    affine[0, 2] = 0.9  # k: slices from the patient's right to left... along RAS x
    affine[1, 0] = 2.0  # i: posterior to anterior
    affine[2, 1] = 2.0  # j: inferior to superior
    affine[3, 3] = 1.0
    shape = (100, 80, 176)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    volume = sample.resample_to(affine, shape)
    tags = DICOM_IDENTITY | {"0018|0080": "2300", "0018|0081": "2.3", "0018|0082": "900", "0020|0011": "5"}
    return write_dicom_series(folder, volume.data[0], affine, series_uid, description, "t1", tags)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """One study folder: "AX T2 FLAIR" (156 slices, series 3) and "SAG T1 MPRAGE" (176 slices, series 5)."""
    folder = tmp_path_factory.mktemp("study") / "study"
    sample_as_dicom(folder)
    import pydicom

    for path in sorted(folder.glob("slice*.dcm")):  # the FLAIR as a scanner names it, with its number
        ds = pydicom.dcmread(path)
        ds.SeriesDescription, ds.SeriesNumber = "AX T2 FLAIR", 3
        ds.save_as(path)
    _sagittal_t1(folder)
    return folder


def test_the_flair_is_chosen_by_its_tags_never_by_file_count(study):
    stacks = find_stacks(study)
    assert sorted(len(s.frames) for s in stacks) == [156, 176]
    chosen, why = choose_stack(stacks, "flair")
    assert chosen.description == "AX T2 FLAIR" and chosen.plane == "axial"
    assert why.startswith("series 3 'AX T2 FLAIR' (156 slices, axial)") and "SeriesDescription" in why
    volume = load_volume(study)
    assert volume.shape[2] == 156 and volume.meta["SeriesChoice"] == why
    assert volume.summary()["series_choice"] == why
    # --series chooses the other one, by number or by UID; a series that is not there is one line.
    assert load_volume(study, series="5").shape[2] == 176
    assert load_volume(study, series="1.2.3.4.5.6.2").meta["SeriesDescription"] == "SAG T1 MPRAGE"
    with pytest.raises(InputError, match="no series match --series 9") as info:
        load_volume(study, series="9")
    assert "'AX T2 FLAIR' (156 slices, axial)" in str(info.value) and "\n" not in str(info.value)


def test_two_equal_flairs_or_none_ask_the_user_in_one_line(study, tmp_path):
    import shutil

    twins = tmp_path / "twins"
    shutil.copytree(study, twins)
    sample_as_dicom(twins / "again", series_uid="1.2.3.4.5.6.7")  # the same FLAIR once more ("AX FLAIR")
    with pytest.raises(InputError, match="2 series look like FLAIR equally") as info:
        load_volume(twins)
    assert "--series" in str(info.value) and "\n" not in str(info.value)
    assert load_volume(twins, series="3").meta["SeriesDescription"] == "AX T2 FLAIR"
    # Nothing named or timed like a FLAIR among several series: the candidates, and how to choose.
    others = tmp_path / "others"
    _sagittal_t1(others / "a")
    _sagittal_t1(others / "b", series_uid="1.2.3.4.5.6.8", description="COR T2 TSE")
    with pytest.raises(InputError, match="no series here is recognisably FLAIR") as info:
        load_volume(others)
    assert "'SAG T1 MPRAGE'" in str(info.value) and "'COR T2 TSE'" in str(info.value)
    # Localizers, derived series and 2D stacks are never chosen, whatever their names say.
    with_localizer = tmp_path / "localizer"
    sample_as_dicom(with_localizer / "flair")
    small = np.ones((32, 32, 3), np.int16) * 50
    small[8:24, 8:24] = 400
    write_dicom_series(with_localizer / "loc", small, np.diag([4.0, 4.0, 10.0, 1.0]), "1.2.3.9", "FLAIR loc")
    stacks = find_stacks(with_localizer)
    assert {s.excluded for s in stacks} == {"", "a localizer"}
    assert choose_stack(stacks, "flair")[0].series_uid == "1.2.3.4.5.6.1"


def _enhanced(classic: Path, out: Path) -> Path:
    """The classic series as one legacy-converted Enhanced MR Image object (highdicom), as scanners write."""
    import highdicom as hd
    import pydicom

    datasets = [pydicom.dcmread(p) for p in sorted(classic.glob("*.dcm"))]
    enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
        datasets, series_instance_uid=hd.UID(), series_number=7, sop_instance_uid=hd.UID(), instance_number=1
    )
    out.mkdir(parents=True)
    enhanced.save_as(out / "enhanced.dcm")
    return out


@pytest.fixture(scope="module")
def enhanced(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("enhanced")
    classic = sample_as_dicom(root / "classic")
    return classic, _enhanced(classic, root / "enhanced")


def test_an_enhanced_mr_object_reads_as_the_classic_series(enhanced):
    classic_dir, enhanced_dir = enhanced
    classic, multi = load_volume(classic_dir), load_volume(enhanced_dir)
    assert multi.shape == classic.shape == (148, 161, 156)
    np.testing.assert_allclose(multi.affine, classic.affine, atol=1e-4)
    np.testing.assert_array_equal(multi.data, classic.data)
    # The SR/SEG reference the one object and its frames, in the volume's slice order.
    summary = multi.summary()
    assert len(set(summary["dicom_sop_instance_uids"])) == 1
    assert sorted(summary["dicom_frame_numbers"]) == list(range(1, 157))  # each frame once, in slice order
    import pydicom

    ds = pydicom.dcmread(next(enhanced_dir.glob("*.dcm")), stop_before_pixels=True)
    normal = np.cross(*np.reshape(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                                  .ImageOrientationPatient, (2, 3)))  # fmt: skip
    heights = [
        float(
            normal
            @ np.asarray(
                ds.PerFrameFunctionalGroupsSequence[n - 1].PlanePositionSequence[0].ImagePositionPatient,
                float,
            )
        )  # fmt: skip
        for n in summary["dicom_frame_numbers"]
    ]
    assert np.all(np.diff(heights) > 0)
    assert multi.meta["PatientID"] == "BG3D-0001" and multi.meta["StudyInstanceUID"] == STUDY_UID


@pytest.mark.slow
def test_reports_say_which_series_and_enhanced_mr_reports_the_same_side(study, enhanced, tmp_path):
    out = tmp_path / "study-report"
    result = run_cli("report", str(study), "--out", str(out), "--drafts", "0", "--quiet")
    assert result.returncode == 0, result.stderr
    chosen = [line for line in result.stderr.splitlines() if line.startswith("series: ")]
    assert len(chosen) == 1 and "'AX T2 FLAIR'" in chosen[0], result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert "'AX T2 FLAIR'" in report["input"]["series_choice"]
    assert report["input_check"]["sequence"]["ok"] is True  # the chooser and the input check agree

    sides = {}
    for name, folder in zip(("classic", "enhanced"), enhanced, strict=True):
        result = run_cli("report", str(folder), "--out", str(tmp_path / name), "--drafts", "0", "--quiet")
        assert result.returncode == 0, result.stderr
        sides[name] = json.loads((tmp_path / name / "report.json").read_text(encoding="utf-8"))["entities"]
    assert sides["enhanced"] == sides["classic"] and sides["classic"]["laterality"] == "right"


def test_an_ambiguous_study_is_refused_before_the_model_loads(study, tmp_path):
    import shutil

    twins = tmp_path / "twins"
    shutil.copytree(study, twins)
    sample_as_dicom(twins / "again", series_uid="1.2.3.4.5.6.7")
    out = tmp_path / "out"
    result = run_cli("report", str(twins), "--out", str(out), "--quiet", fresh=True)  # import noise too
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "--series" in result.stderr and not out.exists()
    chosen = run_cli("report", str(twins), "--series", "3", "--out", str(out), "--drafts", "0", "--quiet")
    assert chosen.returncode == 0, chosen.stderr
