"""Atomic writes: a failed or interrupted run must never leave a half-written file behind.

Everything the library writes goes to a temporary name in the destination folder first (same file system, so
the final ``os.replace`` is atomic) and is renamed only once it is complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Collection, Iterator
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
        with _no_space_is_input_error(target):
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

    Used for commands whose output folder may hold other files (a training run, an evaluation): each entry
    appears whole or not at all, and entries it does not write are kept. A report folder, whose files must
    belong together, goes through :func:`replace_dir` instead.
    """
    target = Path(out)
    _check_target(target)
    tmp = _new_stage(target)
    try:
        with _no_space_is_input_error(target):
            yield tmp
            target.mkdir(parents=True, exist_ok=True)
            for entry in sorted(tmp.iterdir()):
                dest = target / entry.name
                if dest.is_dir() and entry.is_dir():
                    shutil.rmtree(dest)
                os.replace(entry, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def replace_dir(out: str | os.PathLike, owned: Collection[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out``; on success it *becomes* ``out`` in one rename.

    The rule that loses nothing: ``out`` must be new or empty, or, with ``overwrite``, hold nothing but
    files named in ``owned`` (a previous report's set, replaced whole: no stale file of an older run stays
    beside the new ones, and no file BrainGemma3D did not write is ever deleted). The swap is one atomic
    exchange of the two folders where the system has it (Linux ``renameat2``), else two renames; at no moment
    does ``out`` hold a mix of old and new files. After a crash, ``out`` holds the old set or the new set; a
    hidden ``.NAME.tmp-PID-*`` (unfinished) or ``.NAME.old-PID-*`` (the previous set) folder may remain
    beside it, and the next run into ``out`` removes it (or puts the previous set back if ``out`` is gone).
    """
    target = check_output_dir(out, owned, overwrite=overwrite)
    tmp = _new_stage(target)
    try:
        with _no_space_is_input_error(target):
            yield tmp
            _check_replaceable(target, owned, overwrite)  # again: something may have appeared meanwhile
            _swap_in(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output_dir(out: str | os.PathLike, owned: Collection[str], *, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output folder :func:`replace_dir` would refuse at the end; a dead run's
    leftovers beside it are cleaned up first."""
    target = Path(out)
    _check_target(target)
    recover_stale(target)
    _check_replaceable(target, owned, overwrite)
    return target


def _check_target(target: Path) -> None:
    if not str(target) or str(target) == ".":
        raise InputError("the output folder is empty: name a folder for the results")
    _writable_folder(target.parent)
    if target.exists() and not target.is_dir():
        raise InputError("output path exists and is not a folder", target)


def _check_replaceable(target: Path, owned: Collection[str], overwrite: bool) -> None:
    if not target.is_dir():
        return
    present = sorted(entry.name for entry in target.iterdir())
    if not present:
        return
    if not overwrite:
        raise InputError(
            "output folder is not empty; pass --overwrite to replace the report there, or choose a new one",
            target,
        )
    foreign = [name for name in present if name not in owned]
    if foreign:
        raise InputError(
            f"output folder holds files BrainGemma3D did not write there ({', '.join(foreign[:3])}); "
            "--overwrite only replaces a previous report: choose a new folder",
            target,
        )


def _new_stage(target: Path) -> Path:
    """A staging folder named after ``target`` and this process (so a later run can tell it is stale)."""
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=target.parent))


def _swap_in(stage: Path, target: Path) -> None:
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists():
        os.rename(stage, target)
        return
    if _exchange(stage, target):  # ``stage`` now holds the previous set; the caller deletes it
        return
    old = target.parent / f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    try:
        os.rename(stage, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale(target: str | os.PathLike) -> list[Path]:
    """Clean up after a run into ``target`` that died: remove its staging folders; put a previous set that
    was moved aside back if ``target`` is missing, else remove it. Returns what was removed or restored."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(tmp|old)-(\d+)-")
    done = []
    for entry in sorted(target.parent.iterdir()):
        match = pattern.match(entry.name)
        if not match or not entry.is_dir() or _pid_alive(int(match.group(2))):
            continue
        if match.group(1) == "old" and not target.exists():
            os.rename(entry, target)
        else:
            shutil.rmtree(entry, ignore_errors=True)
        done.append(entry)
    return done


@contextlib.contextmanager
def _no_space_is_input_error(target: Path) -> Iterator[None]:
    """A full disk is something the user can fix: one line naming the folder, not an internal error."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InputError(
                "no space left on device writing this folder (nothing was written)", target
            ) from None
        raise
