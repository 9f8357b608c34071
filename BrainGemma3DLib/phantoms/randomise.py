"""Domain randomisation of phantoms: so that a model trained on them cannot rely on one template's look.

A model trained on phantoms of one template and one contrast model learns that template and that contrast:
anything else looks abnormal to it (the first demo weights called 10 of 12 healthy brains of another template
tumours). The field's answer for models trained on synthetic data is domain randomisation (SynthSeg, Billot
et al. 2023): every case draws its own tissue intensities, shape, resolution and artefacts, so that the one
thing all training cases share is what the labels mean. Here, per case:

- tissue intensities: a level per tissue relative to the case's own white matter, drawn around a FLAIR-like
  prior (grey matter brighter than white matter, CSF dark, oedema and tumour brighter than the brighter of
  the two) but wide enough that no absolute value or fixed ratio can be learned, with a random within-tissue
  texture strength;
- shape: a random affine (rotation up to 10 degrees, per-axis scaling 0.85-1.15) and a smooth elastic
  deformation (a few millimetres) of the whole head, lesion included;
- acquisition: a random multiplicative bias field, noise level and blur; a skull and scalp shell or none
  (skull-stripped); a partial field of view (top or bottom slab missing) that never cuts the lesion; and the
  storage variants (RAS, LPS, thick slices, oblique) drawn more evenly.

The truth is measured on the drawn lesion as before (hemisphere, lobes and findings do not change under
these smooth transformations); the lesion centre in the stored world is re-measured after the deformation.
Everything is drawn from the case's own random stream: the same seed gives the same files.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .anatomy import Anatomy

#: FLAIR-like prior of the normal tissues' levels relative to the case's white matter: (low, high) of a
#: uniform draw.
LEVELS_VS_WM = {
    "gm": (0.95, 1.75),
    "csf": (0.05, 0.6),
    "necrosis": (0.5, 1.6),
}
#: The bright lesion tissues' levels relative to the brighter of the case's white and grey matter. Why not to
#: white matter alone: with grey matter drawn up to 1.75 x white matter, a core drawn at 1.1 x white matter
#: is darker than the cortex around it, so small lesions without oedema were drawn invisible yet labelled
#: "lesion"; a model trained on them learned to miss such lesions (6 of 8 side errors on our held-out
#: phantoms were missed small lesions without oedema; docs/results.md, "Unfamiliar brains").
LESION_VS_BRIGHTEST = {
    "edema": (1.3, 2.4),
    "tumour": (1.15, 2.0),
    "enhancing": (1.1, 2.0),
}
#: Storage variants and how often each is drawn for randomised cases (ras, lps, clinical, oblique).
STORAGE_WEIGHTS = (0.3, 0.25, 0.25, 0.2)
MAX_ROTATION_DEG = 10.0
SCALE_RANGE = (0.85, 1.15)
MAX_ELASTIC_MM = 4.0
#: Thickness range (mm) of the slab a partial field of view leaves out, top or bottom.
FOV_CUT_MM = (8.0, 25.0)


def draw_signal(rng: np.random.Generator) -> tuple[dict[str, tuple[float, ...]], float]:
    """A FLAIR signal table for one case (the renderer's ``SIGNAL`` layout) and its texture strength."""
    wm = float(rng.uniform(0.3, 0.7))
    levels = {name: wm * float(rng.uniform(*bounds)) for name, bounds in LEVELS_VS_WM.items()}
    brightest = max(wm, levels["gm"])
    levels |= {name: brightest * float(rng.uniform(*b)) for name, b in LESION_VS_BRIGHTEST.items()}
    flair = (wm, levels["gm"], levels["csf"], levels["edema"], levels["tumour"], levels["enhancing"],
             levels["necrosis"])  # fmt: skip
    return {"flair": flair}, float(rng.uniform(0.03, 0.16))


_OUTSIDE: dict[int, np.ndarray] = {}


def _outside_brain_mm(anat: Anatomy) -> np.ndarray:
    """Distance (mm) of each voxel from the brain: where a skull and scalp shell goes (once per anatomy)."""
    if id(anat) not in _OUTSIDE:
        _OUTSIDE[id(anat)] = (ndimage.distance_transform_edt(anat.brain < 0.5) * anat.spacing).astype(
            np.float32
        )
    return _OUTSIDE[id(anat)]


def add_skull(image: np.ndarray, anat: Anatomy, rng: np.random.Generator) -> bool:
    """A skull and scalp shell around the brain, in place, or nothing (skull-stripped); True if added."""
    if rng.random() < 0.5:
        return False
    distance = _outside_brain_mm(anat)
    inner = float(rng.uniform(1.5, 4.0))
    bone = (distance > inner) & (distance <= inner + float(rng.uniform(3.0, 7.0)))
    scalp = (distance > inner) & ~bone & (distance <= inner + float(rng.uniform(9.0, 14.0)))
    brain_level = float(np.median(image[anat.brain > 0.5])) if (anat.brain > 0.5).any() else 1000.0
    for mask, (lo, hi) in ((bone, (0.02, 0.35)), (scalp, (0.4, 1.6))):
        noise = 1.0 + 0.1 * rng.standard_normal(int(mask.sum())).astype(np.float32)
        image[mask] = np.clip(brain_level * float(rng.uniform(lo, hi)) * noise, 0, 32767)
    return True


def deform(
    image: np.ndarray, labels: np.ndarray | None, anat: Anatomy, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Random affine + smooth elastic deformation about the brain's centre, on the anatomy grid.

    The image is resampled linearly, the labels by nearest neighbour (they stay the lesion's own labels).
    Returns the new image, labels and what was drawn.
    """
    shape = image.shape
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    scales = rng.uniform(*SCALE_RANGE, 3)
    forward = rotation @ np.diag(scales)  # source -> output, about the centre (voxel units: isotropic grid)
    inverse = np.linalg.inv(forward)
    centre = np.argwhere(anat.brain > 0.5).mean(axis=0) if (anat.brain > 0.5).any() else np.array(shape) / 2
    amplitude = float(rng.uniform(0.0, MAX_ELASTIC_MM)) / anat.spacing
    coarse = rng.standard_normal((3, 5, 5, 5)).astype(np.float32) * amplitude
    zoom = [s / 5.0 for s in shape]
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1) - centre[:, None].astype(np.float32)
    source = (inverse.astype(np.float32) @ grid) + centre[:, None].astype(np.float32)
    for d in range(3):
        source[d] += ndimage.zoom(coarse[d], zoom, order=1, grid_mode=True, mode="nearest").reshape(-1)
    coords = source.reshape(3, *shape)
    moved = ndimage.map_coordinates(image.astype(np.float32), coords, order=1, mode="constant", cval=0.0)
    moved_labels = None
    if labels is not None:
        moved_labels = ndimage.map_coordinates(labels, coords, order=0, mode="constant", cval=0).astype(
            np.uint8
        )
    drawn = {
        "rotation_deg": round(float(np.degrees(angle)), 2),
        "rotation_axis": [round(float(a), 4) for a in axis],
        "scales": [round(float(s), 4) for s in scales],
        "elastic_mm": round(amplitude * anat.spacing, 2),
    }
    return moved, moved_labels, drawn


def acquisition(image: np.ndarray, rng: np.random.Generator, spacing: float) -> dict:
    """Blur, bias field and noise, in place on the non-zero voxels; returns what was drawn."""
    blur_mm = float(rng.uniform(0.0, 1.5))
    if blur_mm > 0.2:
        image[...] = ndimage.gaussian_filter(image, blur_mm / spacing)
    foreground = image > 0
    t = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in image.shape]
    strength = float(rng.uniform(0.0, 0.35))
    field = np.ones(image.shape, dtype=np.float32)
    for d, axis_t in enumerate(t):
        c1, c2 = rng.uniform(-1.0, 1.0, 2)
        profile = 1.0 + strength * (c1 * axis_t + c2 * (axis_t**2 - 1.0 / 3.0))
        field *= profile.reshape([-1 if i == d else 1 for i in range(3)])
    noise = float(rng.uniform(0.005, 0.06))
    level = float(np.median(image[foreground])) if foreground.any() else 0.0
    noisy = image * field + level * noise * rng.standard_normal(image.shape).astype(np.float32)
    image[...] = np.where(foreground, np.clip(noisy, 0, 32767), 0)
    return {"blur_mm": round(blur_mm, 2), "bias": round(strength, 3), "noise": round(noise, 4)}


def cut_field_of_view(
    image: np.ndarray, labels: np.ndarray | None, rng: np.random.Generator, spacing: float
) -> dict:
    """Leave out a top or bottom slab (partial coverage), in place, never through the lesion."""
    if rng.random() < 0.7:
        return {}
    rows = np.flatnonzero(image.any(axis=(0, 1)))  # the axial slices (k, inferior -> superior) with head
    if rows.size == 0:
        return {}
    depth = int(round(float(rng.uniform(*FOV_CUT_MM)) / spacing))
    top = bool(rng.random() < 0.5)
    cut = slice(rows[-1] - depth + 1, None) if top else slice(None, rows[0] + depth)
    if labels is not None and labels[:, :, cut].any():
        return {}
    image[:, :, cut] = 0
    return {"fov_cut": "top" if top else "bottom", "fov_cut_mm": round(depth * spacing, 1)}


#: Truth keys that are volumes (scaled by the deformation's volume change) and lengths along x.
_VOLUME_KEYS = ("tumour_volume_ml", "necrosis_volume_ml", "enhancing_volume_ml", "edema_volume_ml",
                "whole_tumour_volume_ml")  # fmt: skip


def randomise_case(
    image: np.ndarray, labels: np.ndarray | None, anat: Anatomy, truth: dict, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Skull, deformation, acquisition and field of view for one rendered FLAIR on the anatomy grid.

    Returns the new image (int16), labels and truth: volumes follow the deformation's volume change, the
    midline shift its x scaling, and ``centre_world_mm`` is the deformed lesion's centroid.
    """
    work = image.astype(np.float32)
    skull = add_skull(work, anat, rng)
    work, labels, drawn = deform(work, labels, anat, rng)
    drawn |= acquisition(work, rng, anat.spacing)
    drawn |= cut_field_of_view(work, labels, rng, anat.spacing)
    drawn["skull"] = skull
    truth = dict(truth)
    factor = float(np.prod(drawn["scales"]))
    for key in _VOLUME_KEYS:
        if key in truth:
            truth[key] = round(float(truth[key]) * factor, 2)
    if "midline_shift_mm" in truth:
        truth["midline_shift_mm"] = round(float(truth["midline_shift_mm"]) * drawn["scales"][0], 1)
    if labels is not None and labels.any():
        centroid = np.argwhere(labels > 0).mean(axis=0)
        truth["centre_world_mm"] = [round(float(v), 1) for v in anat.world(centroid)]
    truth["randomisation"] = drawn
    return np.clip(work, 0, 32767).astype(np.int16), labels, truth
