"""Key images for the report PDF: three orthogonal slices through the finding, in radiological convention.

A radiologist signs what the PDF shows, so a key image that puts the lesion on the wrong side is as harmful
as a report that names the wrong side.  Every file stores its voxels in its own order (RAS NIfTI, LPS
DICOM/NRRD, oblique acquisitions), so the slices are never cut along the file's own voxel axes.  Instead each
view is sampled on a *patient-aligned* grid: axes along the world (patient) axes, isotropic spacing equal to
the input's finest spacing, a square field of view fitted to the head.  Pixels are placed by their world (RAS)
coordinates, so the display is the same whatever the file's voxel order or obliquity:

- axial: patient's right on the image's LEFT, anterior at the top (seen from the feet);
- coronal: patient's right on the image's LEFT, superior at the top (seen from the front);
- sagittal: anterior on the LEFT, superior at the top (seen from the patient's left).

Only the three planes are interpolated (not the whole grid), which keeps this well under a second even for
a 1 mm whole-head volume.  Each image carries orientation letters on its edges so the convention is never
guessed.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from ..io.volume import Volume

__all__ = ["OVERLAY_MIN_FRACTION", "VIEWS", "default_point", "foreground_box", "key_images"]

#: The three views, in the order the PDF shows them.
VIEWS = ("axial", "coronal", "sagittal")
#: Attribution below this fraction of its maximum is not drawn: LIME maps have a long tail of tiny weights
#: that would tint the whole brain and hide the anatomy.
OVERLAY_MIN_FRACTION = 0.15
#: Grey-level window: these percentiles of the head's intensities map to black and white, so one very bright
#: vessel or artefact does not darken the whole image.
WINDOW_PERCENTILES = (1.0, 99.5)
#: Extra field of view around the head, in mm, so the skull outline is not cut at the image edge.
MARGIN_MM = 6.0
#: Largest number of samples along a view's side; finer inputs are sampled at a coarser spacing.
MAX_SIDE = 512

# Orientation letters (left, right, top, bottom) of each view, and the world axes behind them.
_LETTERS = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}


def _subsample(data: np.ndarray, limit: int = 2_000_000) -> tuple[np.ndarray, int]:
    """``data`` with every ``step``-th voxel per axis, so statistics stay fast on any volume size."""
    step = max(1, int(np.ceil((data.size / limit) ** (1 / 3))))
    return data[::step, ::step, ::step], step


def _foreground(data: np.ndarray) -> np.ndarray:
    """Head mask by Otsu's threshold (the same rule as the model grid's), on the given array."""
    from skimage.filters import threshold_otsu

    finite = np.asarray(data, dtype=np.float32)
    if float(finite.max()) <= float(finite.min()):
        return np.ones(finite.shape, dtype=bool)
    mask = finite > float(threshold_otsu(finite))
    return mask if mask.any() else np.ones(finite.shape, dtype=bool)


def _world(indices: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS coordinates (N, 3) of voxel indices (N, 3)."""
    return indices @ affine[:3, :3].T + affine[:3, 3]


def foreground_box(volume: Volume) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The head's robust RAS bounding box ``(low, high)`` and its centre of mass, in mm.

    Measured on the world coordinates of the foreground voxels themselves (not the corners of an index box),
    so an oblique volume gets a tight box; the outermost 0.1 % on each side are ignored so a stray bright
    voxel outside the head does not inflate the field of view.
    """
    data, step = _subsample(np.asarray(volume.data[0]))
    mask = _foreground(data)
    idx = np.argwhere(mask).astype(np.float64) * step
    world = _world(idx, volume.affine)
    low, high = np.percentile(world, [0.1, 99.9], axis=0)
    half_voxel = 0.5 * step * np.asarray(volume.spacing)
    return low - half_voxel.max(), high + half_voxel.max(), world.mean(axis=0)


def default_point(volume: Volume, attribution: Volume | None) -> np.ndarray:
    """Where the slices cross when the caller names no point: the attribution peak, else the head's centre.

    LIME maps are constant over each supervoxel, so the single arg-max voxel would be an arbitrary corner of
    the strongest supervoxel; the centroid of the connected plateau around it is the region's middle.
    """
    if attribution is not None:
        values = np.asarray(attribution.data[0], dtype=np.float32)
        peak = float(values.max()) if values.size else 0.0
        if np.isfinite(peak) and peak > 0:
            plateau = values >= peak * (1.0 - 1e-6)
            labels, _ = ndimage.label(plateau)
            label = labels.flat[int(np.argmax(values))]
            centre = np.argwhere(labels == label).mean(axis=0)
            return _world(centre[None], attribution.affine)[0]
    return foreground_box(volume)[2]


def _plane(view: str, point: np.ndarray, low: np.ndarray, side: float, n: int) -> np.ndarray:
    """RAS coordinates ``(n, n, 3)`` of the pixels of one view, already in display orientation.

    Row 0 is the image's top and column 0 its left.  RAS x grows toward the patient's RIGHT, so "patient's
    right on the image's left" means x *decreases* along a row; y grows anteriorly and z superiorly.
    """
    step = side / (n - 1) if n > 1 else side
    high = low + side
    down = np.arange(n) * step  # distance from the top/left edge, mm
    rows, cols = np.meshgrid(down, down, indexing="ij")
    xyz = np.empty((n, n, 3), dtype=np.float64)
    if view == "axial":  # columns: right -> left (x falls); rows: anterior -> posterior (y falls)
        xyz[..., 0], xyz[..., 1], xyz[..., 2] = high[0] - cols, high[1] - rows, point[2]
    elif view == "coronal":  # columns: right -> left; rows: superior -> inferior (z falls)
        xyz[..., 0], xyz[..., 1], xyz[..., 2] = high[0] - cols, point[1], high[2] - rows
    else:  # sagittal; columns: anterior -> posterior (y falls); rows: superior -> inferior
        xyz[..., 0], xyz[..., 1], xyz[..., 2] = point[0], high[1] - cols, high[2] - rows
    return xyz


def _sample(array: np.ndarray, affine: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``array`` (voxel-to-RAS ``affine``) at RAS points ``(..., 3)``; zero outside."""
    inv = np.linalg.inv(affine)
    ijk = xyz.reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]
    out = ndimage.map_coordinates(array, ijk.T, order=1, mode="constant", cval=0.0, prefilter=False)
    return out.reshape(xyz.shape[:-1])


