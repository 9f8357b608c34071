"""A tiny checkpoint in the published BrainGemma3D layout and a small FLAIR with a lesion on the patient's
left, both made deterministically here, so the reference outputs of the published code (committed in
``Testing/Data/published_reference``, made by ``tools/published_reference.py``) can be checked against our
``published`` mode without committing any weights.

Layout written (as on Hugging Face ``praiselab-picuslab/BrainGemma3D``):
``vision_model/`` (a SiglipModel; its vision width must be 1152, which the published code hard-codes),
``language_model/`` (a Gemma3ForConditionalGeneration with a Gemma-style tokenizer that adds ``<bos>``) and
``projector_vis_scale.pt`` (``{"vision_projector": state_dict, "vis_scale": tensor}``, saved with torch.save).

Every weight is drawn from one seeded generator in sorted name order, so the checkpoint does not depend on
how a library version initialises its modules; :func:`state_digest` identifies it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
DEMO_TOKENIZER = REPO / "Resources" / "DemoWeights" / "tokenizer"
#: The published model's fixed width of MedSigLIP's tokens.
VISION_WIDTH = 1152
LM_WIDTH = 64
#: Where the lesion is, RAS mm: the patient's left (x < 0), anterior (y > 0), superior (z > 0).
LESION_RAS = (-30.0, 20.0, 20.0)


def _fill(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in sorted(module.state_dict(keep_vars=True).items()):
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            if "norm" in name and name.endswith("weight"):
                value = 1.0 + 0.05 * noise
            else:
                value = 0.02 * noise
            tensor.copy_(value.to(tensor.dtype))


def state_digest(*modules: torch.nn.Module) -> str:
    """SHA-256 over every floating tensor of ``modules`` (names and bytes, sorted)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().to(torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def tokenizer_with_bos():
    """The demo tokenizer made to add ``<bos>`` in front, as Gemma's tokenizer does."""
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(DEMO_TOKENIZER))
    bos = tok.convert_tokens_to_ids("<bos>")
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)]
    )
    tok.add_bos_token = True
    return tok


def build_tiny_published(folder: str | Path) -> dict:
    """Write the tiny published-layout checkpoint into ``folder``; returns its digests."""
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        SiglipConfig,
        SiglipModel,
        SiglipTextConfig,
        SiglipVisionConfig,
    )

    folder = Path(folder)
    tok = tokenizer_with_bos()
    vision = SiglipVisionConfig(
        hidden_size=VISION_WIDTH, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        patch_size=14, image_size=28, num_channels=3, vision_use_head=False,
    )  # fmt: skip
    text = SiglipTextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
        max_position_embeddings=16, projection_size=VISION_WIDTH, bos_token_id=1, eos_token_id=2,
        pad_token_id=0,
    )  # fmt: skip
    siglip = SiglipModel(SiglipConfig(text_config=text.to_dict(), vision_config=vision.to_dict()))
    _fill(siglip, 11)
    siglip.save_pretrained(folder / "vision_model")

    lm_text = Gemma3TextConfig(
        hidden_size=LM_WIDTH, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, vocab_size=len(tok),
        layer_types=["sliding_attention", "full_attention"],
    )  # fmt: skip
    own_vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8,
    )  # fmt: skip
    lm = Gemma3ForConditionalGeneration(
        Gemma3Config(text_config=lm_text.to_dict(), vision_config=own_vision.to_dict(), mm_tokens_per_image=4)
    )
    _fill(lm, 12)
    lm.save_pretrained(folder / "language_model")
    tok.save_pretrained(folder / "language_model")
    # A tokenizer config every transformers version reads alike (5.x writes keys that 4.x misreads).
    config_path = folder / "language_model" / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config = {k: config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in config}
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["add_bos_token"] = True
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    projector = torch.nn.Sequential(
        torch.nn.Linear(VISION_WIDTH, LM_WIDTH), torch.nn.GELU(), torch.nn.Linear(LM_WIDTH, LM_WIDTH)
    )
    _fill(projector, 13)
    torch.save(
        {"vision_projector": projector.state_dict(), "vis_scale": torch.tensor(2.5)},
        folder / "projector_vis_scale.pt",
    )
    return {
        "vision_model": state_digest(siglip),
        "language_model": state_digest(lm),
        "projector": state_digest(projector),
    }


def left_lesion_flair(path: str | Path) -> Path:
    """A small head stored LPS (not canonical) with a bright lesion on the patient's left, as NIfTI."""
    import nibabel as nib

    shape, spacing = (40, 48, 36), 4.0
    affine = np.diag([-spacing, -spacing, spacing, 1.0])  # LPS voxel axes
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    idx = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), axis=-1)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    inside = (x / 70) ** 2 + (y / 85) ** 2 + (z / 62) ** 2 < 1
    texture = 100 + 15 * np.sin(y / 9.0) * np.cos(z / 11.0) + 10 * np.cos(x / 13.0)
    lesion = np.sum((world - np.asarray(LESION_RAS)) ** 2, axis=-1) < 14.0**2
    data = np.where(inside, np.where(lesion, 320.0, texture), 0.0).astype(np.float32)
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return Path(path)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
