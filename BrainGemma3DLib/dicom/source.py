"""The source series of a report: the DICOM frames a report was made from, found again and checked.

An SR and a SEG must reference the exact images the draft was made from, and a SEG must be drawn on their
geometry. report.json records the source folder, the SHA-256 of the series' files (in slice order, each file
once) and the SOP Instance UID of every slice; this module reads those instances' headers again (pixels are
not needed), in the recorded order, and refuses a folder whose files changed since the report, so that no
object ever points at images the draft did not see.

A classic series has one instance per slice. An Enhanced MR (multi-frame) object holds the slices as frames of
one instance: report.json repeats its SOP Instance UID once per slice and lists the frame of each slice
(``dicom_frame_numbers``); the instance is read once, and :func:`report_frame_numbers` gives the frames.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..io.errors import InputError
from ..io.stamps import sha256_files
from ..reporting.report import Report


def read_source_series(report: Report, source: str | os.PathLike | None = None) -> list:
    """The source instances (pydicom datasets without pixel data) of ``report``, in its slice order, each
    once: one per slice for a classic series, the one multi-frame instance for an Enhanced MR object (its
    frames: :func:`report_frame_numbers`).

    ``source`` is the series folder when it moved since the report was made (default: the path in
    report.json). Raises :class:`InputError` for a report not made from DICOM, a missing folder, missing
    frames, or frames whose bytes differ from what the report read.
    """
    import pydicom

    given = report.input
    uids = given.get("dicom_sop_instance_uids")
    if not uids:
        raise InputError(
            "the report was not made from a DICOM series (no SOP Instance UIDs in report.json input): "
            "give --new-study with the patient's fields to make a new study"
        )
    folder = Path(source) if source is not None else Path(given.get("paths", [""])[0])
    if not folder.is_dir():
        raise InputError("the report's source DICOM series folder is not there (give --source)", folder)
    wanted = set(uids)
    found: dict[str, tuple[Path, object]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue  # not DICOM (a DICOMDIR's companions, notes): not part of the series
        uid = str(getattr(ds, "SOPInstanceUID", ""))
        if uid in wanted and uid not in found:
            found[uid] = (path, ds)
    missing = [uid for uid in uids if uid not in found]
    if missing:
        raise InputError(f"{len(missing)} of the report's {len(uids)} source frames are missing", folder)
    instances = list(dict.fromkeys(uids))  # a multi-frame instance holds several slices: once, in slice order
    paths = [found[uid][0] for uid in instances]  # as the reading hashed them: each file once, in slice order
    recorded = (given.get("sha256") or [None])[0]
    if recorded and sha256_files(paths) != recorded:
        raise InputError("the source series changed since the report was made (SHA-256 differs)", folder)
    return [found[uid][1] for uid in instances]


def report_frame_numbers(report: Report, sources: list) -> list[int] | None:
    """The frames of a multi-frame source instance that the report's slices are, in its slice order
    (report.json ``dicom_frame_numbers``); None when the source is not one multi-frame instance, when the
    report names no frames, or when its slices are in other instances than ``sources`` (then all the
    instance's frames are the source: a volume Slicer loaded, say)."""
    numbers = report.input.get("dicom_frame_numbers")
    uids = report.input.get("dicom_sop_instance_uids") or []
    if not numbers or len(sources) != 1 or len(numbers) != len(uids):
        return None
    if set(uids) != {str(getattr(sources[0], "SOPInstanceUID", ""))}:
        return None
    return [int(n) for n in numbers]


def read_series_files(files: list[str | os.PathLike]) -> list:
    """The frames of one series from its files (Slicer's DICOM database keeps them anywhere), headers only,
    in slice order along the normal of their orientation; a multi-frame file (Enhanced MR) is one instance
    whose frames carry their own geometry."""
    import numpy as np
    import pydicom

    if not files:
        raise InputError("the volume has no DICOM files in the database to reference")
    frames = []
    for path in files:
        try:
            frames.append(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception as exc:
            raise InputError(f"unreadable DICOM file ({type(exc).__name__})", path) from exc
    try:
        orientation = np.asarray(frames[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        return sorted(frames, key=lambda ds: float(normal @ np.asarray(ds.ImagePositionPatient, float)))
    except (AttributeError, TypeError, ValueError):  # no geometry to order them by: the export leaves the SEG
        return frames  # out and says why (objects.seg_obstacle)
