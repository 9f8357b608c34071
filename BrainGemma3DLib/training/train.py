"""Three training phases, each one CLI call whose output checkpoint the next one loads (``--init``).

1. ``contrastive``: the 3D image embedding (mean of the compressed tokens, projected) against MedSigLIP's
   own text-tower embedding of the report; SigLIP's sigmoid loss (InfoNCE selectable). Trains the inflated
   patch embedding, the positions and the compressor.
2. ``warmup``: next-token cross-entropy of the report; trains the compressor, projector and its scale
   (``--train-lm`` also trains the whole LM: only for the demo preset, whose tiny LM starts untrained,
   never for MedGemma, which stays frozen).
3. ``lora``: peft LoRA on the LM's attention projections, plus the projector.

Contrastive and warmup add the lesion-grounding loss (:mod:`BrainGemma3DLib.training.grounding`) on every case
whose lesion mask is known (BraTS tumour labels; healthy controls have none): without it the model learns the
words' prior for "where" instead of reading the image. ``--grounding 0`` turns it off.

Runs through Hugging Face ``accelerate`` (CPU, one GPU, or several with ``accelerate launch``; bf16 on GPU).
Every epoch writes ``epoch-NNN/`` (a full checkpoint, loadable by ``--init`` and ``--model``, with the input
check's statistics ``input_stats.json``: the training split's image statistics, the limit from the validation
split's; see :mod:`BrainGemma3DLib.model.input_check`) and ``train_state.json``; the best epoch by validation
loss is copied to ``best/``; ``metrics.jsonl`` logs every epoch. Re-running the same command resumes after the
last finished epoch.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..io.atomic import write_text_atomic
from ..io.errors import InputError
from ..io.volume import load_study
from ..model.input_check import features_of_study, fit_input_stats, image_features, write_input_stats
from .data import make_split, scan
from .grounding import CLASSES, FINDING_HEAD_FILE, HEAD_FILE, FindingHead, GroundingHead, lesion_on_grid

PHASES = ("contrastive", "warmup", "lora")


@dataclass
class TrainOptions:
    """Command-line options of ``braingemma3d train``."""

    phase: str
    data: Path
    out: Path
    init: str | None = None
    preset: str = "demo"
    vision: str | None = None
    lm: str | None = None
    sequences: tuple[str, ...] = ("flair",)
    epochs: int = 3
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-3
    seed: int = 0
    loss: str = "sigmoid"  # contrastive: sigmoid or infonce
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    device: str = "auto"
    max_cases: int = 0  # 0 = all
    train_lm: bool = False  # warmup: also train the whole LM (the demo preset's LM has no pretraining)
    train_encoder: bool = False  # warmup: also train the 3D encoder (the demo preset's tower is untrained)
    mirror: float = 0.5  # probability of the left-right mirror augmentation (0 = off)
    grounding: float = 1.0  # weight of the lesion-grounding loss where tumour labels exist (0 = off)
    findings: float = 0.0  # weight of the finding-presence loss on the visual tokens (0 = off)
    schedule: str = "cosine"  # learning rate over the run: cosine decay after a short warm-up, or constant
    new_split: bool = False  # ignore the --init checkpoint's split (a different data folder)
    workers: int = 1  # processes that read and resample the cases before training (same tensors for any N)
    progress: bool = True


class ContrastiveHead(nn.Module):
    """Image embedding vs MedSigLIP text-tower embedding (the text tower stays frozen)."""

    def __init__(self, vision_dim: int, text_model, loss: str, train_text: bool = False):
        super().__init__()
        # MedSigLIP's text tower stays frozen; the demo preset's tiny one has no pretraining and learns.
        self.text_model = text_model.requires_grad_(train_text)
        self.train_text = train_text
        text_dim = text_model.config.projection_size or text_model.config.hidden_size
        self.image_projection = nn.Linear(vision_dim, text_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0 if loss == "sigmoid" else 0.0))
        self.loss_kind = loss

    def forward(self, image_tokens: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
        img = F.normalize(self.image_projection(image_tokens.mean(dim=1)), dim=-1)
        with torch.set_grad_enabled(self.train_text and torch.is_grad_enabled()):
            txt = F.normalize(self.text_model(input_ids=text_ids).pooler_output, dim=-1)
        logits = img @ txt.t() * self.logit_scale.exp() + self.logit_bias
        n = logits.shape[0]
        if self.loss_kind == "infonce":
            target = torch.arange(n, device=logits.device)
            return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        labels = 2 * torch.eye(n, device=logits.device) - 1  # +1 on the diagonal, -1 elsewhere
        return -F.logsigmoid(labels * logits).sum() / n


def _text_tower(model, opts: TrainOptions):
    """MedSigLIP's text tower (from --vision) or, for the demo preset, a small one of the same class."""
    from transformers import SiglipTextConfig, SiglipTextModel

    if opts.vision:
        from ..model.loading import resolve_local

        folder = resolve_local(opts.vision, "MedSigLIP")
        from transformers import AutoTokenizer, SiglipModel

        from ..model.safety import refuse_custom_code

        refuse_custom_code(folder, "MedSigLIP")
        siglip = SiglipModel.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        return siglip.text_model, tok, 64
    cfg = dict(model.cfg.text_tower)
    cfg["vocab_size"] = len(model.tokenizer)
    torch.manual_seed(opts.seed)
    tower = SiglipTextModel(SiglipTextConfig(**cfg, bos_token_id=None, eos_token_id=None, pad_token_id=0))
    return tower, model.tokenizer, int(cfg.get("max_position_embeddings", 64))


