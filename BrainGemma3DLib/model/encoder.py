"""MedSigLIP's vision tower inflated to 3D.

Shapes (B = batch, C = channels, grid (D, H, W), patch p, tubelet t, width E):
    volume (B, C, D, H, W) in [0, 1]  ->  [-1, 1] (SigLIP's pixel normalisation; published design: as is)
    Conv3d(kernel (t, p, p), stride (s, p, p))  ->  (B, E, D', H/p, W/p)
    flatten in (d, h, w) order  ->  tokens (B, N = D' * H/p * W/p, E)  + 3D positions (N, E)
    SigLIP encoder layers + post-layernorm (reused unchanged)  ->  (B, N, E)

Why these choices:
- The Conv3d is *inflated* from the pretrained Conv2d, so on a volume of identical slices it reproduces the 2D
  patch embedding exactly ("mean" init) or takes it from the centre frame ("centre" init).
- 1 input channel uses the sum of the RGB kernels: exactly what a grey slice replicated to RGB would give.
  3 channels use the RGB kernels as they are (FLAIR/T1ce/T2 as R/G/B). 2 channels each get half of the grey
  kernel, so two identical channels again give the grey response.
- The 3D position is the pretrained 2D table resampled (bicubic) to the in-plane patch grid, plus a learned
  depth embedding that starts at zero: the pretrained spatial (left/right!) code is kept, not thrown away.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig


def vision_config(cfg: ModelConfig):
    """The transformers ``SiglipVisionConfig`` for ``cfg.vision``."""
    from transformers import SiglipVisionConfig

    return SiglipVisionConfig(**cfg.vision)


def inflate_patch_kernel(weight2d: torch.Tensor, in_channels: int, tubelet: int, init: str) -> torch.Tensor:
    """Conv2d weight (E, 3, p, p) -> Conv3d weight (E, in_channels, t, p, p); see the module docstring.

    ``published``: the published code's inflation, in its order of operations: each frame is the 2D kernel
    divided by ``t``, and one input channel takes the *mean* of the RGB kernels.
    """
    if init == "published":
        frames = weight2d.unsqueeze(2).repeat(1, 1, tubelet, 1, 1) / tubelet
        if in_channels == weight2d.shape[1]:
            return frames
        if in_channels == 1:
            return frames.mean(dim=1, keepdim=True)
        raise ValueError(f"the published inflation takes 1 or 3 channels, got {in_channels}")
    if in_channels == 3:
        adapted = weight2d
    else:
        grey = weight2d.sum(dim=1, keepdim=True)
        adapted = grey.repeat(1, in_channels, 1, 1) / in_channels
    out = torch.zeros(adapted.shape[0], in_channels, tubelet, *adapted.shape[2:], dtype=adapted.dtype)
    if init == "mean":
        out[:] = (adapted / tubelet).unsqueeze(2)
    elif init == "centre":
        out[:, :, tubelet // 2] = adapted
    else:
        raise ValueError(f"unknown patch init {init!r}")
    return out


def resample_position_table(table2d: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Pretrained (g*g, E) position table -> (h*w, E) by bicubic resampling (as SigLIP does for new sizes)."""
    n, dim = table2d.shape
    g = int(round(math.sqrt(n)))
    if g * g != n:
        raise ValueError(f"position table with {n} entries is not square")
    if (g, g) == tuple(grid_hw):
        return table2d.clone()
    square = table2d.reshape(1, g, g, dim).permute(0, 3, 1, 2).float()
    resized = F.interpolate(square, size=tuple(grid_hw), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1).reshape(grid_hw[0] * grid_hw[1], dim).to(table2d.dtype)


