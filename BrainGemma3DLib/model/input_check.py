"""Is this scan something the model knows? The input check that runs before every draft.

Why: a report model answers every input with a fluent report — a T1 passed as FLAIR, a pelvis, a scan from a
scanner or template it never saw — and the text reads as confidently as a good draft. So before the draft,
three questions are answered from the study and its model grid (statistics of a small array: milliseconds):

- **head**: is there a head on the grid — a foreground of plausible volume and extent, shaped like a head
  (it fits its bounding ellipsoid) and with tissue structure (neighbouring voxels alike, unlike noise)?
- **sequence**: is channel 0 the sequence the model reads (FLAIR for every BrainGemma3D model)? DICOM tags
  (or, for a NIfTI, the same fields in dcm2niix's JSON sidecar) decide where they name it (series description,
  protocol, sequence name; else inversion/echo/repetition times); otherwise one image statistic, robust to
  lesions: on FLAIR (and T2) the cortex is brighter than the white matter beneath it, on T1 the white matter
  is the brightest tissue.
- **distribution**: how far the case's image statistics (:data:`FEATURES`) lie from the training scans'
  (Mahalanobis distance, covariance shrunk toward the identity as Ledoit and Wolf do, because a few hundred
  cases estimate 17 x 17 covariances poorly), against a limit calibrated on held-out scans (their 99th
  percentile). The statistics are stored beside the weights in ``input_stats.json`` (plain JSON, never a
  pickle), written by ``braingemma3d train`` and ``braingemma3d calibrate``; a checkpoint without it says "not
  calibrated". The model's own visual features were measured too and left out: they found a FLAIR made from
  another template as ordinary as the training phantoms (docs/results.md, "Input check").

A failed check never stops the draft (the radiologist decides) and is never silent: each failed question gives
one plain sentence ending in "the draft is unreliable", which goes into report.json, report.txt, the PDF and
the Slicer panel. The result is plain data (report.json ``input_check``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..io.atomic import write_text_atomic
from ..io.sequences import sequence_from_tags
from ..io.stamps import sha256_bytes, utc_iso

__all__ = [
    "EXPECTED_SEQUENCES",
    "FEATURES",
    "STATS_FILE",
    "check_input",
    "check_grid",
    "features_of_study",
    "fit_input_stats",
    "image_features",
    "load_input_stats",
    "sequence_from_tags",
    "write_input_stats",
]

#: The file beside a checkpoint's weights that holds the training scans' statistics.
STATS_FILE = "input_stats.json"
STATS_FORMAT = "braingemma3d-input-stats"
STATS_VERSION = 1
#: A statistics file is a few kB; anything much larger is not one (the folder is untrusted).
MAX_STATS_BYTES = 1 << 20
#: The sequences a model reads, by input channels, FLAIR first (as training stacks them).
EXPECTED_SEQUENCES = {1: ("flair",), 2: ("flair", "t1ce"), 3: ("flair", "t1ce", "t2")}
SEQUENCE_NAMES = {
    "flair": "FLAIR",
    "t1": "T1-weighted",
    "t1ce": "contrast-enhanced T1",
    "t2": "T2-weighted",
    "dwi": "diffusion-weighted",
    "swi": "susceptibility-weighted",
    "pd": "proton-density",
    "angio": "angiography",
}
#: The held-out quantile the distance limit is set at (about 1 % of scans like the training ones exceed it).
HELDOUT_QUANTILE = 0.99

# --- head: generous ranges (children to large adult heads with scalp), measured on the model grid -----------
HEAD_VOLUME_ML = (300.0, 6000.0)
#: Extent of the foreground along (superior-inferior, anterior-posterior, right-left), in mm.
HEAD_EXTENT_MM = {
    "superior-inferior": (60.0, 320.0),
    "anterior-posterior": (90.0, 320.0),
    "right-left": (70.0, 260.0),
}
#: At most this share of the foreground may lie outside 1.1 x its bounding ellipsoid (phantom brains: <= 5 %,
#: a cube: about 30 %).
HEAD_MAX_OUTSIDE = 0.15
#: Neighbouring voxels of an image of tissue are alike (phantoms >= 0.55); of noise they are not (~0.3).
HEAD_MIN_CORRELATION = 0.45
# --- sequence from the image --------------------------------------------------------------------------------
#: Deep tissue (15-30 mm under the brain's surface: white matter) over superficial tissue (<= 10 mm: cortex),
#: medians without fluid. Phantoms (50 of another seed): FLAIR <= 1.07, T2 <= 1.0, T1 >= 1.08 (95 % >= 1.13).
T1_LIKE_RATIO = 1.12
#: The image statistic is read on a brain (skull-stripped, as BraTS); with the scalp on, the superficial band
#: is scalp, not cortex, so above this foreground volume it is not used.
BRAIN_ONLY_MAX_ML = 2600.0

#: The image statistics of one channel-0 image on the model grid, in the order of the distance's vector.
FEATURES = (
    "log_volume_ml",  # size of the foreground
    "extent_si_mm",
    "extent_ap_mm",
    "extent_rl_mm",
    "outside_ellipsoid",  # shape: share of the foreground outside 1.1 x its bounding ellipsoid
    "neighbour_correlation",  # tissue structure vs noise
    "p05",  # intensity percentiles inside the foreground (the grid's normalised 0..1 scale)
    "p10",
    "p25",
    "p50",
    "p75",
    "p90",
    "p95",
    "dark_fraction",  # share of the foreground below 0.15 (fluid, edges)
    "deep_to_superficial",  # white matter over cortex (see T1_LIKE_RATIO)
    "dark_depth",  # mean depth of the darkest 5 % relative to the mean depth (where the fluid is)
    "high_frequency",  # median |voxel - mean of its 6 neighbours| relative to the median (noise, texture)
)
#: Extra channels (T1ce, T2 of three-sequence models) add these, prefixed ``c1_``, ``c2_``.
CHANNEL_FEATURES = ("p10", "p50", "p90", "deep_to_superficial")


# ------------------------------------------------------------------------------------------------------------
# Image statistics on the model grid
# ------------------------------------------------------------------------------------------------------------
def _robust_box(mask: np.ndarray, tail: float = 0.005) -> tuple[np.ndarray, np.ndarray]:
    """Index box holding all but ``tail`` of the mask's voxels on each side of each axis."""
    total = float(mask.sum())
    lo, hi = [], []
    for axis in range(3):
        cum = np.cumsum(mask.sum(axis=tuple(a for a in range(3) if a != axis))) / total
        lo.append(int(np.searchsorted(cum, tail)))
        hi.append(int(np.searchsorted(cum, 1.0 - tail)))
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)


