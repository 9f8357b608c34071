"""DICOM studies as scanners and archives deliver them, read into one :class:`~.volume.Volume`.

What arrives is rarely "one folder, one classic series": a study fetched from the PACS holds every series
(localizers, T1, FLAIR, reformats), today's scanners write Enhanced MR (one multi-frame object per series),
archives compress (JPEG, JPEG-LS, JPEG 2000, RLE, deflate), media from another hospital come with a DICOMDIR
whose ISO 9660 file names are upper case, and pixel values come with rescale slopes, signed or 12-bit storage,
MONOCHROME1 and padding values.  This module reads all of it the same way:

1. :func:`find_stacks` reads the headers of every file (a folder, recursively, or the files a DICOMDIR lists)
   and groups the images into **stacks**: one geometry each (orientation, pixel size, evenly spaced parallel
   slices).  A series whose images mix orientations, spacings, echoes or time points, or a multi-frame
   object holding several, is split into stacks, never resampled as one.
2. :func:`choose_stack` picks the FLAIR (or T1ce, T2) among them by its tags (series description, protocol,
   sequence name, inversion/echo/repetition times, contrast agent: :func:`.sequences.sequence_from_tags`),
   never a localizer, a derived or secondary-capture series or a 2D stack; among equal candidates the finer,
   larger stack wins; when none fits or two fit equally it raises one line listing the candidates, and
   ``series`` (a Series Instance UID or number) chooses.  The choice and its reason travel into report.json.
3. :func:`read_stack` decodes the pixels with pydicom (compressed transfer syntaxes through the pylibjpeg
   plugins), applies each frame's modality rescale, inverts MONOCHROME1, sets padding to the background, and
   builds the voxel-to-world matrix from the frames' own positions (per-frame functional groups for
   multi-frame objects).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .sequences import SEQUENCE_TAGS, sequence_from_tags
from .stamps import sha256_files

log = logging.getLogger(__name__)

__all__ = ["IDENTITY_TAGS", "MIN_SLICES", "Stack", "choose_stack", "find_stacks", "read_stack"]

#: Tags read with a series: who and what it is (kept in ``Volume.meta`` for report.json and the PDF).
IDENTITY_TAGS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "StudyDescription", "AccessionNumber", "ReferringPhysicianName", "StudyInstanceUID", "SeriesInstanceUID",
    "FrameOfReferenceUID", "SeriesDescription", "Modality", "InstitutionName", "SeriesNumber",
)  # fmt: skip
#: A stack with fewer slices is a 2D stack (a localizer's plane, a single slice): never chosen by itself.
MIN_SLICES = 10
#: At most this many files are read from one folder (a whole archive given by mistake is refused).
MAX_FILES = 20000
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: Derivation Code (DCM 113040) "Lossy Compression": what DCMTK and lossy-archiving PACS record, with Image
#: Type DERIVED, on images that are otherwise the original acquisition.
_LOSSY_COMPRESSION = "113040"
_LOCALIZER_WORDS = re.compile(r"locali[sz]er|scout|survey|\b3\W?pl(ane)?\b|\bloc\b|\baa\W?head", re.I)
_PLANES = {0: "sagittal", 1: "coronal", 2: "axial"}


@dataclass
class Frame:
    """One 2D image: a single-frame file, or one frame (1-based ``number``) of a multi-frame file."""

    path: Path
    number: int | None
    sop_uid: str
    position: np.ndarray  # (3,) LPS mm of the first pixel's centre
    orientation: np.ndarray  # (6,) row direction, column direction
    spacing: tuple[float, float]  # (between rows, between columns) mm
    shape: tuple[int, int]  # (rows, columns)
    rescale: tuple[float, float] = (1.0, 0.0)  # (slope, intercept)
    key: tuple = ()  # what else tells stacks apart: echo, time point, stack id


class Described:
    """What a person knows a candidate series by (its number and description), for the chooser's lines."""

    meta: dict[str, str]

    @property
    def number(self) -> str:
        return self.meta.get("SeriesNumber", "")

    @property
    def description(self) -> str:
        return self.meta.get("SeriesDescription", "") or self.meta.get("ProtocolName", "")


