"""What a client uploads becomes files the node names itself, within limits, or nothing at all.

A volume (NIfTI, NRRD, MetaImage) or a zip of a DICOM series/study.  Upload file names never become paths
(the node names every file it writes), a zip member's name is never used either, the upload and the unpacked
total are capped (a zip bomb — a small file that unpacks to gigabytes — is refused before anything is
written), and a failed upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

from ..io.errors import InputError

__all__ = ["FORMATS", "unpack"]

#: Accepted upload formats -> the file name the node gives the volume.
FORMATS = {
    "nii": "volume.nii",
    "nii.gz": "volume.nii.gz",
    "nrrd": "volume.nrrd",
    "mha": "volume.mha",
    "zip": None,
}
#: A zip member may be at most this many times larger unpacked than packed (DICOM compresses 2-5x).
MAX_RATIO = 200
MAX_MEMBERS = 20000


def unpack(upload: Path, fmt: str, folder: Path, *, max_unpacked_bytes: int) -> tuple[Path, str]:
    """Move ``upload`` (already size-checked) into ``folder`` under the node's own name; a zip is unpacked as
    ``dicom/00001.dcm ...``. Returns (the input path for the pipeline, SHA-256 of the upload)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
    digest = hashlib.sha256()
    with upload.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    folder.mkdir(parents=True, exist_ok=False)
    try:
        if FORMATS[fmt] is not None:
            target = folder / FORMATS[fmt]
            shutil.move(str(upload), target)
            return target, digest.hexdigest()
        return _unzip(upload, folder / "dicom", max_unpacked_bytes), digest.hexdigest()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _unzip(upload: Path, target: Path, limit: int) -> Path:
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError):
        raise InputError("the upload is not a readable zip file") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise InputError("the zip holds no file")
        if len(members) > MAX_MEMBERS:
            raise InputError(f"the zip holds {len(members)} files (at most {MAX_MEMBERS})")
        declared = sum(m.file_size for m in members)
        if declared > limit:
            raise InputError(f"the zip unpacks to {declared / 1e6:.0f} MB (at most {limit / 1e6:.0f} MB)")
        for m in members:
            if m.compress_size and m.file_size / m.compress_size > MAX_RATIO:
                raise InputError("the zip looks like a zip bomb (a member unpacks over 200 times its size)")
        target.mkdir(parents=True)
        written = 0
        for number, member in enumerate(members, start=1):
            out = target / f"{number:05d}.dcm"  # the member's own name is never used
            with archive.open(member) as source, out.open("wb") as sink:
                while chunk := source.read(1 << 20):
                    written += len(chunk)
                    if written > limit:  # the sizes a zip declares can lie: count what really comes out
                        raise InputError(f"the zip unpacks to more than {limit / 1e6:.0f} MB")
                    sink.write(chunk)
    return target
