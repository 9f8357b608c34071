"""Building, saving and loading BrainGemma3D models, always from local files (``HF_HUB_OFFLINE=1``).

Checkpoint folder (what ``save`` writes and ``load`` reads)::

    braingemma3d_config.json   the ModelConfig (sizes, grid, design choices, base model names)
    model.safetensors          trained weights; with ``include_base`` also the vision tower and the LM
    tokenizer/                 the tokenizer and chat template
    adapter/                   peft LoRA adapter, when the LM was specialised

A checkpoint without base weights records which MedSigLIP/MedGemma it needs (``vision_base``/``lm_base``);
they are found as local folders or in the local Hugging Face cache, never downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..io.atomic import staging_dir
from ..io.errors import InputError
from ..io.stamps import sha256_bytes, sha256_files
from .adapters import ADAPTER_WEIGHTS, load_adapter
from .brain_model import BrainGemma3D
from .config import CONFIG_NAME, ModelConfig, preset
from .encoder import build_encoder, vision_config
from .language import (
    build_language_model,
    check_weights_present,
    load_language_model,
    load_tokenizer,
    quiet_loading,
    text_config_from_folder,
    weight_files,
)
from .safety import check_memory, compare_shapes, refuse_custom_code, refuse_pickles, safetensors_shapes

WEIGHTS_NAME = "model.safetensors"
#: Config entries read from the real folders into ModelConfig (sizes and behaviour, not bookkeeping).
VISION_KEYS = frozenset(
    {
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "patch_size",
        "image_size",
        "num_channels",
        "layer_norm_eps",
        "hidden_act",
    }
)
LM_KEYS = frozenset(
    {
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "vocab_size",
        "sliding_window",
        "query_pre_attn_scalar",
        "max_position_embeddings",
        "rms_norm_eps",
        "hidden_activation",
        "layer_types",
        "rope_parameters",
    }
)
#: Parameters that belong to the base models (not stored unless include_base).
BASE_PREFIXES = ("encoder.layers.", "encoder.post_layernorm.", "lm.")
DEMO_WEIGHTS = Path(__file__).resolve().parents[2] / "Resources" / "DemoWeights"


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` = CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for, but no CUDA GPU is available (use --device cpu)")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (auto, cpu or cuda)")
    return torch.device(device)


def resolve_local(name_or_path: str, what: str) -> Path:
    """A local folder, or a Hugging Face id already in the local cache (never downloaded)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(f"{what} must be a folder", path)
        return path
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(name_or_path, local_files_only=True))
        except Exception as exc:  # not in the cache
            raise InputError(
                f"{what} {name_or_path!r} is not in the local Hugging Face cache and is never downloaded at "
                "run time: accept the Health AI Developer Foundations terms on its Hugging Face page, "
                "download it once, and pass its folder",
            ) from exc
    raise InputError(f"{what} folder not found", path)


def _siglip_vision_config(folder: Path):
    """The vision tower's config of a MedSigLIP (SiglipModel) or SiglipVisionModel folder, checked first."""
    from transformers import SiglipConfig, SiglipVisionConfig

    refuse_custom_code(folder, "MedSigLIP")
    raw_path = folder / "config.json"
    if not raw_path.is_file():
        raise InputError("not a model folder (no config.json)", folder)
    try:
        raw = json.loads(raw_path.read_text(encoding="utf-8"))
        kind = raw.get("model_type")
        if kind == "siglip":
            return SiglipConfig(**raw).vision_config
        if kind == "siglip_vision_model":
            return SiglipVisionConfig(**raw)
    except (ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise InputError(f"unreadable config.json ({str(exc).splitlines()[0][:200]})", raw_path) from None
    raise InputError(f"expected a MedSigLIP / SigLIP folder, found model_type {kind!r}", folder)


def _load_siglip_vision(folder: Path, device: torch.device, dtype: torch.dtype):
    """The vision tower of a MedSigLIP (SiglipModel) or SiglipVisionModel folder, verified key by key."""
    from transformers import SiglipVisionModel

    vcfg = _siglip_vision_config(folder)
    check_weights_present(folder, "MedSigLIP")
    with quiet_loading():  # the text tower's keys are skipped on purpose; checked below
        model, info = SiglipVisionModel.from_pretrained(
            str(folder),
            config=vcfg,
            key_mapping={r"^vision_model\.": ""},
            output_loading_info=True,
            dtype=dtype,
            local_files_only=True,
            trust_remote_code=False,
        )
    missing = list(info.get("missing_keys", []))
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(("text_model.", "logit_"))]
    if missing or unexpected:
        raise InputError(
            f"MedSigLIP vision weights incomplete: missing {missing[:5]}, unexpected {unexpected[:5]}", folder
        )
    return model.to(device), vcfg.to_dict()


