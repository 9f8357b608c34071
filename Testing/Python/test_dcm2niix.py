"""NIfTI converted by the real dcm2niix, with its BIDS JSON sidecar, read as its DICOM series is read.

What a researcher who converted a cohort with dcm2niix checks: the NIfTI lands on the same world points as the
DICOM series it came from; the sidecar's series description and timing (seconds, converted to ms) reach the
input check, which names the sidecar as its evidence and warns on a T1; a folder of dcm2niix output is chosen
from as a DICOM study is (the FLAIR by its sidecar, never the localizer, ties by finer voxels, one line when
none fits or two fit equally); a damaged sidecar is ignored with a note; and the report on the NIfTI has the
same side, lobes and attribution (on the same world points) as the report on the DICOM series.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    DICOM_IDENTITY,
    SAMPLE,
    run_cli,
    sample_as_dicom,
    system_tool,
    variant_affine,
    write_dicom_series,
    write_nifti,
)

from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.io.sequences import sequence_from_tags
from BrainGemma3DLib.io.sidecar import MAX_SIDECAR_BYTES, nifti_series, read_sidecar
from BrainGemma3DLib.io.volume import load_study, load_volume

FAST_EXPLAIN = ("--explain", "--samples", "48", "--supervoxels", "24", "--drafts", "0", "--quiet")
FLAIR_TAGS = {"0020|0011": "3", "0018|0080": "9000", "0018|0081": "120", "0018|0082": "2500"}
T1_TAGS = {"0020|0011": "5", "0018|0080": "2300", "0018|0081": "2.98", "0018|0082": "900"}


def dcm2niix(source: Path, out: Path) -> list[Path]:
    """``source`` (a DICOM folder) converted by dcm2niix into ``out``: gzipped NIfTI + BIDS sidecar each,
    named by series number and description, anonymised sidecars (dcm2niix's default)."""
    tool = system_tool("dcm2niix")
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [tool, "-z", "y", "-b", "y", "-ba", "y", "-f", "%s_%d", "-o", str(out), str(source)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return sorted(out.glob("*.nii.gz"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    """The sample case as a DICOM series and dcm2niix's NIfTI of it."""
    root = tmp_path_factory.mktemp("dcm2niix")
    series = sample_as_dicom(root / "series")
    (nifti,) = dcm2niix(series, root / "nifti")
    return series, nifti


def _sagittal_affine(volume, spacing: float = 2.0) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A sagittal grid over ``volume``: i anterior->posterior, j superior->inferior, slices left->right."""
    lo, hi = volume.world_bounds()
    affine = np.eye(4)
    affine[:3, :3] = [[0, 0, spacing], [-spacing, 0, 0], [0, -spacing, 0]]
    affine[:3, 3] = [lo[0], hi[1], hi[2]]
    extent = hi - lo
    shape = (int(extent[1] / spacing) + 1, int(extent[2] / spacing) + 1, int(extent[0] / spacing) + 1)
    return affine, shape


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    """One study folder holding three DICOM series (an axial FLAIR, a sagittal T1 with another description, a
    3-slice localizer) and dcm2niix's conversion of the whole folder."""
    system_tool("dcm2niix")
    root = tmp_path_factory.mktemp("study")
    flair = load_volume(SAMPLE)
    folder = root / "dicom"
    tags = DICOM_IDENTITY | FLAIR_TAGS
    write_dicom_series(folder, flair.data[0], flair.affine, "1.2.3.4.5.6.3", "AX T2 FLAIR", "flair", tags)
    affine, shape = _sagittal_affine(flair)
    t1 = flair.resample_to(affine, shape)
    write_dicom_series(
        folder, t1.data[0], affine, "1.2.3.4.5.6.5", "SAG T1 MPRAGE", "t1", DICOM_IDENTITY | T1_TAGS
    )
    scout_affine, scout_shape = variant_affine("RAS", (4.0, 4.0, 4.0))
    scout = flair.resample_to(scout_affine, scout_shape).data[0]
    middle = scout_shape[2] // 2
    shifted = scout_affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, middle - 1], [0, 0, 0, 1]])
    write_dicom_series(
        folder,
        scout[:, :, middle - 1 : middle + 2],
        shifted,
        "1.2.3.4.5.6.1",
        "AAHead_Scout",
        "scout",
        DICOM_IDENTITY | {"0020|0011": "1"},
    )
    converted = dcm2niix(folder, root / "nifti")
    assert len(converted) == 3, converted
    return folder, root / "nifti"


def _corners(volume) -> np.ndarray:
    """World (RAS mm) of the centres of the volume's 8 corner voxels."""
    index = np.array(np.meshgrid(*[[0, s - 1] for s in volume.shape], indexing="ij")).reshape(3, -1)
    return (volume.affine[:3, :3] @ index + volume.affine[:3, 3:4]).T


def test_dcm2niix_nifti_has_the_dicom_geometry_and_its_sidecar_names_flair(converted):
    series, nifti = converted
    dicom, converted_nifti = load_volume(series), load_volume(nifti)
    # Same world points: each corner voxel of the DICOM volume is a corner voxel of the NIfTI (dcm2niix may
    # store the rows in another order), within 1e-3 mm.
    a, b = _corners(dicom), _corners(converted_nifti)
    distances = np.linalg.norm(a[:, None] - b[None], axis=-1).min(axis=1)
    assert distances.max() < 1e-3, distances
    # Same voxels at the same points: the NIfTI resampled (nearest, an exact permutation) onto the DICOM grid.
    index_map = np.linalg.inv(converted_nifti.affine) @ dicom.affine
    assert np.allclose(index_map, np.round(index_map), atol=1e-3)
    on_dicom_grid = converted_nifti.resample_to(dicom.affine, dicom.shape, order=0)
    assert np.array_equal(on_dicom_grid.data[0], dicom.data[0].astype(np.float32))
    # The sidecar's words, named as the sidecar's, feed the sequence rule the input check uses.
    sidecar = nifti.name.replace(".nii.gz", ".json")
    assert converted_nifti.meta["SeriesDescription"] == "AX FLAIR"
    assert converted_nifti.meta["Sidecar"] == sidecar
    assert sequence_from_tags(converted_nifti.meta) == ("flair", "sidecar SeriesDescription 'AX FLAIR'")
    assert sequence_from_tags(dicom.meta) == ("flair", "SeriesDescription 'AX FLAIR'")
    # dcm2niix anonymises: nothing about the patient comes with the NIfTI.
    assert not {"PatientName", "PatientID", "PatientBirthDate"} & set(converted_nifti.meta)


def test_sidecar_saying_t1_makes_the_input_check_warn(study, demo_model):
    from BrainGemma3DLib.model.input_check import check_input

    _, out = study
    (t1,) = [p for p in out.glob("*.nii.gz") if "T1" in p.name]
    volume = load_study([t1])
    # BIDS seconds, read as the DICOM milliseconds the sequence rule reads.
    assert volume.meta["SeriesDescription"] == "SAG T1 MPRAGE"
    assert float(volume.meta["RepetitionTime"]) == 2300 and float(volume.meta["InversionTime"]) == 900
    assert float(volume.meta["EchoTime"]) == pytest.approx(2.98)
    checked = check_input(volume, demo_model)
    sequence = checked["sequence"]
    assert (sequence["ok"], sequence["found"], sequence["source"]) == (False, "T1-weighted", "JSON sidecar")
    assert sequence["evidence"] == "sidecar SeriesDescription 'SAG T1 MPRAGE'"
    assert not checked["ok"] and any(
        "sidecar SeriesDescription 'SAG T1 MPRAGE', from the JSON sidecar" in w for w in checked["warnings"]
    )
    # The image itself is the FLAIR resampled: only the sidecar says T1, and the check says it did.
    assert sequence["image_statistic"]["white_matter_over_cortex"] < 1.12


def test_a_folder_of_dcm2niix_output_gives_the_flair_and_says_why(study):
    folder, out = study
    volume = load_volume(out)
    assert Path(volume.paths[0]).name == "3_AX_T2_FLAIR.nii.gz"
    why = volume.meta["SeriesChoice"]
    assert why == (
        "3_AX_T2_FLAIR.nii.gz 'AX T2 FLAIR' (156 slices, axial): "
        "FLAIR by sidecar SeriesDescription 'AX T2 FLAIR'"
    )
    assert any(n.startswith(f"3 NIfTI files in {out}; using 3_AX_T2_FLAIR.nii.gz") for n in volume.notes)
    assert volume.summary()["series_choice"] == why
    assert float(volume.meta["InversionTime"]) == 2500 and float(volume.meta["RepetitionTime"]) == 9000
    # The localizer is listed but never chosen; the DICOM chooser on the study takes the same series.
    reasons = {s.path.name: s.excluded for s in nifti_series(out)}
    assert reasons["1_AAHead_Scout.nii.gz"] == "a localizer"
    assert reasons["3_AX_T2_FLAIR.nii.gz"] == reasons["5_SAG_T1_MPRAGE.nii.gz"] == ""
    dicom = load_volume(folder)
    assert dicom.meta["SeriesChoice"] == (
        "series 3 'AX T2 FLAIR' (156 slices, axial): FLAIR by SeriesDescription 'AX T2 FLAIR'"
    )
    # Another sequence by the same rule, and the file chosen by hand.
    assert load_volume(out, sequence="t1").meta["SeriesDescription"] == "SAG T1 MPRAGE"
    chosen = load_volume(out, series="5_SAG_T1_MPRAGE.nii.gz")
    assert "chosen with --series 5_SAG_T1_MPRAGE.nii.gz" in chosen.meta["SeriesChoice"]
    assert load_volume(out, series="5").meta["SeriesDescription"] == "SAG T1 MPRAGE"


# --- the chooser and the sidecar reader on crafted files (no dcm2niix needed) -----------------------------


def _crafted(folder: Path, name: str, sidecar: object, spacing: float = 2.0, shape=(40, 48, 36)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    data = np.zeros(shape, dtype=np.int16)
    data[5:-5, 5:-5, 5:-5] = 100
    path = write_nifti(folder / f"{name}.nii.gz", data, affine)
    if sidecar is not None:
        text = sidecar if isinstance(sidecar, str | bytes) else json.dumps(sidecar)
        target = folder / f"{name}.json"
        target.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_folder_chooser_ties_by_finer_voxels_and_refuses_equal_or_none(tmp_path):
    finer = tmp_path / "finer"
    _crafted(finer, "flair_coarse", {"SeriesDescription": "AX FLAIR", "SeriesNumber": 2}, spacing=2.0)
    _crafted(finer, "flair_fine", {"SeriesDescription": "AX FLAIR 1mm", "SeriesNumber": 4}, spacing=1.5)
    _crafted(finer, "t2", {"SeriesDescription": "AX T2 TSE", "SeriesNumber": 6})
    chosen = load_volume(finer)
    assert Path(chosen.paths[0]).name == "flair_fine.nii.gz"
    assert "the finest of 2 FLAIR series (3.38 mm³ voxels)" in chosen.meta["SeriesChoice"]

    equal = tmp_path / "equal"
    _crafted(equal, "a", {"SeriesDescription": "AX FLAIR"})
    _crafted(equal, "b", {"SeriesDescription": "FLAIR repeat"})
    with pytest.raises(InputError) as err:
        load_volume(equal)
    message = str(err.value)
    assert "2 series look like FLAIR equally" in message and "\n" not in message
    assert "a.nii.gz 'AX FLAIR' (36 slices, axial)" in message and "b.nii.gz 'FLAIR repeat'" in message
    assert "--series FILE|NUMBER (or give the file itself)" in message

    none = tmp_path / "none"
    _crafted(none, "t1", {"SeriesDescription": "SAG T1"})
    _crafted(none, "t2", {"SeriesDescription": "AX T2 TSE"})
    _crafted(none, "bare", None)
    with pytest.raises(InputError, match="no series here is recognisably FLAIR") as err:
        load_volume(none)
    assert "bare.nii.gz 'no sidecar'" in str(err.value) and "t1.nii.gz 'SAG T1'" in str(err.value)

    # A derived map and a 4D series are never chosen; a lone FLAIR among them is.
    mixed = tmp_path / "mixed"
    _crafted(mixed, "flair", {"SeriesDescription": "AX FLAIR"})
    _crafted(mixed, "adc", {"SeriesDescription": "AX FLAIR ADC", "ImageType": ["DERIVED", "PRIMARY", "ADC"]})
    _crafted(mixed, "dwi", {"SeriesDescription": "FLAIR dwi"}, shape=(40, 48, 36, 3))
    reasons = {s.path.name: s.excluded for s in nifti_series(mixed)}
    assert reasons["adc.nii.gz"].startswith("derived") and reasons["dwi.nii.gz"] == "4D (3 volumes)"
    assert Path(load_volume(mixed).paths[0]).name == "flair.nii.gz"


def test_sidecar_times_are_seconds_and_identity_stays_out(tmp_path):
    path = _crafted(
        tmp_path,
        "brain",
        {
            "SeriesDescription": "Brain",
            "RepetitionTime": 9,
            "EchoTime": 0.12,
            "InversionTime": 2.5,
            "ContrastBolusIngredient": "GADOLINIUM",
            "PatientName": "Doe^Jane",
            "PatientID": "123",
            "AcquisitionDateTime": "2026-01-01T10:00:00",
            "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
        },
    )
    volume = load_volume(path)
    assert {k: volume.meta[k] for k in ("RepetitionTime", "EchoTime", "InversionTime")} == {
        "RepetitionTime": "9000",
        "EchoTime": "120",
        "InversionTime": "2500",
    }
    assert volume.meta["ContrastBolusAgent"] == "GADOLINIUM"
    assert volume.meta["ImageType"] == "ORIGINAL\\PRIMARY\\M\\ND"
    assert sequence_from_tags(volume.meta) == ("flair", "sidecar TI 2500 ms, TR 9000 ms, TE 120 ms")
    assert not {"PatientName", "PatientID", "AcquisitionDateTime"} & set(volume.meta)
    from BrainGemma3DLib.app.pipeline import header_fields

    assert header_fields(volume, {}) == {}  # nothing about the patient is invented or carried over


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("{", "not a valid JSON sidecar"),
        ("[1, 2]", "a JSON sidecar is one object, this is a list"),
        ('{"SeriesDescription": "T1", "EchoTime": NaN}', "NaN is not a JSON number"),
        ('{"SeriesDescription": "T1", "SeriesDescription": "FLAIR"}', "repeated key 'SeriesDescription'"),
        (b"\xff\xfe{\x00}", "not UTF-8"),
        ("[" * 100000 + "]" * 100000, "not a valid JSON sidecar"),
        ('{"x": "' + "a" * MAX_SIDECAR_BYTES + '"}', "larger than 1024 kB"),
    ],
    ids=["truncated", "list", "nan", "repeated-key", "not-utf8", "deep", "too-large"],
)
def test_a_damaged_sidecar_is_ignored_with_a_note(tmp_path, content, said):
    path = _crafted(tmp_path, "scan", content)
    volume = load_volume(path)  # never a crash
    assert "Sidecar" not in volume.meta and "SeriesDescription" not in volume.meta
    assert len(volume.notes) == 1 and said in volume.notes[0] and volume.notes[0].startswith("scan.json: ")
    assert volume.notes[0].endswith("its fields are not used")
    assert volume.summary()["notes"] == volume.notes