def published_positions(d: int, h: int, w: int, dim: int) -> torch.Tensor:
    """The published code's fixed 3D position code, (d * h * w, dim) in (d, h, w) order.

    A depth ramp from -1 to 1 added to *every* channel, plus the row and column ramps (-1 to 1) in channels 0
    and 1: the pretrained 2D table is not used. Kept exactly so a published checkpoint sees what it was
    trained with (our design keeps the pretrained table instead).
    """
    depth = torch.linspace(-1, 1, steps=d).unsqueeze(1).repeat(1, dim)  # (d, dim)
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, steps=h), torch.linspace(-1, 1, steps=w), indexing="ij")
    plane = torch.zeros((h * w, dim))
    plane[:, 0] = rows.reshape(-1)
    if dim > 1:
        plane[:, 1] = cols.reshape(-1)
    return (depth.unsqueeze(1) + plane.unsqueeze(0)).reshape(d * h * w, dim)


def inflated_conv(cfg: ModelConfig, emb, tubelet: int, stride: int, pad: int, init: str) -> nn.Conv3d:
    """The Conv3d patch embedding, inflated from ``emb`` (SigLIP's embeddings) unless it sits on ``meta``."""
    p = cfg.patch_size
    conv = nn.Conv3d(
        cfg.in_channels, cfg.vision_hidden, (tubelet, p, p), stride=(stride, p, p), padding=(pad, 0, 0)
    )
    with torch.no_grad():
        w2d = emb.patch_embedding.weight
        if w2d.device.type != "meta":
            conv.weight.copy_(inflate_patch_kernel(w2d, cfg.in_channels, tubelet, init))
            conv.bias.copy_(emb.patch_embedding.bias)
    return conv


def plane_table(emb, grid_hw: tuple[int, int]) -> torch.Tensor:
    """SigLIP's 2D position table resampled to the in-plane patch grid (empty on ``meta``)."""
    table = emb.position_embedding.weight
    if table.device.type == "meta":
        return torch.empty(grid_hw[0] * grid_hw[1], table.shape[1], device="meta")
    return resample_position_table(table.detach(), grid_hw)


def siglip_tower(cfg: ModelConfig, siglip_vision=None):
    """The given ``SiglipVisionModel`` (pretrained weights), or a fresh one of ``cfg.vision``."""
    if siglip_vision is not None:
        return siglip_vision
    from transformers import SiglipVisionModel

    return SiglipVisionModel(vision_config(cfg))


