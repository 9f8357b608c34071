"""Lesion grounding: an auxiliary training loss that makes every visual token say whether its part of the
brain holds lesion, using the tumour labels BraTS ships with every case (and healthy controls: none).

Why: the report's words give a weak, indirect signal about *where* (one side word and one or two lobe words
per report), and a model trained on them alone learns the words' prior ("left" for every lesion) instead of
reading the image. We measured it: the demo model trained on 1,000 phantoms stayed at chance on the
hemisphere, and so did a model trained on nothing but "the lesion is in the left/right hemisphere". With this
loss the same model reads the side (see README, "Training"). Two small linear heads, used only in training:

- token level: each encoder patch token predicts "lesion in my patch" (the inflated 3D encoder);
- visual level: each visual token the language model reads predicts "lesion in the part I summarise":
  its anchored block (Perceiver with regions), its chunk of the flattened sequence (the published pool1d), or
  its pooled square of its slice (the slice baseline).

Targets are the fraction of lesion voxels under each token, thresholded; both losses are binary
cross-entropy. The heads are saved next to the checkpoint only so that a resumed run continues exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig

#: A patch token counts as lesion when at least this fraction of its voxels is lesion.
TOKEN_THRESHOLD = 0.02
#: A visual token (a block of the brain) counts as lesion when at least this fraction is lesion.
VISUAL_THRESHOLD = 0.005

HEAD_FILE = "grounding_head.safetensors"


def lesion_on_grid(seg_path, mapping) -> np.ndarray:
    """The lesion mask of a BraTS label file (any label > 0) as fractions on the model grid (D, H, W)."""
    from ..volume import load_volume

    seg = load_volume(seg_path)
    seg.data = (seg.data[:1] > 0).astype(np.float32)
    return seg.resample_to(mapping.grid_affine, mapping.grid_shape, order=1).data[0]


def token_targets(cfg: ModelConfig, lesion: torch.Tensor) -> torch.Tensor | None:
    """(B, D, H, W) lesion fractions -> (B, N) per encoder patch token, in the encoder's order; or None."""
    if cfg.encoder != "inflated":
        return None
    pooled = F.adaptive_avg_pool3d(lesion.unsqueeze(1), cfg.token_grid)  # (B, 1, D', H', W')
    return pooled.flatten(1)


def visual_targets(cfg: ModelConfig, lesion: torch.Tensor) -> torch.Tensor | None:
    """(B, D, H, W) lesion fractions -> (B, K) per visual token, in the order the LM reads them; or None."""
    if cfg.encoder == "slices":
        from .encoder import slice_positions

        picked = lesion[:, slice_positions(cfg)]  # (B, N, H, W)
        pooled = F.adaptive_avg_pool2d(picked, cfg.slice_pool)  # (B, N, s, s)
        return pooled.flatten(1)
    if cfg.compressor == "pool1d":
        per_token = token_targets(cfg, lesion)
        return F.adaptive_avg_pool1d(per_token.unsqueeze(1), cfg.num_latents).squeeze(1)
    if cfg.regions is None:
        return None  # free latents: no fixed part of the brain to ground them to
    kd, kh, kw = cfg.regions
    blocks = F.adaptive_avg_pool3d(lesion.unsqueeze(1), (kd, kh, kw))[:, 0]  # (B, kd, kh, kw)
    return blocks.permute(0, 3, 2, 1).flatten(1)  # block order of region_mask: D fastest, W slowest


class GroundingHead(nn.Module):
    """The two linear heads (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.token = nn.Linear(cfg.vision_hidden, 1)
        self.visual = nn.Linear(cfg.vision_hidden, 1)

    def forward(
        self, patch_tokens: torch.Tensor | None, visual_tokens: torch.Tensor, lesion: torch.Tensor
    ) -> torch.Tensor:
        """Mean BCE over the levels that apply; ``lesion`` (B, D, H, W) fractions on the model grid."""
        losses = []
        targets = token_targets(self.cfg, lesion)
        if targets is not None and patch_tokens is not None:
            logits = self.token(patch_tokens).squeeze(-1)
            losses.append(F.binary_cross_entropy_with_logits(logits, (targets >= TOKEN_THRESHOLD).to(logits)))
        targets = visual_targets(self.cfg, lesion)
        if targets is not None:
            logits = self.visual(visual_tokens).squeeze(-1)
            losses.append(
                F.binary_cross_entropy_with_logits(logits, (targets >= VISUAL_THRESHOLD).to(logits))
            )
        if not losses:
            return visual_tokens.new_zeros(())
        return torch.stack(losses).mean()
