"""Token compressors: many patch tokens (B, N, E) -> K visual tokens (B, K, E).

- :class:`PerceiverResampler` (ours): K learned latents cross-attend to the patch tokens *with their 3D
  positions added to the keys*, so "where" survives compression; L layers of cross-attention + MLP.
- :class:`Pool1dCompressor` (the published system's): adaptive average pooling over the depth-major flattened
  sequence into K chunks. Chunks average whole slabs, left and right hemispheres together: kept only so that
  the two designs can be compared on the same data.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class _ResamplerLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_latents = nn.LayerNorm(dim)
        self.norm_tokens = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(
        self,
        latents: torch.Tensor,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        q = self.norm_latents(latents)
        kv = self.norm_tokens(tokens)
        keys = torch.cat([kv + positions, q], dim=1)  # latents also attend to themselves (Flamingo-style)
        values = torch.cat([kv, q], dim=1)
        attended, _ = self.attention(q, keys, values, attn_mask=mask, need_weights=False)
        latents = latents + attended
        return latents + self.mlp(self.norm_mlp(latents))


class PerceiverResampler(nn.Module):
    """K learned latents; L layers of cross-attention to position-tagged patch tokens.

    ``regions=(kd, kh, kw)`` (with kd * kh * kw = K) anchors latent k to one block of the token grid
    (D split in kd, H in kh, W in kw; W in 2 = the two hemispheres): it cross-attends only to the patch tokens
    of its block (and to all latents). Token k then always speaks about the same part of the brain, so "where"
    (left/right, front/back, up/down) is carried by *which* visual token the language model reads, not only
    by how its content was mixed. Without ``regions`` every latent attends everywhere (a plain resampler).
    """

    def __init__(
        self,
        dim: int,
        num_latents: int,
        layers: int,
        heads: int,
        token_grid: tuple[int, int, int] | None = None,
        regions: tuple[int, int, int] | None = None,
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) * dim**-0.5)
        self.layers = nn.ModuleList(_ResamplerLayer(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.regions = tuple(regions) if regions else None
        if self.regions:
            if token_grid is None or self.regions[0] * self.regions[1] * self.regions[2] != num_latents:
                raise ValueError(f"regions {regions} must multiply to num_latents {num_latents}")
            self.register_buffer("block_mask", region_mask(token_grid, self.regions), persistent=False)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, E), positions (N, E) -> (B, K, E)."""
        latents = self.latents.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        pos = positions.unsqueeze(0).to(tokens.dtype)
        mask = self.block_mask if self.regions else None
        for layer in self.layers:
            latents = layer(latents, tokens, pos, mask)
        return self.norm(latents)


def region_mask(token_grid: tuple[int, int, int], regions: tuple[int, int, int]) -> torch.Tensor:
    """(K, N + K) attention mask, True = blocked: latent k sees the tokens of its block and all latents."""
    d, h, w = token_grid
    kd, kh, kw = regions
    dd, hh, ww = torch.meshgrid(torch.arange(d), torch.arange(h), torch.arange(w), indexing="ij")
    # Block index with W (right -> left) slowest: the first half of the visual tokens is the patient's right
    # hemisphere, the second half the left, so the side is a coarse position the LM can read, not a parity.
    block = ((ww * kw // w) * kh + (hh * kh // h)) * kd + (dd * kd // d)
    k = kd * kh * kw
    allowed = block.reshape(1, -1) == torch.arange(k).reshape(-1, 1)  # (K, N)
    return ~torch.cat([allowed, torch.ones(k, k, dtype=torch.bool)], dim=1)


class Pool1dCompressor(nn.Module):
    """The published compressor: ``adaptive_avg_pool1d`` over the flattened token sequence."""

    def __init__(self, num_latents: int):
        super().__init__()
        self.num_latents = num_latents

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, N, E) -> (B, K, E); positions are ignored, as in the published system."""
        return F.adaptive_avg_pool1d(tokens.transpose(1, 2), self.num_latents).transpose(1, 2)


def build_compressor(
    kind: str,
    dim: int,
    num_latents: int,
    layers: int,
    heads: int,
    token_grid: tuple[int, int, int] | None = None,
    regions: tuple[int, int, int] | None = None,
) -> nn.Module:
    if kind == "perceiver":
        return PerceiverResampler(dim, num_latents, layers, heads, token_grid, regions)
    if kind == "pool1d":
        return Pool1dCompressor(num_latents)
    raise ValueError(f"unknown compressor {kind!r}")