class _SiglipLayers(nn.Module):
    """SigLIP's encoder layers and post-layernorm, run with optional gradient checkpointing."""

    def __init__(self, cfg: ModelConfig, siglip_vision):
        """Keep ``cfg`` and the tower's layers (its 2D embeddings are the subclass's to inflate)."""
        super().__init__()
        self.cfg = cfg
        self.layers = siglip_vision.encoder.layers
        self.post_layernorm = siglip_vision.post_layernorm
        self.gradient_checkpointing = False

    def run_layers(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                hidden = checkpoint(layer, hidden, None, use_reentrant=False)
            else:
                hidden = layer(hidden, None)
        return self.post_layernorm(hidden)


class InflatedSiglipEncoder(_SiglipLayers):
    """The 3D encoder: tubelet embedding, 3D positions, SigLIP layers (see the module docstring)."""

    def __init__(self, cfg: ModelConfig, siglip_vision=None):
        """Build from ``cfg``; ``siglip_vision`` (a ``SiglipVisionModel``) supplies pretrained weights."""
        siglip_vision = siglip_tower(cfg, siglip_vision)
        super().__init__(cfg, siglip_vision)
        emb = siglip_vision.embeddings
        dim, t = cfg.vision_hidden, cfg.tubelet
        self.token_grid = cfg.token_grid
        pad = t // 2 if cfg.depth_stride < t else 0
        self.patch_embedding = inflated_conv(cfg, emb, t, cfg.depth_stride, pad, cfg.patch_init)

        d, h, w = self.token_grid
        if cfg.position == "pretrained3d":
            plane = plane_table(emb, (h, w))
            self.plane_position = nn.Parameter(plane)
            self.depth_position = nn.Parameter(torch.zeros(d, dim, device=plane.device))
        else:
            self.register_buffer("fixed_position", published_positions(d, h, w, dim), persistent=False)

    def positions(self) -> torch.Tensor:
        """(N, E) position of every patch token, in (d, h, w) flattening order."""
        if self.cfg.position == "pretrained3d":
            d = self.depth_position.shape[0]
            return (self.depth_position[:, None, :] + self.plane_position[None, :, :]).reshape(
                d * self.plane_position.shape[0], -1
            )
        return self.fixed_position

    def embed(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) in [0, 1] -> patch embeddings (B, N, E), before positions."""
        x = volume.to(self.patch_embedding.weight.dtype)
        if self.cfg.pixel_range == "siglip":
            x = x * 2.0 - 1.0
        x = self.patch_embedding(x)  # (B, E, D', H/p, W/p)
        return x.flatten(2).transpose(1, 2)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) in [0, 1] -> encoded tokens (B, N, E)."""
        expected = (self.cfg.in_channels, *self.cfg.grid)
        if tuple(volume.shape[1:]) != expected:
            raise ValueError(f"expected volumes of shape (B, {expected}), got {tuple(volume.shape)}")
        hidden = self.embed(volume) + self.positions().to(self.patch_embedding.weight.dtype)
        return self.run_layers(hidden)


def slice_positions(cfg: ModelConfig) -> list[int]:
    """Depth indices of the slice baseline's N axial slices: the centres of N equal slabs, inferior first."""
    return [int((i + 0.5) * cfg.grid[0] / cfg.slices) for i in range(cfg.slices)]


class SliceSiglipEncoder(_SiglipLayers):
    """The slice-based baseline: the *uninflated* 2D tower applied to N axial slices, one image each.

    This is how a 2D vision-language model such as MedGemma reads a volume: a series of images, each with its
    own 2D position table and no depth position, each pooled to s x s tokens (s^2 = K / N) so the language
    model receives the same number of visual tokens as from the 3D encoder. The slice labels are added by the
    model around each slice's tokens (see :meth:`BrainGemma3D.visual_tokens`). Kept only for comparison.
    """

    def __init__(self, cfg: ModelConfig, siglip_vision=None):
        siglip_vision = siglip_tower(cfg, siglip_vision)
        super().__init__(cfg, siglip_vision)
        emb = siglip_vision.embeddings
        # A 1-frame "inflation" is exactly the 2D (grey) patch embedding.
        self.patch_embedding = inflated_conv(cfg, emb, 1, 1, 0, "centre")
        self.plane_position = nn.Parameter(plane_table(emb, cfg.token_grid[1:]))
        self.register_buffer("slice_index", torch.tensor(slice_positions(cfg)), persistent=False)
        self.side = cfg.slice_pool

    def positions(self) -> None:
        """Slices carry no 3D position (only their labels say which slice they are)."""
        return None

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) in [0, 1] -> (B, N * s * s, E), slice by slice (inferior first)."""
        expected = (self.cfg.in_channels, *self.cfg.grid)
        if tuple(volume.shape[1:]) != expected:
            raise ValueError(f"expected volumes of shape (B, {expected}), got {tuple(volume.shape)}")
        slices = volume.index_select(2, self.slice_index).to(self.patch_embedding.weight.dtype) * 2.0 - 1.0
        x = self.patch_embedding(slices)  # (B, E, N, h, w)
        b, e, n, h, w = x.shape
        hidden = x.permute(0, 2, 3, 4, 1).reshape(b * n, h * w, e) + self.plane_position.to(x.dtype)
        hidden = self.run_layers(hidden).reshape(b * n, h, w, e).permute(0, 3, 1, 2)
        pooled = F.adaptive_avg_pool2d(hidden, self.side)  # (B * N, E, s, s)
        return pooled.flatten(2).transpose(1, 2).reshape(b, n * self.side * self.side, e)


def build_encoder(cfg: ModelConfig, siglip_vision=None) -> nn.Module:
    """The encoder ``cfg.encoder`` names: the inflated 3D tower (ours) or the slice-based baseline."""
    if cfg.encoder == "slices":
        return SliceSiglipEncoder(cfg, siglip_vision)
    return InflatedSiglipEncoder(cfg, siglip_vision)
