"""Projector: visual tokens (B, K, E_vision) -> language-model embeddings (B, K, E_lm).

Gemma multiplies its token embeddings by sqrt(hidden size), so text embeddings have a large, model-specific
scale. Visual tokens are therefore normalised to unit RMS and multiplied by a learned scale initialised to
the RMS of the LM's own (scaled) text embeddings: from the first step they neither drown nor vanish next to
the prompt's tokens.
"""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """2-layer MLP to the LM width, unit-RMS normalisation, learned scale."""

    def __init__(
        self, vision_dim: int, lm_dim: int, hidden: int = 0, init_scale: float = 1.0, normalise: bool = True
    ):
        super().__init__()
        hidden = hidden or lm_dim
        self.mlp = nn.Sequential(nn.Linear(vision_dim, hidden), nn.GELU(), nn.Linear(hidden, lm_dim))
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))
        self.normalise = normalise  # False reproduces the published projector (MLP, then a bare scale)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.mlp(tokens)
        if self.normalise:
            x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + 1e-6)
        return x * self.scale
