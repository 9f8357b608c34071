"""LoRA adapters onto the text model, every tensor accounted for.

Why not ``PeftModel.from_pretrained`` alone: it loads whatever keys match and only *warns* about the rest,
so an adapter saved in another key layout (the published BrainGemma3D's, trained on the multimodal
``Gemma3ForConditionalGeneration``: ``model.language_model.layers...``) arrives as nothing and the model
silently runs without its fine-tuning. Here every key is mapped onto our text model's names; a key that does
not land on a LoRA weight is an error naming it. Tensors on MedGemma's own 2D vision tower (peft's
``q_proj``/``v_proj`` targets also match it) are set aside and reported: BrainGemma3D, like the published
code, never runs that tower (its images reach the language model through the 3D encoder), so they cannot
change a report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..io.errors import InputError
from .safety import refuse_custom_code, refuse_pickles, safetensors_shapes

ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Key prefixes of the multimodal model's text part, mapped onto the text model's ``model.``.
TEXT_PREFIXES = (
    (re.compile(r"^model\.language_model\.model\."), "model."),
    (re.compile(r"^model\.language_model\."), "model."),
    (re.compile(r"^language_model\.model\."), "model."),
    (re.compile(r"^language_model\.lm_head\."), "lm_head."),
)
#: Parts of the multimodal model that BrainGemma3D never runs.
UNUSED_PREFIXES = (
    "model.vision_tower.",
    "vision_tower.",
    "model.multi_modal_projector.",
    "multi_modal_projector.",
)


def _text_key(key: str) -> str | None:
    """An adapter key (without peft's ``base_model.model.``) on our text model's names; None if unused."""
    if key.startswith(UNUSED_PREFIXES):
        return None
    for pattern, replacement in TEXT_PREFIXES:
        if pattern.match(key):
            return pattern.sub(replacement, key, count=1)
    return key


def load_adapter(lm, folder: str | Path):
    """``lm`` (a Gemma 3 text model) with the LoRA adapter in ``folder``; returns ``(peft model, notes)``.

    ``notes`` lists what was set aside (tensors on MedGemma's 2D vision tower). Raises :class:`InputError`
    for a folder that runs code, holds pickles, is damaged, or has a key that lands on no LoRA weight.
    """
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    refuse_custom_code(folder, "LoRA adapter")
    refuse_pickles(folder, "LoRA adapter")
    weights = folder / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise InputError(f"LoRA adapter without {ADAPTER_WEIGHTS}", folder)
    try:
        raw = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable adapter_config.json ({exc})", folder) from None
    if raw.get("peft_type", "LORA") != "LORA":
        raise InputError(f"only LoRA adapters are supported (found {raw.get('peft_type')})", folder)
    safetensors_shapes(weights, "LoRA adapter weights")
    state = load_file(str(weights))
    mapped, unused = {}, []
    for key, tensor in state.items():
        inner = key.removeprefix("base_model.model.")
        text = _text_key(inner)
        if text is None:
            unused.append(key)
        else:
            mapped[text] = tensor
    if not mapped:
        raise InputError("the LoRA adapter holds no tensor for the language model", weights)
    modules = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in mapped if ".lora_" in k})
    config = LoraConfig(
        r=int(raw.get("r", 8)),
        lora_alpha=int(raw.get("lora_alpha", 8)),
        lora_dropout=float(raw.get("lora_dropout", 0.0)),
        bias=str(raw.get("bias", "none")),
        target_modules=modules,
        use_rslora=bool(raw.get("use_rslora", False)),
    )
    model = get_peft_model(lm, config)
    expected = {name for name, _ in model.named_parameters() if ".lora_" in name}
    landing = {f"base_model.model.{k}".replace(".lora_A.", ".lora_A.default.").replace(
        ".lora_B.", ".lora_B.default.") for k in mapped}  # fmt: skip
    stray = sorted(landing - expected)
    if stray:
        raise InputError(f"LoRA adapter key lands on no weight of the language model: {stray[0]}", weights)
    missing = sorted(expected - landing)
    if missing:
        raise InputError(
            f"LoRA adapter lacks weights for {missing[0]} (and {len(missing) - 1} more)", weights
        )
    result = set_peft_model_state_dict(model, {f"base_model.model.{k}": v for k, v in mapped.items()})
    if getattr(result, "unexpected_keys", None):
        raise InputError(f"LoRA adapter key lands on no weight: {result.unexpected_keys[0]}", weights)
    model.requires_grad_(False)
    notes = []
    if unused:
        notes.append(
            f"{len(unused)} LoRA tensor(s) on MedGemma's 2D vision tower set aside (that tower is never run)"
        )
    return model, notes
