"""One-epoch smoke runs of each training phase from the CLI, chained, with resume and the saved split."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from BrainGemma3DLib.model import load_checkpoint


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("t") / "data"
    result = run_cli("phantoms", "--out", str(out), "--n", "8", "--healthy", "2", "--seed", "9", "--quiet")
    assert result.returncode == 0, result.stderr
    return out


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

    from BrainGemma3DLib.train import mirror_batch, swap_sides

    assert swap_sides("Left frontal lesion; the right ventricle is compressed.") == (
        "Right frontal lesion; the left ventricle is compressed."
    )
    assert swap_sides("bright lesion, leftover") == "bright lesion, leftover"  # whole words only
    x = torch.zeros(2, 1, 4, 8, 8)
    x[:, :, :, :, 6:] = 1.0  # bright on the high-W side: the patient's left
    out, texts = mirror_batch(x, ["left lesion", "left lesion"], 1.0, np.random.default_rng(0))
    assert texts == ["right lesion", "right lesion"]
    assert out[:, :, :, :, :2].sum() > 0 and out[:, :, :, :, 6:].sum() == 0
    same, kept = mirror_batch(x, ["left lesion", "left lesion"], 0.0, np.random.default_rng(0))
    assert torch.equal(same, x) and kept == ["left lesion", "left lesion"]