def build(cfg: ModelConfig, tokenizer=None, *, device: str | torch.device = "cpu") -> BrainGemma3D:
    """A randomly initialised model of ``cfg`` (``device="meta"`` builds shapes without memory).

    Without a ``tokenizer`` the model can be run on tokens but not prompted (a fresh demo model gets its
    tokenizer from :func:`BrainGemma3DLib.training.tokenizer.fresh_model`).
    """
    from transformers import SiglipVisionModel

    with torch.device(device):
        siglip = SiglipVisionModel(vision_config(cfg))
        encoder = build_encoder(cfg, siglip)
    lm = build_language_model(cfg.lm, device=device)
    with torch.device(device):
        return BrainGemma3D(cfg, encoder, lm, tokenizer)


def from_base_models(
    cfg: ModelConfig,
    vision: str | os.PathLike,
    lm: str | os.PathLike,
    *,
    device: str = "auto",
    quantize: str | None = None,
) -> BrainGemma3D:
    """A fresh BrainGemma3D around real (or tiny, saved the same way) MedSigLIP and MedGemma folders.

    Tower and LM sizes are read from the folders' own configs and replace those in ``cfg``.
    """
    dev = pick_device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    vision_dir = resolve_local(str(vision), "MedSigLIP")
    lm_dir = resolve_local(str(lm), "MedGemma")
    refuse_custom_code(lm_dir, "MedGemma")
    check_weights_present(vision_dir, "MedSigLIP")  # both before either loads: one line, nothing read
    check_weights_present(lm_dir, "MedGemma")
    cfg.vision = {k: v for k, v in _siglip_vision_config(vision_dir).to_dict().items() if k in VISION_KEYS}
    cfg.lm = {k: v for k, v in text_config_from_folder(lm_dir).items() if k in LM_KEYS}
    cfg.vision_base, cfg.lm_base = str(vision), str(lm)
    try:
        cfg.validate()
    except ValueError as exc:
        raise InputError(f"the base models' configs are not usable ({exc})", lm_dir) from None
    shell = build(cfg, device="meta")  # count parameters without allocating them
    n_params = sum(v.numel() for v in shell.parameters())
    check_memory(n_params, 2 if dev.type == "cuda" else 4, dev, "MedSigLIP + MedGemma", lm_dir)
    siglip, _sizes = _load_siglip_vision(vision_dir, dev, dtype)
    language = load_language_model(lm_dir, device=dev, dtype=dtype, quantize=quantize)
    tokenizer = load_tokenizer(lm_dir)
    with torch.device(dev):
        encoder = build_encoder(cfg, siglip).to(dtype)
        model = BrainGemma3D(cfg, encoder, language, tokenizer)
    model.compressor.to(dev, dtype)
    model.projector.to(dev, dtype)
    return model


def save(model: BrainGemma3D, folder: str | os.PathLike, *, include_base: bool = False) -> Path:
    """Write a checkpoint folder (see the module docstring); returns its path."""
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("lm.")}
    if include_base:
        state.update({f"lm.{k}": v for k, v in _lm_base_state(model.lm).items()})
    else:
        state = {k: v for k, v in state.items() if not k.startswith(BASE_PREFIXES)}
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    # Tied weights are stored once.
    if "lm.lm_head.weight" in state and "lm.model.embed_tokens.weight" in state:
        if state["lm.lm_head.weight"].data_ptr() == state[
            "lm.model.embed_tokens.weight"
        ].data_ptr() or torch.equal(state["lm.lm_head.weight"], state["lm.model.embed_tokens.weight"]):
            state.pop("lm.lm_head.weight")
    with staging_dir(folder) as tmp:
        save_file(
            state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "include_base": str(include_base)}
        )
        model.cfg.save(tmp)
        model.tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if hasattr(model.lm, "peft_config"):
            model.lm.save_pretrained(str(tmp / "adapter"))
    return folder