def _neighbour_correlation(x: np.ndarray, fg: np.ndarray) -> float:
    values = []
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        both = fg[tuple(a)] & fg[tuple(b)]
        if both.sum() < 10:
            continue
        u, v = x[tuple(a)][both], x[tuple(b)][both]
        if u.std() > 0 and v.std() > 0:
            values.append(float(np.corrcoef(u, v)[0, 1]))
    return float(np.mean(values)) if values else math.nan


def _deep_to_superficial(x: np.ndarray, fg: np.ndarray, depth: np.ndarray) -> float:
    """Median of deep over superficial tissue, fluid and edges (below half the median) left out. Medians keep
    a lesion from deciding it (leaving out the brightest decile too separated FLAIR from T1 less well)."""
    tissue = fg & (x > 0.5 * float(np.median(x[fg])))
    superficial, deep = tissue & (depth <= 10.0), tissue & (depth >= 15.0) & (depth <= 30.0)
    if superficial.sum() < 20 or deep.sum() < 20:
        return math.nan
    return float(np.median(x[deep]) / max(float(np.median(x[superficial])), 1e-3))


def image_features(grid: np.ndarray, foreground: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """:data:`FEATURES` (and :data:`CHANNEL_FEATURES` of extra channels) of a study on the model grid.

    ``grid``: ``(C, D, H, W)`` as :meth:`~BrainGemma3DLib.io.volume.Volume.to_model_grid` returns it (our
    placement: D inferior->superior, H anterior->posterior, W right->left, intensities 0..1 inside the
    foreground); ``spacing``: grid voxel size in mm. A value that cannot be measured (no deep tissue in a flat
    blob, say) is NaN: such an image is no brain, and the distance treats it as beyond every limit.
    """
    grid = np.asarray(grid, dtype=np.float32)
    fg = np.asarray(foreground, dtype=bool)
    sp = np.asarray(spacing, dtype=np.float64)
    out = dict.fromkeys(FEATURES, math.nan)
    for c in range(1, grid.shape[0]):
        out.update({f"c{c}_{name}": math.nan for name in CHANNEL_FEATURES})
    n = int(fg.sum())
    if n < 50:
        out["log_volume_ml"] = math.log(max(n, 1) * float(np.prod(sp)) / 1000.0)
        return out
    x = grid[0]
    out["log_volume_ml"] = math.log(n * float(np.prod(sp)) / 1000.0)
    lo, hi = _robust_box(fg)
    extent = (hi - lo + 1.0) * sp
    out["extent_si_mm"], out["extent_ap_mm"], out["extent_rl_mm"] = (float(e) for e in extent)
    centre, half = (lo + hi) / 2.0, np.maximum((hi - lo + 1.0) / 2.0, 0.5)
    index = np.argwhere(fg)
    radius = np.sqrt((((index - centre) / half) ** 2).sum(axis=1))
    out["outside_ellipsoid"] = float((radius > 1.1).mean())
    out["neighbour_correlation"] = _neighbour_correlation(x, fg)
    values = x[fg]
    for q in (5, 10, 25, 50, 75, 90, 95):
        out[f"p{q:02d}"] = float(np.percentile(values, q))
    out["dark_fraction"] = float((values < 0.15).mean())
    depth = ndimage.distance_transform_edt(fg, sampling=sp)
    out["deep_to_superficial"] = _deep_to_superficial(x, fg, depth)
    mean_depth = float(depth[fg].mean())
    darkest = fg & (x <= float(np.percentile(values, 5)))
    out["dark_depth"] = (
        float(depth[darkest].mean() / mean_depth) if darkest.any() and mean_depth > 0 else math.nan
    )
    inner = ndimage.binary_erosion(fg)
    if inner.any():
        kernel = np.zeros((3, 3, 3), dtype=np.float32)
        kernel[1, 1, :] = kernel[1, :, 1] = kernel[:, 1, 1] = -1.0 / 6.0
        kernel[1, 1, 1] = 1.0
        detail = ndimage.convolve(x, kernel, mode="nearest")
        out["high_frequency"] = float(np.median(np.abs(detail[inner])) / max(float(np.median(values)), 1e-3))
    for c in range(1, grid.shape[0]):
        v = grid[c][fg]
        out[f"c{c}_p10"], out[f"c{c}_p50"], out[f"c{c}_p90"] = (
            float(np.percentile(v, q)) for q in (10, 50, 90)
        )
        out[f"c{c}_deep_to_superficial"] = _deep_to_superficial(grid[c], fg, depth)
    return out


def feature_names(channels: int) -> tuple[str, ...]:
    """The distance's vector for a model reading ``channels`` sequences."""
    extra = tuple(f"c{c}_{name}" for c in range(1, channels) for name in CHANNEL_FEATURES)
    return FEATURES + extra


def check_grid(shape: Sequence[int]) -> tuple[int, int, int]:
    """A grid shape as three ints (for the statistics file and the check)."""
    grid = tuple(int(g) for g in shape)
    if len(grid) != 3 or min(grid) < 8 or max(grid) > 512:
        raise ValueError(f"a model grid is three sizes between 8 and 512, got {list(shape)}")
    return grid  # type: ignore[return-value]


def features_of_study(study, grid_shape: Sequence[int]) -> dict[str, float]:
    """The image statistics of a loaded study on our model grid of ``grid_shape`` (training, calibration)."""
    grid, mapping = study.to_model_grid(check_grid(grid_shape))
    return image_features(grid, mapping.foreground, mapping.grid_spacing)


# ------------------------------------------------------------------------------------------------------------
# Statistics of the training scans: fit, write, read, distance
# ------------------------------------------------------------------------------------------------------------
def _matrix(rows: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    if not rows:
        return np.zeros((0, len(names)))
    a = np.array([[float(r.get(k, math.nan)) for k in names] for r in rows], dtype=np.float64)
    return a[np.all(np.isfinite(a), axis=1)]


def _shrunk_covariance(z: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf shrinkage of the covariance of standardised rows toward a scaled identity."""
    n, p = z.shape
    sample = z.T @ z / n
    mu = float(np.trace(sample)) / p
    target = mu * np.eye(p)
    delta = float(((sample - target) ** 2).sum()) / p
    beta = float(sum(((np.outer(row, row) - sample) ** 2).sum() for row in z)) / (n * n * p)
    shrink = 1.0 if delta <= 0 else min(beta, delta) / delta
    return shrink * target + (1.0 - shrink) * sample, shrink


def _distances(a: np.ndarray, mean: np.ndarray, scale: np.ndarray, precision: np.ndarray) -> np.ndarray:
    z = (a - mean) / scale
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, precision, z), 0.0))


def fit_input_stats(
    train: Sequence[Mapping[str, float]],
    heldout: Sequence[Mapping[str, float]],
    *,
    grid: Sequence[int],
    channels: int = 1,
    source: Mapping | None = None,
) -> dict:
    """The ``input_stats.json`` content: mean, scale and shrunk covariance of the training scans' features,
    and the distance limit at the :data:`HELDOUT_QUANTILE` of held-out scans (never the training scans: their
    own distances are optimistically small). Rows with an unmeasurable value are left out and counted."""
    names = feature_names(channels)
    a, h = _matrix(train, names), _matrix(heldout, names)
    if len(a) < 3 or len(h) < 1:
        raise ValueError(
            f"calibration needs at least 3 training and 1 held-out scans with measurable statistics "
            f"(got {len(a)} and {len(h)})"
        )
    mean = a.mean(axis=0)
    scale = np.maximum(a.std(axis=0), 1e-6 * np.maximum(np.abs(mean), 1.0))
    covariance, shrink = _shrunk_covariance((a - mean) / scale)
    precision = np.linalg.inv(covariance)
    held = _distances(h, mean, scale, precision)
    own = _distances(a, mean, scale, precision)
    threshold = float(np.quantile(held, HELDOUT_QUANTILE))
    return {
        "format": STATS_FORMAT,
        "version": STATS_VERSION,
        "created": utc_iso(),
        "grid": list(check_grid(grid)),
        "placement": "ours",
        "features": list(names),
        "mean": [float(v) for v in mean],
        "scale": [float(v) for v in scale],
        "covariance": [[float(v) for v in row] for row in covariance],
        "shrinkage": round(float(shrink), 6),
        "threshold": threshold,
        "heldout_quantile": HELDOUT_QUANTILE,
        "calibration": {
            "train_cases": int(len(a)),
            "train_left_out": int(len(train) - len(a)),
            "heldout_cases": int(len(h)),
            "heldout_left_out": int(len(heldout) - len(h)),
            "train_distance_median": round(float(np.median(own)), 4),
            "heldout_distance_median": round(float(np.median(held)), 4),
            "heldout_distance_max": round(float(held.max()), 4),
            "heldout_above_threshold": int((held > threshold).sum()),
        },
        "source": dict(source or {}),
    }


def write_input_stats(folder: str | os.PathLike, stats: Mapping) -> Path:
    """Write ``input_stats.json`` into a checkpoint folder (atomically)."""
    return write_text_atomic(Path(folder) / STATS_FILE, json.dumps(stats, indent=1) + "\n")


def _finite_list(value, length: int) -> np.ndarray:
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"expected a list of {length} numbers")
    out = np.array(
        [float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan for v in value]
    )
    if not np.all(np.isfinite(out)):
        raise ValueError("holds a value that is not a finite number")
    return out


def load_input_stats(folder: str | os.PathLike | None, channels: int = 1) -> tuple[dict | None, str]:
    """``(stats, "")`` from a checkpoint folder's ``input_stats.json``, or ``(None, why not)``.

    The file is checked as untrusted input: size, format, feature names (another version's statistics are not
    used), finite numbers, a positive definite covariance. ``stats`` gains ``precision`` (the inverse
    covariance, as an array) and ``sha256`` (of the file's bytes, for report.json).
    """
    if not folder:
        return None, "the model has no checkpoint folder"
    path = Path(folder) / STATS_FILE
    if not path.is_file():
        return None, f"no {STATS_FILE} beside the weights (run braingemma3d calibrate)"
    try:
        if path.stat().st_size > MAX_STATS_BYTES:
            raise ValueError(f"larger than {MAX_STATS_BYTES} bytes")
        raw = path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict) or data.get("format") != STATS_FORMAT:
            raise ValueError(f"not a {STATS_FORMAT} file")
        if data.get("version") != STATS_VERSION:
            raise ValueError(f"version {data.get('version')!r}, this release reads {STATS_VERSION}")
        names = feature_names(channels)
        if data.get("features") != list(names):
            raise ValueError("its statistics are not the ones this release measures (recalibrate)")
        p = len(names)
        mean, scale = _finite_list(data.get("mean"), p), _finite_list(data.get("scale"), p)
        rows = data.get("covariance")
        if not isinstance(rows, list) or len(rows) != p:
            raise ValueError(f"covariance must be {p} x {p}")
        covariance = np.stack([_finite_list(row, p) for row in rows])
        if np.any(scale <= 0) or not np.allclose(covariance, covariance.T, atol=1e-9):
            raise ValueError("non-positive scale or asymmetric covariance")
        precision = np.linalg.inv(np.linalg.cholesky(covariance))  # fails unless positive definite
        precision = precision.T @ precision
        threshold = data.get("threshold")
        if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0 < threshold < 1e6:
            raise ValueError("threshold must be a positive number")
        grid = check_grid(data.get("grid") or ())
    except (OSError, UnicodeDecodeError, ValueError, TypeError, RecursionError, np.linalg.LinAlgError) as exc:
        problem = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return None, f"{STATS_FILE} is unusable ({problem})"
    return data | {
        "mean": mean,
        "scale": scale,
        "precision": precision,
        "threshold": float(threshold),
        "grid": list(grid),
        "sha256": sha256_bytes(raw),
    }, ""


def distance(features: Mapping[str, float], stats: Mapping) -> tuple[float, list[dict]]:
    """Mahalanobis distance of one case from the training scans, and its three most unusual statistics (z)."""
    x = np.array([float(features.get(k, math.nan)) for k in stats["features"]], dtype=np.float64)
    z = (x - stats["mean"]) / stats["scale"]
    unusual = [
        {"feature": stats["features"][i], "z": round(float(z[i]), 2) if np.isfinite(z[i]) else None}
        for i in np.argsort(-np.nan_to_num(np.abs(z), nan=np.inf))[:3]
    ]
    if not np.all(np.isfinite(z)):
        return math.inf, unusual
    return float(np.sqrt(max(float(z @ stats["precision"] @ z), 0.0))), unusual


# ------------------------------------------------------------------------------------------------------------
# The three questions
# ------------------------------------------------------------------------------------------------------------
def _head(features: Mapping[str, float]) -> dict:
    problems = []
    volume = math.exp(features["log_volume_ml"])
    if not HEAD_VOLUME_ML[0] <= volume <= HEAD_VOLUME_ML[1]:
        problems.append(
            f"foreground of {volume:.0f} mL, a head holds {HEAD_VOLUME_ML[0]:.0f}-{HEAD_VOLUME_ML[1]:.0f} mL"
        )
    keys = ("extent_si_mm", "extent_ap_mm", "extent_rl_mm")
    extents = {axis: features[key] for axis, key in zip(HEAD_EXTENT_MM, keys, strict=True)}
    for (
        axis,
        value,
    ) in extents.items():  # not measured (NaN) only for a foreground of a few voxels: said above
        lo, hi = HEAD_EXTENT_MM[axis]
        if np.isfinite(value) and not lo <= value <= hi:
            problems.append(f"{value:.0f} mm {axis}, a head spans {lo:.0f}-{hi:.0f} mm")
    outside = features["outside_ellipsoid"]
    if np.isfinite(outside) and outside > HEAD_MAX_OUTSIDE:
        problems.append(f"not head-shaped ({100 * outside:.0f} % of it outside its bounding ellipsoid)")
    correlation = features["neighbour_correlation"]
    if np.isfinite(correlation) and correlation < HEAD_MIN_CORRELATION:
        problems.append(f"no tissue structure (neighbouring voxels correlate {correlation:.2f}, like noise)")
    elif not np.isfinite(correlation) and np.isfinite(outside):
        problems.append("no tissue structure (one uniform intensity)")
    return {
        "ok": not problems,
        "volume_ml": round(volume, 1),
        "extent_mm": {k: round(v, 1) if np.isfinite(v) else None for k, v in extents.items()},
        "outside_ellipsoid": _rounded(outside),
        "neighbour_correlation": _rounded(correlation),
        "problems": problems,
    }


def _rounded(value: float, digits: int = 4) -> float | None:
    return round(float(value), digits) if np.isfinite(value) else None


def _sequence(meta: Mapping[str, str], features: Mapping[str, float], expected: str, head_ok: bool) -> dict:
    from_tags, evidence = sequence_from_tags(meta)
    ratio = features["deep_to_superficial"]
    volume = math.exp(features["log_volume_ml"])
    from_image = None
    if head_ok and np.isfinite(ratio) and volume <= BRAIN_ONLY_MAX_ML:
        from_image = "t1" if ratio >= T1_LIKE_RATIO else expected if expected in ("flair", "t2") else None
    result = {
        "expected": SEQUENCE_NAMES[expected],
        "image_statistic": {"white_matter_over_cortex": _rounded(ratio), "t1_like_from": T1_LIKE_RATIO},
    }
    if from_tags is not None:
        found, source = from_tags, "JSON sidecar" if meta.get("Sidecar") else "DICOM tags"
    elif from_image is not None:
        found, source = from_image, "image statistics"
        evidence = (
            f"white matter {ratio:.2f} times as bright as the cortex"
            if from_image == "t1"
            else f"cortex brighter than white matter (ratio {ratio:.2f})"
        )
    else:
        why = (
            "not a head"
            if not head_ok
            else "the volume includes the scalp"
            if volume > BRAIN_ONLY_MAX_ML
            else ""
        )
        return result | {
            "ok": None,
            "found": None,
            "source": None,
            "evidence": f"no DICOM sequence tags; not judged from the image{f' ({why})' if why else ''}",
        }
    # On the image alone FLAIR and T2 look alike (cortex over white matter): only a T1 look contradicts FLAIR.
    same = found == expected or (source == "image statistics" and found != "t1")
    return result | {
        "ok": bool(same),
        "found": SEQUENCE_NAMES.get(found, found)
        if not (same and source == "image statistics")
        else "FLAIR or T2-like",
        "source": source,
        "evidence": evidence,
    }


def check_input(study, model, *, grid: np.ndarray | None = None, mapping=None) -> dict:
    """The input check of one study for one loaded model (see the module docstring); plain JSON data.

    ``grid``/``mapping``: the draft's model grid when the caller has it; it is reused when it is our placement
    on the grid the statistics were measured on, else the study is placed again (milliseconds).
    Returns ``{"ok", "head", "sequence", "distribution", "warnings", "summary"}``.
    """
    cfg = model.cfg
    stats, why = load_input_stats(getattr(model, "checkpoint_path", None), cfg.in_channels)
    shape = tuple(stats["grid"]) if stats else tuple(cfg.grid)
    if grid is None or mapping is None or cfg.preprocess != "ours" or tuple(mapping.grid_shape) != shape:
        grid, mapping = study.to_model_grid(shape)
    features = image_features(grid, mapping.foreground, mapping.grid_spacing)
    head = _head(features)
    expected = EXPECTED_SEQUENCES.get(cfg.in_channels, ("flair",))[0]
    sequence = _sequence(study.meta, features, expected, head["ok"])
    if stats is None:
        distribution = {"ok": None, "status": "not calibrated", "note": why}
    else:
        d, unusual = distance(features, stats)
        distribution = {
            "ok": bool(d <= stats["threshold"]),
            "status": "calibrated",
            "distance": round(d, 3) if math.isfinite(d) else None,
            "threshold": round(stats["threshold"], 3),
            "most_unusual": unusual,
            "stats_file": STATS_FILE,
            "stats_sha256": stats["sha256"],
            "calibration": dict(stats.get("calibration") or {}),
        }
    warnings = []
    if not head["ok"]:
        problems = "; ".join(head["problems"])
        warnings.append(f"This volume does not look like a head MRI ({problems}): the draft is unreliable.")
    if sequence["ok"] is False:
        warnings.append(
            f"This scan looks like a {sequence['found']} image ({sequence['evidence']}, from the "
            f"{sequence['source']}), but the model reads {sequence['expected']}: the draft is unreliable."
        )
    if distribution["ok"] is False:
        how = (
            f"distance {distribution['distance']:.1f} from its training scans, calibrated limit "
            f"{distribution['threshold']:.1f}"
            if distribution["distance"] is not None
            else "its image statistics cannot be measured as on a brain"
        )
        warnings.append(
            f"This scan looks unlike the data this model was trained on ({how}): the draft is unreliable."
        )
    ok = head["ok"] and sequence["ok"] is not False and distribution["ok"] is not False
    return {
        "ok": bool(ok),
        "head": head,
        "sequence": sequence,
        "distribution": distribution,
        "grid": list(shape),
        "features": {k: _rounded(v, 5) for k, v in features.items()},
        "warnings": warnings,
        "summary": _summary(ok, head, sequence, distribution),
    }


def _summary(ok: bool, head: dict, sequence: dict, distribution: dict) -> str:
    """One line for the PDF and the panel: what was checked and how it came out."""
    parts = [
        f"head {'found' if head['ok'] else 'NOT found'} ({head['volume_ml']:.0f} mL)",
        (
            f"sequence {'as expected' if sequence['ok'] else 'NOT ' + sequence['expected']}: "
            f"{sequence['found']} ({sequence['source']})"
            if sequence["ok"] is not None
            else "sequence not judged"
        ),
    ]
    if distribution["ok"] is None:
        parts.append("training distribution not calibrated for this model")
    elif distribution["distance"] is None:
        parts.append("OUTSIDE the training distribution")
    else:
        parts.append(
            f"{'within' if distribution['ok'] else 'OUTSIDE'} the training distribution (distance "
            f"{distribution['distance']:.1f}, limit {distribution['threshold']:.1f})"
        )
    return f"{'passed' if ok else 'FAILED'}: " + "; ".join(parts)