_SIDE = re.compile(r"\b(left|right|Left|Right)\b")


def swap_sides(text: str) -> str:
    """The report of the mirrored volume: left and right exchanged (case kept)."""
    swap = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
    return _SIDE.sub(lambda m: swap[m.group(1)], text)


def mirror_batch(
    x: torch.Tensor, texts: list[str], p: float, rng: np.random.Generator, lesion: torch.Tensor | None = None
) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """Left-right mirror augmentation: flip W (the patient's right-left axis) and swap the side words.

    Pairs that differ only in the side force the model to read the side from the image instead of learning
    the text's prior; brains are near-symmetric, so a mirrored case is a plausible case.
    ``lesion`` (B, ..., W), when given, is flipped with its volumes; returns ``(x, texts, lesion)``.
    """
    if p <= 0:
        return x, texts, lesion
    flips = rng.random(len(texts)) < p
    texts = [swap_sides(t) if f else t for t, f in zip(texts, flips, strict=True)]
    idx = torch.from_numpy(np.flatnonzero(flips))
    if len(idx):
        x = x.clone()
        x[idx] = x[idx].flip(-1)
        if lesion is not None:
            lesion = lesion.clone()
            lesion[idx] = lesion[idx].flip(-1)
    return x, texts, lesion


def _load_model(opts: TrainOptions):
    from ..model import from_base_models, load_checkpoint, preset
    from .tokenizer import fresh_model

    if opts.init:
        return load_checkpoint(opts.init, vision=opts.vision, lm=opts.lm, device="cpu")
    # A new model takes as many input channels as --sequences names (FLAIR, or FLAIR/T1ce/T2).
    cfg = preset(opts.preset, in_channels=len(opts.sequences))
    if opts.preset == "medgemma":
        if not (opts.vision and opts.lm):
            raise InputError("--preset medgemma needs --vision and --lm folders (or --init)")
        return from_base_models(cfg, opts.vision, opts.lm, device="cpu")
    torch.manual_seed(opts.seed)
    return fresh_model(cfg)


def _trainable(model, phase: str, opts: TrainOptions) -> list[nn.Parameter]:
    model.requires_grad_(False)
    if phase == "contrastive":
        parts = [model.encoder.patch_embedding, model.compressor]
        for name in ("depth_position", "plane_position"):
            if hasattr(model.encoder, name):
                getattr(model.encoder, name).requires_grad_(True)
    elif phase == "warmup":
        parts = [model.compressor, model.projector]
        if opts.train_lm:
            parts.append(model.lm)
        if opts.train_encoder:
            parts.append(model.encoder)
    else:
        from peft import LoraConfig, get_peft_model

        if not hasattr(model.lm, "peft_config"):
            model.lm = get_peft_model(
                model.lm,
                LoraConfig(
                    r=opts.lora_rank,
                    lora_alpha=opts.lora_alpha,
                    target_modules=list(opts.lora_targets),
                    lora_dropout=0.0,
                ),
            )
        for name, p in model.lm.named_parameters():
            p.requires_grad_("lora_" in name)
        parts = [model.projector]
    for part in parts:
        part.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


