"""MedGemma's language model, its tokenizer and the chat prompt that carries the visual tokens.

Loading trap (transformers 5.x): ``Gemma3ForCausalLM.from_pretrained(<multimodal Gemma 3 folder>)``
silently re-initialises every weight (the keys sit under ``language_model.``), and ``AutoModelForCausalLM``
returns the whole multimodal model, vision tower included. So the text keys are mapped explicitly and the
load is checked: any missing LM weight, or any unexpected key outside the 2D vision tower and its projector,
is an error. The 2D vision tower's weights are never materialised.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io.errors import InputError
from .safety import refuse_custom_code

# Checkpoint key layouts of Gemma3ForConditionalGeneration (old and new transformers) -> Gemma3ForCausalLM.
KEY_MAPPING = {
    r"^language_model\.model\.": "model.",
    r"^model\.language_model\.": "model.",
    r"^language_model\.lm_head\.": "lm_head.",
}
#: Keys of the multimodal checkpoint that the text model deliberately does not load.
SKIPPED_PREFIXES = (
    "vision_tower.",
    "multi_modal_projector.",
    "model.vision_tower.",
    "model.multi_modal_projector.",
)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>"
    "{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
VISUAL_MARK = "<visual_tokens_here>"


def text_config_from_folder(folder: Path) -> dict:
    """The Gemma 3 text configuration of a MedGemma/Gemma 3 folder (multimodal or text-only)."""
    from transformers import Gemma3Config, Gemma3TextConfig

    path = folder / "config.json"
    if not path.is_file():
        raise InputError("not a model folder (no config.json)", folder)
    raw = json.loads(path.read_text(encoding="utf-8"))
    kind = raw.get("model_type")
    if kind == "gemma3":
        return Gemma3Config(**raw).text_config.to_dict()
    if kind == "gemma3_text":
        return Gemma3TextConfig(**raw).to_dict()
    raise InputError(f"expected a Gemma 3 / MedGemma folder, found model_type {kind!r}", folder)


@contextlib.contextmanager
def quiet_loading():
    """Silence transformers' own load report (a table of keys) while our loaders check the keys themselves
    and say in one line what is wrong."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def weight_files(folder: Path) -> list[Path]:
    """The weight files a model folder's loader reads (its ``*.safetensors``, sorted)."""
    return sorted(Path(folder).glob("*.safetensors"))


def check_weights_present(folder: Path, what: str) -> None:
    """A gated model folder cloned without its weights gets an actionable message; one holding only pickled
    weights (``pytorch_model.bin``: loading it could run code) is named and refused before transformers reads
    it."""
    from .safety import PICKLE_SUFFIXES

    if not list(folder.glob("*.safetensors")) and not (folder / "model.safetensors.index.json").is_file():
        pickles = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise InputError(
                f"{what} weights are pickled ({pickles[0].name}); BrainGemma3D reads only safetensors "
                "(convert the folder once: load it and save_pretrained(safe_serialization=True))",
                pickles[0],
            )
        raise InputError(
            f"{what} folder has no *.safetensors weights: accept the Health AI Developer Foundations terms "
            "on the model's Hugging Face page, download it once (`hf download <model id> --local-dir DIR`) "
            "and point BrainGemma3D at DIR",
            folder,
        )


def build_language_model(lm: dict, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A randomly initialised Gemma 3 text model of the given sizes (tests, meta-device shape checks)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(**lm)
    with torch.device(device):
        model = Gemma3ForCausalLM(config)
    return model.to(dtype) if str(device) != "meta" else model


def load_language_model(
    folder: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    quantize: str | None = None,
):
    """The text part of MedGemma from a local folder, frozen, verified key by key.

    ``quantize="4bit"`` loads NF4 with double quantisation through bitsandbytes (CUDA).
    """
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    folder = Path(folder)
    refuse_custom_code(folder, "MedGemma")
    text_cfg = Gemma3TextConfig(**text_config_from_folder(folder))
    check_weights_present(folder, "MedGemma")
    kwargs: dict = {"dtype": dtype}
    if quantize == "4bit":
        from transformers import BitsAndBytesConfig

        if importlib.util.find_spec("bitsandbytes") is None:
            raise InputError("4-bit loading needs bitsandbytes: pip install 'braingemma3d[quantize]'")

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device}
    elif quantize not in (None, "none"):
        raise InputError(f"unknown quantisation {quantize!r} (use 4bit or none)")
    with quiet_loading():  # the 2D tower's keys are skipped on purpose; the check below says what matters
        model, info = Gemma3ForCausalLM.from_pretrained(
            str(folder),
            config=text_cfg,
            key_mapping=KEY_MAPPING,
            output_loading_info=True,
            local_files_only=True,
            trust_remote_code=False,
            **kwargs,
        )
    missing = [
        k
        for k in info.get("missing_keys", [])
        if not (k == "lm_head.weight" and text_cfg.tie_word_embeddings)
    ]
    unexpected = [k for k in info.get("unexpected_keys", []) if not k.startswith(SKIPPED_PREFIXES)]
    mismatched = info.get("mismatched_keys", [])
    if missing or unexpected or mismatched:
        raise InputError(
            f"MedGemma weights do not match the Gemma 3 text model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}, mismatched {list(mismatched)[:5]}",
            folder,
        )
    if quantize != "4bit":
        model.to(device)
    model.requires_grad_(False)
    model.eval()
    return model


def load_tokenizer(folder: str | Path):
    """The tokenizer (and chat template) saved in ``folder``."""
    from transformers import AutoTokenizer

    refuse_custom_code(folder, "tokenizer")
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    if not getattr(tok, "chat_template", None):
        tok.chat_template = CHAT_TEMPLATE
    return tok


@dataclass
class ChatPrompt:
    """Token ids around the visual tokens, and where generation stops.

    ``chat`` (ours): ``<bos><start_of_turn>user\\n [visual tokens] \\n prompt<end_of_turn>\\n``
    ``<start_of_turn>model\\n``, stopping at ``<eos>`` or ``<end_of_turn>``. ``published``: ``[visual
    tokens]`` then the prompt as the tokenizer encodes it with its special tokens (Gemma's puts ``<bos>``
    first), no chat template, stopping at ``<eos>`` only: what the published code feeds MedGemma.
    """

    prefix_ids: list[int]
    suffix_ids: list[int]
    stop_ids: list[int]

    @classmethod
    def build(cls, tokenizer, prompt: str, style: str = "chat", stop: str = "turn") -> ChatPrompt:
        stops = [tokenizer.eos_token_id]
        end_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
        if stop == "turn" and isinstance(end_turn, int) and end_turn != tokenizer.unk_token_id:
            stops.append(end_turn)
        stops = [s for s in stops if s is not None]
        if style == "published":
            return cls([], list(tokenizer(prompt, add_special_tokens=True)["input_ids"]), stops)
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": f"{VISUAL_MARK}\n{prompt}"}],
            tokenize=False,
            add_generation_prompt=True,
        )
        if text.count(VISUAL_MARK) != 1:
            raise ValueError("the tokenizer's chat template does not keep the user message intact")
        prefix, suffix = text.split(VISUAL_MARK)
        return cls(
            tokenizer(prefix, add_special_tokens=False)["input_ids"],
            tokenizer(suffix, add_special_tokens=False)["input_ids"],
            stops,
        )
