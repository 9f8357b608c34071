"""Registration of an input to the MNI152 template, and the atlas carried back into the input's own voxels.

SimpleITK, in the standard recipe: the template is the moving image, the input the fixed one, so the transform
found maps each input point to its template point and the atlas is resampled straight onto the input's grid
(nearest neighbour: region codes stay codes). Rigid (Euler) from a centre-of-mass start, then affine, both
with Mattes mutual information (FLAIR against a T1 template: intensities differ, structure matches) over a
three-level pyramid, the metric sampled inside the template's brain only (the input may keep its skull) and,
when a lesion's place is known (a segmentation, the attribution), away from it (a tumour matches nothing in a
healthy template). An optional B-spline stage follows when asked. Everything runs on a 3 mm copy of both
images: the atlas' regions are far larger than that, and it keeps one case to a few seconds on two cores.

The transform is cached per input SHA-256 (a text ``.tfm`` file, never a pickle) so the panel, ``report`` and
``explain`` register a study once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.stamps import sha256_bytes
from ..io.volume import Volume, sitk_image
from .atlas import template
from .places import LEFT, RIGHT

#: Working resolution of the registration (mm).
REGISTRATION_MM = 3.0


@dataclass
class Placement:
    """The atlas on an input's voxels: region codes (:data:`.atlas.REGION_CODE`) and sides (1 left, 2 right;
    0 outside the brain), plus how they were found."""

    regions: np.ndarray  # (I, J, K) uint8
    side: np.ndarray  # (I, J, K) uint8
    affine: np.ndarray  # the input's voxel -> RAS
    method: str  # "affine" or "affine+bspline"
    metric: float  # final Mattes MI (lower is better)
    seconds: float
    cached: bool

    def summary(self) -> dict:
        return {
            "method": self.method,
            "template": "MNI152 2009c (nilearn), AAL regions",
            # None when the transform came from the cache: no metric was computed (and JSON has no NaN).
            "metric": round(float(self.metric), 4) if np.isfinite(self.metric) else None,
            "seconds": round(self.seconds, 2),
            "cached": self.cached,
        }


def _isotropic(image, spacing_mm: float, interpolator):
    """``image`` resampled to ``spacing_mm`` voxels on its own orientation (same physical extent)."""
    import SimpleITK as sitk

    size = [
        max(2, int(round(n * s / spacing_mm)))
        for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)
    ]
    return sitk.Resample(
        image, size, sitk.Transform(), interpolator, image.GetOrigin(), [spacing_mm] * 3,
        image.GetDirection(), 0.0, image.GetPixelID(),
    )  # fmt: skip


def cache_folder() -> Path:
    """Where transforms are kept: ``$BRAINGEMMA3D_CACHE`` or ``~/.cache/braingemma3d``, ``anatomy/``."""
    root = os.environ.get("BRAINGEMMA3D_CACHE") or Path.home() / ".cache" / "braingemma3d"
    return Path(root) / "anatomy"


def _first(transform):
    """The single transform inside what the registration returns (a composite of one, by SimpleITK's API)."""
    import SimpleITK as sitk

    if transform.GetName() == "CompositeTransform":
        composite = sitk.CompositeTransform(transform)
        if composite.GetNumberOfTransforms() == 1:
            return composite.GetNthTransform(0).Downcast()
    return transform.Downcast()


def _fit(fixed, moving, initial, kind: str, fixed_mask, moving_mask):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.25, seed=20261130)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetMetricMovingMask(moving_mask)
    method.SetInterpolator(sitk.sitkLinear)
    if kind == "bspline":
        method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=60)
        method.SetShrinkFactorsPerLevel([2, 1])
        method.SetSmoothingSigmasPerLevel([1, 0])
    else:
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-3, numberOfIterations=150, relaxationFactor=0.6
        )
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetShrinkFactorsPerLevel([4, 2, 1])
        method.SetSmoothingSigmasPerLevel([2, 1, 0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    found = method.Execute(fixed, moving)
    return found, float(method.GetMetricValue())


def _find_transform(fixed_full, data: np.ndarray, input_affine, atlas: dict, exclude, deformable: bool):
    """Rigid, then affine (then B-spline when asked) from the input to the template, both at 3 mm."""
    import SimpleITK as sitk

    fixed = _isotropic(fixed_full, REGISTRATION_MM, sitk.sitkLinear)
    moving = _isotropic(sitk_image(atlas["t1"], atlas["affine"]), REGISTRATION_MM, sitk.sitkLinear)
    moving_mask = _isotropic(sitk_image(atlas["brain"].astype(np.uint8), atlas["affine"]), REGISTRATION_MM,
                             sitk.sitkNearestNeighbor)  # fmt: skip
    fixed_mask = None
    if exclude is not None:
        from scipy import ndimage

        keep = ~ndimage.binary_dilation(np.asarray(exclude, bool), iterations=2)
        fixed_mask = _isotropic(sitk_image(keep.astype(np.uint8), input_affine), REGISTRATION_MM,
                                sitk.sitkNearestNeighbor)  # fmt: skip
    # The template's brain in the middle of the input's intensity mass: enough of a start for rigid.
    level = float(np.percentile(data[data > 0], 20)) if (data > 0).any() else 0.0
    fixed_bright = sitk.Cast(fixed > level, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(
        fixed_bright, sitk.Cast(moving_mask, sitk.sitkFloat32), sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )  # fmt: skip
    rigid, _ = _fit(fixed, moving, initial, "rigid", fixed_mask, moving_mask)
    rigid = _first(rigid)
    start = sitk.AffineTransform(3)
    start.SetMatrix(rigid.GetMatrix())
    start.SetTranslation(rigid.GetTranslation())
    start.SetCenter(rigid.GetCenter())
    transform, metric = _fit(fixed, moving, start, "affine", fixed_mask, moving_mask)
    if deformable:
        bspline = sitk.BSplineTransformInitializer(fixed, [6, 6, 6])
        composite = sitk.CompositeTransform([transform, bspline])
        transform, metric = _fit(fixed, moving, composite, "bspline", fixed_mask, moving_mask)
    return transform, metric


def register(
    volume: Volume,
    *,
    exclude: np.ndarray | None = None,
    deformable: bool = False,
    cache: bool = True,
) -> Placement:
    """Register ``volume`` (channel 0) to the template and carry the atlas into its voxels.

    ``exclude``: a boolean mask on the input's voxels the metric must ignore (a lesion). ``cache``: reuse a
    transform found before for the same input bytes (``volume.sha256``) and options.
    """
    import SimpleITK as sitk

    started = time.perf_counter()
    atlas = template(2.0)
    data = np.asarray(volume.data[0], dtype=np.float32)
    fixed_full = sitk_image(data, volume.affine)
    excluded = exclude is not None and bool(np.any(exclude))
    method = "affine+bspline" if deformable else "affine"
    key = None
    if cache and volume.sha256:  # the same bytes, options and excluded voxels: the same transform
        mask_id = sha256_bytes(np.packbits(np.asarray(exclude, bool)).tobytes())[:12] if excluded else "none"
        key = cache_folder() / f"{volume.sha256[0][:32]}-{method}-{mask_id}-{REGISTRATION_MM}.tfm"
    transform, metric, cached = None, float("nan"), False
    if key is not None and key.is_file():
        try:
            transform, cached = sitk.ReadTransform(str(key)), True
        except RuntimeError:
            transform = None  # a damaged cache file: register again
    if transform is None:
        lesion = exclude if excluded else None
        transform, metric = _find_transform(fixed_full, data, volume.affine, atlas, lesion, deformable)
        if key is not None:
            key.parent.mkdir(parents=True, exist_ok=True)
            tmp = key.with_suffix(f".tmp-{os.getpid()}.tfm")
            sitk.WriteTransform(transform, str(tmp))
            os.replace(tmp, key)
    regions_t = sitk_image(atlas["regions"], atlas["affine"])
    side_t = np.where(atlas["x_mm"][:, None, None] < 0, LEFT, RIGHT).astype(np.uint8) * (atlas["regions"] > 0)
    side_t = sitk_image(side_t.astype(np.uint8), atlas["affine"])
    on_input = []
    for image in (regions_t, side_t):
        resampled = sitk.Resample(image, fixed_full, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        on_input.append(sitk.GetArrayFromImage(resampled).transpose(2, 1, 0))
    return Placement(
        regions=on_input[0],
        side=on_input[1],
        affine=np.asarray(volume.affine, dtype=np.float64),
        method=method,
        metric=metric,
        seconds=time.perf_counter() - started,
        cached=cached,
    )
