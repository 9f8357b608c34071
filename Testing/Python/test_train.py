"""One-epoch smoke runs of each training phase from the CLI, chained, with resume and the saved split."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import pytest
from helpers import REPO, run_cli

from BrainGemma3DLib.model import load_checkpoint


@pytest.fixture
def data(phantom_data):
    return phantom_data


@pytest.mark.slow
def test_three_phases_chain_and_resume(data, tmp_path):
    phases = [("contrastive", None), ("warmup", "contrastive"), ("lora", "warmup")]
    for phase, previous in phases:
        args = [
            "train",
            "--phase",
            phase,
            "--data",
            str(data),
            "--out",
            str(tmp_path / phase),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--quiet",
        ]
        if previous:
            args += ["--init", str(tmp_path / previous / "best")]
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        log = [json.loads(line) for line in (tmp_path / phase / "metrics.jsonl").read_text().splitlines()]
        assert len(log) == 1 and log[0]["phase"] == phase and log[0]["val_loss"] > 0
        # Phantoms carry tumour labels: contrastive and warmup ground the visual tokens on them.
        assert ("train_grounding" in log[0]) == (phase != "lora")
        assert (tmp_path / phase / "best" / "split.json").is_file()
    # The split chains unchanged from phase to phase.
    splits = [json.loads((tmp_path / p / "best" / "split.json").read_text()) for p, _ in phases]
    assert splits[0] == splits[1] == splits[2]
    assert not set(splits[0]["train"]) & set(splits[0]["test"])
    # The last phase's output is a model: it loads and writes a report.
    model = load_checkpoint(tmp_path / "lora" / "best", device="cpu")
    assert hasattr(model.lm, "peft_config")
    import torch

    assert (
        model.generate(torch.rand(1, *model.cfg.grid[:0], 1, *model.cfg.grid), max_new_tokens=5)[0].num_tokens
        > 0
    )
    # evaluate writes its three files, with the three kinds of scores.
    result = run_cli(
        "evaluate",
        "--model",
        str(tmp_path / "lora" / "best"),
        "--data",
        str(data),
        "--split",
        "all",
        "--out",
        str(tmp_path / "eval"),
        "--limit",
        "3",
        "--max-new-tokens",
        "6",
        "--drafts",
        "0",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["cases"] == 3 and {"BLEU-4", "ROUGE-L", "CIDEr", "METEOR"} <= set(metrics["text"])
    assert set(metrics["keyword_f1"]) == {"laterality", "anatomy", "pathology"}
    assert "hemisphere_accuracy" in metrics["strict"] and "finding_f1" in metrics["strict"]
    rows = (tmp_path / "eval" / "cases.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("case_id,")
    assert "| strict score" in (tmp_path / "eval" / "metrics.md").read_text()
    # Resume: asking for 2 epochs continues after epoch 1 instead of starting again.
    result = run_cli(
        "train",
        "--phase",
        "warmup",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "warmup"),
        "--epochs",
        "2",
        "--init",
        str(tmp_path / "contrastive" / "best"),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    epochs = [
        json.loads(x)["epoch"] for x in (tmp_path / "warmup" / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs == [1, 2]
    # A checkpoint's split does not silently apply to another data folder.
    other = tmp_path / "other"
    assert (
        run_cli(
            "phantoms", "--out", str(other), "--n", "3", "--healthy", "1", "--seed", "2", "--quiet"
        ).returncode
        == 0
    )
    result = run_cli(
        "train",
        "--phase",
        "warmup",
        "--data",
        str(other),
        "--out",
        str(tmp_path / "w-other"),
        "--init",
        str(tmp_path / "contrastive" / "best"),
        "--epochs",
        "1",
        "--quiet",
    )
    assert result.returncode == 2 and "--new-split" in result.stderr


def test_train_bad_usage(data, tmp_path):
    result = run_cli(
        "train", "--phase", "warmup", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")
    )
    assert result.returncode == 2 and "data folder not found" in result.stderr
    result = run_cli(
        "train", "--phase", "warmup", "--data", str(data), "--out", str(tmp_path / "o2"), "--epochs", "0"
    )
    assert result.returncode == 2 and "--epochs" in result.stderr


def test_mirror_augmentation_flips_the_side_in_image_and_text():
    import numpy as np
    import torch

    from BrainGemma3DLib.training.train import mirror_batch, swap_sides

    assert swap_sides("Left frontal lesion; the right ventricle is compressed.") == (
        "Right frontal lesion; the left ventricle is compressed."
    )
    assert swap_sides("bright lesion, leftover") == "bright lesion, leftover"  # whole words only
    x = torch.zeros(2, 1, 4, 8, 8)
    x[:, :, :, :, 6:] = 1.0  # bright on the high-W side: the patient's left
    out, texts, none = mirror_batch(x, ["left lesion", "left lesion"], 1.0, np.random.default_rng(0))
    assert none is None
    assert texts == ["right lesion", "right lesion"]
    assert out[:, :, :, :, :2].sum() > 0 and out[:, :, :, :, 6:].sum() == 0
    same, kept, _ = mirror_batch(x, ["left lesion", "left lesion"], 0.0, np.random.default_rng(0))
    assert torch.equal(same, x) and kept == ["left lesion", "left lesion"]
    lesion = x[:, 0].clone()
    out, _, flipped = mirror_batch(x, ["left", "left"], 1.0, np.random.default_rng(0), lesion)
    assert torch.equal(flipped, out[:, 0])  # the lesion mask follows its image


def test_grounding_targets_name_the_tokens_that_hold_the_lesion(data):
    """A lesion in the left hemisphere lights the left half of the visual tokens, in the LM's order."""
    import numpy as np
    import torch

    from BrainGemma3DLib.io.volume import load_volume
    from BrainGemma3DLib.model import preset
    from BrainGemma3DLib.training.data import scan
    from BrainGemma3DLib.training.grounding import (
        CLASSES,
        GroundingHead,
        lesion_on_grid,
        token_targets,
        visual_targets,
    )

    found = scan(data)
    assert all((c.seg is not None) != c.healthy for c in found.cases)
    cfg = preset("demo")
    lesion = torch.zeros(1, len(CLASSES), *cfg.grid)
    lesion[:, 0, 20:24, 4:12, 44:52] = 1.0  # superior, anterior, patient's left (high W)
    lesion[:, 2, 20:24, 4:12, 48:52] = 1.0  # its edema part
    blocks = visual_targets(cfg, lesion)[0]  # (K, L)
    lit = torch.nonzero(blocks[:, 0] > 0).flatten().tolist()
    assert lit and all(k >= 16 for k in lit)  # second half of the visual tokens = left hemisphere
    kd, kh, _ = cfg.regions
    assert all(k % kd == 2 and (k // kd) % kh == 0 for k in lit)  # its height block and its front block
    assert torch.equal(blocks[:, 2] > 0, blocks[:, 0] > 0) and blocks[:, 1].max() == 0  # edema, no core
    tokens = token_targets(cfg, lesion)[0, :, 0].reshape(cfg.token_grid)
    assert tokens[5, 0:2, 5:7].min() > 0 and tokens[:, :, :4].max() == 0
    published = visual_targets(preset("published"), lesion)[0]
    slices = visual_targets(preset("slices"), lesion)[0]
    assert (
        published.shape == slices.shape == (32, len(CLASSES)) and slices.reshape(8, 2, 2, -1)[5, 0, 1, 0] > 0
    )
    head = GroundingHead(cfg)
    loss = head(torch.zeros(1, cfg.num_patch_tokens, 64), torch.zeros(1, 32, 64), lesion)
    assert torch.isfinite(loss) and loss > 0
    # A phantom's BraTS labels land on the model grid class by class, where its FLAIR is bright.
    case = next(c for c in found.cases if c.seg is not None)
    grid, mapping = load_volume(case.images["flair"]).to_model_grid(cfg.grid)
    classes = lesion_on_grid(case.seg, mapping)
    assert classes.shape == (len(CLASSES), *cfg.grid)
    whole = classes[0] > 0.5
    assert whole.any() and (classes[1:].sum(0)[whole] > 0.5).all()  # every lesion voxel has a class
    assert np.median(grid[0][whole]) > np.percentile(grid[0][mapping.foreground & ~whole], 99)


def test_compare_builds_the_readme_table(tmp_path):
    runs = []
    for name, hemi in (("ours", 0.97), ("published", 0.5)):
        folder = tmp_path / name
        folder.mkdir()
        metrics = {
            "cases": 10,
            "text": {"BLEU-4": 0.2, "ROUGE-L": 0.4},
            "keyword_f1": {"laterality": hemi, "anatomy": 0.8, "pathology": 0.9},
            "strict": {"hemisphere_accuracy": {"value": hemi, "ci_low": 0, "ci_high": 1}},
        }
        (folder / "metrics.json").write_text(json.dumps(metrics))
        runs.append(f"{name}={folder}")
    result = run_cli("compare", *runs, "--out", str(tmp_path / "table.md"))
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "table.md").read_text().splitlines()
    assert rows[2].startswith("| ours | 10 | 0.200 | 0.400 | 0.970") and "0.500" in rows[3]
    assert rows[2].endswith("n/a |")  # a score the evaluation did not have is said, not invented
    result = run_cli("compare", f"x={tmp_path / 'missing'}")
    assert result.returncode == 2 and "no metrics.json" in result.stderr


def test_preprocessing_in_worker_processes_gives_the_same_tensors(data, tmp_path):
    """``train --workers N`` only spreads the reading; the cases on the grid are bit-identical."""
    import torch

    from BrainGemma3DLib.training.data import scan
    from BrainGemma3DLib.training.train import prepare_cases

    records = scan(data).cases
    one = prepare_cases(records, (32, 64, 64), False, lesions=True, workers=1)
    two = prepare_cases(records, (32, 64, 64), False, lesions=True, workers=2)
    assert torch.equal(one.x, two.x) and torch.equal(one.lesion, two.lesion)
    assert one.texts == two.texts and torch.equal(one.labelled, two.labelled)
    assert one.x.shape[0] == len(records) and one.lesion.dtype == torch.float16
    assert bool(one.labelled.all()) and float(one.lesion.sum()) > 0
    result = run_cli(
        "train", "--phase", "warmup", "--data", str(data), "--out", str(tmp_path / "w"), "--workers", "0"
    )
    assert result.returncode == 2 and "--workers" in result.stderr


def test_a_new_model_takes_the_sequences_it_is_trained_on(data, tmp_path):
    """--sequences flair,t1ce,t2 on a fresh preset builds a 3-channel model; evaluate reads the same three."""
    out = tmp_path / "three"
    result = run_cli(
        "train", "--phase", "warmup", "--data", str(data), "--out", str(out), "--sequences", "flair,t1ce,t2",
        "--epochs", "1", "--batch-size", "4", "--max-cases", "4", "--train-lm", "--train-encoder", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model = load_checkpoint(out / "best", device="cpu")
    assert model.cfg.in_channels == 3
    assert tuple(model.encoder.patch_embedding.weight.shape[:2]) == (model.cfg.vision_hidden, 3)
    # The checkpoint carries the input check's statistics of its three sequences (training split; the limit
    # from the validation split), so a report on it says whether a scan is like its training scans.
    from BrainGemma3DLib.model.input_check import load_input_stats

    stats, why = load_input_stats(out / "best", channels=3)
    assert why == "" and "c2_deep_to_superficial" in stats["features"]
    assert stats["source"]["heldout"]["split"] == "val" and stats["calibration"]["train_cases"] == 4
    evaluated = run_cli(
        "evaluate", "--model", str(out / "best"), "--data", str(data), "--split", "all",
        "--out", str(tmp_path / "eval"), "--drafts", "0", "--limit", "4", "--max-new-tokens", "24", "--quiet",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))["cases"] == 4


def test_finding_targets_read_the_report_negation_aware():
    from BrainGemma3DLib.training.grounding import finding_targets

    targets, known = finding_targets(
        [
            "A lesion is seen in the left frontal lobe. Necrosis is present. No enhancing component is seen.",
            "No focal lesion or abnormal signal is identified on FLAIR. The ventricles are normal.",
        ]
    )
    # edema, necrosis, enhancement, mass_effect
    assert known[0].tolist() == [0.0, 1.0, 1.0, 0.0] and targets[0].tolist()[1:3] == [1.0, 0.0]
    assert known[1].tolist() == [1.0] * 4 and targets[1].tolist() == [0.0] * 4  # no lesion: nothing present


def test_finding_loss_trains_saves_its_head_and_resumes(data, tmp_path):
    args = ["train", "--phase", "warmup", "--data", str(data), "--out", str(tmp_path / "w")]
    args += ["--batch-size", "4", "--findings", "0.5", "--quiet"]
    assert run_cli(*args, "--epochs", "1").returncode == 0
    assert (tmp_path / "w" / "best" / "finding_head.safetensors").is_file()
    result = run_cli(*args, "--epochs", "2")  # resumes after epoch 1, the head included
    assert result.returncode == 0, result.stderr
    log = [json.loads(line) for line in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(r["train_findings"] > 0 for r in log)
    bad = run_cli(
        "train", "--phase", "warmup", "--data", str(data), "--out", str(tmp_path / "x"), "--findings", "-1"
    )
    assert bad.returncode == 2 and "--findings" in bad.stderr


def test_findings_learnability_experiment_runs_every_variant(data):
    """tools/findings_learnability.py (the README's evidence on the finding score) keeps working."""
    tool = REPO / "tools" / "findings_learnability.py"
    variants = ["core-mask", "vit", "vit-dense", "wide", "fine", "overlap", "cnn"]
    result = subprocess.run(
        [sys.executable, str(tool), "--train", str(data), "--heldout", str(data), "--epochs", "1"]
        + ["--workers", "1", "--variants", ",".join(variants)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("== ")[1:]
    assert [b.split()[0] for b in blocks] == variants
    for block in blocks:
        scores = re.findall(r"(edema|necrosis|enhancement|mass_effect) ([01]\.\d{3})", block)
        assert len(scores) >= 4 and all(0.0 <= float(v) <= 1.0 for _, v in scores)
    bad = subprocess.run(
        [sys.executable, str(tool), "--train", str(data), "--heldout", str(data), "--variants", "vgg"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown variant" in bad.stderr


def test_necrotic_core_target_keeps_label_1_only_where_the_tumour_enhances():
    import torch

    spec = importlib.util.spec_from_file_location("fl", REPO / "tools" / "findings_learnability.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    lesion = torch.zeros(2, 4, 2, 2, 2)  # lesion, core (label 1), edema, enhancing
    lesion[:, 1, 0] = 1.0  # both cases have label 1 in the first slab
    lesion[0, 3, 1] = 1.0  # only case 0 also has an enhancing part: its label 1 is the necrosis
    target = tool.necrotic_core(lesion)
    assert target.shape == (2, 1, 2, 2, 2)
    assert target[0, 0, 0].eq(1).all() and target[0, 0, 1].eq(0).all()
    assert target[1].eq(0).all()  # non-enhancing tumour: label 1 is the whole core, not necrosis
