"""Atomic writes: a failed or interrupted run must never leave a half-written file behind.

Everything the library writes goes to a temporary name in the destination folder first (same file system, so
the final ``os.replace`` is atomic) and is renamed only once it is complete.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError

#: Multi-part suffixes that readers dispatch on; a temporary name must keep them.
KNOWN_SUFFIXES = (".nii.gz", ".seg.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def full_suffix(path: str | os.PathLike) -> str:
    """Return the lower-case format suffix of ``path`` (``.nii.gz`` rather than ``.gz``)."""
    name = Path(path).name.lower()
    for suffix in KNOWN_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def _writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and check that it can be written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder ({exc.strerror or exc})", folder) from exc
    if not os.access(folder, os.W_OK):
        raise InputError("output folder is not writable", folder)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    target = Path(path)
    _writable_folder(target.parent)
    if target.is_dir():
        raise InputError("output path is a folder, expected a file", target)
    suffix = full_suffix(target)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    tmp = target.parent / f".{stem}.tmp-{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to {tmp}")
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextlib.contextmanager
def staging_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on success move its entries into ``out``.

    Used for commands that write several files: either all of them appear, or none does.
    """
    target = Path(out)
    _writable_folder(target.parent)
    if target.exists() and not target.is_dir():
        raise InputError("output path exists and is not a folder", target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        target.mkdir(parents=True, exist_ok=True)
        for entry in sorted(tmp.iterdir()):
            dest = target / entry.name
            if dest.is_dir() and entry.is_dir():
                shutil.rmtree(dest)
            os.replace(entry, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
