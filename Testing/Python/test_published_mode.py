"""The published checkpoint, run faithfully: our ``published`` mode against the published code's own outputs.

``Testing/Data/published_reference`` holds what the published BrainGemma3D code (its pinned transformers
4.57.3, float32 on a CPU) produced for a tiny checkpoint in the published layout and a FLAIR with a lesion on
the patient's left (``tools/published_reference.py`` says how it was made). The checkpoint and the FLAIR are
rebuilt here bit for bit (their digests are in the reference) and run through our code on today's libraries.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import REPO
from published_fixture import LESION_RAS, build_tiny_published, file_sha256, left_lesion_flair

from BrainGemma3DLib.io.volume import load_study
from BrainGemma3DLib.model import load
from BrainGemma3DLib.reporting.consensus import DecodingOptions, decode

REFERENCE = REPO / "Testing" / "Data" / "published_reference"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("published")
    reference = json.loads((REFERENCE / "reference.json").read_text(encoding="utf-8"))
    digests = build_tiny_published(folder / "checkpoint")
    flair = left_lesion_flair(folder / "flair.nii.gz")
    assert digests == reference["checkpoint"], "the tiny checkpoint is not the one the reference was made on"
    assert file_sha256(flair) == reference["flair_sha256"]
    model = load(str(folder / "checkpoint"), device="cpu", grid=tuple(reference["grid"]))
    grid, mapping = load_study([flair]).to_model_grid(model.cfg.grid, method=model.cfg.preprocess)
    tensors = load_file(str(REFERENCE / "reference.safetensors"))
    return {"folder": folder, "flair": flair, "model": model, "grid": grid, "mapping": mapping,
            "reference": reference, "tensors": tensors}  # fmt: skip


def test_a_published_layout_folder_is_recognised_and_configured_as_published(published):
    cfg = published["model"].cfg
    assert cfg.preset == "published" and cfg.preprocess == "published" and cfg.prompt_style == "published"
    assert (cfg.tubelet, cfg.depth_stride, cfg.position, cfg.compressor) == (2, 1, "published", "pool1d")
    assert cfg.decoding["temperature"] == 0.1 and cfg.decoding["top_p"] == 0.9
    assert cfg.grid == (10, 44, 44)  # not a multiple of 14: the convolution floors, as the published one does


def test_the_grid_is_the_published_loaders_to_float32_rounding(published):
    expected = published["tensors"]["grid"].numpy()
    assert published["grid"].shape == (1, *expected.shape)
    assert np.abs(published["grid"][0] - expected).max() <= 1e-6


def test_the_lesion_on_the_patients_left_lands_where_the_published_loader_puts_it(published):
    """Our mapping of the published grid sends the lesion's place in the patient to a voxel that is bright
    in the published loader's own grid, and the mirror-image place (same tissue, no lesion) to one that is
    not: left stays left, on the published grid's own axes."""
    mapping, expected = published["mapping"], published["tensors"]["grid"].numpy()
    lesion = mapping.world_to_grid(LESION_RAS)
    mirror = mapping.world_to_grid((-LESION_RAS[0], LESION_RAS[1], LESION_RAS[2]))
    at = lambda point: expected[tuple(np.round(point).astype(int))]  # noqa: E731
    assert at(lesion) >= 0.99 and at(mirror) < 0.9, (at(lesion), at(mirror))
    d, h, w = lesion / (np.asarray(expected.shape) - 1)
    # published grid axes: D inferior->superior, H posterior->anterior, W the patient's left->right
    assert d > 0.5 and h > 0.5 and w < 0.5, (d, h, w)


def test_visual_embeddings_match_the_published_code(published):
    model = published["model"]
    with torch.no_grad():
        visual = model.visual_tokens(model.as_batch(published["grid"]))[0]
    expected = published["tensors"]["visual"]
    assert visual.shape == expected.shape == (32, 64)
    assert torch.allclose(visual, expected, atol=1e-5, rtol=1e-5), (visual - expected).abs().max()


def test_first_step_logits_match_the_published_code(published):
    model = published["model"]
    with torch.no_grad():
        embeds = model.prompt_embeddings(model.visual_tokens(model.as_batch(published["grid"])))
        logits = model.lm(inputs_embeds=embeds).logits[0, -1].float()
    assert (
        model.prompt.suffix_ids == published["reference"]["prompt_ids"]
    )  # [<bos>] + the prompt, no template
    assert (logits - published["tensors"]["first_logits"]).abs().max() <= 1e-4


def test_greedy_and_seeded_sampled_tokens_are_the_published_codes(published):
    model, reference = published["model"], published["reference"]
    n = reference["new_tokens"]
    greedy = model.generate(published["grid"], max_new_tokens=n)[0]
    assert greedy.token_ids == reference["greedy_ids"]
    sampled = model.generate(
        published["grid"], max_new_tokens=n, do_sample=True, seed=reference["sampled_seed"]
    )
    assert sampled[0].token_ids == reference["sampled_ids"]


def test_the_default_decoding_of_a_published_checkpoint_is_the_published_sampling(published):
    model = published["model"]
    draft = decode(model, published["grid"], DecodingOptions(seed=0), max_new_tokens=8)
    assert draft.decoding["method"] == "published sampling" and draft.decoding["temperature"] == 0.1
    consensus = decode(model, published["grid"], DecodingOptions(samples=2, seed=0), max_new_tokens=8)
    assert consensus.decoding["method"] == "consensus"  # still available on request