def note_choice(volume, why: str, count: int, what: str, folder: Path, chosen: str) -> None:
    """Record a chooser's choice on the volume read: its reason in ``meta`` (report.json input) and, when
    there was a choice to make, a note and a log line."""
    volume.meta["SeriesChoice"] = why
    if count > 1:
        note = f"{count} {what} in {folder}; using {chosen}: {why}"
        volume.notes.append(note)
        log.warning(note)


@dataclass
class Stack(Described):
    """One geometry's worth of images of one series, in slice order (along the slices' normal)."""

    series_uid: str
    frames: list[Frame]
    meta: dict[str, str] = field(default_factory=dict)
    excluded: str = ""  # why it is never chosen automatically ("" when it may be)
    part: str = ""  # "stack 2 of 3" when its series was split

    @property
    def plane(self) -> str:
        normal = np.cross(self.frames[0].orientation[:3], self.frames[0].orientation[3:])
        axis = int(np.argmax(np.abs(normal)))
        return _PLANES[axis] if abs(normal[axis]) > 0.9 else "oblique"

    @property
    def files(self) -> list[Path]:
        """The files the stack reads, each once, in slice order."""
        return list(dict.fromkeys(f.path for f in self.frames))

    @property
    def slices(self) -> int:
        return len(self.frames)

    @property
    def voxel_mm3(self) -> float:
        return float(np.prod(self.frames[0].spacing) * _slice_step(self.frames))

    def label(self) -> str:
        """How a person recognises it: "series 3 'AX T2 FLAIR' (156 slices, axial)"."""
        number = f"series {self.number}" if self.number else f"series {self.series_uid}"
        part = f", {self.part}" if self.part else ""
        described = self.description or "no description"
        return f"{number} '{described}' ({len(self.frames)} slices, {self.plane}{part})"


# --- finding the images ----------------------------------------------------------------------------------


def _files_of(path: Path, max_files: int | None = MAX_FILES) -> list[Path]:
    """The files to look at: those a DICOMDIR lists (found case-insensitively), else every file below."""
    if path.is_file():
        return [path]
    dicomdir = next((p for p in path.iterdir() if p.is_file() and p.name.upper() == "DICOMDIR"), None)
    if dicomdir is not None:
        return dicomdir_files(dicomdir)
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(root) / n for n in sorted(names) if not n.startswith(".")]
        if max_files is not None and len(files) > max_files:
            raise InputError(f"more than {max_files} files below this folder: give one study's folder", path)
    return files


def _case_insensitive(root: Path, parts: Sequence[str]) -> Path | None:
    """``root/parts...`` as it lies on disk, whatever the case of each part (ISO 9660 media are upper case,
    and a copy to another file system may have changed it)."""
    here = root
    for part in parts:
        exact = here / part
        if exact.exists():
            here = exact
            continue
        match = (
            next((p for p in here.iterdir() if p.name.upper() == part.upper()), None)
            if here.is_dir()
            else None
        )
        if match is None:
            return None
        here = match
    return here


def dicomdir_files(dicomdir: Path) -> list[Path]:
    """The image files a DICOMDIR's directory records list (patients, studies, series, images)."""
    import pydicom

    try:
        ds = pydicom.dcmread(dicomdir)
        records = ds.DirectoryRecordSequence
    except Exception as exc:
        raise InputError(f"unreadable DICOMDIR ({type(exc).__name__})", dicomdir) from exc
    files, missing = [], 0
    for record in records:
        ids = record.get("ReferencedFileID")
        if ids is None:
            continue
        parts = [str(ids)] if isinstance(ids, str) else [str(p) for p in ids]
        found = _case_insensitive(dicomdir.parent, parts)
        if found is None:
            missing += 1
        else:
            files.append(found)
    if not files:
        raise InputError("the DICOMDIR lists no image file that is on the medium", dicomdir)
    if missing:
        log.warning("%s: %d file(s) it lists are not on the medium", dicomdir, missing)
    return files