def _warm(t: np.ndarray) -> np.ndarray:
    """A warm colour ramp (dark red -> orange -> yellow) for ``t`` in [0, 1], as RGB floats in [0, 1]."""
    t = np.clip(t, 0.0, 1.0)[..., None]
    low = np.array([0.80, 0.05, 0.00])
    mid = np.array([1.00, 0.55, 0.00])
    high = np.array([1.00, 1.00, 0.30])
    return np.where(t < 0.5, low + (mid - low) * (t / 0.5), mid + (high - mid) * ((t - 0.5) / 0.5))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font is still legible
        return ImageFont.load_default()


def _letters(image: Image.Image, view: str) -> None:
    """Orientation letters in the middle of each edge, light on a dark outline (readable on any tissue)."""
    draw = ImageDraw.Draw(image)
    size = image.size[0]
    font = _font(max(10, size // 16))
    pad = max(3, size // 60)
    left, right, top, bottom = _LETTERS[view]
    stroke = {"fill": (255, 240, 120), "stroke_width": max(1, size // 180), "stroke_fill": (0, 0, 0)}
    draw.text((pad, size / 2), left, font=font, anchor="lm", **stroke)
    draw.text((size - pad, size / 2), right, font=font, anchor="rm", **stroke)
    draw.text((size / 2, pad), top, font=font, anchor="mt", **stroke)
    draw.text((size / 2, size - pad), bottom, font=font, anchor="mb", **stroke)


def key_images(
    volume: Volume,
    attribution: Volume | None,
    point_ras: Sequence[float] | None = None,
    *,
    size_px: int = 360,
) -> dict[str, bytes]:
    """PNG bytes of the axial, coronal and sagittal views through ``point_ras`` (RAS mm).

    ``volume``: the input (channel 0 is shown).  ``attribution``: a float map on the input's voxels (any
    geometry works, since both are sampled by world coordinates); its positive part above
    :data:`OVERLAY_MIN_FRACTION` of its maximum is overlaid in a semi-transparent warm colour.
    ``point_ras``: where the three planes cross; default :func:`default_point` (the attribution peak, else the
    head's centre).  A point outside the field of view is moved to its edge.  Each image is ``size_px``
    square, all three at the same scale (mm per pixel), so sizes compare across views.
    """
    if size_px < 32:
        raise ValueError(f"size_px must be at least 32, got {size_px}")
    low, high, _centre = foreground_box(volume)
    side = float((high - low).max()) + 2.0 * MARGIN_MM
    centre = (low + high) / 2.0
    origin = centre - side / 2.0
    spacing = max(min(volume.spacing), side / (MAX_SIDE - 1))
    n = int(np.ceil(side / spacing)) + 1
    point = (
        default_point(volume, attribution) if point_ras is None else np.asarray(point_ras, dtype=np.float64)
    )
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise ValueError(f"point_ras must be three finite numbers, got {point_ras!r}")
    point = np.clip(point, origin, origin + side)

    # Grey window from the head's intensities (not per slice, so the three views look alike).
    data, _step = _subsample(np.asarray(volume.data[0]))
    inside = np.asarray(data, dtype=np.float32)[_foreground(data)]
    lo, hi = (float(v) for v in np.percentile(inside, WINDOW_PERCENTILES))
    if hi <= lo:
        hi = lo + 1.0
    image_data = np.asarray(volume.data[0], dtype=np.float32)  # converted once, sampled three times
    attr_data, attr_max = None, 0.0
    if attribution is not None and attribution.data.size:
        attr_data = np.nan_to_num(np.asarray(attribution.data[0], dtype=np.float32), nan=0.0)
        attr_max = float(attr_data.max())

    images = {}
    for view in VIEWS:
        xyz = _plane(view, point, origin, side, n)
        grey = np.clip((_sample(image_data, volume.affine, xyz) - lo) / (hi - lo), 0.0, 1.0)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        if attr_data is not None and attr_max > 0:
            t = _sample(attr_data, attribution.affine, xyz) / attr_max
            shown = t > OVERLAY_MIN_FRACTION
            if shown.any():
                ramp = (t - OVERLAY_MIN_FRACTION) / (1.0 - OVERLAY_MIN_FRACTION)
                alpha = np.where(shown, 0.25 + 0.3 * np.clip(ramp, 0, 1), 0.0)[..., None]
                rgb = rgb * (1.0 - alpha) + _warm(ramp) * alpha
        image = Image.fromarray(np.round(rgb * 255).astype(np.uint8))
        image = image.resize((size_px, size_px), Image.Resampling.BICUBIC)
        _letters(image, view)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
        images[view] = buffer.getvalue()
    return images