def _lm_base_state(lm) -> dict:
    """The LM's own weights under their original names, without any LoRA adapter (saved separately)."""
    if not hasattr(lm, "peft_config"):
        return lm.state_dict()
    return {
        k.replace(".base_layer.", "."): v
        for k, v in lm.get_base_model().state_dict().items()
        if "lora_" not in k
    }


def _finish(model: BrainGemma3D, folder: Path, weights: list[Path], adapter: Path) -> BrainGemma3D:
    """Common end of every checkpoint loader: LoRA adapter if present, provenance, eval mode.

    ``checkpoint_sha256`` identifies every weight file read: the file's own SHA-256 when there is one, else
    the SHA-256 of the manifest ``checkpoint_files`` ({path relative to the folder: SHA-256}).
    """
    if (adapter / "adapter_config.json").is_file():
        model.lm, model.load_notes = load_adapter(model.lm, adapter)
        weights = [*weights, adapter / ADAPTER_WEIGHTS]
    files = {}
    for path in weights:
        try:
            key = str(path.relative_to(folder))
        except ValueError:  # a base model folder given outside the checkpoint
            key = str(path)
        files[key] = sha256_files([path])
    model.checkpoint_files = files
    model.checkpoint_sha256 = (
        next(iter(files.values()))
        if len(files) == 1
        else sha256_bytes(json.dumps(files, sort_keys=True).encode("utf-8"))
    )
    model.checkpoint_path = str(folder)
    return model.eval()


