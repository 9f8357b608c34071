"""A brain tumour placed into the template: shape, sub-regions, mass effect, and the truth derived from it.

The lesion is drawn first and the truth (hemisphere, lobes, findings, volumes, midline shift, ventricular
compression) is then *measured* on what was drawn, never assumed from the sampling choices, so a report
written from the truth always describes the image.

Everything happens in a box around the lesion, so a case costs a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..anatomy.atlas import LOBE_CODE, LOBES
from ..anatomy.places import lobe_shares, named_lobes, side_from_share
from .anatomy import Anatomy

#: BraTS 2020 segmentation labels.
NECROTIC_CORE, EDEMA, ENHANCING = 1, 2, 4

#: Ventricular compression is present when the ventricle near the lesion (ipsilateral part inside the lesion's
#: box) loses at least this fraction of its volume, and there was at least MIN_VENTRICLE_ML of it before.
COMPRESSION_LOSS = 0.15
MIN_VENTRICLE_ML = 0.5


@dataclass
class Lesion:
    """Tissue maps inside ``box`` after mass effect, the BraTS labelmap there, and the measured truth."""

    box: tuple[slice, slice, slice]
    tissue: dict[str, np.ndarray]  # gm, wm, csf, brain, ventricles (box-shaped, warped)
    labels: np.ndarray  # uint8, box-shaped: 0, 1 necrosis/non-enhancing core, 2 edema, 4 enhancing
    necrosis: np.ndarray  # bool, box-shaped (necrosis inside label 1)
    truth: dict


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 5) -> np.ndarray:
    """Low-frequency noise in about [-1, 1] on ``shape`` (irregular tumour borders)."""
    small = rng.standard_normal((coarse, coarse, coarse)).astype(np.float32)
    zoomed = ndimage.zoom(small, [s / coarse for s in shape], order=1, grid_mode=True, mode="grid-mirror")
    return zoomed[: shape[0], : shape[1], : shape[2]] / 1.5


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _pick_centre(
    anat: Anatomy, rng: np.random.Generator, lobe: str, side: str, midline: bool, near_ventricle: float | None
) -> np.ndarray:
    """A white-matter voxel in the requested lobe and hemisphere (or near the midline, above the ventricles).

    ``near_ventricle`` (mm) restricts the choice to periventricular white matter, where tumours compress
    the ventricles; without it, most tumours would sit far out in the lobes and compression would be rare.
    """
    x = anat.x_mm[:, None, None]
    # Relax the white-matter threshold, then (if still nothing) drop the periventricular restriction.
    attempts = [(w, near_ventricle) for w in (0.6, 0.4, 0.2)]
    if near_ventricle is not None:
        attempts += [(w, None) for w in (0.6, 0.4, 0.2)]
    for wm_min, within in attempts:
        if midline:
            ok = (
                (np.abs(x) < 4)
                & (anat.wm > wm_min)
                & np.isin(anat.lobe, (LOBE_CODE["frontal"], LOBE_CODE["parietal"], 0))
            )
            ok &= anat.brain > 0.9
            k0 = int(round((12.0 - anat.affine[2, 3]) / anat.spacing))  # above z = 12 mm (corpus callosum)
            ok[:, :, :k0] = False
        else:
            hemi = (x < -10) if side == "left" else (x > 10)
            ok = (anat.lobe == LOBE_CODE[lobe]) & (anat.wm > wm_min) & hemi
            if within is not None:
                ok &= anat.ventricle_dist < within
        candidates = np.argwhere(ok)
        if len(candidates):
            return candidates[rng.integers(len(candidates))].astype(np.float64)
    raise RuntimeError(f"no white matter found for lobe={lobe} side={side}")


def place_lesion(anat: Anatomy, rng: np.random.Generator) -> Lesion:
    """Draw one tumour with random location, size, shape and findings; measure its truth."""
    sp = anat.spacing
    midline = rng.random() < 0.08
    lobe = str(rng.choice(("frontal", "parietal") if midline else LOBES))
    side = str(rng.choice(("left", "right")))
    radius = float(rng.uniform(14.0, 21.0) if midline else rng.uniform(7.0, 21.0))  # core radius, mm
    near = radius + float(rng.uniform(5.0, 15.0)) if rng.random() < 0.5 else None
    centre = _pick_centre(anat, rng, lobe, side, midline, near)

    axes = radius * np.exp(rng.uniform(-0.2, 0.2, 3))
    rot = _random_rotation(rng)
    has_necrosis = bool(rng.random() < (0.85 if radius > 12 else 0.45))
    has_enhancement = bool(rng.random() < 0.8)
    has_edema = bool(rng.random() < 0.88)
    edema_factor = float(rng.uniform(1.45, 2.4)) if has_edema else 1.0
    push = float(rng.uniform(0.5, 1.0)) * radius  # mass-effect displacement at the tumour border, mm

    half = axes.max() * edema_factor * 1.3 + 18.0
    lo = np.maximum(np.floor(centre - half / sp), 0).astype(int)
    hi = np.minimum(np.ceil(centre + half / sp) + 1, anat.shape).astype(int)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    bshape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))

    # Offsets from the centre in mm (RAS-aligned, the working grid is RAS).
    grids = np.ogrid[tuple(slice(0, n) for n in bshape)]
    d = [((g + lo[a] - centre[a]) * sp).astype(np.float32) for a, g in enumerate(grids)]
    dist = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2)

    # Mass effect: tissue pushed radially outwards, falling off as (R/r)^3 (which compresses what it pushes,
    # unlike the volume-preserving (R/r)^2), faded out before the box edge.
    window = np.ones(bshape, dtype=np.float32)
    for a in range(3):
        edge_lo = (grids[a] + 0.0) * sp
        edge_hi = (bshape[a] - 1 - grids[a]) * sp
        window = window * np.clip(np.minimum(edge_lo, edge_hi) / 12.0, 0.0, 1.0)
    magnitude = push * (radius / np.maximum(dist, radius)) ** 3 * window
    scale = np.where(dist > 1e-3, magnitude / np.maximum(dist, 1e-3), 0.0)
    coords = [(grids[a] + lo[a]) - d[a] * scale / sp for a in range(3)]  # backward map, voxel units
    coords = np.stack([np.broadcast_to(c, bshape) for c in coords]).astype(np.float32)
    tissue = {}
    for name in ("gm", "wm", "csf", "brain", "ventricles"):
        tissue[name] = ndimage.map_coordinates(getattr(anat, name), coords, order=1, mode="nearest")
    # Effacement: within the pressure zone around the mass, ventricular CSF is squeezed out (the ventricle
    # narrows or closes), and the space is taken by the pushed white matter.
    effaced = tissue["ventricles"] * (1.0 - np.clip((dist - radius) / (2.0 * push), 0.0, 1.0))
    tissue["ventricles"] = tissue["ventricles"] - effaced
    tissue["csf"] = np.clip(tissue["csf"] - effaced, 0.0, 1.0)
    tissue["wm"] = tissue["wm"] + effaced

    # Tumour core (ellipsoid with irregular border), necrosis inside it, edema around it along white matter.
    local = np.stack(np.broadcast_arrays(*d), axis=-1) @ rot  # (..., 3) in the tumour's own axes
    shape_noise = _smooth_noise(rng, bshape)
    r_core = np.linalg.norm(local / axes, axis=-1) * (1.0 + 0.18 * shape_noise)
    inside_brain = tissue["brain"] > 0.5
    core = (r_core < 1.0) & inside_brain
    necrosis = core & (r_core < float(rng.uniform(0.45, 0.7))) if has_necrosis else np.zeros_like(core)
    if has_edema:
        r_edema = np.linalg.norm(local / (axes * edema_factor), axis=-1) * (
            1.0 + 0.3 * _smooth_noise(rng, bshape)
        )
        edema = (r_edema < 1.0) & inside_brain & ((tissue["wm"] > 0.3) | (r_core < 1.35)) & ~core
    else:
        edema = np.zeros_like(core)
    labels = np.zeros(bshape, dtype=np.uint8)
    labels[edema] = EDEMA
    labels[core] = ENHANCING if has_enhancement and not has_necrosis else NECROTIC_CORE
    if has_enhancement and has_necrosis:
        labels[core & ~necrosis] = ENHANCING
    displacement_x = np.broadcast_to(d[0] * scale, bshape)  # tissue displacement along x, mm
    truth = _measure(anat, box, labels, necrosis, tissue, centre, has_enhancement, displacement_x)
    return Lesion(box=box, tissue=tissue, labels=labels, necrosis=necrosis, truth=truth)


def _measure(anat: Anatomy, box, labels, necrosis, tissue, centre, has_enhancement, displacement_x) -> dict:
    """Truth measured on the drawn lesion: where it is, what it contains, what it does to the ventricles."""
    ml = anat.spacing**3 / 1000.0
    whole = labels > 0
    core = (labels == NECROTIC_CORE) | (labels == ENHANCING)
    x_box = anat.x_mm[box[0]][:, None, None]
    left_share = float((whole & (x_box < 0)).sum() / max(whole.sum(), 1))
    hemisphere = side_from_share(left_share)  # the rule that names places everywhere (anatomy.places)
    shares = lobe_shares(anat.lobe[box][whole])
    lobes = named_lobes(shares)
    if not lobes:
        lobes = [max(shares, key=lambda n: shares[n])]

    # Ventricular compression: ipsilateral (or both, when bilateral) ventricle volume before vs after.
    x_all = anat.x_mm[:, None, None]
    sides = {"left": x_all < 0, "right": x_all >= 0}
    involved = ("left", "right") if hemisphere == "bilateral" else (hemisphere,)
    before_total = sum(float(anat.ventricles[sides[s][:, 0, 0]].sum()) for s in involved)
    side_box = np.zeros(labels.shape, dtype=bool)
    for s in involved:
        side_box |= np.broadcast_to(sides[s][box[0]], labels.shape)
    before_box = float(anat.ventricles[box][side_box].sum())
    after_box = float((tissue["ventricles"] * ~whole)[side_box].sum())
    after_total = before_total - before_box + after_box
    ventricle_ratio = after_total / max(before_total, 1e-6)
    local_ratio = after_box / max(before_box, 1e-6)
    compressed = before_box * ml >= MIN_VENTRICLE_ML and local_ratio <= 1.0 - COMPRESSION_LOSS

    # Midline shift: the lateral displacement of brain tissue on the midline plane (x = 0), which for a
    # lesion in one hemisphere pushes the septum and falx towards the other side.
    shift = 0.0
    i0 = int(round(-anat.affine[0, 3] / anat.spacing)) - box[0].start
    if hemisphere != "bilateral" and 0 <= i0 < labels.shape[0]:
        on_plane = (anat.brain[box][i0] > 0.5) & ~whole[i0]
        if on_plane.any():
            shift = float(np.abs(displacement_x[i0][on_plane]).max())

    return {
        "healthy": False,
        "hemisphere": hemisphere,
        "lobes": lobes,
        "lobe_shares": {k: round(v, 3) for k, v in shares.items()},
        "findings": {
            "edema": bool((labels == EDEMA).sum() * ml >= 0.5),
            "necrosis": bool(necrosis.sum() * ml >= 0.2),
            "enhancement": bool(has_enhancement and (labels == ENHANCING).sum() * ml >= 0.2),
            "mass_effect": bool(compressed),
        },
        "tumour_volume_ml": round(float(core.sum()) * ml, 2),
        "necrosis_volume_ml": round(float(necrosis.sum()) * ml, 2),
        "enhancing_volume_ml": round(float((labels == ENHANCING).sum()) * ml, 2),
        "edema_volume_ml": round(float((labels == EDEMA).sum()) * ml, 2),
        "whole_tumour_volume_ml": round(float(whole.sum()) * ml, 2),
        "ventricle_volume_ratio": round(float(ventricle_ratio), 3),
        "local_ventricle_ratio": round(float(local_ratio), 3),
        "midline_shift_mm": round(shift, 1),
        "left_share": round(left_share, 3),
        "centre_mni_mm": [round(float(v), 1) for v in anat.world(centre)],
    }