@dataclass
class Prepared:
    """Cases on the model grid, kept in memory (demo grid: 0.5 MB a case, plus 1 MB of class masks)."""

    x: torch.Tensor  # (N, C, D, H, W) float32 in [0, 1]
    texts: list[str]
    lesion: (
        torch.Tensor | None
    )  # (N, L, D, H, W) float16 class fractions (0 for healthy); None = not grounded
    labelled: torch.Tensor  # (N,) bool: lesion mask known (tumour labels, or a healthy control)
    features: list[dict] = field(default_factory=list)  # the input check's image statistics, per case

    def lesions_of(self, idx) -> torch.Tensor | None:
        return None if self.lesion is None else self.lesion[idx]


def _prepare_one(task: tuple) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """One case on the model grid (and its lesion classes where known, and the input check's statistics,
    always measured on our placement); runs in a worker process too."""

    rec, grid, lesions, placement = task
    study = load_study([rec.images[s] for s in rec.images])
    arr, mapping = study.to_model_grid(grid, method=placement)
    if placement == "ours":
        stats = image_features(arr, mapping.foreground, mapping.grid_spacing)
    else:
        stats = features_of_study(study, grid)
    if not lesions:
        return arr, None, stats
    mask = np.zeros((len(CLASSES), *grid), np.float32)
    if rec.seg is not None:
        mask = lesion_on_grid(rec.seg, mapping)
    return arr, mask.astype(np.float16), stats


def prepare_cases(
    records, grid, progress: bool, *, lesions: bool = True, workers: int = 1, placement: str = "ours"
) -> Prepared:
    """Every case on the model grid once, with its lesion mask on the same grid where one is known.

    ``placement``: how a study is put on the grid (the model config's ``preprocess``: ours or published).

    Reading and resampling thousands of volumes takes minutes; ``workers`` > 1 spreads it over processes
    (each case is computed the same way wherever it runs, so the tensors do not depend on ``workers``).
    """
    from tqdm import tqdm

    tasks = [(rec, tuple(grid), lesions, placement) for rec in records]
    bar = {
        "desc": "preprocess",
        "unit": "case",
        "disable": not progress,
        "file": sys.stderr,
        "total": len(tasks),
    }
    if workers > 1 and len(tasks) > 1:
        import multiprocessing as mp

        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=mp.get_context(method)) as pool:
            done = list(tqdm(pool.map(_prepare_one, tasks, chunksize=8), **bar))
    else:
        done = [_prepare_one(task) for task in tqdm(tasks, **bar)]
    arrays = torch.stack([torch.from_numpy(arr) for arr, _m, _s in done])
    lesion = torch.stack([torch.from_numpy(m) for _a, m, _s in done]) if lesions else None  # none ungrounded
    known = [lesions and (rec.seg is not None or rec.healthy) for rec in records]
    labelled = torch.tensor(known, dtype=torch.bool)
    return Prepared(arrays, [rec.report for rec in records], lesion, labelled, [s for _a, _m, s in done])


def check_options(opts: TrainOptions) -> None:
    """Refuse options that cannot train, before anything is read or written."""
    if opts.phase not in PHASES:
        raise InputError(f"--phase must be one of {', '.join(PHASES)}")
    if opts.schedule not in ("cosine", "constant"):
        raise InputError(f"--schedule must be cosine or constant (got {opts.schedule!r})")
    if opts.grounding < 0 or opts.findings < 0:
        raise InputError(
            f"--grounding and --findings are loss weights >= 0 (got {opts.grounding}, {opts.findings})"
        )
    if not 0.0 <= opts.mirror <= 1.0:
        raise InputError(f"--mirror is a probability between 0 and 1 (got {opts.mirror})")
    if opts.workers < 1:
        raise InputError(f"--workers must be at least 1 (got {opts.workers})")
    if opts.epochs < 1 or opts.batch_size < 1 or opts.grad_accum < 1 or opts.lr <= 0:
        raise InputError("--epochs, --batch-size and --grad-accum must be >= 1 and --lr > 0")
    if (opts.train_lm or opts.train_encoder) and (opts.phase != "warmup" or opts.preset == "medgemma"):
        raise InputError("--train-lm/--train-encoder are for the warmup phase of the demo preset")


def _choose_split(opts: TrainOptions, found) -> dict:
    """The --init checkpoint's split (the same test cases through every phase), or a new one."""
    saved_split = None if opts.new_split else _split_of(opts.init)
    if saved_split:
        listed = {c for name in ("train", "val", "test") for c in saved_split.get(name, [])}
        present = {c.case_id for c in found.cases}
        if not listed & present:
            # Other data altogether (reviews curated after deployment): nothing the earlier phase trained on
            # can leak into this split's test cases, so it is split afresh.
            return make_split(found.cases, seed=opts.seed)
        if listed != present:
            raise InputError(
                f"the --init checkpoint's split lists {len(listed)} cases, this folder has {len(present)} "
                f"({len(listed & present)} in common): pass --new-split to split this data afresh "
                "(never to evaluate on cases the earlier phase trained on)",
                opts.data,
            )
    return saved_split or make_split(found.cases, seed=opts.seed)


