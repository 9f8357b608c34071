"""Where the image evidence is: the side of the brain that holds the positive attribution mass.

The one clinical error this product exists to prevent is a left/right flip, so every report carries where its
evidence lies: :func:`attribution_side` measures on which side of the brain's mid-sagittal line the positive
attribution mass lies, in patient (RAS) coordinates through the grid's affine, never from array indices.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..io.volume import GridMapping

__all__ = ["BILATERAL_MIN_FRACTION", "COMPACT_RADIUS_MM", "attribution_side"]

#: Attribution is "bilateral" when each side holds at least this share of the positive mass.
BILATERAL_MIN_FRACTION = 0.35
#: "Compact" evidence: the share of the positive attribution mass within this distance of the strongest
#: region. A lesion is a compact thing; evidence spread over the brain means the model did not find one.
COMPACT_RADIUS_MM = 25.0


def _x_axis(grid_affine: np.ndarray) -> int:
    """The grid axis that runs most nearly along the patient's right-left (world x) direction."""
    row = np.abs(np.asarray(grid_affine, dtype=np.float64)[0, :3])
    if not row.any():
        raise ValueError("the grid affine has no right-left component; cannot tell left from right")
    return int(np.argmax(row))


def _midline_x(brain: np.ndarray, mapping: GridMapping) -> float:
    """World x (mm) of the brain's mid-sagittal line: weighted median of the mask's row midpoints.

    Why this estimate: the outline of the brain (or head) is mirror-symmetric about the mid-sagittal plane,
    so the midpoint of each right-left row of the mask lies on it, whatever the brain's position on the grid.
    A lesion, necrosis or mass effect changes the inside of the filled mask, not its outline.  The median
    ignores rows spoilt by a field of view that cuts the head, by the neck or by noise, where the mask's
    centre of mass along x would be pulled toward the larger side; weighting by row length lets the wide
    central rows outvote the short, unreliable ones at the vertex and skull base.  One x for the whole
    brain: a head tilted by a few degrees moves the true plane by a few mm away from the centre, which only
    matters for evidence near the midline, and that is counted as bilateral anyway.
    """
    k = _x_axis(mapping.grid_affine)
    rows = np.moveaxis(brain, k, -1)  # (P, Q, N): each [p, q] is one row along the right-left axis
    n = rows.shape[-1]
    has = rows.any(axis=-1)
    first = rows.argmax(axis=-1)
    last = n - 1 - rows[..., ::-1].argmax(axis=-1)
    p, q = np.nonzero(has)
    others = [axis for axis in range(3) if axis != k]
    index = np.zeros((p.size, 3), dtype=np.float64)
    index[:, others[0]], index[:, others[1]] = p, q
    ends = []
    for along in (first[p, q], last[p, q]):
        index[:, k] = along
        ends.append(mapping.grid_to_world(index)[:, 0])
    mid = (ends[0] + ends[1]) / 2.0
    weight = (last[p, q] - first[p, q] + 1).astype(np.float64)
    order = np.argsort(mid)
    cumulative = np.cumsum(weight[order])
    return float(mid[order][np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def _peak_ras(positive: np.ndarray, mapping: GridMapping) -> list[float]:
    """RAS centre of the strongest region: LIME maps are constant per supervoxel, so the single arg-max
    voxel would be an arbitrary corner of the top supervoxel; its connected plateau's centroid is not."""
    top = positive >= positive.max() * (1.0 - 1e-6)
    labels, _ = ndimage.label(top)
    label = labels.flat[int(np.argmax(positive))]
    centre = np.argwhere(labels == label).mean(axis=0)
    return [round(float(v), 2) for v in mapping.grid_to_world(centre)]


def attribution_side(attribution: np.ndarray, mapping: GridMapping, brain: np.ndarray | None = None) -> dict:
    """On which side of the patient's brain the positive attribution mass lies.

    ``attribution`` is a float map on the model grid ``(D, H, W)`` (e.g. ``Explanation.attribution_map()``);
    only its positive part inside ``brain`` (default: ``mapping.foreground``; the whole grid if that is
    empty) counts, since positive weights are the voxels that made the model *more* likely to write its text.
    Each voxel's side comes from its world (RAS) x coordinate through ``mapping.grid_affine`` compared with
    the mid-sagittal line's x (see :func:`_midline_x`), never from its array index, so the answer is right
    for any grid direction and any brain position.  RAS x grows toward the patient's *right*.

    Returns ``{"side": "left"|"right"|"bilateral"|"none", "left_fraction", "right_fraction",
    "lateralisation" ((L-R)/(L+R), +1 all left, -1 all right), "peak_ras" ([x, y, z] mm of the strongest
    region, None without positive mass), "midline_ras_x", "compact_fraction" (share of the positive mass
    within :data:`COMPACT_RADIUS_MM` of the strongest region)}``; "bilateral" when each side holds at least
    :data:`BILATERAL_MIN_FRACTION` of the mass.
    """
    att = np.asarray(attribution, dtype=np.float64)
    shape = tuple(int(s) for s in mapping.grid_shape)
    if att.shape != shape:
        raise ValueError(f"attribution shape {att.shape} is not the grid shape {shape}")
    mask = np.asarray(mapping.foreground if brain is None else brain, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"brain mask shape {mask.shape} is not the grid shape {shape}")
    if not mask.any():
        mask = np.ones(shape, dtype=bool)
    midline = _midline_x(mask, mapping)
    positive = np.where(mask & np.isfinite(att) & (att > 0), att, 0.0)
    total = float(positive.sum())
    if not total > 0:
        return {
            "side": "none",
            "left_fraction": 0.0,
            "right_fraction": 0.0,
            "lateralisation": 0.0,
            "peak_ras": None,
            "midline_ras_x": round(midline, 2),
            "compact_fraction": 0.0,
        }
    world = mapping.world_coordinates()
    x = world[..., 0]
    peak = _peak_ras(positive, mapping)
    near = np.linalg.norm(world - np.asarray(peak), axis=-1) <= COMPACT_RADIUS_MM
    left = float(positive[x < midline].sum())  # RAS: smaller x = patient's left
    right = float(positive[x > midline].sum())
    on_line = total - left - right  # voxels exactly on the midline count half to each side
    left, right = left + on_line / 2.0, right + on_line / 2.0
    left_fraction, right_fraction = left / total, right / total
    if min(left_fraction, right_fraction) >= BILATERAL_MIN_FRACTION:
        side = "bilateral"
    else:
        side = "left" if left_fraction > right_fraction else "right"
    return {
        "side": side,
        "left_fraction": round(left_fraction, 4),
        "right_fraction": round(right_fraction, 4),
        "lateralisation": round((left - right) / total, 4),
        "peak_ras": peak,
        "midline_ras_x": round(midline, 2),
        "compact_fraction": round(float(positive[near].sum()) / total, 4),
    }
