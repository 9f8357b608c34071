"""3D LIME: which parts of the brain made the model write its report (or one statement in it).

A radiologist signs only what they can check, so every draft comes with the regions that drove it:

1. **Supervoxels** on the model grid with :func:`skimage.segmentation.slic`, inside the brain only and
   spacing-aware (the grid is anisotropic: thicker along D), so they follow intensity edges such as a
   hyperintense lesion's border instead of cutting through it. ~50 by default.
2. **Perturbations**: random keep/drop masks over the supervoxels (the first one keeps all: the original).
   Dropped supervoxels are filled with a baseline that carries no finding: the brain's mean intensity
   (default), zero, or a heavily blurred copy of the volume.
3. **Target**: the teacher-forced log-likelihood of the report (or of a character span of it, e.g. the
   laterality sentence or "necrosis") under each perturbed volume, from :meth:`BrainGemma3D.score`.
   Scoring is **batched**: many perturbed volumes share one forward pass (the published implementation
   scores one volume per pass), with the batch size chosen from free memory.
4. **Fit**: ``lime``'s :class:`~lime.lime_base.LimeBase` with LIME's exponential kernel on the cosine
   distance to the original (what ``LimeImageExplainer`` does for images), not a hand-written regression.
   LIME gives no uncertainty, so each weight's standard error is computed from the same weighted ridge
   problem (:func:`standard_errors`); the maps keep only weights **significantly** above zero
   (> ``SIGNIFICANCE`` standard errors). Unfiltered, noise on the many healthy supervoxels spreads the
   positive mass over the brain; filtered, it stays on what drove the text (docs/results.md).
5. **Back to the patient**: the weights become a float map and a top-k labelmap on the grid, mapped onto the
   input's own voxels through the volume's :class:`~BrainGemma3DLib.io.volume.GridMapping`, and written as
   ``attribution.nii.gz`` and ``attribution.seg.nrrd`` (one named, coloured segment per top supervoxel,
   written with ``slicerio``, the Slicer team's reader/writer of that format).

Same seed, same inputs -> the same explanation (perturbations come from a seeded generator and LIME's
regressor is deterministic).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from .io.atomic import atomic_path
from .io.errors import InputError
from .io.volume import RAS_FROM_LPS

BASELINES = ("mean", "zero", "blur")

#: A supervoxel is shown when its weight exceeds this many standard errors of the fit.
SIGNIFICANCE = 2.0
#: Ridge penalty of LIME's default regressor (``Ridge(alpha=1)``), used again for the standard errors.
RIDGE_ALPHA = 1.0

#: Segment colours of the top supervoxels (rank 1 first): warm and distinct, as Slicer shows them.
TOP_COLOURS = (
    (0.95, 0.20, 0.10),
    (1.00, 0.55, 0.05),
    (1.00, 0.85, 0.10),
    (0.85, 0.35, 0.75),
    (0.30, 0.75, 0.95),
    (0.45, 0.85, 0.35),
    (0.95, 0.60, 0.60),
    (0.60, 0.45, 0.95),
    (0.75, 0.75, 0.30),
    (0.40, 0.90, 0.80),
)


class Cancelled(Exception):
    """Raised when the caller's ``cancel`` callback asks to stop (nothing is written)."""


@dataclass
class ExplainOptions:
    """Knobs of one explanation; the defaults give a full explanation in seconds with the demo weights."""

    n_segments: int = 50  # supervoxels asked of SLIC (inside the brain)
    compactness: float = 0.03  # SLIC: low = follow intensity edges (a lesion's border), high = cubes
    n_samples: int = 256  # perturbed volumes scored (the first is the unperturbed original)
    keep_probability: float = 0.5  # chance that a supervoxel is kept in a perturbation
    baseline: str = "mean"  # what fills a dropped supervoxel: mean, zero or blur
    kernel_width: float = 0.25  # LIME's kernel width on the cosine distance (LIME's image default)
    top_k: int = 5  # supervoxels in the labelmap / segmentation
    batch_size: int = 0  # perturbed volumes per forward pass; 0 = from free memory
    seed: int = 0

    def check(self) -> None:
        problems = []
        if self.baseline not in BASELINES:
            problems.append(f"baseline must be one of {', '.join(BASELINES)} (got {self.baseline!r})")
        if not 2 <= self.n_segments <= 5000:
            problems.append("n_segments must be between 2 and 5000")
        if not 10 <= self.n_samples <= 100_000:
            problems.append("n_samples must be between 10 and 100000")
        if not 0.0 < self.keep_probability < 1.0:
            problems.append("keep_probability must be between 0 and 1")
        if not 0.0 < self.compactness <= 100.0 or not 0.0 < self.kernel_width <= 100.0:
            problems.append("compactness and kernel_width must be positive (at most 100)")
        if not 1 <= self.top_k <= 1000 or not 0 <= self.batch_size <= 4096:
            problems.append("top_k must be 1..1000 and batch_size 0..4096")
        if problems:
            raise InputError("; ".join(problems))