def test_sidecar_fields_of_the_wrong_type_are_left_out_with_a_note(tmp_path):
    path = _crafted(
        tmp_path,
        "scan",
        {"SeriesDescription": 7, "ProtocolName": "AX FLAIR", "RepetitionTime": 9000, "EchoTime": "0.1",
         "SeriesNumber": True, "SequenceName": "x" * 5000},
    )  # fmt: skip
    meta, notes = read_sidecar(path)
    assert meta == {"ProtocolName": "AX FLAIR", "Sidecar": "scan.json"}
    assert notes == [
        "scan.json: SeriesDescription, SequenceName, RepetitionTime, EchoTime, SeriesNumber ignored (not of "
        "the type a sidecar gives; times in seconds)"
    ]
    assert sequence_from_tags(meta) == ("flair", "sidecar ProtocolName 'AX FLAIR'")


# --- the report on the NIfTI and on the DICOM series --------------------------------------------------------


def _peak_world(path: Path) -> tuple[np.ndarray, float]:
    """World (RAS mm) of the attribution's strongest voxels (their value-weighted centroid: the top 0.5 %),
    and the map's largest voxel size."""
    volume = load_volume(path)
    values = volume.data[0]
    top = values >= np.percentile(values, 99.5)
    index, weight = np.argwhere(top), values[top]
    centroid = (index * weight[:, None]).sum(axis=0) / weight.sum()
    return volume.affine[:3, :3] @ centroid + volume.affine[:3, 3], max(volume.spacing)


