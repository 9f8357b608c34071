"""MR contrasts from tissue maps: FLAIR, T1, T1ce and T2 with plausible relative intensities.

Relative signal levels follow the textbook appearance of each sequence (e.g. CSF dark on FLAIR and T1,
bright on T2; white matter brighter than grey on T1; edema bright on FLAIR and T2; the enhancing rim
bright only after contrast, on T1ce; necrosis dark on T1/T1ce, bright on T2).  Each case jitters them
and adds a smooth bias field and Rician noise, so no two cases share exact intensities.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SEQUENCES = ("flair", "t1", "t1ce", "t2")

#: Relative signal per tissue and sequence (white matter on T1 ~ 0.8).
SIGNAL = {
    #          wm    gm    csf   edema tumour enhancing necrosis
    "flair": (0.45, 0.60, 0.08, 0.95, 0.80, 0.75, 0.40),
    "t1": (0.80, 0.55, 0.20, 0.45, 0.45, 0.50, 0.25),
    "t1ce": (0.80, 0.57, 0.20, 0.47, 0.48, 1.15, 0.22),
    "t2": (0.40, 0.60, 1.00, 0.85, 0.75, 0.70, 0.95),
}
_TISSUES = ("wm", "gm", "csf", "edema", "tumour", "enhancing", "necrosis")

#: Integer scale of the written images (BraTS files hold values in the hundreds to thousands).
INTENSITY_SCALE = 1000.0


def _bias_profiles(rng: np.random.Generator, shape: tuple[int, ...], strength: float) -> list[np.ndarray]:
    """Per-axis factors of a smooth multiplicative field (separable quadratic), like coil inhomogeneity."""
    profiles = []
    for n in shape:
        t = np.linspace(-1.0, 1.0, n, dtype=np.float32)
        c1, c2 = rng.uniform(-1.0, 1.0, 2)
        profiles.append((1.0 + strength * (c1 * t + c2 * (t**2 - 1.0 / 3.0))).astype(np.float32))
    return profiles


def render(
    tissue: dict[str, np.ndarray],
    lesion_masks: dict[str, np.ndarray],
    rng: np.random.Generator,
    sequences: tuple[str, ...] = SEQUENCES,
    *,
    signal: dict[str, tuple[float, ...]] | None = None,
    texture_strength: float = 0.08,
) -> dict[str, np.ndarray]:
    """Images (int16, background exactly 0 as in skull-stripped BraTS) for each sequence.

    ``tissue`` holds full-volume gm/wm/csf/brain maps; ``lesion_masks`` holds soft (0..1) full-volume maps
    for edema, tumour (non-enhancing core), enhancing and necrosis (absent keys mean none).  Signal is only
    computed on brain voxels (about a third of the grid), which keeps a case well under a second.

    Sequences left out of ``sequences`` still consume their share of ``rng`` (cheaply), so the images that
    are rendered are exactly those a full render gives: a FLAIR-only training set matches the full one.
    ``signal`` replaces rows of :data:`SIGNAL` and ``texture_strength`` the within-tissue texture (domain
    randomisation draws both per case).
    """
    unknown = [s for s in sequences if s not in SIGNAL]
    if unknown:
        raise ValueError(f"unknown sequence(s) {unknown}; choose from {SEQUENCES}")
    shape = tissue["brain"].shape
    idx = np.flatnonzero(tissue["brain"] > 0.5)
    coords = np.unravel_index(idx, shape)
    n = idx.size
    gm, wm, csf = (tissue[k].ravel()[idx] for k in ("gm", "wm", "csf"))
    total = np.maximum(gm + wm + csf, 1e-3)
    gm, wm, csf = gm / total, wm / total, csf / total
    texture = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 1.0).ravel()[idx]
    texture *= texture_strength
    lesion_texture = 1.0 + 0.6 * texture
    masks = {k: v.ravel()[idx] for k, v in lesion_masks.items() if v is not None}
    noise_level = float(rng.uniform(0.012, 0.035))
    images = {}
    for seq in SEQUENCES:
        jitter = rng.uniform(0.93, 1.07, len(_TISSUES))
        if seq not in sequences:
            _skip_draws(rng, shape, n)
            continue
        table = (signal or {}).get(seq, SIGNAL[seq])
        levels = dict(zip(_TISSUES, np.asarray(table) * jitter, strict=True))
        img = (wm * levels["wm"] + gm * levels["gm"] + csf * levels["csf"]) * (1.0 + texture)
        for name in ("edema", "tumour", "enhancing", "necrosis"):
            if name in masks:
                img += masks[name] * (levels[name] * lesion_texture - img)
        px, py, pz = _bias_profiles(rng, shape, float(rng.uniform(0.05, 0.15)))
        img *= px[coords[0]] * py[coords[1]] * pz[coords[2]]
        sigma = noise_level * 0.6
        real = img + sigma * rng.standard_normal(n, dtype=np.float32)
        imag = sigma * rng.standard_normal(n, dtype=np.float32)
        out = np.zeros(int(np.prod(shape)), dtype=np.int16)
        out[idx] = np.clip(np.sqrt(real * real + imag * imag) * INTENSITY_SCALE, 0, 32767)
        images[seq] = out.reshape(shape)
    return images


def _skip_draws(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> None:
    """Consume exactly the random numbers one sequence's bias field and noise would have used."""
    _bias_profiles(rng, shape, float(rng.uniform(0.05, 0.15)))
    rng.standard_normal(n, dtype=np.float32)
    rng.standard_normal(n, dtype=np.float32)


