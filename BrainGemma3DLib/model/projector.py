"""Projector: visual tokens (B, K, E_vision) -> language-model embeddings (B, K, E_lm).

Gemma multiplies its token embeddings by sqrt(hidden size), so text embeddings have a large, model-specific
scale. Visual tokens are therefore normalised to unit RMS and multiplied by a learned scale initialised to
the RMS of the LM's own (scaled) text embeddings: from the first step they neither drown nor vanish next to
the prompt's tokens.

Where a visual token comes from must be in its *content*. Gemma's rotary positions only change which tokens a
query attends to, never the values it reads back, so a language model that finds the lesion token cannot tell
from the value whether that token was the left or the right hemisphere's. With anchored latents (token k =
brain block k) the projector therefore adds a learned code of each block's centre (its side, front/back and
height, as Fourier features) to the token: reading the lesion token then also reads where it is.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: Fourier frequencies of the block-centre code (1 = one period over the brain's extent).
LOCATION_FREQUENCIES = (1, 2)


def block_centres(regions: tuple[int, int, int]) -> torch.Tensor:
    """(K, 3) centres in [-1, 1] along (D inf->sup, H ant->post, W right->left) of the anchored blocks.

    Same block order as :func:`~BrainGemma3DLib.model.compressor.region_mask` (D fastest, W slowest).
    """
    kd, kh, kw = regions
    k = torch.arange(kd * kh * kw)
    index = torch.stack([k % kd, (k // kd) % kh, k // (kd * kh)], dim=1).float()
    counts = torch.tensor([kd, kh, kw], dtype=torch.float32)
    return (2 * index + 1) / counts - 1


def location_features(centres: torch.Tensor) -> torch.Tensor:
    """(K, 3) centres -> (K, 3 + 12) raw coordinates and their sines/cosines."""
    parts = [centres]
    for f in LOCATION_FREQUENCIES:
        parts += [torch.sin(math.pi * f * centres), torch.cos(math.pi * f * centres)]
    return torch.cat(parts, dim=1)


class Projector(nn.Module):
    """2-layer MLP to the LM width, unit-RMS normalisation, learned scale, optional block-location code."""

    def __init__(
        self,
        vision_dim: int,
        lm_dim: int,
        hidden: int = 0,
        init_scale: float = 1.0,
        normalise: bool = True,
        regions: tuple[int, int, int] | None = None,
    ):
        super().__init__()
        hidden = hidden or lm_dim
        self.mlp = nn.Sequential(nn.Linear(vision_dim, hidden), nn.GELU(), nn.Linear(hidden, lm_dim))
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.normalise = normalise  # False reproduces the published projector (MLP, then a bare scale)
        self.location = None
        if regions is not None:
            features = location_features(block_centres(regions))
            self.register_buffer("location_features", features, persistent=False)
            self.location = nn.Linear(features.shape[1], lm_dim, bias=False)
            # Starts at about half the text-embedding RMS: audible from the first step, not dominant.
            nn.init.normal_(self.location.weight, std=0.5 * float(init_scale) / features.shape[1] ** 0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.mlp(tokens)
        if self.normalise:
            x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + 1e-6)
        x = x * self.scale
        if self.location is not None:
            x = x + self.location(self.location_features.to(x.dtype))
        return x
