"""A small Gemma-style tokenizer for the demo preset and tests, trained locally (no download).

It has Gemma's special tokens at Gemma's ids (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3) plus
``<start_of_turn>``/``<end_of_turn>``, and Gemma's chat template, so the same prompt code serves it and the
real MedGemma tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..model import ModelConfig, build
from ..model.language import CHAT_TEMPLATE
from ..phantoms.reports import write_healthy_report, write_report
from ..reporting.vocabulary import FINDINGS, LOBES

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def report_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Phantom-style report texts (healthy and pathological) to train the demo tokenizer on."""
    rng = np.random.default_rng(seed)
    texts = []
    for i in range(n):
        if i % 5 == 0:
            texts.append(write_healthy_report(rng))
            continue
        k = int(rng.integers(1, 4))
        truth = {
            "healthy": False,
            "hemisphere": str(rng.choice(["left", "right", "bilateral"])),
            "lobes": [str(x) for x in rng.choice(LOBES, size=k, replace=False)],
            "findings": {f: bool(rng.random() < 0.6) for f in FINDINGS},
            "tumour_volume_ml": float(rng.uniform(1, 60)),
            "edema_volume_ml": float(rng.uniform(0, 120)),
            "midline_shift_mm": float(rng.uniform(0, 8)),
        }
        texts.append(write_report(truth, rng))
    return texts


def build_demo_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """A byte-level BPE tokenizer trained on ``texts``, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def fresh_model(cfg: ModelConfig, tokenizer=None):
    """A randomly initialised model of ``cfg`` with the demo tokenizer (trained here) unless one is given."""
    if tokenizer is None:
        tokenizer = build_demo_tokenizer(report_corpus(), vocab_size=int(cfg.lm["vocab_size"]))
    return build(cfg, tokenizer)
