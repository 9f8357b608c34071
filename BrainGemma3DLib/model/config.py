"""One plain-data object describes a BrainGemma3D model; it is saved as JSON with every checkpoint.

Presets:
- ``medgemma``: the real sizes — MedSigLIP-448 vision/text towers (SigLIP so400m shape, patch 14, 448 px) and
  MedGemma 1.5 4B IT's language model (Gemma 3 4B text). When the real folders are loaded, the tower and LM
  sizes are read from their own ``config.json`` files and replace these values: nothing is repeated by hand.
- ``demo``: the same classes at toy sizes, for CPU, tests and the bundled demo weights.
- ``published``: the published BrainGemma3D's design, exactly (its preprocessing onto its grid, Conv3d
  kernel (2, 14, 14) with depth stride 1 and padding 1 inflated by repeating and averaging, its fixed position
  code, pool1d, a bare projector scale, its prompt without a chat template, its sampling). At the demo sizes
  it trains and compares the two designs on the same data; at the real sizes it is what a checkpoint in the
  published layout runs as (:func:`BrainGemma3DLib.model.loading.load_published`).
- ``slices``: the slice-based baseline (a 2D reader over labelled axial slices).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..io.atomic import write_text_atomic

CONFIG_NAME = "braingemma3d_config.json"

POSITIONS = ("pretrained3d", "published")
COMPRESSORS = ("perceiver", "pool1d")
PATCH_INITS = ("centre", "mean", "published")
ENCODERS = ("inflated", "slices")
PIXEL_RANGES = ("siglip", "unit")  # [0, 1] mapped to SigLIP's [-1, 1], or given as is (the published code)
PROMPT_STYLES = ("chat", "published")
PREPROCESSINGS = ("ours", "published")

DEFAULT_PROMPT = (
    "You are a neuroradiologist. Write the FLAIR MRI report for this brain volume: location of any lesion "
    "(hemisphere and lobes), edema, necrosis, enhancement and ventricular compression."
)

# MedSigLIP-448 (SiglipModel): the SigLIP so400m shape at 448 px, patch 14.
MEDSIGLIP_VISION = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "patch_size": 14,
    "image_size": 448,
    "num_channels": 3,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu_pytorch_tanh",
}
MEDSIGLIP_TEXT = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "vocab_size": 32000,
    "max_position_embeddings": 64,
    "projection_size": 1152,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu_pytorch_tanh",
}
# MedGemma 1.5 4B IT language model (Gemma 3 4B text: every 6th layer global, the others 1024-token sliding
# windows; the real folder's config, read at load time, also brings its RoPE settings).
MEDGEMMA_TEXT = {
    "hidden_size": 2560,
    "intermediate_size": 10240,
    "num_hidden_layers": 34,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 256,
    "vocab_size": 262208,
    "sliding_window": 1024,
    "query_pre_attn_scalar": 256,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-6,
    "hidden_activation": "gelu_pytorch_tanh",
}


#: The slice-based baseline (how a 2D model reads a volume), for the comparison table.
SLICE_BASELINE = {
    "encoder": "slices",
    "slices": 8,
    "regions": None,
    "location_code": False,
}

#: The published BrainGemma3D's prompt (no chat template; its tokenizer puts <bos> in front).
PUBLISHED_PROMPT = "Generate a radiology report for this brain MRI FLAIR scan. \n"
#: The published decoding: sampling at temperature 0.1, top-p 0.9, with its repetition controls.
PUBLISHED_DECODING = {
    "do_sample": True,
    "temperature": 0.1,
    "top_p": 0.9,
    "top_k": 50,  # the published code does not pass it: its MedGemma folder's generation_config, else 50
    "repetition_penalty": 1.2,
    "no_repeat_ngram_size": 3,
    "min_new_tokens": 10,
}
#: The published system's design choices, on top of any preset's sizes (see the module docstring).
PUBLISHED_DESIGN = {
    "preprocess": "published",
    "pixel_range": "unit",
    "tubelet": 2,
    "depth_stride": 1,
    "patch_init": "published",
    "position": "published",
    "compressor": "pool1d",
    "regions": None,
    "projector_norm": False,
    "location_code": False,
    "prompt_style": "published",
    "prompt": PUBLISHED_PROMPT,
    "stop": "eos",
    "decoding": dict(PUBLISHED_DECODING),
}
#: The published inference scripts' grid (D, H, W); the model card's quick start uses (32, 128, 128).
PUBLISHED_GRID = (64, 128, 128)


#: Sane upper bounds of a config's sizes (generous: several times the largest real model of each kind).
MAX_GRID = 512
MAX_GRID_VOXELS = 256 * 512 * 512
TOP_LEVEL_LIMITS = {
    "in_channels": 3,
    "slices": 512,
    "tubelet": 64,
    "depth_stride": 64,
    "num_latents": 4096,
    "compressor_layers": 64,
    "compressor_heads": 128,
    "projector_hidden": 65536,
}
VISION_LIMITS = {
    "hidden_size": 8192,
    "intermediate_size": 65536,
    "num_hidden_layers": 128,
    "num_attention_heads": 256,
    "patch_size": 64,
    "image_size": 4096,
    "num_channels": 4,
    "vocab_size": 1_048_576,
    "max_position_embeddings": 65536,
    "projection_size": 8192,
}
LM_LIMITS = {
    "hidden_size": 16384,
    "intermediate_size": 131072,
    "num_hidden_layers": 256,
    "num_attention_heads": 256,
    "num_key_value_heads": 256,
    "head_dim": 1024,
    "vocab_size": 1_048_576,
    "sliding_window": 1_048_576,
    "max_position_embeddings": 10_485_760,
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a BrainGemma3D model (weights aside)."""

    preset: str = "demo"
    vision: dict = field(default_factory=dict)  # SiglipVisionConfig keyword arguments
    text_tower: dict = field(default_factory=dict)  # SiglipTextConfig keyword arguments (contrastive phase)
    lm: dict = field(default_factory=dict)  # Gemma3TextConfig keyword arguments
    in_channels: int = 1  # 1 = FLAIR; 3 = FLAIR/T1ce/T2 as channels
    encoder: str = "inflated"  # "slices" = the slice-based baseline (2D tower over N labelled axial slices)
    slices: int = 8  # slice baseline: number of axial slices (num_latents / slices tokens each)
    grid: tuple[int, int, int] = (32, 64, 64)  # model grid (D, H, W), see BrainGemma3DLib.io.volume
    tubelet: int = 4  # depth of the Conv3d patch kernel
    depth_stride: int = 4  # = tubelet (non-overlapping); the published design: 1, overlapping kernel
    patch_init: str = "centre"
    position: str = "pretrained3d"
    compressor: str = "perceiver"
    num_latents: int = 32  # K visual tokens handed to the language model
    compressor_layers: int = 2
    compressor_heads: int = 4
    regions: tuple[int, int, int] | None = (
        4,
        4,
        2,
    )  # perceiver latents anchored to (D, H, W) blocks; None = global
    projector_hidden: int = 0  # 0 = the LM hidden size
    projector_norm: bool = True  # unit-RMS visual tokens before the scale (the published design: False)
    location_code: bool = True  # add each anchored token's block centre to its content (needs regions)
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = 160
    preprocess: str = "ours"  # how a study is put on the grid: ours (geometry kept) or the published loader's
    pixel_range: str = "siglip"
    prompt_style: str = "chat"  # chat template around the visual tokens, or published [visual][<bos> prompt]
    stop: str = "turn"  # generation stops at <end_of_turn> or <eos> ("turn"), or at <eos> only ("eos")
    decoding: dict = field(default_factory=dict)  # generate() settings of the model's own default decoding
    vision_base: str = ""  # folder or HF id of the MedSigLIP weights ("" = built from `vision`)
    lm_base: str = ""  # folder or HF id of the MedGemma weights ("" = built from `lm`)

    def __post_init__(self) -> None:
        self.grid = tuple(int(g) for g in self.grid)  # type: ignore[assignment]
        if self.regions is not None:
            self.regions = tuple(int(r) for r in self.regions)  # type: ignore[assignment]
        self.validate()

    # --- derived sizes ----------------------------------------------------------------------------
    @property
    def patch_size(self) -> int:
        return int(self.vision["patch_size"])

    @property
    def vision_hidden(self) -> int:
        return int(self.vision["hidden_size"])

    @property
    def lm_hidden(self) -> int:
        return int(self.lm["hidden_size"])

    @property
    def token_grid(self) -> tuple[int, int, int]:
        """Patch tokens along (D, H, W) after the tubelet embedding."""
        d, h, w = self.grid
        pad = self.tubelet // 2 if self.depth_stride < self.tubelet else 0
        depth = (d + 2 * pad - self.tubelet) // self.depth_stride + 1
        return depth, h // self.patch_size, w // self.patch_size

    @property
    def num_patch_tokens(self) -> int:
        d, h, w = self.token_grid
        return d * h * w

    @property
    def location_regions(self) -> tuple[int, int, int] | None:
        """The anchored blocks whose centres the projector encodes, or None (no location code)."""
        if (
            self.location_code
            and self.encoder == "inflated"
            and self.compressor == "perceiver"
            and self.regions is not None
        ):
            return tuple(self.regions)
        return None

    @property
    def slice_pool(self) -> int:
        """Slice baseline: each slice is pooled to slice_pool x slice_pool tokens."""
        return int(round((self.num_latents // max(self.slices, 1)) ** 0.5))

    @property
    def num_visual_tokens(self) -> int:
        """Tokens the language model sees for one volume."""
        return self.num_latents

    def validate(self) -> None:
        """Refuse inconsistent configurations with a message that says what to change."""
        problems = self._size_problems()
        if problems:  # nothing else is safe to evaluate on sizes that are not sane integers
            raise ValueError("invalid model config: " + "; ".join(problems))
        if not 1 <= self.in_channels <= 3:
            problems.append(f"in_channels must be 1, 2 or 3 (got {self.in_channels})")
        if self.position not in POSITIONS:
            problems.append(f"position must be one of {POSITIONS} (got {self.position!r})")
        if self.encoder not in ENCODERS:
            problems.append(f"encoder must be one of {ENCODERS} (got {self.encoder!r})")
        slices_fit = 1 <= self.slices <= self.grid[0] and self.slices * self.slice_pool**2 == self.num_latents
        if self.encoder == "slices" and not slices_fit:
            problems.append(
                f"the slice baseline needs 1 <= slices <= depth {self.grid[0]} and num_latents "
                f"({self.num_latents}) = slices ({self.slices}) x a square number of tokens per slice"
            )
        if self.compressor not in COMPRESSORS:
            problems.append(f"compressor must be one of {COMPRESSORS} (got {self.compressor!r})")
        if self.patch_init not in PATCH_INITS:
            problems.append(f"patch_init must be one of {PATCH_INITS} (got {self.patch_init!r})")
        if self.vision:
            p = int(self.vision["patch_size"])
            if self.grid[1] < p or self.grid[2] < p:  # other sizes floor, as a convolution does
                problems.append(f"grid H and W {self.grid[1:]} must be at least the patch size {p}")
        for name, allowed in (
            ("pixel_range", PIXEL_RANGES),
            ("prompt_style", PROMPT_STYLES),
            ("preprocess", PREPROCESSINGS),
            ("stop", ("turn", "eos")),
        ):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {allowed} (got {getattr(self, name)!r})")
        unknown = set(self.decoding) - set(PUBLISHED_DECODING)
        if unknown:
            problems.append(f"unknown decoding settings {sorted(unknown)}")
        if self.depth_stride < 1 or self.tubelet < 1 or self.depth_stride > self.tubelet:
            problems.append("need 1 <= depth_stride <= tubelet")
        if self.num_latents < 1:
            problems.append("num_latents must be at least 1")
        if self.encoder == "inflated" and self.compressor == "perceiver" and self.regions and self.vision:
            kd, kh, kw = self.regions
            if kd * kh * kw != self.num_latents:
                problems.append(f"regions {self.regions} must multiply to num_latents {self.num_latents}")
            elif any(r > t for r, t in zip(self.regions, self.token_grid, strict=True)):
                problems.append(f"regions {self.regions} exceed the token grid {self.token_grid}")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    def _size_problems(self) -> list[str]:
        """Sizes must be integers within what any real model uses: a config is untrusted input, and a forged
        ``hidden_size`` would otherwise be allocated until memory runs out."""
        checks = [("grid", v, 4, MAX_GRID) for v in self.grid]
        checks += [
            (name, getattr(self, name), 0 if name == "projector_hidden" else 1, top)  # 0 = the LM width
            for name, top in TOP_LEVEL_LIMITS.items()
        ]
        for block, limits in (("vision", VISION_LIMITS), ("text_tower", VISION_LIMITS), ("lm", LM_LIMITS)):
            values = getattr(self, block) or {}
            checks += [(f"{block}.{k}", values[k], 1, top) for k, top in limits.items() if k in values]
        problems = [
            f"{name} must be an integer between {low} and {top} (got {value!r})"
            for name, value, low, top in checks
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= top
        ]
        if not problems and self.grid[0] * self.grid[1] * self.grid[2] > MAX_GRID_VOXELS:
            problems.append(f"grid {tuple(self.grid)} exceeds {MAX_GRID_VOXELS} voxels")
        return problems

    # --- files ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        regions = list(self.regions) if self.regions else None
        return dataclasses.asdict(self) | {"grid": list(self.grid), "regions": regions}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known - {"format_version"}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, folder: str | os.PathLike) -> Path:

        path = Path(folder) / CONFIG_NAME
        return write_text_atomic(path, json.dumps({"format_version": 1, **self.to_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ModelConfig:
        return cls.from_dict(json.loads((Path(folder) / CONFIG_NAME).read_text(encoding="utf-8")))


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset (``medgemma``, ``demo``, ``published`` or ``slices``), with field overrides."""
    if name == "medgemma":
        base = dict(
            preset="medgemma",
            vision=dict(MEDSIGLIP_VISION),
            text_tower=dict(MEDSIGLIP_TEXT),
            lm=dict(MEDGEMMA_TEXT),
            grid=(64, 224, 224),
            tubelet=4,
            depth_stride=4,
            num_latents=32,
            compressor_layers=2,
            compressor_heads=16,
            vision_base="google/medsiglip-448",
            lm_base="google/medgemma-1.5-4b-it",
        )
    elif name in ("demo", "published", "slices"):
        base = dict(
            preset=name,
            vision=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                patch_size=8,
                image_size=64,
                num_channels=3,
                layer_norm_eps=1e-6,
                hidden_act="gelu_pytorch_tanh",
            ),
            text_tower=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                vocab_size=2000,
                max_position_embeddings=128,
                layer_norm_eps=1e-6,
                hidden_act="gelu_pytorch_tanh",
            ),
            lm=dict(
                hidden_size=128,
                intermediate_size=256,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=32,
                vocab_size=2000,
                sliding_window=512,
                query_pre_attn_scalar=32,
                max_position_embeddings=1024,
                rms_norm_eps=1e-6,
                hidden_activation="gelu_pytorch_tanh",
                layer_types=["sliding_attention", "full_attention"],
            ),
            grid=(32, 64, 64),
            tubelet=4,
            depth_stride=4,
            num_latents=32,
            compressor_layers=2,
            compressor_heads=4,
        )
        if name == "published":
            base.update(PUBLISHED_DESIGN)
        if name == "slices":
            base.update(SLICE_BASELINE)
    else:
        raise ValueError(f"unknown preset {name!r} (expected medgemma, demo, published or slices)")
    base.update(overrides)
    return ModelConfig(**base)
