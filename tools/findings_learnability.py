"""Can the demo-size image encoder learn each finding from FLAIR at all?  An experiment, not a feature.

Why this exists: the demo weights miss the finding-F1 target (0.90) because necrosis is not in the visual
tokens the language model reads (README, "Demo weights").  Before spending a 30-minute training run on a
recipe change, this asks the image side alone, in minutes: train only the encoder (and compressor) of the
``demo`` preset with the same lesion-grounding loss as ``braingemma3d train`` plus a case-level head that
predicts each finding directly from the truth (the strongest signal a report could ever give), and score that
head on held-out phantoms.  Variants change one thing at a time:

- ``vit``: the demo encoder as trained for the demo weights;
- ``vit-dense``: plus a dense per-token target "necrotic core here" (BraTS label 1 in a tumour that also has
  an enhancing part, which in the phantoms is exactly the necrosis);
- ``wide``: twice the encoder width (128);
- ``fine``: 4-pixel patches, four times the tokens (8 x 16 x 16);
- ``overlap``: 16-pixel patch kernels at an 8-pixel stride, so a necrotic centre never falls between patches;
- ``cnn``: a plain three-level 3D CNN instead of the transformer;
- ``core-mask``: no learning from pixels - logistic regression on intensity statistics inside the *true*
  tumour-core mask (5-fold cross-validation on the held-out tumours), to show what the grid image holds.

Run: ``.venv/bin/python tools/findings_learnability.py --train DIR --heldout DIR --variants vit,cnn``.
Prints, per epoch, the held-out F1 of each finding next to the reader that always answers "present" for a
tumour.  Nothing is saved.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from BrainGemma3DLib.model import preset
from BrainGemma3DLib.reporting.entities import FINDINGS
from BrainGemma3DLib.training.data import scan
from BrainGemma3DLib.training.grounding import (
    CLASSES,
    TOKEN_THRESHOLD,
    GroundingHead,
    token_targets,
)
from BrainGemma3DLib.training.metrics import binary_f1
from BrainGemma3DLib.training.tokenizer import fresh_model
from BrainGemma3DLib.training.train import mirror_batch, prepare_cases

VARIANTS = ("vit", "vit-dense", "wide", "fine", "overlap", "cnn", "core-mask")
CORE, ENHANCING = list(CLASSES).index("core"), list(CLASSES).index("enhancing")


def finding_truth(records) -> torch.Tensor:
    """(N, F) 0/1: each finding as ``truth.json`` states it (healthy controls: none)."""
    return torch.tensor(
        [[0.0 if r.healthy else float(r.truth["findings"][f]) for f in FINDINGS] for r in records]
    )


def f1_row(pred: torch.Tensor, truth: torch.Tensor) -> str:
    """One line: each finding's F1 (the evaluation's own scorer), (N, F) predictions against (N, F) truth."""
    return "  ".join(
        f"{name} {binary_f1(pred[:, j].bool().numpy(), truth[:, j].bool().numpy()):.3f}"
        for j, name in enumerate(FINDINGS)
    )


def always_present(records, truth: torch.Tensor) -> str:
    lesion = torch.tensor([not r.healthy for r in records])[:, None].expand_as(truth)
    return f1_row(lesion, truth)


def necrotic_core(lesion: torch.Tensor) -> torch.Tensor:
    """(B, 1, D, H, W): label-1 fractions of tumours that also have an enhancing part (the necrosis)."""
    enhancing = (lesion[:, ENHANCING].flatten(1).amax(1) > 0.5).to(lesion.dtype)
    return lesion[:, CORE : CORE + 1] * enhancing[:, None, None, None, None]


class SmallCnn(nn.Module):
    """Three conv-BN-ReLU-pool levels, then one score per finding and voxel (max over the volume)."""

    def __init__(self, channels: int = 1):
        super().__init__()

        def level(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(i, o, 3, padding=1), nn.BatchNorm3d(o), nn.ReLU(), nn.MaxPool3d(2))

        self.body = nn.Sequential(
            level(channels, 16), level(16, 32), level(32, 64), nn.Conv3d(64, len(FINDINGS), 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(2).amax(2)


def learn(args, train_set, held_set, y_train, y_held) -> None:
    """Train the variant's image model for ``args.epochs`` and print held-out finding F1 after each epoch."""
    torch.manual_seed(args.seed)
    vision = {"wide": {"hidden_size": 128, "intermediate_size": 256}, "fine": {"patch_size": 4}}.get(
        args.variant, {}
    )
    cfg = preset("demo", in_channels=1)
    cfg.vision.update(vision)
    model = fresh_model(cfg) if args.variant != "cnn" else None
    if args.variant == "overlap":
        p = cfg.patch_size
        model.encoder.patch_embedding = nn.Conv3d(
            1,
            cfg.vision_hidden,
            (cfg.tubelet, 2 * p, 2 * p),
            stride=(cfg.depth_stride, p, p),
            padding=(0, p // 2, p // 2),
        )
    modules: list[nn.Module]
    if model is None:
        cnn = SmallCnn()
        modules = [cnn]
    else:
        grounder = GroundingHead(cfg)
        finder = nn.Linear(cfg.vision_hidden, len(FINDINGS))
        dense = nn.Linear(cfg.vision_hidden, 1)
        modules = [model.encoder, model.compressor, grounder, finder, dense]
    params = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(args.seed)

    def scores(x: torch.Tensor, lesion: torch.Tensor | None):
        """(finding logits (B, F), auxiliary loss)."""
        if model is None:
            return cnn(x), x.new_zeros(())
        patches, compressed = model.encode(x)
        aux = grounder(patches, compressed, lesion) if lesion is not None else x.new_zeros(())
        if args.variant == "vit-dense" and lesion is not None:
            target = (token_targets(cfg, necrotic_core(lesion)) >= TOKEN_THRESHOLD).to(x)
            aux = aux + F.binary_cross_entropy_with_logits(dense(patches), target)
        return finder(patches).amax(1), aux

    for epoch in range(1, args.epochs + 1):
        for m in modules:
            m.train()
        started = time.perf_counter()
        order = rng.permutation(len(y_train))
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            x, _, lesion = mirror_batch(
                train_set.x[idx], [""] * len(idx), 0.5, rng, train_set.lesion[idx].float()
            )
            logits, aux = scores(x, lesion)
            loss = aux + F.binary_cross_entropy_with_logits(logits, y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        for m in modules:
            m.eval()
        with torch.no_grad():
            logits = torch.cat([scores(held_set.x[i : i + 32], None)[0] for i in range(0, len(y_held), 32)])
        print(
            f"epoch {epoch} ({time.perf_counter() - started:.0f} s)  {f1_row(logits > 0, y_held)}", flush=True
        )


def core_mask(held_records, held_set) -> None:
    """Held-out tumours: 5-fold logistic regression on FLAIR statistics inside the true tumour core."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    rows, labels = [], []
    for i, rec in enumerate(held_records):
        if rec.healthy:
            continue
        lesion = held_set.lesion[i].float().numpy()
        core = (lesion[CORE] + lesion[ENHANCING]) > 0.5
        if not core.any():
            core = lesion[0] > 0.5
        values = held_set.x[i, 0].numpy()[core]
        low, mean = float(np.percentile(values, 5)), float(values.mean())
        rows.append([low, mean, float(core.sum()), low / max(mean, 1e-3)])
        labels.append([float(rec.truth["findings"][f]) for f in FINDINGS])
    x, y = np.asarray(rows), np.asarray(labels)
    pred = np.zeros_like(y)
    for j in range(y.shape[1]):
        folds = min(5, int(min(y[:, j].sum(), (1 - y[:, j]).sum())))
        if folds >= 2:
            pred[:, j] = cross_val_predict(LogisticRegression(max_iter=1000), x, y[:, j], cv=folds)
        else:  # too few of one answer to cross-validate (tiny test sets): the majority answer
            pred[:, j] = float(y[:, j].mean() >= 0.5)
    print(f"core-mask features (held-out tumours only)  {f1_row(torch.tensor(pred), torch.tensor(y))}")
    lesion_only = torch.tensor(y)
    print(f"always present (held-out tumours only)      {f1_row(torch.ones_like(lesion_only), lesion_only)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="phantom folder to learn from")
    parser.add_argument("--heldout", required=True, help="phantom folder of another seed to score on")
    parser.add_argument(
        "--variants",
        default="vit",
        help=f"comma-separated, run one after another on the same data: {VARIANTS}",
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {VARIANTS}")
    grid = preset("demo").grid
    held_records = scan(args.heldout, ("flair",)).cases
    held_set = prepare_cases(held_records, grid, False, workers=args.workers)
    y_held = finding_truth(held_records)
    train_set = train_records = None
    for variant in variants:
        print(f"== {variant}", flush=True)
        if variant == "core-mask":
            core_mask(held_records, held_set)
            continue
        if train_set is None:
            train_records = scan(args.train, ("flair",)).cases
            train_set = prepare_cases(train_records, grid, False, workers=args.workers)
            print(f"{len(train_records)} training cases, {len(held_records)} held-out")
            print(f"always present (held-out)  {always_present(held_records, y_held)}", flush=True)
        args.variant = variant
        learn(args, train_set, held_set, finding_truth(train_records), y_held)
    return 0


if __name__ == "__main__":
    sys.exit(main())
