"""The assembled model: volume -> 3D encoder -> compressor -> projector -> MedGemma -> report text.

Shapes: volumes (B, C, D, H, W) -> patch tokens (B, N, E_v) -> visual tokens (B, K, E_v) -> (B, K, E_lm)
-> ``inputs_embeds`` = [prefix text | K visual | suffix text] (B, P + K + S, E_lm) -> generated ids.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import LogitsProcessorList

from .compressor import build_compressor
from .config import ModelConfig
from .language import ChatPrompt
from .precision import compute_dtype
from .projector import Projector


class _StepClock:
    """A logits processor that only notes when each token's scores arrive: the first after the prompt's
    forward pass (the prefill), the others one decoding step apart (what a CPU's memory bandwidth bounds)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores

    def split(self, start: float) -> dict[str, float]:
        if not self.times:
            return {}
        split = {"prefill_s": self.times[0] - start}
        if len(self.times) > 1:
            split["decode_token_s"] = (self.times[-1] - self.times[0]) / (len(self.times) - 1)
        return split


@dataclass
class Draft:
    """A generated report draft, its cost and how it was decoded (``reporting.consensus``)."""

    text: str
    num_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    decoding: dict = field(default_factory=lambda: {"method": "greedy"})
    token_ids: list[int] = field(default_factory=list)  # generated ids, up to and including the stop token


def text_embedding_rms(lm) -> float:
    """RMS of the LM's scaled token embeddings (what visual tokens are scaled to match)."""
    emb = lm.get_input_embeddings()
    weight = emb.weight
    if weight.device.type == "meta":
        return 1.0
    scale = float(getattr(emb, "embed_scale", 1.0))
    sample = weight[: min(4096, weight.shape[0])].detach().float()
    return float(sample.pow(2).mean().sqrt()) * scale


class BrainGemma3D(nn.Module):
    """BrainGemma3D: see the module docstring. ``lm`` stays frozen (LoRA adapters aside)."""

    def __init__(self, cfg: ModelConfig, encoder: nn.Module, lm, tokenizer, projector_scale=None):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.compressor = build_compressor(
            cfg.compressor,
            cfg.vision_hidden,
            cfg.num_latents,
            cfg.compressor_layers,
            cfg.compressor_heads,
            cfg.token_grid,
            tuple(cfg.regions) if cfg.regions else None,
        )
        if projector_scale is None:
            projector_scale = text_embedding_rms(lm) if cfg.projector_norm else 1.0
        self.projector = Projector(
            cfg.vision_hidden,
            cfg.lm_hidden,
            cfg.projector_hidden,
            projector_scale,
            normalise=cfg.projector_norm,
            regions=cfg.location_regions,
        )
        self.lm = lm
        self.tokenizer = tokenizer
        # Provenance, set by the loader: what goes into every report as the model's identity.
        self.checkpoint_path: str | None = None
        self.precision = "float32"  # the language model's, set by model.load (see model.precision)
        self.checkpoint_sha256: str | None = None
        self.checkpoint_files: dict[str, str] = {}  # every weight file read: path -> SHA-256
        self.load_notes: list[str] = []  # what the loader set aside, said in every report
        self.prompt = None
        if tokenizer is not None:
            self.prompt = ChatPrompt.build(tokenizer, cfg.prompt, cfg.prompt_style, cfg.stop)
        # The slice baseline labels each slice's tokens in text, as MedGemma is shown a series of images.
        self.slice_labels: list[list[int]] = []
        if cfg.encoder == "slices" and tokenizer is not None:
            self.slice_labels = [
                tokenizer(f"slice {k + 1}:", add_special_tokens=False)["input_ids"] for k in range(cfg.slices)
            ]
        lm.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return self.projector.scale.device

    # --- vision side ----------------------------------------------------------------------------------
    def encode(self, volumes: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(B, C, D, H, W) -> (patch tokens (B, N, E_vision) or None, compressed tokens (B, K, E_vision)).

        The slice baseline pools inside its encoder, so it has no separate patch tokens to return.
        """
        tokens = self.encoder(volumes)
        if self.cfg.encoder == "slices":
            return None, tokens
        return tokens, self.compressor(tokens, self.encoder.positions())

    def visual_tokens(self, volumes: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> (B, K, E_lm) (slice baseline: with its slice labels), in the LM's dtype."""
        return self.project(self.encode(volumes)[1])

    def project(self, compressed: torch.Tensor) -> torch.Tensor:
        """Compressed tokens (B, K, E_vision) -> the LM's visual tokens (slice baseline: labels inserted)."""
        projected = self.projector(compressed)
        projected = projected.to(compute_dtype(self.lm))
        if not self.slice_labels:
            return projected
        per_slice = projected.shape[1] // len(self.slice_labels)
        parts = []
        for k, label in enumerate(self.slice_labels):
            own = projected[:, k * per_slice : (k + 1) * per_slice]
            parts += [self._embed_ids(label, projected.shape[0]), own]
        return torch.cat(parts, dim=1)

    def _embed_ids(self, ids: list[int], batch: int) -> torch.Tensor:
        tensor = torch.tensor([ids], dtype=torch.long, device=self.device).expand(batch, -1)
        return self.lm.get_input_embeddings()(tensor)

    def prompt_embeddings(self, visual: torch.Tensor) -> torch.Tensor:
        """[prefix | visual | suffix] embeddings for generation, (B, P + K + S, E_lm)."""
        b = visual.shape[0]
        return torch.cat(
            [self._embed_ids(self.prompt.prefix_ids, b), visual, self._embed_ids(self.prompt.suffix_ids, b)],
            dim=1,
        )

    def as_batch(self, volumes) -> torch.Tensor:
        """Accept a numpy/torch array (C, D, H, W) or (B, C, D, H, W) in [0, 1]."""
        x = torch.as_tensor(np.asarray(volumes) if not isinstance(volumes, torch.Tensor) else volumes)
        if x.ndim == 4:
            x = x.unsqueeze(0)
        return x.to(self.device, torch.float32)

    # --- generation and scoring -----------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        volumes,
        *,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        repetition_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        do_sample: bool = False,
        temperature: float | None = None,
        top_p: float | None = None,
        seed: int = 0,
    ) -> list[Draft]:
        """Report drafts, one per volume: greedy (deterministic), or sampled with ``seed`` when ``do_sample``.

        ``volumes``: model-grid arrays (C, D, H, W) or (B, C, D, H, W). The model never reads files or places
        a study on its grid: the caller (``app.pipeline``) does, and keeps the mapping back to the patient.
        Settings left at None come from the model's own decoding (``cfg.decoding``: the published one for a
        published checkpoint), else plain greedy. Sampling draws from a generator seeded with ``seed`` and
        forked from the caller's, whose random state is left untouched.
        """
        own = self.cfg.decoding
        most = max_new_tokens or self.cfg.max_new_tokens
        settings = {
            "max_new_tokens": most,
            "min_new_tokens": min(
                most, own.get("min_new_tokens", 0) if min_new_tokens is None else min_new_tokens
            ),
            "repetition_penalty": own.get("repetition_penalty", 1.0)
            if repetition_penalty is None
            else repetition_penalty,
            "no_repeat_ngram_size": own.get("no_repeat_ngram_size", 0)
            if no_repeat_ngram_size is None
            else no_repeat_ngram_size,
        }
        if do_sample:
            settings.update(
                do_sample=True,
                temperature=own.get("temperature", 1.0) if temperature is None else temperature,
                top_p=own.get("top_p", 1.0) if top_p is None else top_p,
                top_k=own.get("top_k", 0),
            )
        else:
            settings.update(do_sample=False)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        batch = self.as_batch(volumes)
        timings["preprocess_s"] = time.perf_counter() - start
        self.eval()
        start = time.perf_counter()
        embeds = self.prompt_embeddings(self.visual_tokens(batch))
        timings["encode_s"] = time.perf_counter() - start
        start = time.perf_counter()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            # With only inputs_embeds, a repetition penalty sees the generated tokens alone: so it does in the
            # published code, whose behaviour this reproduces; transformers' reminder of it is noise here.
            warnings.filterwarnings(
                "ignore", message="Passing `(repetition_penalty|no_repeat_ngram_size)` with"
            )
            torch.manual_seed(seed)
            clock = _StepClock()
            out = self.lm.generate(
                inputs_embeds=embeds,
                attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device),
                min_new_tokens=settings.pop("min_new_tokens") or None,
                eos_token_id=self.prompt.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([clock]),
                **settings,
            )
        timings["generate_s"] = time.perf_counter() - start
        timings.update(clock.split(start))
        keep_all = min_new_tokens is not None and min_new_tokens >= settings["max_new_tokens"]  # benchmarks
        return self._drafts(out, timings, keep_all=keep_all)

    def _drafts(self, out: torch.Tensor, timings: dict | None = None, keep_all: bool = False) -> list[Draft]:
        """Generated ids -> drafts: the text up to the first stop token, one per row."""
        stops = (*self.prompt.stop_ids, self.tokenizer.pad_token_id)
        result = []
        for row in out:
            ids = row.tolist()
            cut = len(ids) if keep_all else next((k for k, t in enumerate(ids) if t in stops), len(ids))
            text = self.tokenizer.decode(ids[:cut], skip_special_tokens=True).strip()
            result.append(Draft(text, cut, dict(timings or {}), token_ids=ids[: cut + 1]))
        return result

    @torch.no_grad()
    def sample(
        self, grid, n: int, *, temperature: float = 0.7, seed: int = 0, max_new_tokens: int | None = None
    ) -> list[Draft]:
        """``n`` drafts for one model-grid volume (C, D, H, W) sampled at ``temperature``, in one batch.

        The volume is encoded once. Sampling draws from a generator seeded with ``seed`` and forked from the
        caller's, so the same seed gives the same drafts and the caller's random state is left untouched.
        """
        self.eval()
        embeds = self.prompt_embeddings(self.visual_tokens(self.as_batch(grid)[:1]))
        embeds = embeds.expand(n, -1, -1)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = self.lm.generate(
                inputs_embeds=embeds,
                attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device),
                max_new_tokens=max_new_tokens or self.cfg.max_new_tokens,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                eos_token_id=self.prompt.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return self._drafts(out)

    def target_ids(self, text: str, span: tuple[int, int] | None = None) -> tuple[list[int], list[bool]]:
        """Token ids of ``text`` + end of turn, and which of them are scored (all, or those in ``span``)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"]) + [self.prompt.stop_ids[-1]]
        if span is None:
            return ids, [True] * len(ids)
        lo, hi = span
        if not 0 <= lo < hi <= len(text):
            raise ValueError(f"span {span} is outside the text (length {len(text)})")
        chosen = [a < hi and b > lo for a, b in enc["offset_mapping"]] + [False]
        if not any(chosen):
            raise ValueError(f"span {span} covers no token")
        return ids, chosen

    def score(self, volumes, text: str, span: tuple[int, int] | None = None) -> torch.Tensor:
        """Teacher-forced log-likelihood of ``text`` (or its character ``span``) for each volume, (B,).

        Batched: all volumes share the text, so no padding is needed. Used by attributions and evaluation.
        """
        batch = self.as_batch(volumes)
        ids, chosen = self.target_ids(text, span)
        visual = self.visual_tokens(batch)
        prompt = self.prompt_embeddings(visual)
        target = torch.tensor([ids], device=self.device).expand(batch.shape[0], -1)
        embeds = torch.cat([prompt, self.lm.get_input_embeddings()(target)], dim=1)
        # Vocabulary logits only where a target token is predicted (the last len(ids) + 1 positions; the
        # logit at position i predicts token i + 1): the prompt's positions would cost as much and be unused.
        logits = self.lm(inputs_embeds=embeds, logits_to_keep=len(ids) + 1).logits
        logp = torch.log_softmax(logits[:, : len(ids)].float(), dim=-1)
        token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        mask = torch.tensor(chosen, device=self.device, dtype=token_logp.dtype)
        return (token_logp * mask).sum(dim=-1)

    def loss(self, volumes, texts: list[str]) -> torch.Tensor:
        """Mean next-token cross-entropy of ``texts`` given their volumes (training; texts may differ)."""
        return self.text_loss(self.visual_tokens(self.as_batch(volumes)), texts)

    def text_loss(self, visual: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """:meth:`loss` from already computed visual tokens (training adds other losses on the same pass)."""
        prompt = self.prompt_embeddings(visual)
        seqs = [self.target_ids(t)[0] for t in texts]
        length = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        target = torch.full((len(seqs), length), pad, dtype=torch.long, device=self.device)
        valid = torch.zeros((len(seqs), length), dtype=torch.bool, device=self.device)
        for i, s in enumerate(seqs):
            target[i, : len(s)] = torch.tensor(s, device=self.device)
            valid[i, : len(s)] = True
        embeds = torch.cat([prompt, self.lm.get_input_embeddings()(target)], dim=1)
        attention = torch.cat(
            [torch.ones(prompt.shape[:2], dtype=torch.long, device=self.device), valid.long()], 1
        )
        logits = self.lm(inputs_embeds=embeds, attention_mask=attention).logits
        start = prompt.shape[1] - 1
        pred = logits[:, start : start + length].float()
        losses = nn.functional.cross_entropy(pred.transpose(1, 2), target, reduction="none")
        return (losses * valid).sum() / valid.sum()
