"""NIfTI converted by dcm2niix, with its BIDS JSON sidecar: the series' own words about what it is.

dcm2niix (what neuro-imagers convert scanner output with) writes beside each ``NAME.nii[.gz]`` a
``NAME.json`` holding the series description, protocol and sequence names and the timing, in BIDS units
(seconds). Without it a NIfTI says nothing about its sequence; with it, a NIfTI is judged as its DICOM series
would be:

- :func:`read_sidecar` reads the sidecar strictly (one JSON object of at most 1 MB, no NaN, no repeated keys,
  each field of its expected type) and returns its fields under the DICOM keywords
  :func:`.sequences.sequence_from_tags` reads (times converted to ms) plus ``Sidecar`` (the file's name), so
  the input check's evidence says where the words came from. A damaged sidecar is ignored with a note, never a
  crash. Only fields that say nothing about the patient are taken (dcm2niix anonymises its sidecars by
  default; a name or date in one is left where it is, never put into the report).
- :func:`load_nifti_folder`: a folder of dcm2niix output (no DICOM series, one NIfTI per series) is chosen
  from as a DICOM study is (:func:`.dicom.choose_stack`: the FLAIR by its tags, never a localizer, a derived
  or a 2D series; ties by finer voxels; one line listing the files when none fits or two fit equally).
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import full_suffix
from .dicom import Described
from .errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "MAX_SIDECAR_BYTES", "NiftiSeries", "apply_sidecar", "load_nifti_folder", "nifti_files", "nifti_series",
    "read_sidecar", "sidecar_path",
]  # fmt: skip

#: A dcm2niix sidecar is a few kB; anything larger is not one (the folder is untrusted).
MAX_SIDECAR_BYTES = 1 << 20
#: At most this many NIfTI files are looked at in one folder (a whole cohort given by mistake is refused).
MAX_NIFTI_FILES = 2000
#: Text fields taken as they are (DICOM keyword = BIDS key); multi-valued ones joined with backslashes.
_TEXT_FIELDS = (
    "SeriesDescription", "ProtocolName", "SequenceName", "ScanningSequence", "SequenceVariant", "Modality",
    "ImageType",
)  # fmt: skip
#: Times BIDS gives in seconds; the DICOM keywords (and the sequence rule) read milliseconds.
_SECONDS_FIELDS = ("RepetitionTime", "EchoTime", "InversionTime")
#: Longest plausible MR time in seconds: a larger value is not in BIDS units.
_MAX_SECONDS = 100.0
#: The contrast agent: the DICOM keyword, or BIDS's own name for it.
_CONTRAST_FIELDS = ("ContrastBolusAgent", "ContrastBolusIngredient")
_MAX_TEXT = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def sidecar_path(nifti: str | Path) -> Path:
    """``NAME.json`` beside ``NAME.nii`` or ``NAME.nii.gz`` (as dcm2niix names it)."""
    p = Path(nifti)
    suffix = full_suffix(p)
    stem = p.name[: len(p.name) - len(suffix)] if suffix in (".nii", ".nii.gz") else p.stem
    return p.with_name(stem + ".json")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        raise ValueError(f"repeated key {repeated[0]!r}")
    return dict(pairs)


def _not_a_number(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _text(value: object) -> str | None:
    """A JSON string (or list of strings, joined as DICOM joins values) as one clean line; None otherwise."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = "\\".join(value)
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        return None
    return " ".join(_CONTROL.sub(" ", value).split())