@dataclass
class _Run:
    """What one phase trains: the model, the optional heads, the optimiser, and how a batch is scored."""

    opts: TrainOptions
    accelerator: object
    model: nn.Module  # as prepared by accelerate (what backward/step act on)
    core: nn.Module  # the unwrapped BrainGemma3D
    optimizer: torch.optim.Optimizer
    head: nn.Module | None = None  # contrastive phase: image vs text embedding
    text_tok: object = None
    max_len: int = 64
    grounder: nn.Module | None = None  # lesion grounding on the visual tokens
    finder: nn.Module | None = None  # finding presence on the visual tokens

    def batch_loss(self, x: torch.Tensor, texts: list[str], lesion=None, labelled=None):
        """(the phase's own loss, the grounding loss or None, the finding loss or None) for one batch."""
        x = x.to(self.accelerator.device)
        if self.opts.phase == "lora":
            return self.core.loss(x, texts), None, None
        patches, compressed = self.core.encode(x)
        if self.opts.phase == "contrastive":
            ids = self.text_tok(
                texts, padding="max_length", truncation=True, max_length=self.max_len, return_tensors="pt"
            )["input_ids"].to(self.accelerator.device)
            main = self.head(compressed, ids)
        else:
            main = self.core.text_loss(self.core.project(compressed), texts)
        ground = None
        if self.grounder is not None and lesion is not None and bool(labelled.any()):
            keep = labelled.to(x.device)
            ground = self.grounder(
                patches[keep] if patches is not None else None,
                compressed[keep],
                lesion.to(x.device, torch.float32)[keep],
            )
        return main, ground, (self.finder(compressed, texts) if self.finder is not None else None)


def _set_up(opts: TrainOptions, model, grounded: bool) -> _Run:
    """The trainable parameters, the phase's heads and the optimiser, prepared by accelerate."""
    from accelerate import Accelerator

    accelerator = Accelerator(
        cpu=opts.device == "cpu",
        gradient_accumulation_steps=opts.grad_accum,
        mixed_precision="bf16" if torch.cuda.is_available() and opts.device != "cpu" else "no",
    )
    params = _trainable(model, opts.phase, opts)
    head, text_tok, max_len = None, None, 64
    if opts.phase == "contrastive":
        tower, text_tok, max_len = _text_tower(model, opts)
        head = ContrastiveHead(model.cfg.vision_hidden, tower, opts.loss, train_text=not opts.vision)
        params += [p for p in head.parameters() if p.requires_grad]
    grounder = None
    if grounded:
        grounder = GroundingHead(model.cfg)
        _load_head(grounder, opts.init)
        params += list(grounder.parameters())
    finder = None
    if opts.findings > 0 and opts.phase in ("contrastive", "warmup"):
        finder = FindingHead(model.cfg)
        _load_head(finder, opts.init, FINDING_HEAD_FILE)
        params += list(finder.parameters())
    optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.01)
    model, optimizer = accelerator.prepare(model, optimizer)
    head, grounder, finder = (
        accelerator.prepare(m) if m is not None else None for m in (head, grounder, finder)
    )
    core = accelerator.unwrap_model(model)
    return _Run(opts, accelerator, model, core, optimizer, head, text_tok, max_len, grounder, finder)


