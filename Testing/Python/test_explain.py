"""3D LIME: deterministic for a seed, cancellable, and mapped back onto the input's own voxels and geometry
(LPS and oblique inputs), with a .seg.nrrd that Slicer's own segmentation reader (slicer-core) loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import sample_head, variant_affine

TEXT = "The lesion is in the left frontal lobe. There is surrounding edema."
FAST = {"n_segments": 16, "n_samples": 40, "batch_size": 8}
#: Enough samples for the fit to find significantly positive supervoxels (the geometry test needs some).
GEOMETRY = {"n_segments": 32, "n_samples": 96, "batch_size": 16}


@pytest.fixture(scope="module")
def model(demo_model):
    return demo_model


def _case(variant: str):
    from BrainGemma3DLib.io.volume import Volume

    affine, shape = variant_affine(variant, spacing=(2.0, 2.0, 2.5))
    return Volume(sample_head(affine, shape), affine, ("synthetic.nii.gz",))


@pytest.fixture(scope="module")
def lps_case(model):
    volume = _case("LPS")
    grid, mapping = volume.to_model_grid(model.cfg.grid)
    return volume, grid, mapping


def test_same_seed_same_explanation_and_seed_matters(model, lps_case):
    from BrainGemma3DLib.explain import ExplainOptions, explain

    _, grid, mapping = lps_case
    runs = [
        explain(
            model,
            grid,
            mapping.foreground,
            mapping.grid_spacing,
            TEXT,
            options=ExplainOptions(**FAST, seed=s),
        )
        for s in (7, 7, 8)
    ]
    assert np.array_equal(runs[0].segments, runs[1].segments)
    assert runs[0].weights == runs[1].weights
    assert runs[0].weights != runs[2].weights
    # Supervoxels stay inside the brain, and every one gets a weight.
    assert (runs[0].segments[~mapping.foreground] == 0).all()
    assert set(runs[0].weights) == set(np.unique(runs[0].segments[runs[0].segments > 0]).tolist())
    assert runs[0].n_samples == 40 and runs[0].batch_size == 8


def test_batched_scores_equal_one_volume_per_pass(model, lps_case):
    """Batching is an optimisation only: the fitted weights do not depend on the batch size."""
    from BrainGemma3DLib.explain import ExplainOptions, explain

    _, grid, mapping = lps_case
    one, many = (
        explain(
            model,
            grid,
            mapping.foreground,
            mapping.grid_spacing,
            TEXT,
            options=ExplainOptions(**FAST | {"batch_size": b}),
        )
        for b in (1, 16)
    )
    ids = sorted(one.weights)
    assert np.allclose([one.weights[i] for i in ids], [many.weights[i] for i in ids], atol=1e-3)


def test_span_target_progress_and_cancel(model, lps_case):
    from BrainGemma3DLib.explain import Cancelled, ExplainOptions, explain

    _, grid, mapping = lps_case
    seen: list[float] = []
    span = (TEXT.index("left"), TEXT.index("left") + 4)
    found = explain(
        model,
        grid,
        mapping.foreground,
        mapping.grid_spacing,
        TEXT,
        span=span,
        options=ExplainOptions(**FAST),
        progress=lambda f, _msg: seen.append(f),
    )
    assert found.target == "left" and found.summary()["span"] == list(span)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) == 5
    calls = []
    with pytest.raises(Cancelled):
        explain(
            model,
            grid,
            mapping.foreground,
            mapping.grid_spacing,
            TEXT,
            options=ExplainOptions(**FAST),
            cancel=lambda: calls.append(1) or len(calls) > 2,
        )
    assert len(calls) == 3  # polled between batches, stopped at once


@pytest.mark.parametrize("variant", ["LPS", "oblique"])
def test_attribution_files_have_the_input_geometry_and_load_in_slicer(model, tmp_path, variant):
    import nibabel as nib
    import slicerio
    from scipy import ndimage

    from BrainGemma3DLib.explain import ExplainOptions, explain, write_attribution
    from BrainGemma3DLib.io.volume import RAS_FROM_LPS

    volume = _case(variant)
    grid, mapping = volume.to_model_grid(model.cfg.grid)
    found = explain(
        model, grid, mapping.foreground, mapping.grid_spacing, TEXT, options=ExplainOptions(**GEOMETRY)
    )
    assert found.ranked(), "no significantly positive supervoxel to check the geometry with"
    from BrainGemma3DLib.reporting.evidence import attribution_side

    side = attribution_side(found.attribution_map(), mapping)
    written = write_attribution(found, mapping, tmp_path, top_k=3, midline_x=side["midline_ras_x"])

    img = nib.load(written["map"])
    assert img.shape == volume.shape
    assert np.allclose(img.affine, volume.affine, atol=1e-4)
    values = np.asarray(img.dataobj)
    top_sv, top_w = found.ranked()[0]
    # The strongest supervoxel's weight is found on the input grid where that supervoxel lies.
    core = ndimage.binary_erosion(found.segments == top_sv, iterations=2)  # away from its neighbours
    back = mapping.to_input(core.astype(np.float32)).data[0] > 0.99
    assert back.any() and np.allclose(values[back], top_w, atol=1e-5)

    seg = slicerio.read_segmentation(written["segmentation"])
    assert np.allclose(seg["ijkToLPS"], RAS_FROM_LPS @ volume.affine, atol=1e-4)
    names = [s["name"] for s in seg["segments"]]
    assert names == [s["name"] for s in written["segments"]] and len(names) == min(3, len(found.ranked()))
    # Named in words: the side (the case's blob is on the patient's left) and the volume on the input grid.
    first_segment = written["segments"][0]
    assert names[0] == f"#1 {first_segment['side']} (w={top_w:+.3g}, {first_segment['volume_ml']:.1f} mL)"
    assert first_segment["side"] in ("left", "right", "midline")
    voxel_ml = abs(np.linalg.det(volume.affine[:3, :3])) / 1000
    expected_ml = (mapping.to_input(found.top_labelmap(1), kind="label").data[0] == 1).sum() * voxel_ml
    assert first_segment["volume_ml"] == pytest.approx(expected_ml, abs=0.01)
    voxels = seg["voxels"]
    first = next(s for s in seg["segments"] if s["name"] == names[0])
    assert np.array_equal(
        voxels == first["labelValue"], mapping.to_input(found.top_labelmap(1), kind="label").data[0] == 1
    )

    # Slicer's own reader (slicer-core): segment count, names, colours and geometry.
    slicer = pytest.importorskip("slicer")
    import vtk

    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(written["segmentation"])
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(names)
    got = [segmentation.GetNthSegment(i).GetName() for i in range(len(names))]
    assert got == names
    colour = segmentation.GetNthSegment(0).GetColor()
    assert np.allclose(colour, written["segments"][0]["color"], atol=1e-3)
    labelmap = segmentation.GetNthSegment(0).GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    to_world = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    assert np.allclose(to_world, volume.affine, atol=1e-3)  # RAS, the input's own voxel grid


@pytest.mark.slow
def test_evaluate_explain_scores_attributions_against_the_tumour(phantom_data, tmp_path):
    """`evaluate --explain` explains each pathological draft and scores it against its tumour labels."""
    import csv

    from BrainGemma3DLib.cli import main

    out = tmp_path / "eval"
    args = ["evaluate", "--model", "demo", "--data", str(phantom_data), "--split", "all", "--out", str(out)]
    assert main([*args, "--limit", "3", "--drafts", "0", "--explain", "--quiet"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    with open(out / "cases.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    pathological = sum(row["healthy"] in ("False", "false", "0") for row in rows)
    explained = result["explain"]
    assert len(rows) == 3 and explained["cases"] == pathological >= 1  # a healthy control has no tumour
    for key in ("top_supervoxel_in_lesion", "positive_mass_in_lesion"):
        assert 0.0 <= explained[key]["ci_low"] <= explained[key]["value"] <= explained[key]["ci_high"] <= 1.0
    assert "3D LIME vs tumour + edema" in (out / "metrics.md").read_text()
    # Every explained draft records how compact its evidence is and whether the diffuse warning fired.
    assert all(0.0 <= float(row["explain_compact_fraction"]) <= 1.0 for row in rows)
    fired = [row["explain_diffuse_warning"] == "True" for row in rows if row["healthy"] == "False"]
    assert explained["diffuse_warning_on_lesions"]["value"] == pytest.approx(sum(fired) / len(fired))


def test_standard_errors_belong_to_limes_own_fit():
    """The significance filter uses LIME's regression: same coefficients, and noise weights are filtered."""
    from BrainGemma3DLib.explain import lime_fit, perturbation_masks, standard_errors, weighted_ridge

    z = perturbation_masks(30, 300, 0.5, seed=1)
    true = np.zeros(30)
    true[[3, 17]] = [2.0, 1.0]
    scores = -20.0 + z @ true + np.random.default_rng(2).normal(0, 0.3, len(z))
    weights, intercept, _r2 = lime_fit(z, scores, 0.25, seed=0)
    coef, _cov = weighted_ridge(z, scores, 0.25)
    assert np.allclose(coef[1:], [weights[i] for i in range(30)], atol=1e-6)
    assert np.isclose(coef[0], intercept, atol=1e-6)
    errors = standard_errors(z, scores, 0.25)
    significant = {i for i in range(30) if weights[i] > 2 * errors[i]}
    assert {3, 17} <= significant and len(significant) <= 4