def _milliseconds(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    if not math.isfinite(seconds) or not 0.0 <= seconds <= _MAX_SECONDS:
        return None
    return f"{round(seconds * 1000.0, 4):g}"


def read_sidecar(nifti: str | Path) -> tuple[dict[str, str], list[str]]:
    """The sequence fields of the JSON sidecar beside ``nifti`` as ``Volume.meta`` entries, and notes.

    Returns ``({}, [])`` without a sidecar; ``({}, [one note])`` for a sidecar that is not one JSON object of
    at most :data:`MAX_SIDECAR_BYTES` (unreadable, not UTF-8, not JSON, NaN, a repeated key); fields of the
    wrong type (a number for a description, a time that is not in seconds) are left out with a note.
    """
    path = sidecar_path(nifti)
    if not path.is_file():
        return {}, []
    unused = "its fields are not used"
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        return {}, [f"{path.name}: the JSON sidecar cannot be read ({exc.strerror or exc}); {unused}"]
    if len(raw) > MAX_SIDECAR_BYTES:
        return {}, [f"{path.name}: larger than {MAX_SIDECAR_BYTES // 1024} kB, not a JSON sidecar; {unused}"]
    try:
        data = json.loads(
            raw.decode("utf-8-sig"), object_pairs_hook=_no_duplicates, parse_constant=_not_a_number
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else " ".join(str(exc).split())[:120]
        return {}, [f"{path.name}: not a valid JSON sidecar ({why or type(exc).__name__}); {unused}"]
    if not isinstance(data, dict):
        return {}, [f"{path.name}: a JSON sidecar is one object, this is a {type(data).__name__}; {unused}"]

    meta: dict[str, str] = {}
    ignored: list[str] = []
    for key in _TEXT_FIELDS:
        if key in data:
            value = _text(data[key])
            meta.update({key: value} if value else {})
            ignored += [] if value is not None else [key]
    for key in _SECONDS_FIELDS:
        if key in data:
            value = _milliseconds(data[key])
            meta.update({key: value} if value is not None else {})
            ignored += [] if value is not None else [key]
    for key in _CONTRAST_FIELDS:
        if key in data and "ContrastBolusAgent" not in meta:
            value = _text(data[key])
            meta.update({"ContrastBolusAgent": value} if value else {})
            ignored += [] if value is not None else [key]
    if "SeriesNumber" in data:
        number = data["SeriesNumber"]
        if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
            meta["SeriesNumber"] = str(number)
        else:
            ignored.append("SeriesNumber")
    notes = []
    if ignored:
        notes.append(
            f"{path.name}: {', '.join(ignored)} ignored (not of the type a sidecar gives; times in seconds)"
        )
    if meta:
        meta["Sidecar"] = path.name
    return meta, notes


def apply_sidecar(volume, nifti: Path) -> None:
    """Put the sidecar's fields into ``volume.meta`` and its notes into ``volume.notes`` (logged)."""
    meta, notes = read_sidecar(nifti)
    volume.meta.update(meta)
    for note in notes:
        volume.notes.append(note)
        log.warning(note)


# --- a folder of dcm2niix output ----------------------------------------------------------------------------

_PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}


@dataclass
class NiftiSeries(Described):
    """One NIfTI file of a folder as the series chooser sees it (ranked as a DICOM :class:`.dicom.Stack`).

    ``series_uid`` is the file's name (so ``--series NAME.nii.gz`` chooses it), ``number`` the sidecar's
    SeriesNumber; the slices are the third voxel axis (dcm2niix keeps the acquired slices there).
    """

    path: Path
    shape: tuple[int, ...] = ()
    zooms: tuple[float, ...] = ()
    normal: np.ndarray = field(default_factory=lambda: np.zeros(3))
    meta: dict[str, str] = field(default_factory=dict)
    excluded: str = ""
    part: str = ""

    @property
    def series_uid(self) -> str:
        return self.path.name

    @property
    def slices(self) -> int:
        return int(self.shape[2]) if len(self.shape) >= 3 else 1

    @property
    def voxel_mm3(self) -> float:
        return float(np.prod(self.zooms[:3])) if len(self.zooms) >= 3 else math.inf

    @property
    def plane(self) -> str:
        length = float(np.linalg.norm(self.normal))
        if length == 0:
            return "unknown plane"
        axis = int(np.argmax(np.abs(self.normal)))
        return _PLANES[axis] if abs(self.normal[axis]) / length > 0.9 else "oblique"

    def label(self) -> str:
        """How a person recognises it: "3_AX_FLAIR.nii.gz 'AX FLAIR' (156 slices, axial)"."""
        described = self.description or ("no sidecar" if "Sidecar" not in self.meta else "no description")
        return f"{self.path.name} '{described}' ({self.slices} slices, {self.plane})"


def nifti_files(folder: Path) -> list[Path]:
    """The NIfTI files directly in ``folder``, sorted by name."""
    files = sorted(
        p
        for p in folder.iterdir()
        if not p.name.startswith(".") and full_suffix(p) in (".nii", ".nii.gz") and p.is_file()
    )
    if len(files) > MAX_NIFTI_FILES:
        raise InputError(f"more than {MAX_NIFTI_FILES} NIfTI files in this folder: give one study's", folder)
    return files


def nifti_series(folder: str | Path) -> list[NiftiSeries]:
    """The NIfTI files directly in ``folder`` (not below it) with their sidecars' fields, each marked when it
    is never chosen automatically (a localizer, derived, 2D, 4D or unreadable)."""
    import nibabel as nib

    from .dicom import MIN_SLICES, _exclusion

    found = []
    for path in nifti_files(Path(folder)):
        meta, _ = read_sidecar(path)
        series = NiftiSeries(path, meta=meta)
        try:
            header = nib.load(str(path)).header
            series.shape = tuple(int(s) for s in header.get_data_shape())
            series.zooms = tuple(float(z) for z in header.get_zooms())
            series.normal = np.asarray(header.get_best_affine(), dtype=np.float64)[:3, 2]
        except Exception as exc:  # nibabel raises many types for damaged files
            series.excluded = f"unreadable ({type(exc).__name__})"
            found.append(series)
            continue
        extra = [s for s in series.shape[3:] if s != 1]
        image_type = [v for v in meta.get("ImageType", "").upper().split("\\") if v]
        if extra:
            series.excluded = f"4D ({int(np.prod(extra))} volumes)"
        elif len(series.shape) < 3 or min(series.shape[:3]) < 2:
            series.excluded = f"a 2D image (shape {series.shape})"
        else:
            series.excluded = _exclusion({"ImageType": image_type}, meta, series.slices)
            if not series.excluded and min(series.shape[:3]) < MIN_SLICES:
                series.excluded = f"a 2D stack (shape {series.shape})"
        found.append(series)
    return found


def load_nifti_folder(folder: Path, *, sequence: str = "flair", series: str | None = None):
    """The NIfTI of ``sequence`` among a folder's dcm2niix output, chosen by its sidecar's fields as a DICOM
    study's series is chosen; the choice and its reason in ``meta["SeriesChoice"]`` and a note."""
    from .dicom import choose_stack, note_choice
    from .volume import _load_nifti

    candidates = nifti_series(folder)
    if not candidates:
        raise InputError("no NIfTI file in this folder", folder)
    try:
        chosen, why = choose_stack(candidates, sequence, series=series, where=folder)
    except InputError as exc:  # the files are named by their file names, not by DICOM UIDs
        problem = exc.problem.replace("--series UID|NUMBER", "--series FILE|NUMBER (or give the file itself)")
        raise InputError(problem.replace("Series Instance UID", "file name"), folder) from None
    volume = _load_nifti(chosen.path)
    note_choice(volume, why, len(candidates), "NIfTI files", folder, chosen.path.name)
    return volume