@dataclass
class Explanation:
    """One LIME explanation on the model grid (see the module docstring)."""

    segments: np.ndarray  # (D, H, W) int32 supervoxel id, 0 outside the brain
    weights: dict[int, float]  # supervoxel id -> LIME weight (log-likelihood per kept supervoxel)
    errors: dict[int, float]  # supervoxel id -> standard error of its weight
    intercept: float
    fit_r2: float  # LIME's score of the local linear fit
    target: str  # the text whose likelihood was explained
    span: tuple[int, int] | None
    baseline_loglik: float  # log-likelihood of the target for the unperturbed volume
    n_samples: int
    batch_size: int
    seconds: float
    options: dict = field(default_factory=dict)

    def significant(self, supervoxel: int) -> bool:
        """Its weight is further from zero than ``SIGNIFICANCE`` standard errors."""
        return abs(self.weights[supervoxel]) > SIGNIFICANCE * self.errors.get(supervoxel, 0.0)

    def ranked(self, positive_only: bool = True) -> list[tuple[int, float]]:
        """(supervoxel id, weight), strongest first; ``positive_only``: significantly positive ones only."""
        items = sorted(self.weights.items(), key=lambda kv: -kv[1])
        if positive_only:
            return [(s, w) for s, w in items if w > 0 and self.significant(s)]
        return items

    def attribution_map(self, significant_only: bool = True) -> np.ndarray:
        """(D, H, W) float32: each voxel carries its supervoxel's weight (0 outside the brain, and 0 where
        the weight is within the fit's noise unless ``significant_only`` is False)."""
        table = np.zeros(int(self.segments.max()) + 1, np.float32)
        for seg, w in self.weights.items():
            if not significant_only or self.significant(seg):
                table[seg] = w
        return table[self.segments]

    def top_labelmap(self, k: int) -> np.ndarray:
        """(D, H, W) uint8: rank (1..k) of the top-k positive supervoxels, 0 elsewhere."""
        out = np.zeros(self.segments.shape, np.uint8)
        for rank, (seg, _w) in enumerate(self.ranked()[:k], start=1):
            out[self.segments == seg] = rank
        return out

    def summary(self) -> dict:
        """Plain data for report.json."""
        return {
            "method": "LIME (3D supervoxels)",
            "target": "span" if self.span else "report",
            "span": list(self.span) if self.span else None,
            "supervoxels": int(len(self.weights)),
            "n_samples": self.n_samples,
            "batch_size": self.batch_size,
            "fit_r2": round(self.fit_r2, 4),
            "significant_positive": len(self.ranked()),
            "significance": f"weight > {SIGNIFICANCE:g} standard errors",
            "baseline_loglik": round(self.baseline_loglik, 4),
            "top": [{"supervoxel": s, "weight": round(w, 5)} for s, w in self.ranked()[:10]],
            "seconds": round(self.seconds, 2),
            "options": self.options,
        }