def _first(value, default=None):
    from pydicom.multival import MultiValue

    if value is None:
        return default
    if not isinstance(value, MultiValue | list | tuple):
        return value
    return value[0] if len(value) else default


def _lookup(ds, keyword: str):
    """``keyword`` on ``ds``, else in its shared functional groups (Enhanced MR keeps timing and rescale
    there), else in the first frame's functional groups; None when absent."""
    if keyword in ds:
        return ds.get(keyword)
    for holder in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        groups = ds.get(holder)
        if not groups:
            continue
        for item in groups[0]:
            if item.VR == "SQ" and item.value:
                if keyword in item.value[0]:
                    return item.value[0].get(keyword)
    return None


def _text(value) -> str:
    """A DICOM value as text: several values joined by backslashes, as DICOM writes them."""
    from pydicom.multival import MultiValue

    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode(errors="replace").strip()
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _meta(ds) -> dict[str, str]:
    """Identity and sequence fields of a series (``Volume.meta``), from the top level or, for Enhanced MR,
    from its functional groups."""
    meta = {}
    for keyword in (*IDENTITY_TAGS, *SEQUENCE_TAGS):
        value = _lookup(ds, keyword)
        if value is None and keyword == "SequenceName":
            value = _lookup(ds, "PulseSequenceName")
        elif value is None and keyword == "EchoTime":
            value = _lookup(ds, "EffectiveEchoTime")
        elif value is None and keyword == "InversionTime":
            value = _first(_lookup(ds, "InversionTimes"))
        text = _text(value)
        if text:
            meta[keyword] = text
    return meta


def _group(ds, holder: str, sequence: str, index: int = 0):
    groups = ds.get(holder)
    if not groups or len(groups) <= index:
        return None
    item = groups[index].get(sequence)
    return item[0] if item else None


def _frame_item(ds, sequence: str, index: int):
    """A functional group of frame ``index`` (0-based): per-frame when there, else shared."""
    return _group(ds, "PerFrameFunctionalGroupsSequence", sequence, index) or _group(
        ds, "SharedFunctionalGroupsSequence", sequence
    )