@pytest.mark.slow
def test_report_on_the_nifti_says_what_the_report_on_the_dicom_says(converted, tmp_path):
    series, nifti = converted
    reports = {}
    for name, source in (("dicom", series), ("nifti", nifti)):
        out = tmp_path / name
        made = run_cli("report", str(source), "--out", str(out), *FAST_EXPLAIN)
        assert made.returncode == 0, made.stderr
        reports[name] = (json.loads((out / "report.json").read_text(encoding="utf-8")), out)
    (dicom, dicom_dir), (nii, nii_dir) = reports["dicom"], reports["nifti"]
    assert nii["entities"]["laterality"] == dicom["entities"]["laterality"] != "none"
    assert nii["entities"]["lobes"] == dicom["entities"]["lobes"] != []
    assert nii["input_check"]["sequence"]["source"] == "JSON sidecar"
    assert nii["input_check"]["sequence"]["evidence"] == "sidecar SeriesDescription 'AX FLAIR'"
    assert dicom["input_check"]["sequence"]["source"] == "DICOM tags"
    # Each map lies on its own input's voxels; its strongest voxels lie on the same world points.
    dicom_peak, voxel = _peak_world(dicom_dir / "attribution.nii.gz")
    nii_peak, _ = _peak_world(nii_dir / "attribution.nii.gz")
    assert np.linalg.norm(dicom_peak - nii_peak) < voxel, (dicom_peak, nii_peak)
    # And the maps agree voxel by voxel once the NIfTI's is put on the DICOM's grid (an exact permutation).
    a, b = load_volume(dicom_dir / "attribution.nii.gz"), load_volume(nii_dir / "attribution.nii.gz")
    assert a.shape == load_volume(series).shape and b.shape == load_volume(nifti).shape
    on_a = b.resample_to(a.affine, a.shape, order=0).data[0]
    assert np.corrcoef(on_a.ravel(), a.data[0].ravel())[0, 1] > 0.99
