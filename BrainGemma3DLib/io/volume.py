"""Brain MRI volumes with their geometry, and the one place where left and right are decided.

Every file format stores "which voxel is where" differently (NIfTI in RAS, NRRD/MetaImage/DICOM in LPS, any
axis order, oblique directions).  A left/right flip is the clinical error this product exists to prevent, so
all of it is resolved here, once: a :class:`Volume` always carries a voxel-to-RAS affine, and the model only
ever sees the **model grid**, whose orientation is fixed and documented:

Model grid: a float32 array ``(C, D, H, W)`` whose axes run, in patient coordinates,
    ``D``: inferior → superior (axial slice index, feet to head),
    ``H``: anterior → posterior (image rows, nose at the top),
    ``W``: patient's right → patient's left (image columns, radiological convention).
This is the LPS voxel order of DICOM/ITK written in numpy's ``(z, y, x)`` order, so an axial slice
``grid[c, d]`` looks exactly like a radiologist's axial view.  The grid is aligned with the patient (world)
axes, not with the scanner's slice directions, and has the same physical scale along H and W; its field of
view is fitted to the head's bounding box by one scale factor (aspect preserved, rest padded).

:class:`GridMapping` remembers how the grid was placed, so maps computed on it (attributions) return onto
the radiologist's own voxels with exactly the input's shape and affine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from scipy import ndimage

from .atomic import atomic_path, full_suffix
from .errors import InputError
from .stamps import sha256_files

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
DICOM_SUFFIXES = (".dcm", ".ima")
SUPPORTED = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM series folder"

#: RAS <-> LPS: both are the same flip of the first two world axes.
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Default model grid and the nominal field of view it covers at scale 1 (BraTS: 155 x 240 x 240 mm).
DEFAULT_GRID = (64, 128, 128)
NOMINAL_FOV_MM = (155.0, 240.0, 240.0)


@dataclass
class Volume:
    """A 3D image (one or more co-registered channels) with its voxel-to-RAS geometry.

    ``data`` has shape ``(C, I, J, K)``; ``affine`` maps voxel indices ``(i, j, k)`` to RAS millimetres
    (nibabel's convention), whatever the file stored.  ``sha256`` has one digest per source, over the exact
    bytes read, so a report can prove which file it describes.
    """

    data: np.ndarray
    affine: np.ndarray
    paths: tuple[str, ...] = ()
    sha256: tuple[str, ...] = ()
    channel_names: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data.ndim == 3:
            self.data = self.data[None]
        if self.data.ndim != 4:
            raise ValueError(f"Volume data must be (C, I, J, K), got shape {self.data.shape}")
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if not self.channel_names:
            self.channel_names = tuple(f"channel{i}" for i in range(self.data.shape[0]))

    # --- geometry -------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(I, J, K)``."""
        return tuple(int(s) for s in self.data.shape[1:])  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def orientation(self) -> str:
        """Nearest anatomical axis codes, e.g. ``"RAS"`` or ``"LPS"`` (direction each index increases)."""
        return "".join(nio.aff2axcodes(self.affine))

    @property
    def obliquity_deg(self) -> float:
        """Largest angle between a voxel axis and its nearest patient axis, in degrees."""
        directions = self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)
        cosines = np.abs(directions).max(axis=0).clip(-1.0, 1.0)
        return float(np.degrees(np.arccos(cosines)).max())

    def world_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """RAS bounding box (min, max) of the voxel centres."""
        corners = np.array(np.meshgrid(*[[0, s - 1] for s in self.shape], indexing="ij")).reshape(3, -1)
        world = self.affine[:3, :3] @ corners + self.affine[:3, 3:4]
        return world.min(axis=1), world.max(axis=1)

    def channel(self, index: int) -> Volume:
        """One channel as its own single-channel volume (same geometry)."""
        return Volume(
            self.data[index : index + 1],
            self.affine.copy(),
            self.paths[index : index + 1] if len(self.paths) == self.data.shape[0] else self.paths,
            self.sha256[index : index + 1] if len(self.sha256) == self.data.shape[0] else self.sha256,
            (self.channel_names[index],),
            list(self.notes),
            dict(self.meta),
        )

    def summary(self) -> dict:
        """Plain-data description for report.json and logs."""
        return {
            "paths": list(self.paths),
            "sha256": list(self.sha256),
            "channels": list(self.channel_names),
            "shape": list(self.shape),
            "spacing_mm": [round(s, 4) for s in self.spacing],
            "orientation": self.orientation,
            "obliquity_deg": round(self.obliquity_deg, 2),
            "notes": list(self.notes),
            **(
                {"dicom_sop_instance_uids": self.meta["SOPInstanceUIDs"].split("\\")}
                if self.meta.get("SOPInstanceUIDs")
                else {}
            ),
            **(
                {"dicom_frame_numbers": [int(n) for n in self.meta["FrameNumbers"].split("\\")]}
                if self.meta.get("FrameNumbers")
                else {}
            ),
            **({"series_choice": self.meta["SeriesChoice"]} if self.meta.get("SeriesChoice") else {}),
        }

    # --- resampling -----------------------------------------------------------------------------------
    def resample_to(self, affine: np.ndarray, shape: Sequence[int], *, order: int = 1) -> Volume:
        """This volume resampled onto another voxel grid (world coordinates preserved)."""
        index_map = np.linalg.inv(self.affine) @ np.asarray(affine, dtype=np.float64)
        out = np.stack([_resample(c, index_map, tuple(shape), order=order) for c in self.data])
        return Volume(
            out,
            np.asarray(affine, dtype=np.float64),
            self.paths,
            self.sha256,
            self.channel_names,
            list(self.notes),
            dict(self.meta),
        )

    def to_model_grid(
        self,
        grid_shape: Sequence[int] = DEFAULT_GRID,
        *,
        percentiles: tuple[float, float] = (0.5, 99.5),
        upper_level: float = 0.75,
        margin_mm: float = 4.0,
        nominal_fov_mm: Sequence[float] = NOMINAL_FOV_MM,
        method: str = "ours",
    ) -> tuple[np.ndarray, GridMapping]:
        """Resample onto the model grid (see the module docstring) and normalise intensities.

        ``method="published"`` places the study as the published BrainGemma3D's loader does instead
        (:meth:`to_published_grid`); the other arguments then do not apply.

        Steps: (1) reorder/flip the voxel axes to LPS without interpolation; (2) find the foreground (head)
        by Otsu's threshold on channel 0 and its robust bounding box; (3) place a patient-aligned grid over
        it, spacing ``k * nominal_fov / grid_shape`` with one scale ``k`` for all axes so anatomy is never
        stretched differently along different axes, then resample once (trilinear; obliquity and zoom in
        the same step); (4) scale each channel so its ``percentiles`` *inside the foreground* map to 0 and
        ``upper_level``, clip to [0, 1], and zero the background. The headroom above ``upper_level`` keeps a
        small hyperintense lesion brighter than the brightest normal tissue: mapping the 99.5th percentile
        to 1 and clipping made lesions under 0.5 % of the head as bright as normal cortex, and the model
        missed them.  Returns ``(array (C, D, H, W) float32, mapping)``.
        """
        from skimage.filters import threshold_otsu

        if method == "published":
            return self.to_published_grid(grid_shape)
        if method != "ours":
            raise ValueError(f"unknown grid placement {method!r} (ours or published)")
        grid = tuple(int(g) for g in grid_shape)
        if len(grid) != 3 or min(grid) < 2:
            raise ValueError(f"grid_shape must be three sizes >= 2, got {grid_shape}")

        # (1) exact reorientation to LPS voxel order, then numpy (z, y, x) = (D, H, W) order.
        src, src_affine = _as_lps_zyx(self.data, self.affine)

        # (2) foreground threshold and robust bounding box from a 2x-subsampled channel 0 (8x fewer voxels).
        sub = np.asarray(src[0, ::2, ::2, ::2], dtype=np.float32)
        threshold = float(threshold_otsu(sub)) if float(sub.max()) > float(sub.min()) else float(sub.min())
        lo_idx, hi_idx = _robust_bbox(sub > threshold)
        lo_idx, hi_idx = lo_idx * 2.0, hi_idx * 2.0 + 1.0
        corners = np.array(np.meshgrid(*zip(lo_idx, hi_idx, strict=True), indexing="ij")).reshape(3, -1)
        world = src_affine[:3, :3] @ corners + src_affine[:3, 3:4]
        w_min, w_max = world.min(axis=1), world.max(axis=1)
        centre = (w_min + w_max) / 2.0
        extent_xyz = (w_max - w_min) + 2.0 * margin_mm  # RAS x, y, z

        # (3) one scale factor for all axes; grid (D, H, W) <-> RAS (z, y, x).
        nominal = np.asarray(nominal_fov_mm, dtype=np.float64) / np.asarray(grid, dtype=np.float64)
        extent_dhw = extent_xyz[::-1]
        scale = float(np.clip(np.max(extent_dhw / (nominal * np.asarray(grid))), 0.25, 4.0))
        sd, sh, sw = nominal * scale
        grid_affine = np.array(
            [
                [0.0, 0.0, -sw, centre[0] + (grid[2] - 1) / 2.0 * sw],
                [0.0, -sh, 0.0, centre[1] + (grid[1] - 1) / 2.0 * sh],
                [sd, 0.0, 0.0, centre[2] - (grid[0] - 1) / 2.0 * sd],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )
        index_map = np.linalg.inv(src_affine) @ grid_affine
        out = np.empty((src.shape[0], *grid), dtype=np.float32)
        for c in range(src.shape[0]):
            out[c] = _resample(src[c], index_map, grid, order=1)

        # (4) foreground on the grid (holes filled so ventricles and necrosis count), robust normalisation.
        foreground = _filled_foreground(out[0] > threshold)
        if not foreground.any():
            raise InputError(
                "no foreground found on the model grid (is the image empty?)", _first(self.paths)
            )
        ranges = []
        for c in range(out.shape[0]):
            lo, hi = np.percentile(out[c][foreground], percentiles)
            if hi <= lo:
                hi = lo + 1.0
            np.subtract(out[c], lo, out=out[c])
            np.multiply(out[c], upper_level / (hi - lo), out=out[c])
            np.clip(out[c], 0.0, 1.0, out=out[c])
            ranges.append((float(lo), float(hi)))
        out *= foreground[None]
        mapping = GridMapping(
            input_shape=self.shape,
            input_affine=self.affine.copy(),
            grid_shape=grid,  # type: ignore[arg-type]
            grid_affine=grid_affine,
            foreground=foreground,
            intensity_ranges=tuple(ranges),
            threshold=threshold,
            paths=self.paths,
        )
        return out, mapping

    def to_published_grid(self, grid_shape: Sequence[int]) -> tuple[np.ndarray, GridMapping]:
        """The published BrainGemma3D loader's grid, reproduced from its observed behaviour (our code).

        Steps, as it does them: the closest canonical (RAS) voxel order (nibabel's ``as_closest_canonical``),
        float32; axes transposed to (D, H, W) = (inferior->superior, posterior->anterior, left->right); the
        whole volume's 1st/99th percentiles mapped to 0/1 and clipped (background included: no foreground
        step); one trilinear resize per axis to ``grid_shape`` (torch, ``align_corners=False``), so each axis
        is stretched on its own. Channel 0 only (the published model reads FLAIR). Not copied: its file-name
        heuristic that treats any path containing "healthy" as a differently stored volume; a patient's scan
        takes the path its BraTS training cases took. The returned mapping describes this grid exactly (the
        per-axis stretch included), so attributions still land on the input's own voxels.
        """
        import torch
        from skimage.filters import threshold_otsu
        from torch.nn import functional as F

        grid = tuple(int(g) for g in grid_shape)
        if len(grid) != 3 or min(grid) < 2:
            raise ValueError(f"grid_shape must be three sizes >= 2, got {grid_shape}")
        ornt = nio.io_orientation(self.affine)
        data = np.asarray(self.data[0], dtype=np.float32)
        canonical = np.asarray(nio.apply_orientation(data, ornt), dtype=np.float32)
        canonical_affine = self.affine @ nio.inv_ornt_aff(ornt, data.shape)
        vol = np.transpose(canonical, (2, 1, 0))  # (i, j, k) = (R, A, S) -> (D, H, W) = (S, A, R)
        vmin, vmax = np.percentile(vol, 1), np.percentile(vol, 99)
        if vmax > vmin:
            vol = np.clip((vol - vmin) / (vmax - vmin), 0, 1)
        else:
            vol = np.zeros_like(vol)
        tensor = torch.from_numpy(np.ascontiguousarray(vol)).unsqueeze(0).unsqueeze(0)
        out = F.interpolate(tensor, size=grid, mode="trilinear", align_corners=False)[0].numpy()
        # grid (d, h, w) -> canonical voxel (i, j, k): half-pixel-centred scaling per axis, as resizing does.
        k_in, j_in, i_in = vol.shape
        scale = np.array([i_in / grid[2], j_in / grid[1], k_in / grid[0]], dtype=np.float64)
        to_canonical = np.zeros((4, 4))
        to_canonical[0, 2], to_canonical[1, 1], to_canonical[2, 0] = scale
        to_canonical[:3, 3] = 0.5 * scale - 0.5
        to_canonical[3, 3] = 1.0
        threshold = float(threshold_otsu(out[0])) if float(out.max()) > float(out.min()) else 0.0
        foreground = _filled_foreground(out[0] > threshold)
        if not foreground.any():
            raise InputError("only background on the model grid (is the image empty?)", _first(self.paths))
        mapping = GridMapping(
            input_shape=self.shape,
            input_affine=self.affine.copy(),
            grid_shape=grid,  # type: ignore[arg-type]
            grid_affine=canonical_affine @ to_canonical,
            foreground=foreground,
            intensity_ranges=((float(vmin), float(vmax)),),
            threshold=threshold,
            paths=self.paths,
        )
        return out.astype(np.float32, copy=False), mapping

    # --- output ---------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, dtype: np.dtype | type | None = None) -> Path:
        """Write a single-channel volume as NIfTI (.nii/.nii.gz) or NRRD/MetaImage, atomically."""
        if self.data.shape[0] != 1:
            raise ValueError("save() writes one channel; use volume.channel(i).save(...)")
        suffix = full_suffix(path)
        array = self.data[0] if dtype is None else self.data[0].astype(dtype, copy=False)
        with atomic_path(path) as tmp:
            if suffix in NIFTI_SUFFIXES:
                img = nib.Nifti1Image(np.asarray(array), self.affine)
                img.set_qform(self.affine, code=1)
                img.set_sform(self.affine, code=1)
                img.header.set_xyzt_units("mm", "sec")
                nib.save(img, tmp)
            elif suffix in (".nrrd", ".mha", ".seg.nrrd"):
                _sitk_write(np.asarray(array), self.affine, tmp)
            else:
                raise InputError(f"cannot save as '{suffix}' (use .nii.gz, .nii, .nrrd or .mha)", path)
        return Path(path)


@dataclass
class GridMapping:
    """How a model grid was placed over an input volume, so results on the grid can be mapped back."""

    input_shape: tuple[int, int, int]
    input_affine: np.ndarray
    grid_shape: tuple[int, int, int]
    grid_affine: np.ndarray
    foreground: np.ndarray
    intensity_ranges: tuple[tuple[float, float], ...] = ()
    threshold: float = 0.0
    paths: tuple[str, ...] = ()

    @property
    def grid_spacing(self) -> tuple[float, float, float]:
        """Grid voxel size in mm along D, H, W."""
        return tuple(float(s) for s in np.linalg.norm(self.grid_affine[:3, :3], axis=0))  # type: ignore

    def grid_to_world(self, dhw: Sequence[float] | np.ndarray) -> np.ndarray:
        """RAS millimetres of (fractional) grid indices ``(d, h, w)``: one point, or an array ``(..., 3)``."""
        a = np.asarray(self.grid_affine, dtype=np.float64)
        return np.asarray(dhw, dtype=np.float64) @ a[:3, :3].T + a[:3, 3]

    def world_coordinates(self) -> np.ndarray:
        """RAS millimetres of every grid voxel centre, shape ``(D, H, W, 3)``."""
        index = np.stack(np.meshgrid(*(np.arange(n) for n in self.grid_shape), indexing="ij"), axis=-1)
        return self.grid_to_world(index)

    def world_to_grid(self, ras: Sequence[float]) -> np.ndarray:
        """Fractional grid index ``(d, h, w)`` of a RAS point."""
        return (np.linalg.inv(self.grid_affine) @ np.append(np.asarray(ras, dtype=np.float64), 1.0))[:3]

    def to_input(self, array: np.ndarray, *, kind: str = "map") -> Volume:
        """Map a ``(D, H, W)`` array on the model grid back onto the input's voxels.

        ``kind="map"`` interpolates linearly (attribution maps); ``kind="label"`` takes the nearest grid voxel
        (labelmaps keep their integer values).  The result has exactly the input's shape and affine.
        """
        if kind not in ("map", "label"):
            raise ValueError(f"kind must be 'map' or 'label', got {kind!r}")
        array = np.asarray(array)
        if array.shape != tuple(self.grid_shape):
            raise ValueError(f"array shape {array.shape} is not the grid shape {tuple(self.grid_shape)}")
        index_map = np.linalg.inv(self.grid_affine) @ self.input_affine
        if kind == "label":
            out = _resample(array, index_map, self.input_shape, order=0, dtype=array.dtype)
        else:
            out = _resample(array.astype(np.float32, copy=False), index_map, self.input_shape, order=1)
        return Volume(out[None], self.input_affine.copy(), self.paths)

    def summary(self) -> dict:
        """Plain-data description for report.json."""
        return {
            "grid_shape": list(self.grid_shape),
            "grid_spacing_mm": [round(s, 4) for s in self.grid_spacing],
            "grid_orientation": "D: inferior->superior, H: anterior->posterior, W: right->left",
            "grid_affine": np.round(self.grid_affine, 4).tolist(),
            "foreground_ml": round(
                float(self.foreground.sum()) * float(np.prod(self.grid_spacing)) / 1000, 2
            ),
            "intensity_ranges": [list(r) for r in self.intensity_ranges],
        }


# ------------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------------
def load_volume(path: str | os.PathLike, *, sequence: str = "flair", series: str | None = None) -> Volume:
    """Load one 3D image from a NIfTI/NRRD/MetaImage file, or a DICOM folder, DICOMDIR or file.

    A DICOM folder may hold a whole study: the stack of ``sequence`` is chosen by its tags
    (:func:`.dicom.choose_stack`), or the one ``series`` (a Series Instance UID or number) names.

    Raises :class:`InputError` (one line naming the file and the problem) for anything that is not a
    usable 3D scalar image: missing/unreadable/corrupted files, 2D or 4D images, vector pixels, NaNs,
    constant volumes.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", p)
    if p.is_dir() or p.name.upper() == "DICOMDIR":
        volume = _load_dicom(p, sequence=sequence, series=series)
    else:
        if not os.access(p, os.R_OK):
            raise InputError("file is not readable (permission denied)", p)
        suffix = full_suffix(p)
        if suffix in NIFTI_SUFFIXES:
            volume = _load_nifti(p)
        elif suffix in ITK_SUFFIXES:
            volume = _load_itk(p)
        elif suffix in DICOM_SUFFIXES:
            volume = _load_dicom(p.parent, member=p)
        else:
            raise InputError(f"unsupported file type '{suffix or p.name}' (expected {SUPPORTED})", p)
    _validate(volume, p)
    return volume


def load_study(
    paths: Sequence[str | os.PathLike],
    names: Sequence[str] | None = None,
    *,
    sequences: Sequence[str] = ("flair",),
    series: str | None = None,
) -> Volume:
    """Stack co-registered sequences of one study as channels, in the order given (FLAIR first).

    ``sequences``: what the model reads, in its order. One DICOM folder (a whole study) given for several
    sequences gives each of them, chosen by their tags; ``series`` chooses the first (FLAIR) by its Series
    Instance UID or number. Sequences on another voxel grid are resampled onto the first one's grid (linear),
    since they share world coordinates; a sequence whose field of view does not overlap the first one's is
    refused.
    """
    if not paths:
        raise InputError("no input volume given")
    paths = list(paths)
    whole_study = len(paths) == 1 < len(sequences) and Path(paths[0]).is_dir()
    if whole_study:
        paths = paths * len(sequences)
        names = names or tuple(sequences)
    wanted = list(sequences) + ["flair"] * max(0, len(paths) - len(sequences))
    volumes = [
        load_volume(p, sequence=wanted[i], series=series if i == 0 else None) for i, p in enumerate(paths)
    ]
    ref = volumes[0]
    channels = [np.asarray(ref.data[0], dtype=np.float32)]
    notes = list(ref.notes)
    meta = dict(ref.meta)
    choices = [
        (wanted[i].upper(), v.meta["SeriesChoice"])
        for i, v in enumerate(volumes)
        if v.meta.get("SeriesChoice")
    ]
    if len(choices) > 1:  # one line per sequence chosen from the study
        meta["SeriesChoice"] = "\n".join(f"{name}: {why}" for name, why in choices)
    ref_lo, ref_hi = ref.world_bounds()
    for vol, p in zip(volumes[1:], paths[1:], strict=True):
        same_grid = vol.shape == ref.shape and np.allclose(vol.affine, ref.affine, atol=1e-3)
        if not same_grid:
            lo, hi = vol.world_bounds()
            inter = np.clip(np.minimum(hi, ref_hi) - np.maximum(lo, ref_lo), 0, None).prod()
            smaller = min(np.prod(hi - lo + 1e-6), np.prod(ref_hi - ref_lo + 1e-6))
            if inter < 0.5 * smaller:
                raise InputError(
                    f"does not overlap {ref.paths[0]} (shares {100 * inter / smaller:.0f}% of its field of "
                    "view); sequences of one study must be co-registered",
                    p,
                )
            notes.append(f"{Path(p).name}: resampled onto the grid of {Path(ref.paths[0]).name}")
            vol = vol.resample_to(ref.affine, ref.shape, order=1)
        channels.append(np.asarray(vol.data[0], dtype=np.float32))
    return Volume(
        np.stack(channels),
        ref.affine.copy(),
        tuple(str(p) for p in paths),
        tuple(v.sha256[0] for v in volumes),
        tuple(names) if names else tuple(_channel_name(p) for p in paths),
        notes,
        meta,
    )


def _channel_name(path: str | os.PathLike) -> str:
    name = Path(path).name
    suffix = full_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


def _first(paths: Sequence[str]) -> str | None:
    return paths[0] if paths else None


def _load_nifti(p: Path) -> Volume:
    try:
        img = nib.load(str(p))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise InputError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", p)
        shape = img.shape
        dtype = img.get_data_dtype()
        if dtype.fields is not None or dtype.kind == "c":
            raise InputError(f"unsupported voxel type {dtype} (RGB or complex); a scalar MRI is needed", p)
        _check_dims(shape, p)
        data = np.asanyarray(img.dataobj)
        affine = img.affine
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many types for damaged files
        raise InputError(f"unreadable or corrupted NIfTI file ({_short(exc)})", p) from exc
    data = np.asarray(data).reshape(shape[:3])
    volume = Volume(data[None], affine, (str(p),), (sha256_files([p]),), (_channel_name(p),))
    header = img.header
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        volume.notes.append(
            f"{p.name}: the NIfTI header has no orientation (qform and sform codes are 0); left and right "
            "cannot be trusted (nibabel's default voxel order is assumed)"
        )
        log.warning(volume.notes[-1])
    from .sidecar import apply_sidecar

    apply_sidecar(volume, p)  # dcm2niix's JSON sidecar: the series description and timing, when there
    return volume


def _load_itk(p: Path) -> Volume:
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        reader.ReadImageInformation()
        shape = reader.GetSize()
        components = reader.GetNumberOfComponents()
        if components != 1:
            raise InputError(
                f"vector image with {components} components per voxel; a scalar MRI is needed", p
            )
        _check_dims(tuple(shape), p)
        img = reader.Execute()
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"unreadable or corrupted image file ({_short(exc)})", p) from exc
    files = [p]
    if full_suffix(p) in (".nhdr", ".mhd"):
        files += [Path(f) for f in _detached_data_files(p)]
    return _from_sitk(img, p, (sha256_files(files),))


def _detached_data_files(header: Path) -> list[str]:
    """Data files named by a detached .nhdr/.mhd header (so the hash covers the voxels too)."""
    found = []
    try:
        text = header.read_text(errors="replace")
    except OSError:
        return found
    for line in text.splitlines():
        key, _, value = line.partition(":") if header.suffix == ".nhdr" else line.partition("=")
        if key.strip().lower() in ("data file", "datafile", "elementdatafile"):
            candidate = header.parent / value.strip()
            if candidate.is_file():
                found.append(str(candidate))
    return found


def _load_dicom(
    p: Path, member: Path | None = None, *, sequence: str = "flair", series: str | None = None
) -> Volume:
    """A DICOM folder, DICOMDIR or file (:mod:`.dicom`): the stack of ``sequence`` chosen among the folder's
    series (or the one ``member`` belongs to, or ``series``), its choice and reason in ``meta`` and notes."""
    from .dicom import choose_stack, find_stacks, note_choice, read_stack

    folder = p.parent if p.is_file() else p
    try:
        stacks = find_stacks(p if p.is_dir() or p.name.upper() == "DICOMDIR" else folder)
    except OSError as exc:
        raise InputError(f"cannot scan folder for DICOM series ({_short(exc)})", folder) from exc
    if member is not None:
        own = [s for s in stacks if any(f.path.resolve() == member.resolve() for f in s.frames)]
        if not own:
            raise InputError("not part of a readable DICOM series", member)
        chosen, why = own[0], f"{own[0].label()}, the series of {member.name}"
    else:
        if not stacks:
            from .sidecar import load_nifti_folder, nifti_files

            if p.is_dir() and nifti_files(p):  # dcm2niix output: one NIfTI (and sidecar) per series
                return load_nifti_folder(p, sequence=sequence, series=series)
            raise InputError(
                f"no DICOM series found (a folder must hold one DICOM series; or give {SUPPORTED})", p
            )
        chosen, why = choose_stack(stacks, sequence, series=series, where=p)
    volume = read_stack(chosen, p)
    volume.channel_names = (_channel_name(p),)
    note_choice(volume, why, len(stacks), "DICOM series", folder, chosen.series_uid)
    return volume


def _from_sitk(img, p: Path, sha: tuple[str, ...]) -> Volume:
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        _check_dims(tuple(img.GetSize()), p)
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing[None, :]
    lps[:3, 3] = img.GetOrigin()
    data = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # ITK (k, j, i) -> (i, j, k)
    return Volume(data[None], RAS_FROM_LPS @ lps, (str(p),), sha, (_channel_name(p),))


def _check_dims(shape: tuple[int, ...], p: Path) -> None:
    """Refuse 2D and 4D images with a message that says what was found."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) > 3:
        raise InputError(
            f"4D image with {int(np.prod(dims[3:]))} volumes (shape {tuple(shape)}); give one 3D volume "
            "(for several sequences pass one file each)",
            p,
        )
    spatial = dims + [1] * (3 - len(dims))
    if min(spatial) < 2:
        raise InputError(f"2D image (shape {tuple(shape)}); a 3D volume is needed", p)


def _validate(volume: Volume, p: Path) -> None:
    data = volume.data
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            bad = int(data.size - np.count_nonzero(finite))
            raise InputError(f"contains {bad} NaN or infinite voxels of {data.size}", p)
    elif data.dtype.kind not in "iub":
        raise InputError(f"unsupported voxel type {data.dtype}", p)
    lo, hi = data.min(), data.max()
    if lo == hi:
        raise InputError(f"empty volume: every voxel is {lo.item()}", p)
    if not np.all(np.isfinite(volume.affine)) or abs(np.linalg.det(volume.affine[:3, :3])) < 1e-9:
        raise InputError("invalid geometry (singular or non-finite voxel-to-world matrix)", p)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "...") if len(text) > 160 else (text or type(exc).__name__)


