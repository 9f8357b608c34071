"""How many of the consensus drafts describe a lesion, per case, and what another operating point would give.

Why: when a model misses lesions (calls them healthy), one could make the draft say "lesion" as soon as a
smaller share of its 17 consensus drafts (greedy + 16 samples) do. That only helps if missed lesions get more
lesion drafts than healthy brains do. This tool counts them and scores the drafts each threshold would give
(the consensus choice among the drafts that agree with the thresholded lesion/no-lesion decision)::

    .venv/bin/python tools/consensus_shares.py --model build/dw2/warmup/best \\
        --data build/heldout/own build/heldout/other --out build/op

It writes OUT/<data name>.jsonl (every case's drafts, resumable) and prints the lesion shares of healthy
brains and missed lesions and, per threshold, hemisphere accuracy, flips, lobe F1 and healthy specificity.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

THRESHOLDS = (0.5, 0.4, 0.3, 0.2, 0.15, 0.1)


def collect(model, data: Path, out: Path) -> list[dict]:
    """Each case's greedy and 16 sampled drafts (the report's consensus settings), cached in ``out``."""
    from BrainGemma3DLib.io.volume import load_study
    from BrainGemma3DLib.reporting.consensus import DEFAULT_SAMPLES, DecodingOptions
    from BrainGemma3DLib.reporting.entities import extract
    from BrainGemma3DLib.training.data import scan

    opts = DecodingOptions()
    rows = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
    done = {r["case_id"] for r in rows}
    with open(out, "a", encoding="utf-8") as fh:
        for rec in sorted(scan(data, ("flair",)).cases, key=lambda c: c.case_id):
            if rec.case_id in done:
                continue
            grid, _ = load_study([rec.images["flair"]]).to_model_grid(
                model.cfg.grid, method=model.cfg.preprocess
            )
            drafts = [
                model.generate(grid)[0],
                *model.sample(grid, DEFAULT_SAMPLES, temperature=opts.temperature, seed=opts.seed),
            ]
            row = {
                "case_id": rec.case_id,
                "healthy": rec.healthy,
                "truth": rec.truth,
                "texts": [d.text for d in drafts],
                "lesion": [bool(extract(d.text).lesion) for d in drafts],
            }
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            rows.append(row)
    return rows


def thresholded(case: dict, threshold: float) -> str:
    """The consensus draft among those agreeing with "lesion if at least ``threshold`` of drafts say so"."""
    from BrainGemma3DLib.reporting.consensus import choose

    want = float(np.mean(case["lesion"])) >= threshold
    idx = [i for i, lesion in enumerate(case["lesion"]) if lesion == want] or list(range(len(case["texts"])))
    best, _ = choose([case["texts"][i] for i in idx])
    return case["texts"][idx[best]]


def main(argv=None) -> int:
    from BrainGemma3DLib.model import load
    from BrainGemma3DLib.training.metrics import strict_scores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", nargs="+", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = load(args.model, device="cpu")
    for data in args.data:
        cases = collect(model, data, args.out / f"{data.name}.jsonl")
        healthy = sorted(round(float(np.mean(c["lesion"])), 3) for c in cases if c["healthy"])
        # Lesions most drafts call healthy: those the consensus misses (it follows the majority on "lesion").
        missed = sorted(
            round(float(np.mean(c["lesion"])), 3)
            for c in cases
            if not c["healthy"] and np.mean(c["lesion"]) < 0.5
        )
        print(f"{data}: lesion share of healthy brains {healthy}")
        print(f"{data}: lesion share of lesions most drafts call healthy {missed}")
        for t in THRESHOLDS:
            scores = strict_scores([thresholded(c, t) for c in cases], [c["truth"] for c in cases], n_boot=1)
            keys = ("hemisphere_accuracy", "flip_rate", "lobe_f1", "healthy_specificity")
            print(f"  threshold {t}: " + ", ".join(f"{k} {scores[k]['value']:.3f}" for k in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