def load_checkpoint(
    folder: str | os.PathLike,
    *,
    vision: str | None = None,
    lm: str | None = None,
    device: str = "auto",
    quantize: str | None = None,
) -> BrainGemma3D:
    """Load a BrainGemma3D checkpoint folder; base models from arguments, the config, or the checkpoint."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise InputError(f"not a BrainGemma3D checkpoint (needs {CONFIG_NAME} and {WEIGHTS_NAME})", folder)
    refuse_custom_code(folder, "checkpoint")
    for sub in ("adapter", "tokenizer"):
        if (folder / sub).is_dir():
            refuse_custom_code(folder / sub, f"checkpoint {sub}")
            refuse_pickles(folder / sub, f"checkpoint {sub}")
    try:
        cfg = ModelConfig.load(folder)
    except (ValueError, TypeError, OSError, RecursionError) as exc:
        problem = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InputError(f"damaged checkpoint config ({problem})", folder / CONFIG_NAME) from None
    shapes = safetensors_shapes(folder / WEIGHTS_NAME, "checkpoint weights")
    dev = pick_device(device)
    try:
        with safe_open(str(folder / WEIGHTS_NAME), "pt") as fh:
            include_base = (fh.metadata() or {}).get("include_base") == "True"
    except Exception as exc:  # safetensors' own error type; the header was checked above
        raise InputError(f"damaged checkpoint weights ({exc})", folder / WEIGHTS_NAME) from None
    if include_base and quantize not in (None, "none"):
        raise InputError("4-bit loading needs a checkpoint on a real MedGemma; this one has its own", folder)
    if include_base:
        shell = build(cfg, device="meta")  # shapes only: nothing is allocated before the checks pass
        expected = {k: tuple(v.shape) for k, v in shell.state_dict().items()}
        compare_shapes(expected, shapes, "checkpoint weights", folder / WEIGHTS_NAME)
        n_params = sum(v.numel() for v in shell.parameters())
        check_memory(n_params, 4, torch.device("cpu"), "the checkpoint", folder)
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except Exception as exc:
        raise InputError(f"damaged checkpoint weights ({exc})", folder / WEIGHTS_NAME) from None
    if include_base:
        tokenizer = load_tokenizer(folder / "tokenizer")
        model = build(cfg, tokenizer, device="cpu")
        if "lm.lm_head.weight" not in state and "lm.model.embed_tokens.weight" in state:
            state["lm.lm_head.weight"] = state["lm.model.embed_tokens.weight"]
        strict_state = state
    else:
        vision = vision or cfg.vision_base
        lm = lm or cfg.lm_base
        if not vision or not lm:
            raise InputError("checkpoint needs base MedSigLIP and MedGemma folders (--vision, --lm)", folder)
        model = from_base_models(cfg, vision, lm, device=str(dev), quantize=quantize)
        strict_state = {
            **{k: v for k, v in model.state_dict().items() if k.startswith(BASE_PREFIXES)},
            **state,
        }
    missing, unexpected = model.load_state_dict(strict_state, strict=False)
    missing = [k for k in missing if k != "lm.lm_head.weight"]
    if missing or unexpected:
        raise InputError(
            f"checkpoint does not fit its config: missing {missing[:5]}, unexpected {unexpected[:5]}", folder
        )
    return _finish(model, folder, [folder / WEIGHTS_NAME], folder / "adapter").to(dev)


def is_published_layout(folder: str | os.PathLike) -> bool:
    """A folder in the published BrainGemma3D layout (its projector file, none of our config)."""
    return (Path(folder) / PUBLISHED_WEIGHTS).is_file() and not (Path(folder) / CONFIG_NAME).is_file()


def load(
    model: str = "demo",
    *,
    grid: tuple[int, int, int] | None = None,
    quantize: str | None = None,
    **kwargs,
) -> BrainGemma3D:
    """``demo`` (the bundled weights), a BrainGemma3D checkpoint folder, or the published layout (run as
    published; ``grid`` chooses its model grid). ``quantize``: the language model's precision (``none``,
    ``bf16``, ``int8`` on a CPU, ``nf4``/``4bit`` on CUDA; see :mod:`.precision`); the result's
    ``precision`` says what it runs in. Other keyword arguments: ``device``, ``vision``, ``lm``."""
    from .precision import apply_cpu_precision, check_device, normalise

    precision = normalise(quantize)
    device = pick_device(kwargs.get("device", "auto"))
    check_device(precision, device)
    if precision == "nf4":
        kwargs["quantize"] = "4bit"
    loaded = _load_any(model, grid, kwargs)
    if precision in ("bf16", "int8") and device.type == "cpu":
        if hasattr(loaded.lm, "merge_and_unload"):  # a LoRA adapter folds into the weights it adapts first
            loaded.lm = loaded.lm.merge_and_unload()
        loaded.lm = apply_cpu_precision(loaded.lm, precision)
    default = "bf16" if device.type == "cuda" else "float32"
    loaded.precision = {"none": default, "nf4": "nf4"}.get(precision, precision)
    return loaded


def _load_any(model: str, grid, kwargs: dict) -> BrainGemma3D:
    if model != "demo" and is_published_layout(model):
        return load_published(model, grid=grid, **kwargs)
    if grid is not None:
        raise InputError("a grid is chosen for published checkpoints only; ours keep the grid they learned")
    if model == "demo":
        if not (DEMO_WEIGHTS / CONFIG_NAME).is_file():
            raise InputError(
                "the bundled demo weights are not in this build yet (Resources/DemoWeights); "
                "pass a checkpoint folder",
            )
        return load_checkpoint(DEMO_WEIGHTS, **kwargs)
    return load_checkpoint(model, **kwargs)


PUBLISHED_WEIGHTS = "projector_vis_scale.pt"


def read_published_projector(path: Path) -> tuple[dict, float]:
    """The published `projector_vis_scale.pt`: `{"vision_projector": state_dict, "vis_scale": float}`.

    Read with ``torch.load(weights_only=True)``: tensors and plain values only, never arbitrary pickled code.
    """
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # weights_only refuses anything but tensors and plain containers
        raise InputError(
            "not a plain weights file: torch.load(weights_only=True) refused it (damaged, or it holds Python "
            "objects beyond tensors, which are never unpickled)",
            path,
        ) from None
    if not isinstance(raw, dict) or "vision_projector" not in raw or "vis_scale" not in raw:
        raise InputError("expected a dict with 'vision_projector' and 'vis_scale'", path)
    state = raw["vision_projector"]
    needed = {"0.weight", "0.bias", "2.weight", "2.bias"}
    if not isinstance(state, dict) or set(state) != needed:
        raise InputError(f"the projector must hold {sorted(needed)}, found {sorted(state)[:6]}", path)
    scale = raw["vis_scale"]
    return state, float(scale.item() if isinstance(scale, torch.Tensor) else scale)


def _folder_top_k(folder: Path, default: int) -> int:
    """The top-k sampling uses when the caller does not set it: the folder's generation_config, as in the
    published code (which passes temperature and top-p but not top-k)."""
    path = folder / "generation_config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("top_k") if path.is_file() else None
    except (OSError, ValueError):
        raise InputError("unreadable generation_config.json", path) from None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def load_published(
    folder: str | os.PathLike,
    *,
    vision: str | None = None,
    lm: str | None = None,
    device: str = "auto",
    quantize: str | None = None,
    grid: tuple[int, int, int] | None = None,
) -> BrainGemma3D:
    """A checkpoint in the published system's layout, run as the published code runs it.

    Layout: ``projector_vis_scale.pt`` (projector MLP and scalar scale, read with ``weights_only=True``),
    ``vision_model/`` (its MedSigLIP folder) and ``language_model/`` (MedGemma), or ``vision``/``lm``, and
    optional ``lora_adapters/`` (keys in the multimodal layout, remapped; see :mod:`.adapters`). The config is
    the real sizes with :data:`~.config.PUBLISHED_DESIGN` (preprocessing, kernel, positions, pool1d,
    projector, prompt, decoding) on ``grid`` (default :data:`~.config.PUBLISHED_GRID`). Like the published
    code, the inflated patch embedding is made from MedSigLIP's 2D one at load time (it is never saved).
    Precision: float32 on a CPU; on a GPU bf16, and MedGemma in 4-bit NF4 with ``quantize="4bit"`` as the
    published code loads it.
    """
    from .config import PUBLISHED_DESIGN, PUBLISHED_GRID

    folder = Path(folder)
    weights = folder / PUBLISHED_WEIGHTS
    if not weights.is_file():
        raise InputError(f"not a published BrainGemma3D checkpoint (no {PUBLISHED_WEIGHTS})", folder)
    state, scale = read_published_projector(weights)
    vision = vision or (str(folder / "vision_model") if (folder / "vision_model").is_dir() else None)
    lm = lm or (str(folder / "language_model") if (folder / "language_model").is_dir() else None)
    if not vision or not lm:
        raise InputError(
            "the published checkpoint needs MedSigLIP and MedGemma folders (--vision, --lm)", folder
        )
    cfg = preset("medgemma", **PUBLISHED_DESIGN, grid=tuple(grid or PUBLISHED_GRID))
    cfg.preset = "published"
    cfg.decoding["top_k"] = _folder_top_k(Path(lm), cfg.decoding["top_k"])
    model = from_base_models(cfg, vision, lm, device=device, quantize=quantize)
    mapped = {f"mlp.{k}": v for k, v in state.items()}
    expected = {k: tuple(v.shape) for k, v in model.projector.mlp.state_dict().items()}
    found = {k[4:]: tuple(v.shape) for k, v in mapped.items()}
    if expected != found:
        raise InputError(f"projector shapes {found} do not fit these base models {expected}", weights)
    dtype = model.projector.scale.dtype
    model.projector.mlp.load_state_dict({k[4:]: v.to(dtype) for k, v in mapped.items()})
    with torch.no_grad():
        model.projector.scale.fill_(scale)
    read = [weights, *weight_files(Path(vision)), *weight_files(Path(lm))]
    return _finish(model, folder, read, folder / "lora_adapters")
