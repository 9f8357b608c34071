"""Left stays left: the same head, stored in every orientation and format, lands the same way on the grid,
and a map on the grid returns onto the blob in the original file's own world coordinates.

The expected positions are checked with nibabel / SimpleITK reading the written files, never with our code.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import (
    BLOB_RADIUS,
    BLOB_RAS,
    sample_head,
    variant_affine,
    write_dicom_series,
    write_nifti,
    write_nrrd,
)

from BrainGemma3DLib.io.volume import load_volume

GRID = (48, 96, 96)
VARIANTS = ["RAS", "LAS", "LPS", "oblique"]
FORMATS = ["nifti", "nrrd", "dicom"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Every (format, orientation) variant of the head, written to disk once."""
    root = tmp_path_factory.mktemp("heads")
    files = {}
    for variant in VARIANTS:
        affine, shape = variant_affine(variant)
        data = sample_head(affine, shape)
        files[("nifti", variant)] = write_nifti(root / f"head_{variant}.nii.gz", data, affine)
        files[("nrrd", variant)] = write_nrrd(root / f"head_{variant}.nrrd", data, affine)
        files[("dicom", variant)] = write_dicom_series(root / f"dicom_{variant}", data, affine)
    return files


def file_world_of_index(path, ijk) -> np.ndarray:
    """RAS mm of voxel index ``ijk`` (our (i, j, k) = the file's own index order), by nibabel or SimpleITK."""
    path = str(path)
    if path.endswith((".nii", ".nii.gz")):
        affine = nib.load(path).affine
        return affine[:3, :3] @ np.asarray(ijk, dtype=float) + affine[:3, 3]
    if path.endswith(".nrrd"):
        img = sitk.ReadImage(path)
    else:
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path)
        img = sitk.ReadImage(files)
    lps = np.asarray(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in ijk]))
    return lps * np.array([-1.0, -1.0, 1.0])


def file_blob_mask(path) -> np.ndarray:
    """The blob's voxels in the file's own (i, j, k) index order, read by nibabel or SimpleITK."""
    path = str(path)
    if path.endswith((".nii", ".nii.gz")):
        data = np.asanyarray(nib.load(path).dataobj)
    else:
        img = (
            sitk.ReadImage(path)
            if path.endswith(".nrrd")
            else sitk.ReadImage(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(path))
        )
        data = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    return data > 200


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_blob_on_patient_left_of_model_grid(written, fmt, variant):
    vol = load_volume(written[(fmt, variant)])
    grid, mapping = vol.to_model_grid(GRID)
    assert grid.shape == (1, *GRID) and grid.dtype == np.float32
    blob = grid[0] > 0.7
    assert blob.sum() > 50, "blob not found on the model grid"
    d, h, w = np.argwhere(blob).mean(axis=0)
    # W runs from the patient's right (0) to the patient's left (W - 1): a left blob is in the high half.
    assert w > GRID[2] / 2 + 5, f"{fmt}/{variant}: blob at W={w:.1f}, expected the patient's left half"
    # ... anterior (H runs anterior -> posterior) and superior (D runs inferior -> superior) of centre.
    assert h < GRID[1] / 2 and d > GRID[0] / 2
    # The grid position is the blob's true world position.
    assert np.linalg.norm(mapping.grid_to_world((d, h, w)) - BLOB_RAS) < 3.0


def test_same_grid_position_in_every_variant(written):
    positions = {}
    for key, path in written.items():
        grid, _ = load_volume(path).to_model_grid(GRID)
        positions[key] = np.argwhere(grid[0] > 0.7).mean(axis=0)
    ref = positions[("nifti", "RAS")]
    for key, pos in positions.items():
        assert np.abs(pos - ref).max() < 1.5, f"{key}: blob at {pos}, RAS NIfTI at {ref}"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_map_returns_onto_blob_in_file_world(written, fmt, variant):
    path = written[(fmt, variant)]
    vol = load_volume(path)
    grid, mapping = vol.to_model_grid(GRID)
    centre = np.argwhere(grid[0] > 0.7).mean(axis=0)
    dd, hh, ww = np.meshgrid(*[np.arange(n) for n in GRID], indexing="ij")
    bump = np.exp(-((dd - centre[0]) ** 2 + (hh - centre[1]) ** 2 + (ww - centre[2]) ** 2) / (2 * 2.0**2))

    back = mapping.to_input(bump.astype(np.float32), kind="map")
    assert back.shape == vol.shape and np.allclose(back.affine, vol.affine)
    peak = np.unravel_index(np.argmax(back.data[0]), back.shape)
    world = file_world_of_index(path, peak)
    assert world[0] < 0, f"{fmt}/{variant}: the map peak landed on the patient's right ({world})"
    assert np.linalg.norm(world - BLOB_RAS) < 4.0, f"{fmt}/{variant}: peak at {world}, blob at {BLOB_RAS}"

    # A labelmap of the blob on the grid returns onto the blob's voxels in the file (nearest neighbour).
    labels = (grid[0] > 0.7).astype(np.uint8) * 7
    label_back = mapping.to_input(labels, kind="label")
    assert set(np.unique(label_back.data)) <= {0, 7}
    truth = file_blob_mask(path)
    mine = label_back.data[0] == 7
    dice = 2 * (mine & truth).sum() / (mine.sum() + truth.sum())
    assert dice > 0.8, f"{fmt}/{variant}: label Dice {dice:.2f}"


def test_blob_radius_fixture_is_meaningful():
    """Guard the fixture: the blob must be a few percent of the head so it sets the upper percentile."""
    assert 10 < BLOB_RADIUS < 25


def test_clinical_anisotropic_resolution(tmp_path):
    """0.9 x 0.9 x 5 mm axial slices: still on the left, field of view fitted without stretching."""
    affine, shape = variant_affine("LPS", spacing=(0.9, 0.9, 5.0))
    path = write_nifti(tmp_path / "clinical.nii.gz", sample_head(affine, shape), affine)
    grid, mapping = load_volume(path).to_model_grid(GRID)
    d, h, w = np.argwhere(grid[0] > 0.7).mean(axis=0)
    assert w > GRID[2] / 2 + 5
    assert np.linalg.norm(mapping.grid_to_world((d, h, w)) - BLOB_RAS) < 4.0
    # One scale for all axes: grid spacing ratios equal the nominal ratios (no per-axis stretching).
    sd, sh, sw = mapping.grid_spacing
    assert sh == pytest.approx(sw)
    assert sd / sh == pytest.approx((155 / GRID[0]) / (240 / GRID[1]))