def test_checkpoint_identity_covers_every_weight_file_read(published):
    model = published["model"]
    files = set(model.checkpoint_files)
    assert files == {
        "projector_vis_scale.pt",
        "vision_model/model.safetensors",
        "language_model/model.safetensors",
    }
    assert (
        len(model.checkpoint_sha256) == 64 and model.checkpoint_sha256 not in model.checkpoint_files.values()
    )


def _with_adapters(published, tmp_path, mutate=None):
    """A copy of the tiny checkpoint (its folders linked) with LoRA adapters saved the published way: peft
    on the whole multimodal MedGemma, q_proj/v_proj, so MedGemma's 2D vision tower gets adapters too."""
    import os
    import shutil

    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import Gemma3ForConditionalGeneration

    source = published["folder"] / "checkpoint"
    folder = tmp_path / "with-lora"
    folder.mkdir()
    for name in ("vision_model", "language_model"):
        os.symlink(source / name, folder / name)
    shutil.copy(source / "projector_vis_scale.pt", folder)
    torch.manual_seed(3)
    multimodal = Gemma3ForConditionalGeneration.from_pretrained(str(source / "language_model"))
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(multimodal, config).save_pretrained(str(folder / "lora_adapters"))
    weights = folder / "lora_adapters" / "adapter_model.safetensors"
    saved = load_file(str(weights))
    if mutate is not None:
        saved = mutate(saved)
        save_file(saved, str(weights))
    return folder, saved


def test_lora_adapters_saved_the_published_way_all_arrive(published, tmp_path):
    folder, saved = _with_adapters(published, tmp_path)
    text_b = {k: v for k, v in saved.items() if "language_model" in k and "lora_B" in k}
    assert len(text_b) == 4 and any("vision_tower" in k for k in saved)  # 2 layers x (q, v); + the 2D tower's
    model = load(str(folder), device="cpu", grid=tuple(published["reference"]["grid"]))
    params = dict(model.lm.named_parameters())
    for key, tensor in text_b.items():
        ours = key.replace("base_model.model.model.language_model.", "base_model.model.model.")
        assert torch.equal(params[ours.replace(".lora_B.", ".lora_B.default.")], tensor), key
    assert any("vision tower" in note for note in model.load_notes)
    assert "lora_adapters/adapter_model.safetensors" in model.checkpoint_files
    with torch.no_grad():
        embeds = model.prompt_embeddings(model.visual_tokens(model.as_batch(published["grid"])))
        logits = model.lm(inputs_embeds=embeds).logits[0, -1].float()
    assert (logits - published["tensors"]["first_logits"]).abs().max() > 1e-3  # the adapters act


def test_an_adapter_key_that_lands_nowhere_is_an_error_naming_it(published, tmp_path):
    from BrainGemma3DLib.io.errors import InputError

    def add_stray(state):
        stray = "base_model.model.model.language_model.layers.9.self_attn.q_proj.lora_A.weight"
        return {**state, stray: torch.zeros(2, 64)}

    folder, _ = _with_adapters(published, tmp_path, add_stray)
    with pytest.raises(InputError, match=r"lands on no weight.*layers\.9\.self_attn\.q_proj"):
        load(str(folder), device="cpu", grid=tuple(published["reference"]["grid"]))


@pytest.mark.slow
def test_report_and_the_worker_run_a_published_folder(published, tmp_path):
    import subprocess
    import sys

    from helpers import run_cli

    folder, flair = published["folder"] / "checkpoint", published["flair"]
    out = tmp_path / "report"
    result = run_cli(
        "report", str(flair), "--out", str(out), "--model", str(folder), "--grid", "10", "44", "44",
        "--explain", "--samples", "20", "--supervoxels", "8", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["model"]["preset"] == "published" and report["model"]["grid"] == [10, 44, 44]
    assert set(report["model"]["checkpoint_files"]) == {
        "projector_vis_scale.pt", "vision_model/model.safetensors", "language_model/model.safetensors"
    }  # fmt: skip
    assert report["decoding"]["method"] == "published sampling"
    assert (out / "attribution.nii.gz").is_file()  # attributions on the input's voxels, through the mapping
    refused = run_cli(
        "report", str(flair), "--out", str(tmp_path / "x"), "--grid", "10", "44", "44", "--quiet"
    )
    assert refused.returncode == 2 and "published checkpoints only" in refused.stderr

    request = {"id": 1, "cmd": "load", "model": str(folder), "device": "cpu", "grid": [10, 44, 44]}
    engine = subprocess.run(
        [sys.executable, "-m", "BrainGemma3DLib.engine"],
        input=json.dumps(request) + "\n",
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    events = [json.loads(line) for line in engine.stdout.splitlines()]
    loaded = next((e for e in events if e.get("id") == 1 and e["event"] in ("result", "error")), None)
    assert loaded is not None, f"the worker ended ({engine.returncode}), no answer: {engine.stderr[-2000:]}"
    assert loaded["event"] == "result" and loaded["preset"] == "published" and loaded["grid"] == [10, 44, 44]


@pytest.mark.slow
def test_evaluate_scores_a_published_folder_on_its_own_grid(published, phantom_data, tmp_path):
    from BrainGemma3DLib.cli import main

    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(published["folder"] / "checkpoint"), "--data", str(phantom_data)]
    assert main([*args, "--split", "all", "--out", str(out), "--grid", "10", "44", "44", "--limit", "2",
                 "--max-new-tokens", "8", "--quiet"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["cases"] == 2 and metrics["decoding"]["method"] == "published sampling"
