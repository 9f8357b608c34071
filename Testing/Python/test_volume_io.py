"""Volume loading, saving and studies: what a user sees with good files, odd files and broken files."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import run_cli, sample_head, variant_affine, write_dicom_series, write_nifti, write_nrrd

from BrainGemma3DLib.io.errors import InputError
from BrainGemma3DLib.io.volume import Volume, load_study, load_volume


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    root = tmp_path_factory.mktemp("io")
    affine, shape = variant_affine("LPS", spacing=(2.0, 2.0, 2.5))
    data = sample_head(affine, shape)
    return root, affine, data


# --- good files ---------------------------------------------------------------------------------------
def test_volume_fields(head):
    root, affine, data = head
    path = write_nifti(root / "a.nii.gz", data, affine)
    vol = load_volume(path)
    assert vol.shape == data.shape and vol.data.shape == (1, *data.shape)
    assert np.allclose(vol.affine, affine) and vol.orientation == "LPS"
    assert vol.spacing == pytest.approx((2.0, 2.0, 2.5))
    import hashlib

    assert vol.sha256 == (hashlib.sha256(path.read_bytes()).hexdigest(),)
    assert vol.paths == (str(path),)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".nhdr", ".mhd"])
def test_formats_agree(head, suffix):
    root, affine, data = head
    path = root / f"f{suffix}"
    if suffix.startswith(".nii"):
        write_nifti(path, data, affine)
    elif suffix in (".nrrd", ".mha"):
        write_nrrd(path, data, affine)
    else:  # detached header + raw data, written by SimpleITK
        from helpers import sitk_image

        sitk.WriteImage(sitk_image(data, affine), str(path))
    vol = load_volume(path)
    assert np.allclose(vol.affine, affine, atol=1e-4)
    assert np.allclose(vol.data[0], data)
    assert len(vol.sha256[0]) == 64


def test_detached_header_hash_covers_voxels(head, tmp_path):
    root, affine, data = head
    from helpers import sitk_image

    path = tmp_path / "d.mhd"
    sitk.WriteImage(sitk_image(data, affine), str(path))
    first = load_volume(path).sha256
    raw = next(p for p in tmp_path.iterdir() if p.suffix in (".raw", ".zraw"))
    changed = data.copy()
    changed[10, 10, 10] += 1
    sitk.WriteImage(sitk_image(changed, affine), str(path))
    assert raw.exists() and load_volume(path).sha256 != first


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_save_round_trip_is_atomic_and_exact(head, tmp_path, suffix):
    _, affine, data = head
    vol = Volume(data[None], affine)
    out = vol.save(tmp_path / f"saved{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"saved{suffix}"]  # no temporary left behind
    if suffix == ".nii.gz":
        assert np.allclose(nib.load(str(out)).affine, affine)
    else:
        img = sitk.ReadImage(str(out))
        assert np.allclose(img.GetOrigin(), (np.diag([-1, -1, 1]) @ affine[:3, 3]))
    again = load_volume(out)
    assert np.allclose(again.affine, affine, atol=1e-4) and np.allclose(again.data[0], data)


def test_nifti_without_orientation_is_flagged(head, tmp_path):
    _, affine, data = head
    img = nib.Nifti1Image(data, affine)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, str(tmp_path / "bare.nii.gz"))
    vol = load_volume(tmp_path / "bare.nii.gz")
    assert any("no orientation" in n and "left and right" in n for n in vol.notes)
    assert not load_volume(write_nifti(tmp_path / "ok.nii.gz", data, affine)).notes


def test_save_where_no_folder_can_be_made_fails_cleanly(head, tmp_path):
    _, affine, data = head
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot create output folder") as err:
        Volume(data[None], affine).save(blocker / "sub" / "x.nii.gz")
    assert "a_file" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_dicom_folder_with_two_series_takes_the_larger(head, tmp_path):
    _, affine, data = head
    folder = tmp_path / "study"
    write_dicom_series(folder, data, affine, series_uid="1.2.3.4.5.6.1", description="AX FLAIR")
    small = data[:, :, :10]
    write_dicom_series(
        folder, small, affine, series_uid="1.2.3.4.5.6.2", description="LOCALIZER", prefix="loc"
    )
    vol = load_volume(folder)
    assert vol.shape == data.shape
    assert any("2 DICOM series" in n and "1.2.3.4.5.6.1" in n for n in vol.notes)
    assert vol.meta.get("SeriesDescription") == "AX FLAIR" and vol.meta.get("Modality") == "MR"
    # The frames used, in slice order, travel into report.json's input (what an SR/SEG must reference).
    frames = [f"1.2.3.4.5.6.1.{k + 1}" for k in range(data.shape[2])]
    assert vol.summary()["dicom_sop_instance_uids"] == frames
    # A single file of the smaller series selects that series.
    one = load_volume(folder / "loc0003.dcm")
    assert one.shape[2] == 10 and one.meta.get("SeriesDescription") == "LOCALIZER"


def test_load_study_stacks_and_resamples(head, tmp_path):
    _, affine, data = head
    flair = write_nifti(tmp_path / "flair.nii.gz", data, affine)
    other_affine, other_shape = variant_affine("RAS", spacing=(1.7, 1.7, 1.7))
    t2 = write_nrrd(tmp_path / "t2.nrrd", sample_head(other_affine, other_shape), other_affine)
    study = load_study([flair, t2])
    assert study.data.shape == (2, *data.shape) and study.channel_names == ("flair", "t2")
    assert len(study.sha256) == 2 and any("resampled" in n for n in study.notes)
    inside = data > 50
    # The resampled T2 matches the FLAIR where both see the head (same analytic head).
    assert np.corrcoef(study.data[0][inside], study.data[1][inside])[0, 1] > 0.9
    grid, mapping = study.to_model_grid((32, 64, 64))
    assert grid.shape == (2, 32, 64, 64) and len(mapping.intensity_ranges) == 2


def test_load_study_refuses_sequences_that_do_not_overlap(head, tmp_path):
    _, affine, data = head
    flair = write_nifti(tmp_path / "flair.nii.gz", data, affine)
    moved = affine.copy()
    moved[:3, 3] += [400.0, 0, 0]
    other = write_nifti(tmp_path / "elsewhere.nii.gz", data, moved)
    with pytest.raises(InputError, match="does not overlap") as err:
        load_study([flair, other])
    assert "elsewhere.nii.gz" in str(err.value)


def test_nibabel_test_data_loads_or_is_refused_clearly():
    """Files written by other tools: each loads, or is refused with an InputError naming it."""
    folder = Path(nib.__file__).parent / "tests" / "data"
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    assert len(files) >= 6
    loaded = refused = 0
    for path in files:
        try:
            vol = load_volume(path)
        except InputError as exc:
            refused += 1
            assert str(path) in str(exc) and "\n" not in str(exc)
        else:
            loaded += 1
            assert vol.data.ndim == 4 and np.isfinite(vol.affine).all()
            grid, mapping = vol.to_model_grid((16, 32, 32))
            assert grid.shape == (1, 16, 32, 32) and np.isfinite(grid).all()
            assert mapping.to_input(grid[0]).shape == vol.shape
    assert loaded >= 3 and refused >= 3


# --- bad input ------------------------------------------------------------------------------------------
def _bad_files(root: Path, affine: np.ndarray) -> dict[str, tuple[Path, str]]:
    cases = {}
    cases["missing"] = (root / "nope.nii.gz", "file not found")
    corrupt = root / "corrupt.nii.gz"
    corrupt.write_bytes(gzip.compress(b"this is not a nifti file" * 10))
    cases["corrupt"] = (corrupt, "corrupted")
    truncated = root / "truncated.nii.gz"
    write_nifti(truncated, np.ones((20, 20, 20), np.float32), affine)
    truncated.write_bytes(truncated.read_bytes()[:200])
    cases["truncated"] = (truncated, "corrupted")
    cases["2d"] = (write_nifti(root / "slice.nii.gz", np.ones((40, 40), np.float32), affine), "2D image")
    cases["one_slice"] = (
        write_nifti(root / "one.nii.gz", np.ones((40, 40, 1), np.float32), affine),
        "2D image",
    )
    cases["4d"] = (
        write_nifti(root / "fmri.nii.gz", np.ones((20, 20, 20, 5), np.float32), affine),
        "4D image",
    )
    nan = np.ones((20, 20, 20), np.float32)
    nan[3, 3, 3] = np.nan
    cases["nan"] = (write_nifti(root / "nan.nii.gz", nan, affine), "NaN")
    cases["zero"] = (
        write_nifti(root / "zero.nii.gz", np.zeros((20, 20, 20), np.float32), affine),
        "empty volume",
    )
    cases["suffix"] = (root / "notes.txt", "unsupported file type")
    (root / "notes.txt").write_text("hello")
    (root / "empty_dir").mkdir()
    cases["empty_dicom_dir"] = (root / "empty_dir", "no DICOM series")
    bad_nrrd = root / "bad.nrrd"
    bad_nrrd.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10 10\nencoding: raw\n\nxx")
    cases["bad_nrrd"] = (bad_nrrd, "corrupted")
    return cases


def test_bad_inputs_raise_one_clear_line(head, tmp_path):
    _, affine, _ = head
    for name, (path, words) in _bad_files(tmp_path, affine).items():
        with pytest.raises(InputError) as err:
            load_volume(path)
        message = str(err.value)
        assert words in message, f"{name}: {message}"
        assert str(path) in message and "\n" not in message, f"{name}: {message}"


def test_cli_bad_input_exit_2_and_no_output(head, tmp_path):
    _, affine, _ = head
    bad = _bad_files(tmp_path, affine)
    for name in ("missing", "corrupt", "4d", "nan", "zero"):
        path, words = bad[name]
        out = tmp_path / f"out_{name}"
        result = run_cli("preprocess", str(path), "--out", str(out))
        assert result.returncode == 2, f"{name}: {result.stderr}"
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and str(path) in lines[0], f"{name}: {result.stderr}"
        assert "Traceback" not in result.stderr
        assert not out.exists(), f"{name}: partial output left behind"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out_")]
    assert leftovers == []


def test_cli_mismatched_sequences_exit_2(head, tmp_path):
    _, affine, data = head
    flair = write_nifti(tmp_path / "flair.nii.gz", data, affine)
    moved = affine.copy()
    moved[:3, 3] += [0, 500.0, 0]
    t2 = write_nifti(tmp_path / "t2.nii.gz", data, moved)
    result = run_cli("preprocess", str(flair), str(t2), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "does not overlap" in result.stderr and "t2.nii.gz" in result.stderr
    assert not (tmp_path / "o").exists()


def test_cli_preprocess_writes_summary_and_grid(head, tmp_path):
    import json

    root, affine, data = head
    path = write_nifti(tmp_path / "flair.nii.gz", data, affine)
    out = tmp_path / "pre"
    result = run_cli("preprocess", str(path), "--out", str(out), "--grid", "32", "64", "64")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "preprocess.json").read_text())
    assert summary["input"]["orientation"] == "LPS" and summary["model_grid"]["grid_shape"] == [32, 64, 64]
    grid_img = nib.load(str(out / "model_grid_flair.nii.gz"))
    assert grid_img.shape == (32, 64, 64)
    # The written grid is a proper image: its world coordinates put the blob on the patient's left.
    arr = grid_img.get_fdata()
    idx = np.argwhere(arr > 0.7).mean(axis=0)
    world = grid_img.affine[:3, :3] @ idx + grid_img.affine[:3, 3]
    assert world[0] < -20


def test_foreground_fills_dark_ventricles_and_normalises_inside_it(head):
    _, affine, data = head
    dark = data.copy()
    ijk = np.argwhere(data > 0).mean(axis=0).astype(int)
    dark[ijk[0] - 5 : ijk[0] + 5, ijk[1] - 8 : ijk[1] + 8, ijk[2] - 4 : ijk[2] + 4] = (
        0.0  # a black "ventricle"
    )
    grid, mapping = Volume(dark[None], affine).to_model_grid((32, 64, 64))
    centre = np.round(mapping.world_to_grid(affine[:3, :3] @ ijk + affine[:3, 3])).astype(int)
    assert mapping.foreground[tuple(centre)], "an interior dark region must count as foreground"
    assert grid[0][tuple(centre)] == 0.0
    # Background is exactly 0; the 99.5th percentile of the foreground sits at 0.75, leaving headroom
    # for hyperintensities up to 1.
    assert (grid[0][~mapping.foreground] == 0).all()
    inside = grid[0][mapping.foreground]
    assert np.percentile(inside, 99.5) == pytest.approx(0.75, abs=0.02) and inside.max() <= 1.0