def _floats(value, n: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (n,) and np.all(np.isfinite(out)) else None


def _frames_of(path: Path, ds) -> list[Frame]:
    """The 2D images of one file with their geometry (empty for a file without a placed image)."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if not rows or not cols:
        return []
    uid = str(ds.get("SOPInstanceUID", ""))
    n = int(ds.get("NumberOfFrames", 1) or 1)
    if "PerFrameFunctionalGroupsSequence" in ds or n > 1:
        frames = []
        for i in range(n):
            plane = _frame_item(ds, "PlanePositionSequence", i)
            orient = _frame_item(ds, "PlaneOrientationSequence", i)
            measures = _frame_item(ds, "PixelMeasuresSequence", i)
            position = _floats(getattr(plane, "ImagePositionPatient", None), 3)
            orientation = _floats(getattr(orient, "ImageOrientationPatient", None), 6)
            spacing = _floats(getattr(measures, "PixelSpacing", None), 2)
            if position is None or orientation is None or spacing is None:
                return []  # a multi-frame object without per-frame geometry (a cine, a secondary capture)
            values = _frame_item(ds, "PixelValueTransformationSequence", i)
            rescale = (
                float(getattr(values, "RescaleSlope", 1.0) or 1.0),
                float(getattr(values, "RescaleIntercept", 0.0) or 0.0),
            )
            content = _frame_item(ds, "FrameContentSequence", i)
            echo = _frame_item(ds, "MREchoSequence", i)
            key = (
                str(getattr(content, "StackID", "") or ""),
                int(getattr(content, "TemporalPositionIndex", 0) or 0),
                round(float(getattr(echo, "EffectiveEchoTime", 0.0) or 0.0), 2),
            )
            frames.append(
                Frame(path, i + 1, uid, position, orientation, tuple(spacing), (rows, cols), rescale, key)
            )
        return frames
    position = _floats(ds.get("ImagePositionPatient"), 3)
    orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    spacing = _floats(ds.get("PixelSpacing"), 2)
    if position is None or orientation is None or spacing is None:
        return []
    rescale = (float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0))
    key = (
        _text(ds.get("EchoNumbers")),
        _text(ds.get("TemporalPositionIdentifier")),
        round(float(_first(ds.get("EchoTime"), 0.0) or 0.0), 2),
        _text(ds.get("DiffusionBValue")),
    )
    return [Frame(path, None, uid, position, orientation, tuple(spacing), (rows, cols), rescale, key)]


def _exclusion(ds, meta: dict[str, str], n: int) -> str:
    image_type = ds.get("ImageType") or []
    if isinstance(image_type, str):  # one value: pydicom gives a str, not a list of characters
        image_type = [image_type]
    image_type = [str(v).upper() for v in image_type]
    words = " ".join(meta.get(k, "") for k in ("SeriesDescription", "ProtocolName", "SequenceName"))
    if "LOCALIZER" in image_type or _LOCALIZER_WORDS.search(words):
        return "a localizer"
    if str(ds.get("SOPClassUID", "")).startswith(_SECONDARY_CAPTURE):
        return "a secondary capture"
    derivations = {str(item.get("CodeValue", "")) for item in ds.get("DerivationCodeSequence") or []}
    if image_type and image_type[0] == "DERIVED" and derivations != {_LOSSY_COMPRESSION}:
        # Derived only by lossy compression (a PACS archiving lossy, dcmcjpeg +eb): still the acquisition.
        return "derived (a reformat or a computed map)"
    if n < MIN_SLICES:
        return f"a 2D stack ({n} slice{'s' if n != 1 else ''})"
    return ""


def _slice_step(frames: Sequence[Frame]) -> float:
    if len(frames) < 2:
        return 1.0
    return float(np.linalg.norm(frames[-1].position - frames[0].position) / (len(frames) - 1))


def _split(frames: list[Frame]) -> list[list[Frame]]:
    """Frames of one series into stacks: one geometry, distinct positions, even spacing, in slice order."""
    groups: dict[tuple, list[Frame]] = {}
    for f in frames:
        geometry = (tuple(np.round(f.orientation, 3)), f.shape, tuple(np.round(f.spacing, 3)), f.key)
        groups.setdefault(geometry, []).append(f)
    stacks = []
    for group in groups.values():
        normal = np.cross(group[0].orientation[:3], group[0].orientation[3:])
        along = sorted(group, key=lambda f: (float(normal @ f.position), f.number or 0))
        # Several images at one position (echoes or time points the tags did not tell apart): k-th copies.
        copies: list[list[Frame]] = []
        last, k = None, 0
        for f in along:
            where = round(float(normal @ f.position), 3)
            k = k + 1 if where == last else 0
            last = where
            while len(copies) <= k:
                copies.append([])
            copies[k].append(f)
        for copy in copies:
            stacks += _even_runs(copy, normal)
    return stacks


def _even_runs(frames: list[Frame], normal: np.ndarray) -> list[list[Frame]]:
    """Cut where the slice spacing changes (two slabs, a gap): each run is evenly spaced."""
    if len(frames) < 3:
        return [frames]
    where = np.asarray([float(normal @ f.position) for f in frames])
    gaps = np.diff(where)
    runs, start = [], 0
    for i in range(1, len(gaps)):
        reference = gaps[start]
        if abs(gaps[i] - reference) > max(0.05, 0.1 * abs(reference)):
            runs.append(frames[start : i + 1])
            start = i + 1
    runs.append(frames[start:])
    return [r for r in runs if r]


def find_stacks(path: str | os.PathLike, *, max_files: int | None = MAX_FILES) -> list[Stack]:
    """Every stack of images below ``path`` (a folder, a DICOMDIR or its folder); ``max_files`` guards a
    single study against a whole archive given by mistake (None for a cohort)."""
    import pydicom

    root = Path(path)
    headers: dict[str, list[tuple[Path, object]]] = {}
    for file in _files_of(root if root.name.upper() != "DICOMDIR" else root.parent, max_files):
        try:
            ds = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception:
            continue  # not DICOM (notes, a viewer on the CD): not part of any series
        if "SeriesInstanceUID" not in ds:
            continue
        headers.setdefault(str(ds.SeriesInstanceUID), []).append((file, ds))
    stacks: list[Stack] = []
    for uid, items in headers.items():
        frames = [f for file, ds in items for f in _frames_of(file, ds)]
        if not frames:
            continue
        meta = _meta(items[0][1])
        parts = _split(frames)
        for i, part in enumerate(parts, start=1):
            stack = Stack(uid, part, dict(meta), part=f"stack {i} of {len(parts)}" if len(parts) > 1 else "")
            stack.excluded = _exclusion(items[0][1], meta, len(part))
            stacks.append(stack)
    return stacks


# --- choosing ----------------------------------------------------------------------------------------------


def _matches(stack: Stack, series: str) -> bool:
    return series in (stack.series_uid, stack.number) or (
        stack.part and series == f"{stack.number or stack.series_uid}:{stack.part.split()[1]}"
    )


def choose_stack(
    stacks: Sequence[Stack], sequence: str = "flair", *, series: str | None = None, where: Path | None = None
) -> tuple[Stack, str]:
    """The stack of ``sequence`` among ``stacks`` and why, or one :class:`InputError` line listing the
    candidates (number, description, slices, orientation) and how to choose with ``series``. A folder of
    dcm2niix NIfTI files is ranked by the same rule (:class:`.sidecar.NiftiSeries` reads as a stack)."""
    if not stacks:
        raise InputError("no DICOM image series found (or give a NIfTI, NRRD or MetaImage file)", where)
    listing = "; ".join(s.label() for s in stacks)
    if series is not None:
        chosen = [s for s in stacks if _matches(s, str(series))]
        if len(chosen) != 1:
            what = "no" if not chosen else f"{len(chosen)}"
            raise InputError(
                f"{what} series match --series {series} (give a Series Instance UID or number; "
                f"the folder holds: {listing})",
                where,
            )
        return chosen[0], f"{chosen[0].label()}, chosen with --series {series}"
    eligible = [s for s in stacks if not s.excluded]
    if len(stacks) == 1 or len(eligible) == 1 and len(stacks) == len(eligible):
        only = stacks[0] if len(stacks) == 1 else eligible[0]
        return only, f"{only.label()}, the only series"
    found = {id(s): sequence_from_tags(s.meta) for s in eligible}
    fitting = [s for s in eligible if found[id(s)][0] == sequence]
    if not fitting:
        if len(eligible) == 1:
            only = eligible[0]
            skipped = "; ".join(f"{s.label()}: {s.excluded}" for s in stacks if s.excluded)
            return only, f"{only.label()}, the only series that is not {skipped}"
        raise InputError(
            f"no series here is recognisably {sequence.upper()} by its tags; choose one with --series "
            f"UID|NUMBER ({listing})",
            where,
        )
    # Equal by the tags: the finer voxels, then more slices; truly equal ones are the user's call.
    ranked = sorted(fitting, key=lambda s: (round(s.voxel_mm3, 3), -s.slices))
    best = ranked[0]
    if len(ranked) > 1 and (round(ranked[1].voxel_mm3, 3), ranked[1].slices) == (
        round(best.voxel_mm3, 3),
        best.slices,
    ):
        tied = "; ".join(s.label() for s in ranked if s.voxel_mm3 == best.voxel_mm3)
        raise InputError(
            f"{len(ranked)} series look like {sequence.upper()} equally ({tied}); choose one with --series "
            "UID|NUMBER",
            where,
        )
    why = f"{sequence.upper()} by {found[id(best)][1]}"
    if len(ranked) > 1:
        why += f"; the finest of {len(ranked)} {sequence.upper()} series ({best.voxel_mm3:.2f} mm³ voxels)"
    return best, f"{best.label()}: {why}"


# --- reading -------------------------------------------------------------------------------------------


def _pixels(path: Path, ds) -> np.ndarray:
    """The stored pixel values of one file ((frames, rows, columns)); compressed syntaxes decoded by pydicom's
    handlers (pylibjpeg: JPEG, JPEG-LS, JPEG 2000; RLE and deflate built in)."""
    try:
        array = ds.pixel_array
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise InputError(f"cannot decode the pixel data ({name}: {type(exc).__name__}: {exc})", path) from exc
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError("DICOM series with colour/vector pixels; a scalar MRI is needed", path)
    return array.reshape(-1, int(ds.Rows), int(ds.Columns))


def read_stack(stack: Stack, where: Path):
    """The stack as a :class:`~.volume.Volume` (voxel-to-RAS affine, meta, SHA-256 of its files)."""
    import pydicom

    from .volume import RAS_FROM_LPS, Volume

    if len(stack.frames) < 2:
        raise InputError(f"2D image: {stack.label()} has a single slice; a 3D volume is needed", where)
    datasets: dict[Path, object] = {}
    pixels: dict[Path, np.ndarray] = {}
    for path in stack.files:
        try:
            datasets[path] = pydicom.dcmread(path)
        except Exception as exc:
            raise InputError(f"unreadable DICOM file ({type(exc).__name__})", path) from exc
        pixels[path] = _pixels(path, datasets[path])
    slices, padded = [], []
    for f in stack.frames:
        ds = datasets[f.path]
        raw = pixels[f.path][(f.number or 1) - 1]
        slices.append(raw.astype(np.float64) * f.rescale[0] + f.rescale[1])
        padding = ds.get("PixelPaddingValue")
        pad = np.zeros(raw.shape, dtype=bool)
        if padding is not None:  # matched on the stored values, before the rescale
            limit = ds.get("PixelPaddingRangeLimit", padding)
            lo, hi = sorted((int(padding), int(limit)))
            pad = (raw >= lo) & (raw <= hi)
        padded.append(pad)
    data = np.stack(slices)  # (slices, rows, columns)
    pad = np.stack(padded)
    real = ~pad if (~pad).any() else np.ones_like(pad)
    first = datasets[stack.frames[0].path]
    if str(first.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        # MONOCHROME1: low values are bright; inverted over the real pixels' range (padding is not in it)
        data = data[real].max() + data[real].min() - data
    if pad.any() and (~pad).any():
        # Padding is no tissue: the background, i.e. the lowest real value of the whole volume. Set after the
        # inversion (MONOCHROME1 padding must not turn bright) and volume-wide (a slice wholly padded, outside
        # the field of view, or one without air around the head gets the same background as the others).
        data[pad] = data[~pad].min()
    integral = all(
        float(f.rescale[0]).is_integer() and float(f.rescale[1]).is_integer() for f in stack.frames
    )
    data = data.astype(np.int32 if integral and abs(data).max() < 2**31 else np.float32)
    f0 = stack.frames[0]
    row_dir, col_dir = f0.orientation[:3], f0.orientation[3:]
    step = (stack.frames[-1].position - f0.position) / (len(stack.frames) - 1)
    lps = np.eye(4)
    lps[:3, 0] = row_dir * f0.spacing[1]  # along a row: the column index grows
    lps[:3, 1] = col_dir * f0.spacing[0]  # down a column: the row index grows
    lps[:3, 2] = step
    lps[:3, 3] = f0.position
    meta = dict(stack.meta)
    meta["SOPInstanceUIDs"] = "\\".join(f.sop_uid for f in stack.frames)
    if any(f.number is not None for f in stack.frames):
        meta["FrameNumbers"] = "\\".join(str(f.number) for f in stack.frames)
    volume = Volume(
        data.transpose(2, 1, 0)[None],  # (columns, rows, slices): i along a row, j down a column, k slices
        RAS_FROM_LPS @ lps,
        (str(where),),
        (sha256_files(stack.files),),
        (where.name,),
    )
    volume.meta.update(meta)
    return volume
