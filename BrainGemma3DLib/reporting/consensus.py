"""Consensus decoding: the draft whose clinical statements most of the model's own drafts agree with.

Why: greedy decoding picks the most likely *next word*, not the most likely *finding*. A report can say
"enhancement present" in many ways and "absent" in a few; when the model spreads its probability for
"present" over five phrasings and puts the rest of it on one phrasing of "absent", the single most likely
path can deny a finding the model believes is there (measured in docs/experiments.md, "Decoding").

So a draft is chosen by **minimum Bayes risk** over the model's own samples with a clinical utility: draw
``samples`` drafts at ``temperature`` (plus the greedy one), read each with the negation-aware entity reader
(:mod:`.entities`), and keep the draft that agrees best, on average, with all the others on side, lesion/no
lesion, lobes (set F1) and each finding. Each statement is marginalised over its wordings, and the result
is still one fluent draft the model wrote, never text stitched together. The share of drafts that agree with
each statement of the chosen one is kept (``agreement``) and shown to the radiologist: a finding only half
the drafts state is one to check first.

Same seed, same inputs -> the same draft (the sampling generator is seeded and isolated from the caller's).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..io.errors import InputError
from .entities import FINDINGS, Entities, extract, set_f1

#: Sampled drafts behind the consensus when nothing else is asked (chosen on phantoms; docs/experiments.md).
DEFAULT_SAMPLES = 16


@dataclass
class DecodingOptions:
    """How a draft is decoded: ``samples`` drafts besides the greedy one (their consensus), 0 for plain greedy
    decoding, None for the model's own default (:data:`DEFAULT_SAMPLES` for ours; a published checkpoint's
    own sampling for it)."""

    samples: int | None = None
    temperature: float = 0.7
    seed: int = 0

    def check(self) -> None:
        """Refuse impossible options in one line before any model loads (the CLI, the engine and the node
        all call this): a NaN or infinite temperature would otherwise sample garbage or fail deep inside."""
        if self.samples is not None and not 0 <= self.samples <= 256:
            raise InputError(f"the number of sampled drafts must be 0 (greedy) to 256 (got {self.samples})")
        temperature = self.temperature
        if not math.isfinite(temperature) or not 0.05 <= temperature <= 2.0:
            raise InputError(f"temperature must be a number between 0.05 and 2 (got {temperature})")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"the seed must be between 0 and 2**63 - 1 (got {self.seed})")


def statement_agreement(a: Entities, b: Entities) -> dict[str, float]:
    """Per statement, how much two drafts agree (1 = same): side, lesion, lobes, each finding."""
    out = {
        "laterality": float(a.laterality == b.laterality),
        "lesion": float(a.lesion == b.lesion),
        "lobes": set_f1(set(a.lobes), set(b.lobes)),
    }
    for f in FINDINGS:
        out[f] = float(bool(a.findings.get(f)) == bool(b.findings.get(f)))
    return out


def choose(texts: list[str]) -> tuple[int, dict[str, float]]:
    """Index of the minimum-Bayes-risk draft among ``texts`` and its per-statement agreement (0..1).

    The utility of a draft is its mean :func:`statement_agreement` (summed over statements) with every other
    draft; ties go to the earliest draft (the greedy one comes first).
    """
    if not texts:
        raise ValueError("no drafts to choose from")
    entities = [extract(t) for t in texts]
    n = len(texts)
    if n == 1:
        return 0, {k: 1.0 for k in statement_agreement(entities[0], entities[0])}
    table = [[statement_agreement(entities[i], entities[j]) for j in range(n)] for i in range(n)]
    utility = np.array([sum(sum(table[i][j].values()) for j in range(n) if j != i) for i in range(n)])
    best = int(np.flatnonzero(utility >= utility.max() - 1e-9)[0])
    keys = table[best][best].keys()
    agreement = {k: round(float(np.mean([table[best][j][k] for j in range(n)])), 3) for k in keys}
    return best, agreement


def describe(model, options: DecodingOptions) -> dict:
    """How :func:`decode` will decode with ``options`` for ``model`` (for records such as metrics.json)."""
    if options.samples is None and model.cfg.decoding.get("do_sample"):
        return {"method": "published sampling", **model.cfg.decoding, "seed": options.seed}
    samples = DEFAULT_SAMPLES if options.samples is None else options.samples
    if not samples:
        return {"method": "greedy"}
    return {
        "method": "consensus",
        "samples": samples,
        "temperature": options.temperature,
        "seed": options.seed,
    }


def decode(model, grid, options: DecodingOptions | None = None, *, max_new_tokens: int | None = None):
    """One :class:`~BrainGemma3DLib.model.Draft` for a model-grid volume: greedy, or the consensus of the
    greedy draft and ``options.samples`` sampled ones. ``draft.decoding`` says how it was chosen."""
    return decode_many(model, [grid], options, max_new_tokens=max_new_tokens)[0]


def decode_many(model, grids, options: DecodingOptions | None = None, *, max_new_tokens: int | None = None):
    """:func:`decode` for several studies at once (a cohort's batch): one draft per grid, each the same as
    :func:`decode` would give it alone.

    The volumes are encoded and their greedy drafts generated in one batch (the prompts have one length, so
    nothing is padded and each row is computed as alone); each study's sampled drafts are drawn by their own
    seeded call, so a draft never depends on which other studies shared its batch.
    """
    opts = options or DecodingOptions()
    opts.check()
    samples = opts.samples
    if samples is None and model.cfg.decoding.get("do_sample"):
        drafts = [
            model.generate(grid, max_new_tokens=max_new_tokens, do_sample=True, seed=opts.seed)[0]
            for grid in grids
        ]
        for draft in drafts:
            draft.decoding = {"method": "published sampling", **model.cfg.decoding, "seed": opts.seed}
        return drafts
    samples = DEFAULT_SAMPLES if samples is None else samples
    start = time.perf_counter()
    stacked = np.stack([np.asarray(g) for g in grids]) if len(grids) > 1 else grids[0]
    greedy = model.generate(stacked, max_new_tokens=max_new_tokens)
    if not samples:
        return greedy
    greedy_s = (time.perf_counter() - start) / len(grids)  # each study's share of the batched pass
    chosen = []
    for grid, first in zip(grids, greedy, strict=True):
        start = time.perf_counter()
        sampled = model.sample(
            grid, samples, temperature=opts.temperature, seed=opts.seed, max_new_tokens=max_new_tokens
        )
        drafts = [first, *sampled]
        best, agreement = choose([d.text for d in drafts])
        draft = drafts[best]
        draft.timings = dict(first.timings, decode_s=greedy_s + time.perf_counter() - start)
        draft.decoding = {
            "method": "consensus",
            "drafts": len(drafts),
            "samples": samples,
            "temperature": opts.temperature,
            "seed": opts.seed,
            "chosen": "greedy draft" if best == 0 else f"sampled draft {best}",
            "agreement": agreement,
        }
        chosen.append(draft)
    return chosen