def _train_epoch(run: _Run, train_set: Prepared, epoch: int, rng: np.random.Generator) -> dict:
    """One pass over the training cases in a seeded order; returns the mean losses and the case count."""
    from tqdm import tqdm

    opts = run.opts
    run.model.train()
    order = rng.permutation(len(train_set.texts))
    losses, ground_losses, finding_losses = [], [], []
    batches = [order[i : i + opts.batch_size] for i in range(0, len(order), opts.batch_size)]
    if opts.phase == "contrastive":
        batches = [b for b in batches if len(b) > 1] or batches  # contrastive needs negatives
    bar = tqdm(
        batches, desc=f"{opts.phase} epoch {epoch}/{opts.epochs}", disable=not opts.progress, file=sys.stderr
    )
    for step, idx in enumerate(bar):
        rate = learning_rate(opts, (epoch - 1) * len(batches) + step, opts.epochs * len(batches))
        for group in run.optimizer.param_groups:
            group["lr"] = rate
        with run.accelerator.accumulate(run.model):
            texts = [train_set.texts[i] for i in idx]
            xb, tb, lb = mirror_batch(train_set.x[idx], texts, opts.mirror, rng, train_set.lesions_of(idx))
            loss, ground, finding = run.batch_loss(xb, tb, lb, train_set.labelled[idx])
            losses.append(float(loss.detach()))  # the phase's own loss, comparable with val_loss
            if ground is not None:
                ground_losses.append(float(ground.detach()))
                loss = loss + opts.grounding * ground
            if finding is not None:
                finding_losses.append(float(finding.detach()))
                loss = loss + opts.findings * finding
            run.accelerator.backward(loss)
            run.optimizer.step()
            run.optimizer.zero_grad()
        bar.set_postfix(loss=f"{np.mean(losses):.3f}")
    record = {"train_loss": float(np.mean(losses)), "samples": len(order)}
    if ground_losses:
        record["train_grounding"] = float(np.mean(ground_losses))
    if finding_losses:
        record["train_findings"] = float(np.mean(finding_losses))
    return record


@torch.no_grad()
def _validate(run: _Run, val_set: Prepared) -> dict:
    """Mean validation losses (the phase's own loss picks the best epoch)."""
    run.model.eval()
    n, size = len(val_set.texts), run.opts.batch_size
    val_losses, val_ground, val_finding = [], [], []
    for i in range(0, n, size):
        idx = list(range(i, min(i + size, n)))
        if run.opts.phase == "contrastive" and len(idx) < 2:
            idx = list(range(max(0, n - 2), n))
        texts = [val_set.texts[j] for j in idx]
        main, ground, finding = run.batch_loss(
            val_set.x[idx], texts, val_set.lesions_of(idx), val_set.labelled[idx]
        )
        val_losses.append(float(main))
        if ground is not None:
            val_ground.append(float(ground))
        if finding is not None:
            val_finding.append(float(finding))
    record = {"val_loss": float(np.mean(val_losses))}
    if val_ground:
        record["val_grounding"] = float(np.mean(val_ground))
    if val_finding:
        record["val_findings"] = float(np.mean(val_finding))
    return record


def _save_epoch(run: _Run, folder: Path, split: dict, input_stats: dict | None = None) -> None:
    """The epoch's checkpoint with its split, the input check's statistics and any auxiliary heads (what the
    next phase continues)."""
    from safetensors.torch import save_file

    from ..model.loading import save

    save(run.core, folder, include_base=run.core.cfg.preset != "medgemma")
    write_text_atomic(folder / "split.json", json.dumps(split, indent=2) + "\n")
    if input_stats is not None:
        write_input_stats(folder, input_stats)
    for aux, file_name in ((run.grounder, HEAD_FILE), (run.finder, FINDING_HEAD_FILE)):
        if aux is not None:
            save_file(run.accelerator.unwrap_model(aux).state_dict(), str(folder / file_name))


