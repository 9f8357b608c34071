"""The BrainGemma3D model: inflated 3D MedSigLIP encoder, token compressor, projector and MedGemma.

One concern per file: :mod:`.config` (the ModelConfig and presets), :mod:`.encoder` (3D inflation),
:mod:`.compressor` (Perceiver resampler / pool1d), :mod:`.projector`, :mod:`.language` (MedGemma text model,
tokenizer, chat prompt), :mod:`.tokenizer` (the demo tokenizer), :mod:`.brain_model` (generate, score, loss)
and :mod:`.loading` (build, save, load; never downloads).
"""

from .brain_model import BrainGemma3D, Draft
from .config import ModelConfig, preset
from .loading import (
    build,
    from_base_models,
    load,
    load_checkpoint,
    load_published,
    pick_device,
    save,
)

__all__ = [
    "BrainGemma3D",
    "Draft",
    "ModelConfig",
    "build",
    "from_base_models",
    "load",
    "load_checkpoint",
    "load_published",
    "pick_device",
    "preset",
    "save",
]