# ------------------------------------------------------------------------------------------------------
# Geometry helpers
# ------------------------------------------------------------------------------------------------------
def _as_lps_zyx(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip/transpose ``(C, I, J, K)`` voxels into LPS order as ``(C, z, y, x)`` views (no interpolation).

    Returns the view and its index-to-RAS affine for indices in ``(z, y, x)`` order.
    """
    spatial = data.shape[1:]
    transform = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(("L", "P", "S")))
    moved = np.moveaxis(data, 0, -1)  # (I, J, K, C): apply_orientation acts on the leading axes
    lps = nio.apply_orientation(moved, transform)
    lps_affine = affine @ nio.inv_ornt_aff(transform, spatial)
    zyx = np.moveaxis(lps, -1, 0).transpose(0, 3, 2, 1)  # (C, x, y, z) -> (C, z, y, x)
    swap = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    return zyx, lps_affine @ swap


def _filled_foreground(mask: np.ndarray) -> np.ndarray:
    """``mask`` with its interior holes (ventricles, necrosis below the threshold) filled.

    Holes are filled on a 2x-subsampled copy (8x fewer voxels, the costliest step otherwise) and the result is
    united with the full-resolution mask, so the outline keeps full resolution.
    """
    coarse = ndimage.binary_fill_holes(mask[::2, ::2, ::2])
    up = (
        coarse.repeat(2, axis=0)
        .repeat(2, axis=1)
        .repeat(2, axis=2)[: mask.shape[0], : mask.shape[1], : mask.shape[2]]
    )
    return mask | up


def _robust_bbox(mask: np.ndarray, tail: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """Index bounding box of ``mask`` ignoring the outermost ``tail`` fraction of voxels on each side.

    Stray bright noise outside the head would otherwise inflate the box and shrink the brain on the grid.
    """
    total = mask.sum()
    if total == 0:
        return np.zeros(3), np.asarray(mask.shape, dtype=np.float64) - 1
    lo, hi = [], []
    for axis in range(3):
        counts = mask.sum(axis=tuple(a for a in range(3) if a != axis))
        cum = np.cumsum(counts) / total
        lo.append(float(np.searchsorted(cum, tail)))
        hi.append(float(np.searchsorted(cum, 1.0 - tail)))
    return np.asarray(lo), np.asarray(hi)


def _resample(
    array: np.ndarray,
    index_map: np.ndarray,
    out_shape: tuple[int, ...],
    *,
    order: int,
    dtype: np.dtype | type = np.float32,
) -> np.ndarray:
    """Sample ``array`` at ``index_map @ out_index`` (4x4, output index -> input index); zeros outside.

    An axis-aligned map goes through scipy's separable zoom/shift path (several times faster than a
    general affine); an oblique one through the general path.  Either way: one interpolation.
    """
    matrix = index_map[:3, :3]
    offset = index_map[:3, 3]
    out = np.empty(out_shape, dtype=dtype)
    if np.allclose(matrix, np.diag(np.diag(matrix)), atol=1e-9):
        matrix = np.diag(matrix).copy()
    ndimage.affine_transform(
        array,
        matrix,
        offset=offset,
        output_shape=out_shape,
        output=out,
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )
    return out


def sitk_image(array: np.ndarray, affine: np.ndarray):
    """An (I, J, K) array with its voxel -> RAS ``affine`` as a SimpleITK image (LPS physical space)."""
    import SimpleITK as sitk

    lps = np.linalg.inv(RAS_FROM_LPS) @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing[None, :]).ravel()])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    return img


def _sitk_write(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(sitk_image(array, affine), str(path), useCompression=True)