#: The held-out contrast: FLAIR-like grey levels as a function of the T1 value relative to white matter
#: (CSF dark, grey matter brightest, white matter in between), piecewise linear through these points.
OTHER_FLAIR_CURVE = ((0.0, 0.03), (0.4, 0.1), (0.62, 0.6), (0.78, 0.52), (1.0, 0.42), (1.3, 0.42))
#: Lesion levels of the held-out contrast, relative to its white matter.
OTHER_LESION_VS_WM = {"edema": 1.9, "tumour": 1.65, "enhancing": 1.55, "necrosis": 0.95}


def render_other(
    t1: np.ndarray,
    tissue: dict[str, np.ndarray],
    lesion_masks: dict[str, np.ndarray],
    rng: np.random.Generator,
    lesion_box: tuple | None = None,
) -> np.ndarray:
    """A FLAIR-like image by another contrast model than :func:`render`: grey levels mapped from the
    template's own T1 intensities (its real texture, no synthetic one), for the held-out brain only.

    Inside the lesion's box, where the lesion pushed tissue aside, the T1 value is rebuilt from the tissue
    maps. Lesions are painted relative to the case's white matter; then a bias field and Rician noise.
    """
    brain = tissue["brain"] > 0.5
    pseudo_t1 = np.where(brain, t1 * 1.2, 0.0).astype(np.float32)  # back to "relative to the WM peak"
    if lesion_box is not None:
        rebuilt = tissue["wm"] * 1.0 + tissue["gm"] * 0.7 + tissue["csf"] * 0.3
        pseudo_t1[lesion_box] = rebuilt[lesion_box]
    xs, ys = zip(*OTHER_FLAIR_CURVE, strict=True)
    img = np.interp(pseudo_t1, xs, ys).astype(np.float32)
    wm_level = float(np.interp(1.0, xs, ys))
    for name, level in OTHER_LESION_VS_WM.items():
        mask = lesion_masks.get(name)
        if mask is not None:
            img += mask * (level * wm_level - img)
    px, py, pz = _bias_profiles(rng, img.shape, float(rng.uniform(0.05, 0.2)))
    img *= px[:, None, None] * py[None, :, None] * pz[None, None, :]
    sigma = float(rng.uniform(0.01, 0.03))
    real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    out = np.sqrt(real * real + imag * imag) * INTENSITY_SCALE
    return np.where(brain, np.clip(out, 0, 32767), 0).astype(np.int16)
