"""Lesion grounding: an auxiliary training loss that makes every visual token say which tumour tissue its part
of the brain holds, using the tumour labels BraTS ships with every case (and healthy controls: none).

Why: the report's words give a weak, indirect signal about *where* (one side word and one or two lobe words
per report), and a model trained on them alone learns the words' prior ("left" for every lesion) instead of
reading the image (measured in docs/training.md and docs/results.md). With this loss the same model reads the
side. Two small linear heads, used only in training:

- token level: each encoder patch token predicts, for each of the :data:`CLASSES`, "present in my patch"
  (the inflated 3D encoder);
- visual level: each visual token the language model reads predicts the same for "the part I summarise":
  its anchored block (Perceiver with regions), its chunk of the flattened sequence (the published pool1d), or
  its pooled square of its slice (the slice baseline).

Targets are the fraction of each class's voxels under each token, thresholded; both losses are binary
cross-entropy. The classes are BraTS' own labels, so the tokens learn to tell edema from enhancing tumour
from the tumour core - the findings the report must name - and not only where the lesion is.
The heads are saved next to the checkpoint only so that a resumed run continues exactly.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..io.volume import load_volume
from ..model.config import ModelConfig
from ..reporting.entities import FINDINGS, extract

#: A patch token counts as lesion when at least this fraction of its voxels is lesion.
TOKEN_THRESHOLD = 0.02
#: A visual token (a block of the brain) counts as lesion when at least this fraction is lesion.
VISUAL_THRESHOLD = 0.005

HEAD_FILE = "grounding_head.safetensors"

#: Grounding classes: channel -> BraTS labels (1 necrotic / non-enhancing core, 2 edema, 4 enhancing).
CLASSES = {"lesion": (1, 2, 4), "core": (1,), "edema": (2,), "enhancing": (4,)}


def lesion_on_grid(seg_path, mapping) -> np.ndarray:
    """A BraTS label file as per-class fractions on the model grid, (len(CLASSES), D, H, W) float32."""

    seg = load_volume(seg_path)
    labels = np.rint(seg.data[0])
    seg.data = np.stack([np.isin(labels, values) for values in CLASSES.values()]).astype(np.float32)
    return seg.resample_to(mapping.grid_affine, mapping.grid_shape, order=1).data


def token_targets(cfg: ModelConfig, lesion: torch.Tensor) -> torch.Tensor | None:
    """(B, L, D, H, W) class fractions -> (B, N, L) per encoder patch token (encoder order), or None."""
    if cfg.encoder != "inflated":
        return None
    pooled = F.adaptive_avg_pool3d(lesion, cfg.token_grid)  # (B, L, D', H', W')
    return pooled.flatten(2).transpose(1, 2)


def visual_targets(cfg: ModelConfig, lesion: torch.Tensor) -> torch.Tensor | None:
    """(B, L, D, H, W) class fractions -> (B, K, L) per visual token (the LM's order), or None."""
    b, n_cls = lesion.shape[:2]
    if cfg.encoder == "slices":
        from ..model.encoder import slice_positions

        picked = lesion[:, :, slice_positions(cfg)]  # (B, L, N, H, W)
        pooled = F.adaptive_avg_pool2d(picked.flatten(1, 2), cfg.slice_pool)  # (B, L * N, s, s)
        return pooled.reshape(b, n_cls, -1).transpose(1, 2)  # slice by slice, row by row
    if cfg.compressor == "pool1d":
        per_token = token_targets(cfg, lesion).transpose(1, 2)  # (B, L, N)
        return F.adaptive_avg_pool1d(per_token, cfg.num_latents).transpose(1, 2)
    if cfg.regions is None:
        return None  # free latents: no fixed part of the brain to ground them to
    blocks = F.adaptive_avg_pool3d(lesion, tuple(cfg.regions))  # (B, L, kd, kh, kw)
    return blocks.permute(0, 4, 3, 2, 1).reshape(b, -1, n_cls)  # region_mask's order: D fastest, W slowest


class GroundingHead(nn.Module):
    """The two linear heads (see the module docstring)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.token = nn.Linear(cfg.vision_hidden, len(CLASSES))
        self.visual = nn.Linear(cfg.vision_hidden, len(CLASSES))

    def forward(
        self, patch_tokens: torch.Tensor | None, visual_tokens: torch.Tensor, lesion: torch.Tensor
    ) -> torch.Tensor:
        """Mean BCE over the levels that apply; ``lesion``: (B, L, D, H, W) class fractions on the grid."""
        losses = []
        targets = token_targets(self.cfg, lesion)
        if targets is not None and patch_tokens is not None:
            logits = self.token(patch_tokens)
            losses.append(F.binary_cross_entropy_with_logits(logits, (targets >= TOKEN_THRESHOLD).to(logits)))
        targets = visual_targets(self.cfg, lesion)
        if targets is not None:
            logits = self.visual(visual_tokens)
            losses.append(
                F.binary_cross_entropy_with_logits(logits, (targets >= VISUAL_THRESHOLD).to(logits))
            )
        if not losses:
            return visual_tokens.new_zeros(())
        return torch.stack(losses).mean()


#: Where the finding head is saved next to a checkpoint (only so that a resumed run continues exactly).
FINDING_HEAD_FILE = "finding_head.safetensors"


def finding_targets(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """What each report states about each finding: (targets (B, F) 0/1, known (B, F) 0/1).

    Read with the negation-aware entity reader; a report that claims no lesion denies every finding; a
    finding a report does not mention is unknown (left out of the loss).
    """

    targets = torch.zeros(len(texts), len(FINDINGS))
    known = torch.zeros(len(texts), len(FINDINGS))
    for i, text in enumerate(texts):
        ent = extract(text)
        for j, name in enumerate(FINDINGS):
            value = False if not ent.lesion else ent.findings.get(name)
            if value is not None:
                targets[i, j], known[i, j] = float(value), 1.0
    return targets, known


class FindingHead(nn.Module):
    """Finding presence from the visual tokens: each token scores each finding, the case takes the maximum
    (a finding is present if any part of the brain shows it), trained against what the report states.

    Why: the tumour labels ground *where* edema, enhancing tumour and the core lie, but two findings the
    report must name have no label of their own: necrosis (BraTS puts it in one class with non-enhancing
    tumour) and ventricular compression (not a tumour class at all). A linear probe showed the visual tokens
    of models trained without this head carry no more about necrosis than its prevalence.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()

        self.score = nn.Linear(cfg.vision_hidden, len(FINDINGS))

    def forward(self, visual_tokens: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Masked BCE of the max-over-tokens logits against the reports' statements, (B, K, E) tokens."""
        targets, known = finding_targets(texts)
        targets, known = targets.to(visual_tokens), known.to(visual_tokens)
        logits = self.score(visual_tokens).amax(dim=1)
        losses = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return (losses * known).sum() / known.sum().clamp(min=1.0)
