"""The language model's precision on a CPU (``--quantize none|bf16|int8``): what a radiologist without a GPU
gets must say what the float32 model says. Real size is benchmarked (``bench model --preset medgemma``), not
tested: these run the bundled demo weights and a tiny real-architecture Gemma 3."""

from __future__ import annotations

import copy
import difflib
import json

import pytest
import torch
from helpers import SAMPLE, run_cli

from BrainGemma3DLib.cli import main
from BrainGemma3DLib.io.volume import load_volume
from BrainGemma3DLib.model import load
from BrainGemma3DLib.model.precision import apply_cpu_precision, weight_bytes
from BrainGemma3DLib.reporting.entities import structured_entities


def _grids(phantom_data, model) -> list:
    """One tumour case and one healthy control of the shared phantoms, on the model grid."""
    tumour = sorted((phantom_data / "MICCAI_BraTS2020_TrainingData").iterdir())[0]
    healthy = sorted((phantom_data / "HealthyControls").iterdir())[0]
    grids = []
    for case in (tumour, healthy):
        study = load_volume(next(case.glob("*_flair.nii.gz")))
        grids.append(study.to_model_grid(model.cfg.grid, method=model.cfg.preprocess)[0])
    return grids


def _said(text: str) -> dict:
    """Side, lobes, findings and whether a lesion is claimed: what report.json's entities say."""
    return structured_entities(text)


@pytest.mark.slow
def test_bf16_and_int8_demo_drafts_say_what_float32_says(demo_model, phantom_data):
    grids = _grids(phantom_data, demo_model)
    reference = [demo_model.generate(grid)[0].text for grid in grids]
    for precision in ("bf16", "int8"):
        model = copy.deepcopy(demo_model)
        model.lm = apply_cpu_precision(model.lm, precision)
        texts = [model.generate(grid)[0].text for grid in grids]
        for ref, text in zip(reference, texts, strict=True):
            assert _said(text) == _said(ref), (precision, ref, text)  # side, lobes and findings
            # The wording may part late (measured: docs/results.md), never from the start.
            assert difflib.SequenceMatcher(None, ref, text).ratio() > 0.8, (precision, ref, text)
    full, small = weight_bytes(demo_model.lm), weight_bytes(model.lm)
    assert small < 0.3 * full  # int8 layers: a quarter of float32's bytes, plus per-channel scales and norms


def test_a_tiny_gemma3_in_int8_keeps_the_greedy_choice_of_float32():
    """Random weights of the real architecture: the next-token choice, teacher-forced along the float32
    model's own greedy continuation, is the same in int8 at almost every step."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=2000,
                              layer_types=["sliding_attention", "sliding_attention", "sliding_attention",
                                           "full_attention"])  # fmt: skip
    full = Gemma3ForCausalLM(config).eval()
    prompt = torch.randint(0, 2000, (1, 24))
    with torch.no_grad():
        greedy = full.generate(prompt, max_new_tokens=40, do_sample=False, min_new_tokens=40)
        reference = full(greedy).logits[0, prompt.shape[1] - 1 : -1].argmax(-1)
    for precision in ("bf16", "int8"):
        quantized = apply_cpu_precision(copy.deepcopy(full), precision)
        with torch.no_grad():
            logits = quantized(greedy).logits[0, prompt.shape[1] - 1 : -1].float()
        agree = (logits.argmax(-1) == reference).float().mean().item()
        assert agree >= 0.9, (precision, agree)


def test_the_precision_is_chosen_checked_and_recorded(tmp_path, capsys):
    out = tmp_path / "int8"
    result = run_cli(
        "report", str(SAMPLE), "--out", str(out), "--drafts", "0", "--quantize", "int8", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # PyTorch's notices about its quantized tensors are not the user's business
    assert json.loads((out / "report.json").read_text())["model"]["precision"] == "int8"
    assert main(["report", str(SAMPLE), "--out", str(tmp_path / "nf4"), "--quantize", "nf4", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a CUDA GPU" in err[0] and "int8" in err[0]
    assert not (tmp_path / "nf4").exists()
    assert load("demo", device="cpu").precision == "float32"