# ------------------------------------------------------------------------------------------------------
# Pieces
# ------------------------------------------------------------------------------------------------------
def supervoxels(
    grid: np.ndarray,
    brain: np.ndarray,
    spacing: tuple[float, float, float],
    n_segments: int = 50,
    *,
    compactness: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """SLIC supervoxels of a model-grid volume (C, D, H, W) inside ``brain`` (D, H, W); ids 1..n, 0 outside.

    ``spacing`` (mm along D, H, W) makes them roughly round in millimetres, not in voxels. Channels are
    features (FLAIR/T1ce/T2 together draw the lesion's border).
    """
    from skimage.segmentation import slic

    if not brain.any():
        raise InputError("the brain mask is empty: nothing to explain")
    image = np.moveaxis(np.asarray(grid, np.float32), 0, -1)  # (D, H, W, C)
    labels = slic(
        image,
        n_segments=n_segments,
        compactness=compactness,
        spacing=np.asarray(spacing, float),
        mask=brain,
        channel_axis=-1,
        start_label=1,
        enforce_connectivity=True,
    )
    labels = np.where(brain, labels, 0).astype(np.int32)
    # Renumber to 1..n without gaps (SLIC may skip ids).
    ids = np.unique(labels[labels > 0])
    table = np.zeros(int(labels.max()) + 1, np.int32)
    table[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return table[labels]


def baseline_volume(grid: np.ndarray, brain: np.ndarray, kind: str) -> np.ndarray:
    """What dropped supervoxels are filled with, (C, D, H, W): no lesion, no structure."""
    from scipy import ndimage

    if kind == "zero":
        return np.zeros_like(grid)
    if kind == "mean":
        means = [float(c[brain].mean()) if brain.any() else 0.0 for c in grid]
        return np.stack([np.full(c.shape, m, c.dtype) for c, m in zip(grid, means, strict=True)])
    if kind == "blur":
        return np.stack([ndimage.gaussian_filter(c, sigma=6.0) for c in grid]).astype(grid.dtype)
    raise InputError(f"baseline must be one of {', '.join(BASELINES)} (got {kind!r})")


def perturbation_masks(n_features: int, n_samples: int, keep: float, seed: int) -> np.ndarray:
    """(n_samples, n_features) 0/1; row 0 keeps everything (the original, LIME's reference row)."""
    rng = np.random.default_rng(seed)
    z = (rng.random((n_samples, n_features)) < keep).astype(np.uint8)
    z[0] = 1
    return z


#: Most perturbed volumes per pass on a CPU: past this the activations leave the caches and a pass gets slower
#: per volume (the batch-size sweep is in docs/results.md, "Explanation quality and speed").
CPU_MAX_BATCH = 16
GPU_MAX_BATCH = 64


def auto_batch_size(model, device=None) -> int:
    """Perturbed volumes per forward pass from the free memory of the model's device.

    An estimate of one sample's peak activation memory (input, encoder tokens, LM sequence and its logits,
    all layers, float32) against a quarter of what is free: generous enough to batch, never near the limit;
    capped at :data:`CPU_MAX_BATCH` on a CPU and :data:`GPU_MAX_BATCH` on a GPU.
    """
    import torch

    cfg = model.cfg
    device = device or model.device
    voxels = int(np.prod(cfg.grid)) * cfg.in_channels
    vision_layers = int(cfg.vision.get("num_hidden_layers", 4)) if isinstance(cfg.vision, dict) else 4
    lm_cfg = model.lm.config
    seq = 256
    per_sample = 4 * (
        voxels * 4
        + cfg.num_patch_tokens * cfg.vision_hidden * (vision_layers + 2) * 8
        + seq * cfg.lm_hidden * (int(getattr(lm_cfg, "num_hidden_layers", 4)) + 2) * 8
        + seq * int(getattr(lm_cfg, "vocab_size", 32000))
    )
    if torch.device(device).type == "cuda":
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        cap = GPU_MAX_BATCH
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            free = 4 << 30
        cap = CPU_MAX_BATCH
    return int(max(1, min(cap, (free // 4) // max(per_sample, 1))))


def cosine_distances(z: np.ndarray) -> np.ndarray:
    """Each perturbation's cosine distance to the original (row 0), LIME's distance for images."""
    from sklearn.metrics.pairwise import pairwise_distances

    return pairwise_distances(z, z[0:1], metric="cosine").ravel()


def lime_kernel(distances: np.ndarray, kernel_width: float) -> np.ndarray:
    """LIME's exponential kernel (``LimeImageExplainer``'s), the weight of each perturbation in the fit."""
    return np.sqrt(np.exp(-(distances**2) / kernel_width**2))


def lime_fit(
    z: np.ndarray, scores: np.ndarray, kernel_width: float, seed: int
) -> tuple[dict[int, float], float, float]:
    """LIME's weighted ridge fit of ``scores`` on keep/drop rows ``z``: (column weights, intercept, R²)."""

    from lime.lime_base import LimeBase

    labels = scores.reshape(-1, 1).astype(np.float64)
    base = LimeBase(partial(lime_kernel, kernel_width=kernel_width), verbose=False, random_state=seed)
    intercept, features, r2, _local = base.explain_instance_with_data(
        z.astype(np.float64), labels, cosine_distances(z), 0, z.shape[1], feature_selection="none"
    )
    return {int(f): float(w) for f, w in features}, float(intercept), float(r2)


def weighted_ridge(z: np.ndarray, scores: np.ndarray, kernel_width: float) -> tuple[np.ndarray, np.ndarray]:
    """LIME's regression solved in closed form: (intercept + column weights, their covariance).

    Same kernel weights and penalty as :func:`lime_fit` (intercept unpenalised), so the coefficients equal
    LIME's; the covariance is the ridge estimator's sandwich form with the weighted residual variance.
    """
    w = lime_kernel(cosine_distances(z), kernel_width)
    x = np.hstack([np.ones((len(z), 1)), z.astype(np.float64)])
    gram = x.T @ (x * w[:, None])
    inverse = np.linalg.pinv(gram + np.diag([0.0] + [RIDGE_ALPHA] * z.shape[1]))
    coef = inverse @ (x.T @ (w * scores))
    residual = scores - x @ coef
    sigma2 = float((w * residual**2).sum()) / max(float(w.sum()) - x.shape[1], 1.0)
    return coef, sigma2 * inverse @ gram @ inverse


def standard_errors(z: np.ndarray, scores: np.ndarray, kernel_width: float) -> np.ndarray:
    """Standard error of each LIME weight (one per column of ``z``); LIME itself reports none."""
    _coef, cov = weighted_ridge(z, scores, kernel_width)
    return np.sqrt(np.clip(np.diag(cov)[1:], 0.0, None))


# ------------------------------------------------------------------------------------------------------
# The explanation
# ------------------------------------------------------------------------------------------------------
def explain(
    model,
    grid: np.ndarray,
    brain: np.ndarray,
    spacing: tuple[float, float, float],
    text: str,
    *,
    span: tuple[int, int] | None = None,
    options: ExplainOptions | None = None,
    progress: Callable[[float, str], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Explanation:
    """Explain ``text`` (or its ``span``) for one model-grid volume ``grid`` (C, D, H, W).

    ``brain`` is the (D, H, W) mask supervoxels are drawn in (the grid mapping's foreground); ``progress``
    gets (fraction 0..1, message) after each batch; ``cancel`` is polled between batches and stops the work
    with :class:`Cancelled`.
    """
    import torch

    opts = options or ExplainOptions()
    opts.check()
    started = time.perf_counter()
    grid = np.asarray(grid, np.float32)
    if grid.ndim != 4 or grid.shape[1:] != brain.shape:
        raise InputError(f"volume {grid.shape} and brain mask {brain.shape} do not match")
    if not text.strip():
        raise InputError("nothing to explain: the report text is empty")
    segments = supervoxels(
        grid, brain, spacing, opts.n_segments, compactness=opts.compactness, seed=opts.seed
    )
    n_features = int(segments.max())
    fill = baseline_volume(grid, brain, opts.baseline)
    z = perturbation_masks(n_features, opts.n_samples, opts.keep_probability, opts.seed)
    batch = opts.batch_size or auto_batch_size(model)
    dev = model.device
    x = torch.from_numpy(grid).to(dev)
    f = torch.from_numpy(fill).to(dev)
    seg = torch.from_numpy(segments.astype(np.int64)).to(dev)
    scores = np.zeros(len(z), np.float64)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(z), batch):
            if cancel is not None and cancel():
                raise Cancelled("explanation cancelled")
            rows = torch.from_numpy(z[start : start + batch]).to(dev)
            # keep[b, voxel] = row b keeps that voxel's supervoxel (outside the brain: always kept)
            table = torch.cat([torch.ones(len(rows), 1, dtype=rows.dtype, device=dev), rows], dim=1)
            keep = table[:, seg].unsqueeze(1).to(x.dtype)  # (b, 1, D, H, W)
            volumes = x.unsqueeze(0) * keep + f.unsqueeze(0) * (1 - keep)
            scores[start : start + len(rows)] = model.score(volumes, text, span).float().cpu().numpy()
            if progress is not None:
                done = min(len(z), start + batch)
                progress(done / len(z), f"scored {done}/{len(z)} perturbed volumes")
    weights, intercept, r2 = lime_fit(z, scores, opts.kernel_width, opts.seed)
    weights = {k + 1: w for k, w in weights.items()}  # columns -> supervoxel ids
    errors = standard_errors(z, scores, opts.kernel_width)
    return Explanation(
        segments=segments,
        weights=weights,
        errors={k + 1: float(e) for k, e in enumerate(errors)},
        intercept=intercept,
        fit_r2=r2 if math.isfinite(r2) else 0.0,
        target=text if span is None else text[span[0] : span[1]],
        span=span,
        baseline_loglik=float(scores[0]),
        n_samples=len(z),
        batch_size=batch,
        seconds=time.perf_counter() - started,
        options={k: v for k, v in vars(opts).items()},
    )


def lesion_overlap(explanation: Explanation, lesion: np.ndarray) -> dict:
    """How well an explanation points at the lesion (tumour + edema mask on the grid), for evaluation.

    ``top_inside``: the strongest supervoxel lies inside (at least half of its voxels are lesion);
    ``mass_inside``: the share of the positive attribution mass (weight x voxels) that falls on lesion voxels.
    """
    ranked = explanation.ranked()
    if not ranked:
        return {"top_inside": False, "top_fraction": 0.0, "mass_inside": 0.0}
    top = explanation.segments == ranked[0][0]
    fraction = float(lesion[top].mean())
    positive = np.clip(explanation.attribution_map(), 0.0, None)
    mass = float(positive[lesion].sum() / max(positive.sum(), 1e-12))
    return {"top_inside": fraction >= 0.5, "top_fraction": round(fraction, 4), "mass_inside": round(mass, 4)}


# ------------------------------------------------------------------------------------------------------
# Back onto the patient's voxels
# ------------------------------------------------------------------------------------------------------
#: Share of a segment's voxels on one side of the midline from which it is called that side.
SEGMENT_SIDE_SHARE = 0.65


def segment_name(rank: int, side: str, weight: float, millilitres: float) -> str:
    """How a top region is named in Slicer, the report and the PDF: in words, e.g.
    ``#1 left frontal (w=+0.27, 8.4 mL)`` (rank, the place: side and lobes from the registered atlas, or the
    patient's side alone without one; LIME weight; volume on the input's voxels)."""
    return f"#{rank} {side} (w={weight:+.3g}, {millilitres:.1f} mL)"


def segment_side(mask: np.ndarray, input_affine: np.ndarray, midline_x: float) -> str:
    """``left``, ``right`` or ``midline`` for a segment on the input grid: which side of the brain's midline
    (RAS x, smaller = the patient's left) holds at least :data:`SEGMENT_SIDE_SHARE` of its voxels."""
    ijk = np.argwhere(mask)
    if not len(ijk):
        return "empty"
    x = ijk @ np.asarray(input_affine, dtype=np.float64)[0, :3] + float(input_affine[0, 3])
    left = float(np.mean(x < midline_x))
    if left >= SEGMENT_SIDE_SHARE:
        return "left"
    if 1.0 - left >= SEGMENT_SIDE_SHARE:
        return "right"
    return "midline"


def write_attribution(
    explanation: Explanation,
    mapping,
    folder: str | os.PathLike,
    top_k: int = 5,
    *,
    midline_x: float = 0.0,
    placement=None,
) -> dict:
    """Write ``attribution.nii.gz`` (float map) and ``attribution.seg.nrrd`` (top-k segments), input grid.

    Both have exactly the input volume's shape and geometry (through ``mapping``), so they overlay the
    radiologist's own images. Segments are named in words (:func:`segment_name`): with ``placement`` (the
    atlas on the input's voxels, :func:`BrainGemma3DLib.anatomy.place_study`) their side and lobes ("left
    frontal"), else their side against the brain's midline at RAS x = ``midline_x`` (the consistency
    check's, ``attribution_side``); and their volume.
    Atomic: each file appears complete or not at all. Returns the paths and the segments.
    """
    import slicerio

    folder = Path(folder)
    attribution = mapping.to_input(explanation.attribution_map(), kind="map")
    map_path = folder / "attribution.nii.gz"
    attribution.save(map_path, dtype=np.float32)

    labels = mapping.to_input(explanation.top_labelmap(top_k), kind="label").data[0]
    seg = slicerio.create_segmentation(labels.shape, RAS_FROM_LPS @ mapping.input_affine)
    segments = []
    voxel_ml = abs(float(np.linalg.det(np.asarray(mapping.input_affine, dtype=np.float64)[:3, :3]))) / 1000.0
    for rank, (sv, w) in enumerate(explanation.ranked()[:top_k], start=1):
        colour = TOP_COLOURS[(rank - 1) % len(TOP_COLOURS)]
        mask = labels == rank
        side, ml = segment_side(mask, mapping.input_affine, midline_x), float(mask.sum()) * voxel_ml
        place = {}
        if placement is not None:
            from .anatomy import describe

            found = describe(mask, placement.regions, placement.side)
            place = {"place": found["words"], "lobes": found["lobes"], "regions": found["regions"]}
            side = found["side"] if found["side"] != "outside the brain" else side
        name = segment_name(rank, place.get("place", side), w, ml)
        slicerio.add_segment(seg, mask, {"id": f"Segment_{rank}", "name": name, "color": colour})
        entry = {
            "rank": rank,
            "supervoxel": sv,
            "weight": w,
            "side": side,
            "volume_ml": round(ml, 2),
            **place,
        }
        segments.append(entry | {"name": name, "color": list(colour)})
    seg_path = folder / "attribution.seg.nrrd"
    with atomic_path(seg_path) as tmp:
        slicerio.write_segmentation(str(tmp), seg)
    return {"map": str(map_path), "segmentation": str(seg_path), "segments": segments}