def train(opts: TrainOptions) -> dict:
    """Run one phase (see the module docstring); returns the final training state.

    Resumable: ``--out`` keeps ``train_state.json`` and one checkpoint per epoch; a re-run continues after the
    last finished epoch on the same shuffles and learning-rate curve. ``best/`` is the epoch with the lowest
    validation loss of the phase's own objective.
    """
    check_options(opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "train_state.json"
    state = json.loads(state_path.read_text(encoding="utf-8")) if state_path.is_file() else {}
    if state and state.get("phase") != opts.phase:
        raise InputError(
            f"folder holds a {state.get('phase')} run; use a new --out for phase {opts.phase}", out
        )
    if state.get("last_checkpoint"):
        opts.init = str(out / state["last_checkpoint"])

    _refuse_test_only(opts.data)
    model = _load_model(opts)
    found = scan(opts.data, opts.sequences)
    if model.cfg.in_channels != len(opts.sequences):
        raise InputError(
            f"the model takes {model.cfg.in_channels} channel(s); --sequences gives {len(opts.sequences)}"
        )
    split = _choose_split(opts, found)
    by_id = {c.case_id: c for c in found.cases}
    train_recs = [by_id[c] for c in split["train"] if c in by_id]
    val_recs = [by_id[c] for c in split["val"] if c in by_id]
    if opts.max_cases:
        train_recs, val_recs = train_recs[: opts.max_cases], val_recs[: max(1, opts.max_cases // 4)]
    if not train_recs or not val_recs:
        raise InputError("the split has no training or no validation case; add cases", opts.data)
    grounded = opts.grounding > 0 and opts.phase in ("contrastive", "warmup")
    shared = {"lesions": grounded, "workers": opts.workers, "placement": model.cfg.preprocess}
    train_set = prepare_cases(train_recs, model.cfg.grid, opts.progress, **shared)
    val_set = prepare_cases(val_recs, model.cfg.grid, opts.progress, **shared)
    run = _set_up(opts, model, grounded and bool(train_set.labelled.any()))
    input_stats = _input_stats(train_set, val_set, model.cfg, opts)

    start_epoch = int(state.get("epoch", 0))
    best = float(state.get("best_val_loss", math.inf))
    rng = np.random.default_rng(opts.seed)
    for _ in range(start_epoch):  # keep the shuffles identical after a resume
        rng.permutation(len(train_recs))
    for epoch in range(start_epoch + 1, opts.epochs + 1):
        started = time.perf_counter()
        trained = _train_epoch(run, train_set, epoch, rng)
        validated = _validate(run, val_set)
        seconds = time.perf_counter() - started
        name = f"epoch-{epoch:03d}"
        _save_epoch(run, out / name, split, input_stats)
        if validated["val_loss"] < best:
            best = validated["val_loss"]
            shutil.rmtree(out / "best", ignore_errors=True)
            shutil.copytree(out / name, out / "best")
        record = {
            "phase": opts.phase,
            "epoch": epoch,
            "train_loss": round(trained["train_loss"], 5),
            "val_loss": round(validated["val_loss"], 5),
            "seconds": round(seconds, 2),
            "samples_per_s": round(trained["samples"] / seconds, 2),
            "cases": len(train_recs),
        }
        for key in ("train_grounding", "val_grounding", "train_findings", "val_findings"):
            value = trained.get(key, validated.get(key))
            if value is not None:
                record[key] = round(value, 5)
        with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        state = {
            "phase": opts.phase,
            "epoch": epoch,
            "last_checkpoint": name,
            "best_val_loss": best,
            "options": {k: str(v) for k, v in vars(opts).items()},
        }
        write_text_atomic(state_path, json.dumps(state, indent=2) + "\n")
    return state


def _input_stats(train_set: Prepared, val_set: Prepared, cfg, opts: TrainOptions) -> dict | None:
    """The input check's statistics of this run's data: fitted on the training split, limit from the
    validation split (scans the statistics never saw). None (the checkpoint then says "not calibrated") when
    the split is too small to fit them."""
    try:
        return fit_input_stats(
            train_set.features,
            val_set.features,
            grid=cfg.grid,
            channels=cfg.in_channels,
            source={
                "command": "braingemma3d train",
                "sequences": list(opts.sequences),
                "train": {"folder": str(opts.data), "split": "train", "cases": len(train_set.features)},
                "heldout": {"folder": str(opts.data), "split": "val", "cases": len(val_set.features)},
            },
        )
    except ValueError:
        return None


def learning_rate(opts: TrainOptions, step: int, total: int) -> float:
    """The rate at a global step: a function of the step alone, so a resumed run continues on the same curve.

    ``cosine``: linear warm-up over the first 3 % of the steps, then half a cosine down to 2 % of ``--lr``.
    """
    if opts.schedule == "constant" or total <= 1:
        return opts.lr
    warm = max(1, int(0.03 * total))
    if step < warm:
        return opts.lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return opts.lr * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _load_head(head: nn.Module, init: str | None, file_name: str = HEAD_FILE) -> None:
    """Continue an auxiliary head of the --init checkpoint (a resumed run, or the previous phase)."""
    if init and (Path(init) / file_name).is_file():
        from safetensors.torch import load_file

        head.load_state_dict(load_file(str(Path(init) / file_name)))


def _split_of(init: str | None) -> dict | None:
    if init and (Path(init) / "split.json").is_file():
        return json.loads((Path(init) / "split.json").read_text(encoding="utf-8"))
    return None


def _refuse_test_only(data) -> None:
    """A held-out brain (``phantoms --template fsl-mni152``) is for testing only: training on it, or tuning
    with it, would make its scores meaningless."""
    manifest = Path(data) / "phantoms.json"
    try:
        test_only = manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("test_only")
    except (OSError, ValueError):
        return  # not our manifest: the data scan says what is wrong
    if test_only:
        raise InputError("these phantoms are a held-out brain for testing only; train on others", manifest)
